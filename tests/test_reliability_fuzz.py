"""Fuzz: seeded malformed inputs of every kind ganforge reads — images, JSON and YAML configs, mutated valid configs,
checkpoint records, safetensors files, pytorch_GAN_zoo .pt files, prepared stores — through the command line in this
process. Every input must succeed or end with exit code 2 and a `ganforge <cmd>: error: ...` line: no traceback."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from reliability_runs import TINY_RUNS, tiny_run, write_config

import ganforge
from ganforge.cli import main
from ganforge.data.store import write_store
from ganforge.training import checkpoint as ckpt

pytestmark = pytest.mark.slow  # every test reads the module's ~100 command-line runs

SEED = 20240607
JUNK_VALUES: list[Any] = [None, True, -1, 0, 0.5, -3.7, "x", "", [], [1, "a"], {}, {"a": 1}, 10**30, float("nan")]


@dataclass
class Case:
    """One malformed input: `build(folder)` writes it below `folder` and returns the ganforge argv to run."""

    category: str
    build: Callable[[Path], list[Any]]


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, Path]:
    """Valid inputs to mutate: a trained tiny PGAN run, a 32×32 store, a zoo-style .pt and a PNG."""
    root = tmp_path_factory.mktemp("valid")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ganforge.train(TINY_RUNS["pgan"], root / "run", until=1)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    write_store(root / "store", rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8), resolution=32, source="fuzz",
                labels=np.arange(8, dtype=np.int64)[:, None] % 2, label_columns=[("kind", ["a", "b"])])
    torch.save({"config": {"dimLatentVector": 8}, "netG": {"formatLayer.module.weight": torch.zeros(2, 2)},
                "netD": {}}, root / "zoo.pt")
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "good.png")
    return {"run": root / "run", "store": root / "store", "zoo": root / "zoo.pt", "png": root / "good.png"}


def random_bytes(rng: random.Random, prefixes: tuple[bytes, ...] = (b"",)) -> bytes:
    return rng.choice(prefixes) + rng.randbytes(rng.choice([0, 1, 7, 64, 500]))


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Truncate, flip bytes in, or splice random bytes into a valid file."""
    how = rng.choice(["truncate", "flip", "splice"])
    if how == "truncate":
        return data[: rng.randrange(len(data))]
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        if how == "flip":
            data[position] ^= 1 << rng.randrange(8)
        else:
            data[position:position] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


def mutate_tree(rng: random.Random, tree: Any) -> Any:
    """A copy of a JSON-like tree with one random value replaced by junk, deleted, or given an unknown sibling."""
    tree = copy.deepcopy(tree)
    node = tree
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return tree
        key = rng.choice(keys)
        if isinstance(node[key], (dict, list)) and node[key] and rng.random() < 0.6:
            node = node[key]
            continue
        action = rng.choice(["junk", "junk", "delete", "unknown"]) if isinstance(node, dict) else "junk"
        if action == "junk":
            node[key] = rng.choice(JUNK_VALUES)
        elif action == "delete":
            del node[key]
        else:
            node[f"{key}_typo"] = rng.choice(JUNK_VALUES)
        return tree


def encoded_images(rng: random.Random) -> bytes:
    image = Image.fromarray(np.full((9, 9, 3), rng.randrange(256), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=rng.choice(["PNG", "JPEG", "GIF", "BMP", "WEBP"]))
    return buffer.getvalue()


def generate_cases(valid: dict[str, Path]) -> Iterator[Case]:
    rng = random.Random(SEED)
    magics = (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP")
    for index in range(26):
        data = random_bytes(rng, magics) if index % 2 else mutate_bytes(rng, encoded_images(rng))
        suffix = rng.choice([".png", ".jpg", ".gif", ".bmp", ".webp"])

        def image(folder: Path, data: bytes = data, suffix: str = suffix, alone: bool = index % 3 == 0) -> list[Any]:
            (folder / "src").mkdir()
            if not alone:
                shutil.copy(valid["png"], folder / "src" / "good.png")
            (folder / "src" / f"fuzzed{suffix}").write_bytes(data)
            return ["prepare", "folder", folder / "src", "-o", folder / "out", "--resolution", 4, "--workers", 1]
        yield Case("image", image)
    for index in range(30):
        suffix = ".json" if index % 2 else ".yaml"
        text = rng.choice([random_bytes(rng, (b"{", b"model:\n  ", b"- ", b"")),
                           mutate_bytes(rng, json.dumps(TINY_RUNS["pgan"]).encode())])

        def config_file(folder: Path, text: bytes = text, suffix: str = suffix) -> list[Any]:
            (folder / f"config{suffix}").write_bytes(text)
            return ["train", "pgan", "-c", folder / f"config{suffix}", "--run-dir", folder / "run", "--until", 0]
        yield Case("config bytes", config_file)
    for index in range(20):
        family = list(TINY_RUNS)[index % 4]
        config = mutate_tree(rng, tiny_run(family))

        def mutated_config(folder: Path, config: dict = config, family: str = family) -> list[Any]:
            path = write_config(config, folder / "config.json")
            return ["train", family, "-c", path, "--run-dir", folder / "run", "--until", 0]
        yield Case("mutated config", mutated_config)
    record_path = next(ckpt.checkpoint_dir(valid["run"]).glob("*.json"))
    record = json.loads(record_path.read_text())
    for index in range(16):
        new_record = random_bytes(rng, (b"{", b"")) if index % 4 == 0 else json.dumps(mutate_tree(rng, record))

        def checkpoint_record(folder: Path, new_record: bytes | str = new_record) -> list[Any]:
            run = copy_run(valid["run"], folder)
            path = next(ckpt.checkpoint_dir(run).glob("*.json"))
            path.write_bytes(new_record if isinstance(new_record, bytes) else new_record.encode())
            return ["generate", run, "-o", folder / "out", "--n", 1]
        yield Case("checkpoint record", checkpoint_record)
    tensors = record_path.with_suffix(".safetensors").read_bytes()
    for index in range(10):
        blob = random_bytes(rng, (b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{}")) if index % 3 == 0 else \
            mutate_bytes(rng, tensors)

        def safetensors_file(folder: Path, blob: bytes = blob) -> list[Any]:
            """Random tensor-file bytes with the hash made to match, so they reach the safetensors reader."""
            import hashlib

            run = copy_run(valid["run"], folder)
            path = next(ckpt.checkpoint_dir(run).glob("*.json"))
            path.with_suffix(".safetensors").write_bytes(blob)
            meta = json.loads(path.read_text())
            meta["sha256"] = hashlib.sha256(blob).hexdigest()
            path.write_text(json.dumps(meta))
            return ["generate", run, "-o", folder / "out", "--n", 1]
        yield Case("safetensors", safetensors_file)
    zoo = valid["zoo"].read_bytes()
    for index in range(10):
        blob = random_bytes(rng, (b"PK\x03\x04", b"\x80\x02")) if index % 2 else mutate_bytes(rng, zoo)

        def zoo_file(folder: Path, blob: bytes = blob) -> list[Any]:
            (folder / "model.pt").write_bytes(blob)
            return ["import", "pgan-zoo", folder / "model.pt", "-o", folder / "run"]
        yield Case("zoo checkpoint", zoo_file)
    store_files = sorted(p.name for p in valid["store"].iterdir())
    manifest = json.loads((valid["store"] / "manifest.json").read_text())
    for index in range(12):
        name = rng.choice(store_files)
        data = (valid["store"] / name).read_bytes()
        if name == "manifest.json" and index % 2:
            new = json.dumps(mutate_tree(rng, manifest)).encode()
        else:
            new = data[: rng.randrange(len(data))]

        def store(folder: Path, name: str = name, new: bytes = new) -> list[Any]:
            shutil.copytree(valid["store"], folder / "store")
            (folder / "store" / name).write_bytes(new)
            path = write_config(tiny_run("wgan-gp"), folder / "config.json")
            return ["train", "wgan-gp", "-c", path, "--data", folder / "store", "--run-dir", folder / "run",
                    "--until", 0]
        yield Case("store", store)


def copy_run(run: Path, folder: Path) -> Path:
    shutil.copytree(run, folder / "run", ignore=shutil.ignore_patterns("samples", "log.jsonl"))
    return folder / "run"


CATEGORIES = ["image", "config bytes", "mutated config", "checkpoint record", "safetensors", "zoo checkpoint",
              "store"]


@dataclass
class Outcome:
    category: str
    argv: list[str]
    code: int | None  # None: an exception escaped main(), which the user sees as a traceback
    err: str


@pytest.fixture(scope="module")
def outcomes(valid, tmp_path_factory) -> list[Outcome]:
    """Every case run once through `ganforge.cli.main` in this process (warnings silenced: they are not errors)."""
    root = tmp_path_factory.mktemp("fuzz")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = []
    for index, case in enumerate(generate_cases(valid)):
        folder = root / f"case{index:03d}"
        folder.mkdir()
        argv = [str(a) for a in case.build(folder)]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = main(argv)
            except BaseException as err:  # noqa: BLE001 - anything escaping main() is the finding
                code = None
                stderr.write(f"{type(err).__name__}: {err}")
        results.append(Outcome(case.category, argv, code, stderr.getvalue()))
    torch.set_num_threads(threads)
    return results


def _in(category: str, outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.category == category]


def test_at_least_100_cases_over_every_category(outcomes) -> None:
    counts = {category: len(_in(category, outcomes)) for category in CATEGORIES}
    assert len(outcomes) == sum(counts.values()) >= 100 and min(counts.values()) >= 10, counts
    refused = {category: sum(o.code == 2 for o in _in(category, outcomes)) for category in CATEGORIES}
    assert min(refused.values()) >= 1, refused  # every category does reach the error path


@pytest.mark.parametrize("category", CATEGORIES)
def test_no_traceback_only_success_or_exit_2_with_an_error_line(outcomes, category: str) -> None:
    bad = [f"{o.argv[:2]} exit {o.code}: {o.err[-300:]}" for o in _in(category, outcomes)
           if o.code not in (0, 2) or "Traceback" in o.err
           or (o.code == 2 and not o.err.startswith(f"ganforge {o.argv[0]}: error: "))]
    assert bad == []


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_refusal_is_one_line(outcomes, category: str) -> None:
    multi = [o.err for o in _in(category, outcomes) if o.code == 2 and len(o.err.strip().splitlines()) != 1]
    assert multi == []
