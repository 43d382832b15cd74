"""Every shell command in the README's ```bash blocks, run on tiny data, so a README command that stops working fails.

The README is parsed when the tests are collected (it changes often; nothing of its text is copied here). Each command
is matched by exactly one rule in RULES: either it runs — as written, plus the size-shrinking changes of its rule
(the one place where commands are altered) — or it is skipped with the reason. A command no rule matches fails the
coverage test, so a new README command needs a rule. Each rule names its group: the commands of a group run in README
order in one working folder (cwd) laid out as the README assumes (`data/…`, `runs/…`, `configs/` linked to the real
configs, `../mnist`, …), filled with tiny inputs cut from ../shared/data and the official-checkpoint fixtures in
../shared/fixtures; later commands of a group use what earlier ones wrote (prepare → train → generate / evaluate), so a
failure can make later commands fail too. Groups share nothing but that set-up, so they run as separate tests.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CIFAR_LAUNCH_FLAGS,
    SHARED,
    STARGAN2_AFHQ_FLAGS,
    shared_path,
    write_inception_standin,
    write_launch_script,
)
from PIL import Image

from ganforge.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
WORKER_FAILURE_MARKS = ("Fatal Python error", "terminate called", "Traceback", "Error")


# --- reading the README -----------------------------------------------------------------------------------------

def readme_commands(text: str) -> list[str]:
    """Each command of every ```bash block, continuation lines joined and comments dropped, words single-spaced."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


COMMANDS = readme_commands(README.read_text())


# --- how each command is run: the one place where commands are changed -------------------------------------------

@dataclass(frozen=True)
class Ran:
    """A command as it was run (argv after the rule's changes), its working folder and its output."""

    cwd: Path
    argv: list[str]
    output: str

    @property
    def run_dir(self) -> str:
        """The run a train/import command writes: --run-dir / -o as given, else train's default runs/FAMILY."""
        for option in ("--run-dir", "--run", "-o"):
            if option in self.argv:
                return self.argv[self.argv.index(option) + 1]
        return f"runs/{self.argv[self.argv.index('train') + 1]}"


Check = Callable[[Ran], None]


def _files(folder: str | None, pattern: str, count: int | None = None) -> Check:
    """Outcome check: `folder` (None: the command's run) holds files matching `pattern` (exactly `count` if given)."""
    def check(ran: Ran) -> None:
        where = ran.run_dir if folder is None else folder
        found = sorted((ran.cwd / where).glob(pattern))
        assert found if count is None else len(found) == count, f"{where}/{pattern}: {len(found)} files\n{ran.output}"
    return check


def _run_written(ran: Ran) -> None:
    """Outcome check of train/import: the run's resolved config and a checkpoint (safetensors + JSON record)."""
    assert (ran.cwd / ran.run_dir / "config.json").is_file(), ran.output
    _files(None, "checkpoints/*.safetensors")(ran)
    _files(None, "checkpoints/*.json")(ran)


def _trained(ran: Ran) -> None:
    """Outcome check of train: the run was written and the output says where it stopped; samples and log.jsonl."""
    _run_written(ran)
    assert re.search(rf"step \d+\b.*{re.escape(ran.run_dir)}", ran.output), ran.output
    assert (ran.cwd / ran.run_dir / "log.jsonl").is_file(), ran.output
    _files(None, "samples/*.png")(ran)


def _metrics_logged(*names: str) -> Check:
    """Outcome check of a train whose config computes metrics: the run's metrics.jsonl has a value for each name."""
    def check(ran: Ran) -> None:
        record = json.loads((ran.cwd / ran.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        assert all(isinstance(record.get(name), float) for name in names), record
    return check


def _store(path: str, count: int, resolution: int) -> Check:
    """Outcome check of prepare: a store with the images the tiny source holds, at the documented resolution."""
    def check(ran: Ran) -> None:
        manifest = json.loads((ran.cwd / path / "manifest.json").read_text())
        assert (manifest["count"], manifest["resolution"]) == (count, resolution), ran.output
    return check


def _printed(pattern: str) -> Check:
    """Outcome check: the output shows what the command is documented to print (e.g. a metric's number)."""
    def check(ran: Ran) -> None:
        assert re.search(pattern, ran.output), f"{pattern!r} not in:\n{ran.output}"
    return check


def _all(*checks: Check) -> Check:
    def check(ran: Ran) -> None:
        for one in checks:
            one(ran)
    return check


@dataclass(frozen=True)
class Rule:
    """How the README commands matching `pattern` (a regex matched at the start of the command) are run.

    skip: the reason it is not run (then nothing else applies). add: shrinking arguments appended to the command (or
    a function of the working folder giving them). options: option values replaced (`--n 16384` → `--n 16`).
    paths: words replaced (absolute paths → the tiny copy). drop: flags removed. needs_cuda: skipped without a GPU.
    expect: the outcome check (files written, numbers printed) after a zero exit. group: the chain of commands it
    belongs to (a key of GROUP_SETUP), which runs in its own working folder."""

    pattern: str
    group: str = ""
    skip: str = ""
    add: tuple[str, ...] | Callable[[Path], tuple[str, ...]] = ()
    options: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    expect: Check | None = None
    needs_cuda: bool = False
    standing: bool = False  # a kind of command skipped wherever it appears, kept while no block has one

    def argv(self, command: str, cwd: Path) -> list[str]:
        words = [self.paths.get(word, word) for word in shlex.split(command) if word not in self.drop]
        for option, value in self.options.items():
            words[words.index(option) + 1] = value
        return words + list(self.add(cwd) if callable(self.add) else self.add)


def _two_steps_past_the_import(run: str) -> Callable[[Path], tuple[str, ...]]:
    """Two steps from the imported position (`--until`), with samples: the README's `celebaCropped_s5_i83000` (the
    zoo fixture under its name) stands at iteration 83,000 of the zoo's default 96,000, which the tiny test does
    not train to the end."""
    def two_steps(cwd: Path) -> tuple[str, ...]:
        imported = max(int(path.stem) for path in (cwd / run / "checkpoints").glob("*.json"))
        return ("--until", str(imported + 2), "--set", "sample_every=1")
    return two_steps


# Size-shrinking settings shared by the rules: a few steps, narrow networks, small batches. Everything else of a
# command (its config file, data, run directory, options) is used as the README writes it.
PGAN_128_TINY = ("--set", "model.widths=[8,8,8,8,8,8]", "--set", "model.latent_dim=8",
                 "--set", "model.schedule.max_iter_at_scale=[2,2,2,2,2,2]", "--set", "model.schedule.alpha_jumps=1",
                 "--set", "model.schedule.alpha_jump_size=1", "--set", "model.schedule.batch_size=4",
                 "--set", "sample_every=4", "--set", "sample_count=4", "--set", "progress=false")
DCGAN_FAMILY_TINY = ("--set", "model.features_g=4", "--set", "model.features_d=4", "--set", "model.batch_size=4",
                "--set", "model.latent_dim=8", "--set", "model.steps=2", "--set", "sample_every=2",
                "--set", "checkpoint_every=2", "--set", "progress=false")
STARGAN2_TINY = ("--set", "model.resolution=32", "--set", "model.base_dim=4", "--set", "model.max_conv_dim=8",
                 "--set", "model.mapping_dim=8", "--set", "model.latent_dim=4", "--set", "model.style_dim=8",
                 "--set", "model.batch_size=2", "--set", "model.steps=1", "--set", "sample_every=1",
                 "--set", "checkpoint_every=1", "--set", "sample_count=4", "--set", "progress=false")
BIGGAN_TINY_WIDTHS = ("--set", "model.g_ch=8", "--set", "model.d_ch=8", "--set", "model.batch_size=2", "--set",
                      "metrics_n=16", "--set", "sample_every=1", "--set", "checkpoint_every=1", "--set",
                      "sample_count=4", "--set", "progress=false")
BIGGAN_TINY = (*BIGGAN_TINY_WIDTHS, "--set", "model.steps=1")
SWD_TABLE = r"SWD x1e3 .*\bavg\n +\d+\.\d+( +\d+\.\d+)+\n"  # the table evaluate prints: a value per resolution + avg
STORE_IMAGES = 24  # tiny CelebA source images (see build_workdir)

RULES: list[Rule] = [
    Rule(r"bash tools/quickstart\.sh", skip="builds the environment and trains for minutes; its train command "
         "(configs/quickstart_pgan.yaml, --final-swd) runs shrunk in this module's set-up, writing runs/quickstart"),
    Rule(r"bash tools/test\.sh", skip="the test suite itself"),
    Rule(r"(source \S*activate|pip install)", skip="environment set-up: the suite already runs in that environment",
         standing=True),
    Rule(r"ganforge report runs/quickstart$", "quickstart", expect=_files("runs/quickstart", "report.html", 1)),
    Rule(r"ganforge report runs/a runs/b -o compare\.html", "quickstart", expect=_files(".", "compare.html", 1)),
    # the README's /data/… is the user's CelebA folder: the tiny copy beside the working folder stands for it
    Rule(r"ganforge prepare celeba_cropped", "pgan",
         paths={"/data/celeba/img_align_celeba": "../celeba/img_align_celeba"},
         expect=_all(_store("data/celeba_cropped", STORE_IMAGES, 128),
                     _files("data/celeba_cropped", "config_celeba_cropped.json", 1))),
    Rule(r"ganforge train pgan -c data/celeba_cropped/config_celeba_cropped\.json", "pgan", add=PGAN_128_TINY,
         expect=_trained),
    Rule(r"ganforge train pgan -c configs/pgan_celeba128\.yaml --run-dir runs/celeba-paper", "pgan-paper",
         add=PGAN_128_TINY, expect=_trained),
    Rule(r"ganforge generate runs/celeba --n 64 --grid -o out/", "pgan", expect=_all(
        _printed(r"wrote 1 file\(s\) to out from step \d+ of runs/celeba"), _files("out", "*.png", 1))),
    Rule(r"ganforge evaluate runs/celeba --metrics swd,msssim", "pgan", options={"--n": "16"},
         expect=_all(_printed(SWD_TABLE), _printed(r"SWD x1e3 +128 "),
                     _printed(r"MS-SSIM +\d\.\d+ +\(\d+ pairs\)"))),
    Rule(r"ganforge import pgan-zoo celebaCropped_s5_i83000-2b0acc76\.pth -o runs/zoo-celeba", "pgan-zoo",
         expect=_run_written),
    Rule(r"ganforge generate runs/zoo-celeba --n 16 --grid -o out/", "pgan-zoo", expect=_all(
        _printed(r"wrote 1 file\(s\) to out from step \d+ of runs/zoo-celeba"))),
    Rule(r"ganforge train pgan --run-dir runs/zoo-celeba$", "pgan-zoo",
         add=_two_steps_past_the_import("runs/zoo-celeba"), expect=_trained),
    Rule(r"ganforge prepare mnist \.\./mnist -o data/mnist32$", "dcgan", expect=_store("data/mnist32", 64, 32)),
    Rule(r"ganforge train wgan-gp --data data/mnist32$", "dcgan", add=DCGAN_FAMILY_TINY, expect=_trained),
    Rule(r"ganforge train wgan-gp --data data/mnist32 --set 'model.conditions=\[digit\]'", "dcgan",
         add=DCGAN_FAMILY_TINY, expect=_trained),
    Rule(r"ganforge generate runs/mnist_digits -o sevens --class 7", "dcgan", expect=_all(
        _printed(r"wrote 1 file\(s\) to sevens from step \d+ of runs/mnist_digits"), _files("sevens", "grid.png", 1))),
    Rule(r"ganforge evaluate runs/mnist_digits --per-class --metrics fid", "dcgan", options={"--n": "8"},
         expect=_all(_printed(r"per class of 'digit'"), _printed(r"\nmean +\d+\.\d+\n"),
                     _printed(r"is the intra-class FID"))),
    Rule(r"ganforge train dcgan -c configs/dcgan_celeba64\.yaml --data data/celeba64", "dcgan", add=DCGAN_FAMILY_TINY,
         expect=_trained),
    Rule(r"ganforge train wgan-gp -c configs/wgan_gp_mnist32\.yaml", "dcgan",
         add=DCGAN_FAMILY_TINY, expect=_trained),  # later --set values win
    Rule(r"ganforge prepare mnist \.\./mnist -o data/mnist32_test --split test", "dcgan",
         expect=_store("data/mnist32_test", 32, 32)),
    Rule(r"ganforge evaluate runs/wgan_gp_mnist32 --metrics swd", "dcgan", options={"--n": "16"},
         expect=_printed(SWD_TABLE)),
    Rule(r"ganforge train stargan2 -c configs/stargan2_celeba_hq\.yaml --data data/celeba_domains", "stargan2",
         add=STARGAN2_TINY, expect=_trained),
    Rule(r"ganforge train stargan2 -c configs/stargan2_afhq\.yaml --data data/afhq", "stargan2", add=STARGAN2_TINY,
         expect=_trained),
    Rule(r"ganforge train stargan2 -c stargan-v2/train_afhq\.sh --data data/afhq", "stargan2",
         add=(*STARGAN2_TINY, "--set", "metrics=[]"), expect=_trained),  # metrics: no Inception/AlexNet weights here
    Rule(r"ganforge import stargan2 100000_nets_ema\.ckpt", skip="the one official StarGAN v2 fixture "
         "(../shared/fixtures/official/stargan_v2) has 3 domains at 128 px and the README's data/celeba_domains has 2; "
         "the importer runs on that fixture in tests/test_cli_import.py"),
    # a tiny extracted release stands for the 170 MB tarball; with it in place --download fetches nothing
    Rule(r"ganforge prepare cifar10 \.\./cifar -o data/cifar10", "biggan-cifar",
         expect=_store("data/cifar10", 20, 32)),
    Rule(r"ganforge train biggan -c configs/biggan_cifar10\.yaml --data data/cifar10", "biggan-cifar", add=BIGGAN_TINY,
         expect=_all(_trained, _metrics_logged("is_mean", "fid"))),
    Rule(r"ganforge train biggan -c BigGAN-PyTorch/scripts/launch_cifar_ema\.sh --data data/cifar10", "biggan-cifar",
         add=(*BIGGAN_TINY_WIDTHS, "--set", "model.epochs=1"),  # 2 iterations: 20 images, 2 x 4 per iteration
         expect=_all(_trained, _metrics_logged("is_mean", "fid"))),
    Rule(r"ganforge train biggan -c configs/biggan_imagenet128_bs256x8\.yaml --data data/imagenet128", "biggan-i128",
         add=BIGGAN_TINY + ("--set", "model.n_classes=10"),  # the tiny store (as the i128 fixture) has 10 classes
         expect=_all(_trained, _metrics_logged("is_mean", "fid"))),
    Rule(r"ganforge train biggan -c configs/biggan_deep_imagenet128\.yaml --data data/imagenet128", "biggan-i128",
         add=BIGGAN_TINY + ("--set", "model.n_classes=10"), expect=_all(_trained, _metrics_logged("is_mean", "fid"))),
    Rule(r"ganforge import biggan-pytorch weights/BigGAN_I128_hdf5_seed0_\.\.\. -o runs/i128 --data data/imagenet128",
         "biggan-i128", expect=_run_written),
    Rule(r"ganforge stats data/celeba_cropped -o celeba128_stats\.npz", "pgan", add=("--n", "16"),
         expect=_all(_printed(r"wrote celeba128_stats\.npz: .* of 16 images"), _files(".", "celeba128_stats.npz", 1))),
    Rule(r"ganforge evaluate --fake runs/celeba --real-stats celeba128_stats\.npz", "pgan", add=("--n", "16"),
         expect=_printed(r"FID +\d+\.\d+ +\(legacy-tf\)")),
    # 2 CPU processes (gloo) stand for 8 GPUs; torchrun is run as `python -m torch.distributed.run`
    Rule(r"torchrun --nproc_per_node 8 -m ganforge\.cli train pgan -c configs/pgan_celeba128\.yaml", "pgan-paper",
         options={"--nproc_per_node": "2"}, add=PGAN_128_TINY + ("--set", "sample_every=2", "--until", "2"),
         expect=_trained),
    Rule(r"python benchmarks/bench_pgan_train\.py .*--device cuda", "bench", needs_cuda=True,
         add=("--steps", "1", "--warmup", "0", "--scratch", "scratch/bench_pgan"),
         expect=_printed(r"res +128: +\d+\.\d+ img/s")),
    Rule(r"python benchmarks/bench_pgan_train\.py (?!.*--device cuda)", "bench",
         options={"--resolution": "8", "--width-div": "64", "--batch": "4", "--steps": "1"},
         add=("--warmup", "0", "--scratch", "scratch/bench_pgan"), expect=_printed(r"res +8: +\d+\.\d+ img/s")),
    # one family in fp32 only: all four families, and torch.compile, take minutes on this CPU
    Rule(r"python benchmarks/bench_train\.py", "bench", options={"--steps": "1", "--warmup": "0"},
         add=("--modes", "fp32", "--width-div", "64", "--families", "wgan-gp", "--scratch", "scratch/bench_train"),
         expect=_printed(r"wgan-gp +fp32 +64 +16 +\d+\.\d+")),
    Rule(r"python benchmarks/bench_vs_reference\.py", skip="it imports the official implementations from checkouts "
         "(REFS) that no fresh clone has; tests/test_bench_vs_reference.py runs its machinery and its report of a "
         "missing checkout"),
    Rule(r"python benchmarks/gpu_check\.py", "bench", needs_cuda=True,
         add=("--quick", "--scratch", "scratch/gpu_check"), expect=_files(".", "gpu_check.json", 1)),
]


def rule_for(command: str) -> list[Rule]:
    return [rule for rule in RULES if re.match(rule.pattern, command)]


def test_commands_are_read_from_bash_blocks_only_with_continuations_joined_and_comments_dropped() -> None:
    text = ("```bash\nganforge train pgan -c a.yaml \\\n    --set x=1   # a comment\n# a comment line\n\n"
            "torchrun -m ganforge.cli info pgan  # --set y=2\n```\n```\nnot bash\n```\n"
            "```python\nimport ganforge\n```\n")
    assert readme_commands(text) == ["ganforge train pgan -c a.yaml --set x=1", "torchrun -m ganforge.cli info pgan"]
    assert rule_for("ganforge import stargan2 100000_nets_ema.ckpt -o runs/x")[0].skip
    assert rule_for("ganforge some-new-command") == []  # would fail the coverage test below


def test_every_readme_command_is_run_or_skipped_with_a_reason() -> None:
    assert COMMANDS, f"no ```bash commands found in {README}"
    unmatched = [command for command in COMMANDS if len(rule_for(command)) != 1]
    assert not unmatched, ("README commands without exactly one rule in tests/test_readme_commands.py RULES (add one "
                           f"that runs it on tiny data, or skips it with the reason): {unmatched}")
    unused = [rule.pattern for rule in RULES
              if not rule.standing and not any(re.match(rule.pattern, command) for command in COMMANDS)]
    assert not unused, f"RULES no README command matches any more (remove them): {unused}"


# --- the tiny working folder ---------------------------------------------------------------------------------------

TINY_QUICKSTART = [  # tools/quickstart.sh's train command, shrunk as the rules shrink
    "train", "pgan", "-c", "configs/quickstart_pgan.yaml", "--run-dir", "runs/quickstart", "--final-swd", "16",
    "--data", "builtin:shapes?count=64&resolution=32", "--set", "model.widths=[8,8,8,8]", "--set", "model.latent_dim=8",
    "--set", "model.schedule.max_iter_at_scale=[2,2,2,2]", "--set", "model.schedule.alpha_jumps=1",
    "--set", "model.schedule.alpha_jump_size=1", "--set", "model.schedule.batch_size=4", "--set", "log_every=2",
    "--set", "sample_every=4", "--set", "checkpoint_every=4", "--set", "sample_count=4", "--set", "progress=false"]
CELEBA_CROPPED = ["prepare", "celeba_cropped", "../celeba/img_align_celeba", "-o", "data/celeba_cropped"]
# Per group: what its README commands read but none of them writes (stores of the CLI table's commands, the quick
# start's run), made by these ganforge commands in the group's working folder before its first README command
GROUP_SETUP: dict[str, list[list[str]]] = {
    "quickstart": [TINY_QUICKSTART],  # also stands for runs/a and runs/b
    "pgan": [],
    "pgan-paper": [CELEBA_CROPPED],
    "pgan-zoo": [CELEBA_CROPPED],
    "dcgan": [["prepare", "folder", "../celeba/img_align_celeba", "-o", "data/celeba64", "--resolution", "64",
               "--workers", "1"]],
    "stargan2": [["prepare", "celeba-domains", "../celeba/img_align_celeba", "--attr-file",
                  "../celeba/list_attr_celeba.txt", "--attr", "Male", "-o", "data/celeba_domains",
                  "--resolution", "32"],
                 ["prepare", "domains", "../afhq", "-o", "data/afhq", "--resolution", "32"]],
    "biggan-cifar": [],
    "biggan-i128": [["prepare", "folder", "../imagenet", "-o", "data/imagenet128", "--resolution", "128",
                     "--workers", "1"]],
    "bench": [],
}


def _tiny_celeba(celeba: Path, root: Path) -> list[Path]:
    """STORE_IMAGES aligned CelebA JPEGs (half male, half female) and their rows of the official attribute file."""
    lines = (celeba / "list_attr_celeba.txt").read_text().splitlines()
    male = lines[1].split().index("Male")
    rows = {"1": [], "-1": []}
    for row in lines[2:]:
        sex = row.split()[1 + male]
        if len(rows[sex]) < STORE_IMAGES // 2:
            rows[sex].append(row)
    chosen = sorted(rows["1"] + rows["-1"])
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for row in chosen:
        shutil.copy(celeba / "img_align_celeba" / row.split()[0], folder)
    (root / "celeba" / "list_attr_celeba.txt").write_text("\n".join([str(len(chosen)), lines[1], *chosen]) + "\n")
    return sorted(folder.iterdir())


def _tiny_mnist(mnist: Path, folder: Path, counts: dict[str, int]) -> None:
    """The first images and labels of the official idx files, in the official layout (uncompressed)."""
    folder.mkdir()
    for prefix, count in counts.items():
        for kind, header, item_bytes in (("images-idx3", 16, 28 * 28), ("labels-idx1", 8, 1)):
            name = f"{prefix}-{kind}-ubyte"
            data = gzip.decompress((mnist / f"{name}.gz").read_bytes())
            header_bytes = bytearray(data[:header])
            header_bytes[4:8] = count.to_bytes(4, "big")
            (folder / name).write_bytes(bytes(header_bytes) + data[header : header + count * item_bytes])


def _tiny_cifar10(zip_path: Path, folder: Path, per_batch: int = 4) -> None:
    """CIFAR-10's extracted binary release (label byte + RGB planes per record), images from the shared JPEG zip."""
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    folder.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        names = [name for name in sorted(archive.namelist()) if name.endswith(".jpg")]
        picked = [next(name for name in names if f"/{cls}/" in name) for cls in classes] * 2
        records = []
        for name in picked:
            label = next(i for i, cls in enumerate(classes) if f"/{cls}/" in name)
            pixels = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB")).transpose(2, 0, 1)
            records.append(bytes([label]) + pixels.tobytes())
    for batch in range(5):
        chunk = records[batch * per_batch : (batch + 1) * per_batch]
        (folder / f"data_batch_{batch + 1}.bin").write_bytes(b"".join(chunk))
    (folder / "test_batch.bin").write_bytes(b"".join(records[:per_batch]))


def _image_folders(images: list[Path], root: Path, layout: dict[str, int]) -> None:
    """`root/<sub-folder>/` holding `layout[sub-folder]` of the images (links), in turn."""
    source = iter(images * 4)
    for sub, count in layout.items():
        (root / sub).mkdir(parents=True)
        for _ in range(count):
            image = next(source)
            (root / sub / image.name).symlink_to(image)


def build_workdir(root: Path) -> Path:
    """The README's working folder with tiny inputs; returns it (the cwd of every command)."""
    celeba = shared_path("data", "celeba")
    fixtures = shared_path("fixtures", "official")
    images = _tiny_celeba(celeba, root)
    _tiny_mnist(shared_path("data", "mnist"), root / "mnist", {"train": 64, "t10k": 32})
    _tiny_cifar10(shared_path("data", "cifar10-jpeg", "train.zip"), root / "cifar" / "cifar-10-batches-bin")
    _image_folders(images, root / "afhq", {f"{split}/{domain}": 3 if split == "train" else 1
                                           for split in ("train", "val") for domain in ("cat", "dog", "wild")})
    _image_folders(images, root / "imagenet", {f"class{label}": 2 for label in range(10)})  # the i128 fixture: 10
    work = root / "work"
    work.mkdir()
    for name in ("configs", "benchmarks"):
        (work / name).symlink_to(ROOT / name)
    (work / "celebaCropped_s5_i83000-2b0acc76.pth").symlink_to(fixtures / "pgan_zoo" / "small_s3_i100.pt")
    (work / "weights").mkdir()
    (work / "weights" / "BigGAN_I128_hdf5_seed0_...").symlink_to(fixtures / "biggan" / "i128")
    write_launch_script(work / "BigGAN-PyTorch" / "scripts" / "launch_cifar_ema.sh", CIFAR_LAUNCH_FLAGS)
    (work / "stargan-v2").mkdir()
    (work / "stargan-v2" / "train_afhq.sh").write_text(f"python main.py {STARGAN2_AFHQ_FLAGS}\n")
    return work


@dataclass
class ReadmeSession:
    """Runs README commands in one working folder, as their rules say."""

    cwd: Path
    env: dict[str, str] = field(repr=False)

    def run(self, command: str, rule: Rule) -> tuple[int, Ran]:
        """(exit status, what ran) of one README command."""
        argv = rule.argv(command, self.cwd)
        if argv[0] == "ganforge":
            status, output = self.ganforge(argv[1:])
            return status, Ran(self.cwd, argv, output)
        program = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
        # faulthandler: a worker that a signal kills prints its Python stack (WORKER_FAILURE_MARKS finds it)
        done = subprocess.run(program[argv[0]] + argv[1:], cwd=self.cwd, env={**self.env, "PYTHONFAULTHANDLER": "1"},
                              capture_output=True, text=True, timeout=600)
        return done.returncode, Ran(self.cwd, argv, done.stdout + done.stderr)

    def ganforge(self, argv: list[str]) -> tuple[int, str]:
        """`ganforge ARGV` in this process (no interpreter start-up per command), in the working folder."""
        output = io.StringIO()
        saved_env, saved_cwd = dict(os.environ), Path.cwd()
        os.environ.update(self.env)
        os.chdir(self.cwd)
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                try:
                    status = main(argv)
                except SystemExit as stop:
                    status = stop.code if isinstance(stop.code, int) else 2
                    output.write(f"{stop.code}\n" if not isinstance(stop.code, int) else "")
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        return status, output.getvalue()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def readme_session(root: Path, group: str) -> ReadmeSession:
    """The working folder with the tiny data, the stand-in weights and what `group`'s commands assume exists."""
    if not SHARED.exists():
        pytest.skip(f"reference data not available: {SHARED} is absent (the tiny inputs are cut from it)")
    work = build_workdir(root)
    # Weights that cannot be downloaded here: the seeded stand-ins (FID Inception for BigGAN's in-training IS/FID,
    # the face-mask network for StarGAN v2 CelebA-HQ's w_hpf=1), given the way a user gives them, by variable.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANFORGE_CACHE": str(root / "cache"),
           "GANFORGE_INCEPTION_WEIGHTS": str(write_inception_standin(root / "inception_standin.pth")),
           "GANFORGE_WING_WEIGHTS": str(shared_path("fixtures", "official", "stargan_v2", "wing", "wing_standin.ckpt"))}
    session = ReadmeSession(work, env)
    for argv in GROUP_SETUP[group]:
        status, output = session.ganforge(argv)
        assert status == 0, f"setting up the tiny data: ganforge {shlex.join(argv)}\n{output}"
    if group == "quickstart":
        assert "real-vs-real floor" in output, output
        for name in ("a", "b"):
            shutil.copytree(work / "runs" / "quickstart", work / "runs" / name)
    return session


def test_every_command_that_runs_belongs_to_a_group() -> None:
    ungrouped = [rule.pattern for rule in RULES if not rule.skip and rule.group not in GROUP_SETUP]
    assert not ungrouped, f"RULES that run but name no group of GROUP_SETUP: {ungrouped}"
    assert all(rule.group == "" for rule in RULES if rule.skip)
    unused = set(GROUP_SETUP) - {rule.group for rule in RULES if not rule.skip}
    assert not unused, f"GROUP_SETUP groups no rule names (remove them): {sorted(unused)}"


@pytest.mark.slow
@pytest.mark.parametrize("group", list(GROUP_SETUP))
def test_readme_commands_work_on_tiny_data(tmp_path: Path, group: str) -> None:
    """One test per group, not per command: a group's commands build on each other in order. Every command runs
    even after a failure; the failures are listed together, the first is usually the cause."""
    session = readme_session(tmp_path, group)
    failures, ran_any = [], False
    for command in COMMANDS:
        rules = rule_for(command)
        if len(rules) != 1 or rules[0].group != group or rules[0].skip or (rules[0].needs_cuda and not _has_cuda()):
            continue  # the coverage tests report commands without exactly one rule, or rules without a group
        (rule,) = rules
        status, ran = session.run(command, rule)
        ran_any = True
        try:
            assert status == 0, f"exit status {status}"
            if rule.expect is not None:
                rule.expect(ran)
        except AssertionError as error:
            lines = ran.output.strip().splitlines()
            # a CLI error says it all; otherwise what killed the process (a torchrun worker's own stderr comes
            # before torchrun's summary, which is the tail) and the tail
            cli_errors = [line for line in lines if "error:" in line][:2]
            causes = [line for line in lines if any(mark in line for mark in WORKER_FAILURE_MARKS)][:4]
            shown = "\n    ".join(cli_errors or causes + lines[-6:])
            failures.append(f"{command}\n  run as: {shlex.join(ran.argv)}\n  {str(error).splitlines()[0]}\n    {shown}")
    # a group whose commands all left the README, or all need CUDA, tests nothing here
    assert ran_any or any(r.needs_cuda for r in RULES if r.group == group), f"no README command of group {group} ran"
    assert not failures, f"README commands of group {group} that fail on tiny data:\n" + "\n".join(failures)
