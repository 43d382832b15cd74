"""`ganforge train stargan2 -c train.sh`: StarGAN v2's `python main.py --mode train ...` command read as a config.

The commands below carry the official README's training settings; where the official checkout is at hand
(GANFORGE_REFS), the translation's table of main.py's flags is checked against main.py's argument parser itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import STARGAN2_AFHQ_FLAGS, argparse_options, reference_checkout

from ganforge.cli import main
from ganforge.config import ConfigError, read_config_file, to_dict
from ganforge.families import resolve_run_config
from ganforge.families.stargan2_flags import _MAIN_FLAGS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# the official README's training commands
CELEBA_HQ = ("--mode train --num_domains 2 --w_hpf 1 --lambda_reg 1 --lambda_sty 1 --lambda_ds 1 --lambda_cyc 1 "
             "--train_img_dir data/celeba_hq/train --val_img_dir data/celeba_hq/val")
AFHQ = STARGAN2_AFHQ_FLAGS


def script(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "train.sh"
    path.write_text("python main.py " + flags.replace(" --", " \\\n               --") + "\n")
    return path


def translated(tmp_path: Path, flags: str, *overrides: tuple[list[str], object]):
    return resolve_run_config("stargan2", read_config_file(script(tmp_path, flags)),
                              [(["data"], "store"), *overrides])


@pytest.mark.parametrize(("flags", "preset", "domains"), [(CELEBA_HQ, "stargan2_celeba_hq.yaml", 2),
                                                          (AFHQ, "stargan2_afhq.yaml", 3)])
def test_the_readme_commands_are_the_presets(tmp_path, flags, preset, domains):
    ours = to_dict(translated(tmp_path, flags))
    theirs = to_dict(resolve_run_config("stargan2", read_config_file(CONFIGS / preset), [(["data"], "store")]))
    # the command evaluates every eval_every as main.py does; the presets leave training-time metrics off (their
    # comment says how to turn them on), name the store's domain column and take the domain count from the data
    assert {key: (ours[key], theirs[key]) for key in ours if key != "model" and ours[key] != theirs[key]} == {
        "metrics": (["fid", "lpips"], []), "metrics_every": (50000, 0)}
    assert {key: (ours["model"][key], theirs["model"][key]) for key in ours["model"]
            if ours["model"][key] != theirs["model"][key]} == {"domain_column": (None, "domain"),
                                                               "num_domains": (domains, None)}


def test_every_flag_reaches_its_setting(tmp_path):
    config = translated(tmp_path, "--mode train --img_size 128 --num_domains 4 --latent_dim 8 --style_dim 32 "
                        "--lambda_reg 2 --lambda_cyc 3 --lambda_sty 4 --lambda_ds 5 --ds_iter 600 --w_hpf 1 "
                        "--randcrop_prob 0.25 --total_iters 700 --batch_size 4 --lr 2e-4 --f_lr 3e-6 --beta1 0.5 "
                        "--beta2=0.9 --weight_decay 0 --seed 1 --print_every 20 --sample_every 30 --save_every 40 "
                        "--eval_every 50 --wing_path w.ckpt --num_workers 1 --val_batch_size 32 --sample_dir s "
                        "--checkpoint_dir c --eval_dir e --result_dir r --lm_path l.npz")
    assert (config.seed, config.log_every, config.sample_every, config.checkpoint_every, config.metrics,
            config.metrics_every) == (1, 20, 30, 40, ["fid", "lpips"], 50)
    model = config.model
    assert {key: getattr(model, key) for key in (
        "resolution", "num_domains", "latent_dim", "style_dim", "lambda_reg", "lambda_cyc", "lambda_sty",
        "lambda_ds", "ds_iter", "w_hpf", "randcrop_prob", "steps", "batch_size", "lr", "f_lr", "betas",
        "weight_decay", "wing_weights")} == {
        "resolution": 128, "num_domains": 4, "latent_dim": 8, "style_dim": 32, "lambda_reg": 2.0, "lambda_cyc": 3.0,
        "lambda_sty": 4.0, "lambda_ds": 5.0, "ds_iter": 600, "w_hpf": 1.0, "randcrop_prob": 0.25, "steps": 700,
        "batch_size": 4, "lr": 2e-4, "f_lr": 3e-6, "betas": [0.5, 0.9], "weight_decay": 0.0,
        "wing_weights": "w.ckpt"}
    unset = translated(tmp_path, "--mode train").model  # main.py's defaults
    assert (unset.resolution, unset.num_domains, unset.w_hpf, unset.steps, unset.wing_weights) == (
        256, 2, 1.0, 100000, None)


@pytest.mark.parametrize(("flags", "message"), [
    ("", "--mode None: a config is a training command"),
    ("--mode sample", "--mode 'sample': .* use `ganforge translate RUN`"),
    ("--mode eval", "--mode .eval.: .* use `ganforge evaluate RUN`"),
    ("--mode train --resume_iter 5000", "--resume_iter 5000: resume by training the same ganforge run"),
    ("--mode train --hidden_dim 256", "--hidden_dim 256: the official code ignores it"),
    ("--mode train --num_outs_per_domain 5", "--num_outs_per_domain 5: .* num_outs=N"),
    ("--mode train --val_batch_size 16", "--val_batch_size 16: .* evaluates in batches of 32"),
    ("--mode train --w_hpf 0 --wing_path w.ckpt", "--wing_path does nothing with --w_hpf 0"),
    ("--mode train --lambda_sytle 1", "'--lambda_sytle' is not a flag of StarGAN v2's main.py \\(did you mean "
                                      "--lambda_sty"),
    ("--mode train --img_size big", "--img_size 'big': expected a int"),
])
def test_what_ganforge_cannot_train_is_an_error_naming_the_flag(tmp_path, flags, message):
    with pytest.raises(ConfigError, match=f"train.sh: {message}"):
        translated(tmp_path, flags)


def test_a_command_of_another_script_is_refused(tmp_path):
    path = tmp_path / "train.sh"
    path.write_text("python train.py --shuffle\n")
    with pytest.raises(ConfigError, match="expected StarGAN v2's `python main.py --mode train ...`, found 'train.py'"):
        resolve_run_config("stargan2", read_config_file(path), [(["data"], "store")])


@pytest.mark.slow
def test_a_tiny_command_trains_from_the_command_line(tmp_path):
    command = script(tmp_path, "--mode train --img_size 32 --num_domains 4 --w_hpf 0 --latent_dim 8 --style_dim 16 "
                     "--batch_size 2 --total_iters 4 --ds_iter 4 --print_every 2 --sample_every 4 --save_every 4 "
                     "--seed 5 --train_img_dir data/shapes/train --val_img_dir data/shapes/val")
    run = tmp_path / "run"
    assert main(["train", "stargan2", "-c", str(command), "--data", "builtin:shapes?count=32&resolution=32",
                 "--run-dir", str(run), "--set", "metrics=[]", "--set", "model.base_dim=8", "--set",
                 "model.max_conv_dim=16", "--set", "model.mapping_dim=16", "--set", "progress=false"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert all(np.isfinite(r["G_latent_adv"]) and np.isfinite(r["D_ref_reg"]) for r in log)
    saved = json.loads((run / "config.json").read_text())
    assert (saved["seed"], saved["model"]["steps"], saved["model"]["num_domains"]) == (5, 4, 4)
    assert sorted(p.name for p in (run / "checkpoints").glob("*.safetensors")) == ["00000004.safetensors"]


def test_the_flag_table_is_main_pys_parser():
    official = argparse_options(next(reference_checkout("stargan-v2").rglob("main.py")))
    assert {name: (option["kind"], option["default"]) for name, option in official.items()} == _MAIN_FLAGS
