"""`ganforge train pgan -c run.sh`: pytorch_GAN_zoo's `python train.py PGAN -c CONFIG.json ...` read as a config.

Where the official checkout is at hand (GANFORGE_REFS), the tables of train.py's options and of the config keys it
turns into options are checked against train.py's parser and standard_configurations/pgan_config.py themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import argparse_options, reference_checkout, zoo_pgan_defaults

from ganforge.cli import main
from ganforge.config import ConfigError, read_config_file
from ganforge.families import resolve_run_config
from ganforge.families.pgan_zoo_config import _BOOLEANS, _LISTS, _OVERRIDES, _SHORT, _TRAIN_OPTIONS

TINY = {"pathDB": "builtin:shapes?count=64&resolution=16",
        "config": {"maxIterAtScale": [4, 4, 4], "alphaNJumps": [0, 2, 2], "alphaSizeJumps": [0, 1, 1],
                   "depthScales": [8, 8, 8], "dimLatentVector": 8, "miniBatchSize": 4}}


def command(folder: Path, words: str, config: dict | None = None) -> Path:
    """A SLURM-style script running train.py with its dataset config beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config_shapes.json").write_text(json.dumps(config or TINY))
    script = folder / "run.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --gres=gpu:1\npython train.py {words}\n")
    return script


def translated(folder: Path, words: str, config: dict | None = None):
    return resolve_run_config("pgan", read_config_file(command(folder, words, config)))


def test_the_readme_command_with_options_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config is found beside the script, not only in the current folder
    config = translated(tmp_path / "jobs", "PGAN -c config_shapes.json --restart -n shapes --no_vis -e 2 -s 8 "
                        "--baseLearningRate 0.002 --GDPP True --lambdaGP 5 --epsilonD=0.01")
    assert (config.data, config.log_every, config.checkpoint_every, config.sample_every) == (
        TINY["pathDB"], 2, 8, 8)
    model = config.model
    assert (model.variant, model.lr, model.gdpp, model.lambda_gp, model.drift, model.latent_dim, model.widths) == (
        "zoo", 0.002, 1.0, 5.0, 0.01, 8, [8, 8, 8])
    defaults = translated(tmp_path / "plain", "PGAN -c config_shapes.json")
    assert (defaults.log_every, defaults.checkpoint_every, defaults.model.lr, defaults.model.gdpp) == (
        100, 16000, 0.001, 0.0)  # train.py's -e and -s defaults, the file's own settings


def test_booleans_are_read_as_the_zoos_str2bool_reads_them(tmp_path):
    """models/utils/config.py's str2bool: yes/true/t/y/1 and no/false/f/n/0 in any case; anything else stops."""
    for value, gdpp in (("True", 1.0), ("t", 1.0), ("Y", 1.0), ("1", 1.0), ("yes", 1.0), ("no", 0.0), ("F", 0.0),
                        ("0", 0.0), ("false", 0.0)):
        assert translated(tmp_path / value, f"PGAN -c config_shapes.json --GDPP {value}").model.gdpp == gdpp
    with pytest.raises(ConfigError, match="run.sh: --GDPP 'rue': expected a boolean as the zoo's train.py reads"):
        translated(tmp_path / "rue", "PGAN -c config_shapes.json --GDPP rue")


@pytest.mark.parametrize(("words", "message"), [
    ("DCGAN -c config_shapes.json", "the zoo's 'DCGAN' model: .*`ganforge train dcgan`"),
    ("StyleGAN -c config_shapes.json", "the zoo's 'StyleGAN' model"),
    ("-c config_shapes.json", "expected pytorch_GAN_zoo's `python train.py PGAN -c CONFIG.json"),
    ("PGAN -n x", "train.py needs -c CONFIG.json"),
    ("PGAN -c absent.json", "-c absent.json: not found \\(looked for absent.json and .*absent.json\\)"),
    ("PGAN -c config_shapes.json -v CLOTHING", "-v 'CLOTHING': ganforge trains on the whole store"),
    ("PGAN -c config_shapes.json --maxIterAtScale 10", "--maxIterAtScale: train.py turns a list option into"),
    ("PGAN -c config_shapes.json --learningRate 0.2", "'--learningRate' is not a flag of pytorch_GAN_zoo's train.py"),
    ("PGAN -c config_shapes.json --miniBatchStdDev false", "config.miniBatchStdDev: ganforge's PGAN supports only"),
])
def test_what_ganforge_cannot_train_is_an_error(tmp_path, words, message):
    with pytest.raises(ConfigError, match=message):
        translated(tmp_path, words)


@pytest.mark.slow
def test_a_zoo_command_trains_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = command(tmp_path, "PGAN -c config_shapes.json --restart -n shapes -e 3 -s 6")
    run = tmp_path / "runs" / "shapes"
    assert main(["train", "pgan", "-c", str(script), "--run-dir", str(run), "--set", "progress=false"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 9, 12]  # global steps (the zoo's counter restarts at each scale)
    assert all({"loss_D_real", "loss_D_fake", "gp", "drift"} <= set(r) for r in log)
    assert {p.name for p in (run / "checkpoints").glob("*.safetensors")} >= {"00000006.safetensors",
                                                                               "00000012.safetensors"}


def test_the_option_tables_are_the_zoos():
    official = argparse_options(next(reference_checkout("pytorch_GAN_zoo").rglob("train.py")))
    assert {name: (option["kind"], option["default"]) for name, option in official.items()
            if name != "overrides"} == _TRAIN_OPTIONS
    assert {short: f"--{name}" for name, option in official.items() for short in option["short"]} == _SHORT
    defaults = zoo_pgan_defaults()
    as_options = {key for key, value in defaults.items() if value is not None}  # updateParserWithConfig skips None
    assert as_options == set(_OVERRIDES) | set(_LISTS)
    assert {key for key in as_options if isinstance(defaults[key], list)} == set(_LISTS)
    assert {key for key in as_options if isinstance(defaults[key], bool)} == _BOOLEANS
    assert all(_OVERRIDES[key][0] == type(defaults[key]).__name__ for key in _OVERRIDES if key not in _BOOLEANS)
