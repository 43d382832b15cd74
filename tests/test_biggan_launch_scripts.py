"""`ganforge train biggan -c launch_X.sh`: a BigGAN-PyTorch launch script's train.py command read as a config.

The flags below are the official scripts' settings (hyper-parameters), written out as commands; where the official
checkout is at hand (GANFORGE_REFS), the translation's table of train.py's flags is checked against the official
argument parser itself, and every official launch script is translated.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_LAUNCH_FLAGS as CIFAR
from conftest import argparse_options, reference_checkout, write_launch_script

from ganforge.cli import _warning_line, main
from ganforge.config import ConfigError, python_command_line, read_config_file, to_dict
from ganforge.data.store import open_dataset, write_store
from ganforge.distributed import DistInfo
from ganforge.families import resolve_run_config
from ganforge.families.biggan import BigGANConfig, BigGANFamily
from ganforge.families.biggan_flags import _DESTINATIONS, _TRAIN_FLAGS, BigGANFlagsError
from ganforge.models.biggan import Discriminator

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def script(tmp_path: Path, flags: str, name: str = "launch.sh") -> Path:
    return write_launch_script(tmp_path / name, flags)


def translated(tmp_path: Path, flags: str, *overrides: tuple[list[str], object]):
    return resolve_run_config("biggan", read_config_file(script(tmp_path, flags)), [(["data"], "store"), *overrides])


def test_a_script_is_read_as_its_one_python_command(tmp_path):
    words = read_config_file(script(tmp_path, "--batch_size 50 --G_attn 0"))["command_line"]
    assert words == {"file": str(tmp_path / "launch.sh"), "words": ["train.py", "--batch_size", "50", "--G_attn", "0"]}
    assert python_command_line("python -u ./train.py --x 'a b'  # note\r\n", "s") == ["./train.py", "--x", "a b"]
    with pytest.raises(ConfigError, match="s: expected one `python SCRIPT.py"):
        python_command_line("echo hi\n", "s")
    with pytest.raises(ConfigError, match="found 2"):
        python_command_line("python train.py\npython sample.py\n", "s")
    with pytest.raises(ConfigError, match="'\\$BS': shell variables"):
        python_command_line("python train.py --batch_size $BS", "s")


def test_the_cifar_script_is_the_cifar_preset(tmp_path):
    ours = to_dict(translated(tmp_path, CIFAR))
    preset = to_dict(resolve_run_config("biggan", read_config_file(CONFIGS / "biggan_cifar10.yaml"),
                                        [(["data"], "store")]))
    # the preset's deliberate choices: FID ranks the best copies (the README's advice off ImageNet), a log line per
    # 100 iterations, and the length as 125,000 iterations where the script says 500 epochs (the same on CIFAR-10)
    assert {key: (ours[key], preset[key]) for key in ours if key != "model" and ours[key] != preset[key]} == {
        "best_metric": ("is_mean", "fid"), "log_every": (50, 100)}
    assert {key: (ours["model"][key], preset["model"][key]) for key in ours["model"]
            if ours["model"][key] != preset["model"][key]} == {"steps": (None, 125000), "epochs": (500, None)}


def every_flag(tmp_path: Path):
    return translated(tmp_path, "--model BigGANdeep --dataset I64_hdf5 --shuffle --G_ch 32 --D_ch 16 --G_depth 1 "
                        "--D_depth 3 --G_shared --shared_dim 64 --hier --dim_z 96 --G_attn 32 --D_attn 16_32 "
                        "--G_init xavier --D_init N02 --num_G_SVs 2 --num_D_SVs 2 --num_G_SV_itrs 3 "
                        "--num_D_SV_itrs 3 --SN_eps 1e-6 --BN_eps 1e-4 --G_lr 1e-4 --D_lr=4e-4 --G_B1 0.5 --D_B1 0.5 "
                        "--G_B2 0.9 --D_B2 0.9 --adam_eps 1e-6 --batch_size 32 --G_batch_size 64 "
                        "--num_G_accumulations 2 --num_D_accumulations 3 --num_D_steps 2 --G_ortho 1e-4 "
                        "--D_ortho 1e-5 --ema --use_ema --ema_decay 0.999 --ema_start 7 --G_eval_mode "
                        "--accumulate_stats --num_standing_accumulations 8 --cross_replica --num_epochs 3 --seed 5 "
                        "--test_every 300 --save_every 200 --num_save_copies 4 --num_best_copies 3 --which_best FID "
                        "--num_inception_images 10000 --no_fid --which_best IS --num_workers 2 --load_in_mem "
                        "--use_multiepoch_sampler --D_thin --G_nl inplace_relu --D_nl ir --pbar tqdm "
                        "--name_suffix x --z_var 2.0")


def test_every_flag_reaches_its_setting(tmp_path):
    with pytest.warns(UserWarning, match="issue #44"):
        config = every_flag(tmp_path)
    assert (config.seed, config.metrics, config.metrics_every, config.metrics_n, config.best_metric,
            config.keep_best, config.checkpoint_every, config.sample_every, config.keep_checkpoints) == (
        5, ["is"], 300, 10000, "is_mean", 3, 200, 200, 4)
    model = config.model
    assert {key: getattr(model, key) for key in (
        "resolution", "n_classes", "deep", "g_depth", "d_depth", "g_ch", "d_ch", "g_shared", "shared_dim", "hier",
        "latent_dim", "g_attention", "d_attention", "g_init", "d_init", "num_svs", "num_sv_itrs", "sn_eps", "bn_eps",
        "g_lr", "d_lr", "betas", "adam_eps", "batch_size", "g_batch_size", "num_g_accumulations",
        "num_d_accumulations", "num_d_steps", "g_ortho", "d_ortho", "ema", "ema_decay", "ema_start",
        "sample_eval_mode", "standing_stats", "sync_bn", "epochs", "steps", "d_wide")} == {
        "resolution": 64, "n_classes": 1000, "deep": True, "g_depth": 1, "d_depth": 3, "g_ch": 32, "d_ch": 16,
        "g_shared": True, "shared_dim": 64, "hier": True, "latent_dim": 96, "g_attention": [32],
        "d_attention": [16, 32], "g_init": "xavier", "d_init": "N02", "num_svs": 2, "num_sv_itrs": 3, "sn_eps": 1e-6,
        "bn_eps": 1e-4, "g_lr": 1e-4, "d_lr": 4e-4, "betas": [0.5, 0.9], "adam_eps": 1e-6, "batch_size": 32,
        "g_batch_size": 64, "num_g_accumulations": 2, "num_d_accumulations": 3, "num_d_steps": 2, "g_ortho": 1e-4,
        "d_ortho": 1e-5, "ema": True, "ema_decay": 0.999, "ema_start": 7, "sample_eval_mode": True,
        "standing_stats": 8, "sync_bn": True, "epochs": 3, "steps": None,
        "d_wide": True}  # BigGANdeep.py ignores --D_thin


def test_a_thin_d_is_biggan_pys_thin_d(tmp_path):
    """launch_SNGAN.sh's --D_thin: D's blocks keep their input width inside; 30,005,013 parameters at 128 px with
    ch 64 and no attention, as BigGAN.py's Discriminator(D_wide=False) counts them (39,443,137 wide)."""
    model = translated(tmp_path, "--shuffle --D_thin --G_attn 0 --D_attn 0 --G_init xavier --D_init xavier").model
    assert model.d_wide is False
    with torch.device("meta"):
        count = sum(p.numel() for p in Discriminator(model.arch(128, 1000)).parameters())
        model.d_wide = True
        wide = sum(p.numel() for p in Discriminator(model.arch(128, 1000)).parameters())
    assert (count, wide) == (30_005_013, 39_443_137)


def test_unset_flags_take_train_pys_defaults(tmp_path):
    model = translated(tmp_path, "--shuffle").model  # the parser's defaults, not the ImageNet preset's
    assert (model.resolution, model.g_ch, model.latent_dim, model.g_lr, model.num_d_steps, model.batch_size,
            model.sn_eps, model.adam_eps, model.g_shared, model.hier, model.ema, model.sample_eval_mode,
            model.epochs) == (128, 64, 128, 5e-5, 2, 64, 1e-8, 1e-8, False, False, False, False, 100)


def test_standing_statistics_sample_in_eval_mode_without_g_eval_mode(tmp_path):
    """utils.accumulate_standing_stats ends with net.eval(), so train.py samples and evaluates with them whether or
    not --G_eval_mode is given (a translated script without it was refused by the config's own check)."""
    model = translated(tmp_path, "--shuffle --dataset C10 --ema --use_ema --accumulate_stats").model
    assert (model.standing_stats, model.sample_eval_mode) == (16, True)


@pytest.mark.parametrize(("flags", "message"), [
    ("", "no --shuffle: train.py would read the data in file order, class by class"),
    ("--shuffle --G_fp16", "--G_fp16 True: set `amp: bf16`"),
    ("--shuffle --split_D", "--split_D True"),
    ("--shuffle --resume", "--resume True: resume by training the same ganforge run"),
    ("--shuffle --augment --dataset C10", "--augment: ganforge's biggan family has no random crops"),
    ("--shuffle --dataset C10_hdf5", "--dataset 'C10_hdf5': expected one of train.py's I32, I64"),
    ("--shuffle --num_best_copies 0", "--num_best_copies 0: train.py divides by it"),
    ("--shuffle --which_train_fn dummy", "--which_train_fn 'dummy'"),
    ("--shuffle --ema", "--ema without --use_ema"),
    ("--shuffle --use_ema", "--use_ema does nothing without --ema"),
    ("--shuffle --ema_start 10", "--ema_start does nothing without --ema"),
    ("--shuffle --num_standing_accumulations 4", "does nothing without --accumulate_stats"),
    ("--shuffle --no_fid --which_best FID", "no FID is computed to rank by"),
    ("--shuffle --which_best LPIPS", "expected IS or FID"),
    ("--shuffle --dataset TI64", "--dataset 'TI64': expected one of"),
    ("--shuffle --G_chh 32", "'--G_chh' is not a flag of BigGAN-PyTorch's train.py \\(did you mean --G_ch"),
    ("--shuffle --G_ch", "--G_ch needs a value"),
    ("--shuffle --G_ch wide", "--G_ch 'wide': expected a int"),
    ("--shuffle --hier=1", "--hier is a switch and takes no value"),
    ("--shuffle --G_param ortho", "G_param/D_param other than 'SN'"),
    ("--shuffle --D_B1 0.5", "Adam betas differ"),
    ("--shuffle --norm_style in", "'norm_style' = 'in'"),
])
def test_what_ganforge_cannot_train_is_an_error_naming_the_flag(tmp_path, flags, message):
    with pytest.raises(BigGANFlagsError, match=f"launch.sh: .*{message}"):
        translated(tmp_path, flags)


def test_what_does_nothing_in_train_py_is_accepted_and_what_it_computes_is_kept(tmp_path):
    """train.py's own semantics: the multi-epoch sampler shuffles without --shuffle; HDF5 sets take no --augment;
    --load_weights is read only with --resume; G's batch is max(G_batch_size, batch_size); the latest weights are
    always written, so --num_save_copies 0 still keeps one checkpoint."""
    with pytest.warns(UserWarning, match="launch.sh: with --use_multiepoch_sampler train.py runs 100² epochs .* this "
                                         "run trains 100 epochs"):
        config = translated(tmp_path, "--use_multiepoch_sampler --augment --load_weights best0 --batch_size 64 "
                            "--G_batch_size 32 --num_save_copies 0")
    assert (config.keep_checkpoints, config.model.g_batch_size, config.model.epochs) == (1, None, 100)
    assert translated(tmp_path, "--shuffle --batch_size 64 --G_batch_size 128").model.g_batch_size == 128


def test_a_script_needs_a_store_and_the_biggan_family(tmp_path):
    raw = read_config_file(script(tmp_path, CIFAR))
    with pytest.raises(ConfigError, match="data: .*launch.sh names the reference's own dataset files; give a store"):
        resolve_run_config("biggan", raw)
    with pytest.raises(ConfigError, match="launch.sh: a shell script is a config for pgan .*wgan-gp reads JSON"):
        resolve_run_config("wgan-gp", raw, [(["data"], "store")])
    path = tmp_path / "sample.sh"
    path.write_text("python sample.py --shuffle\n")
    with pytest.raises(BigGANFlagsError, match="expected BigGAN-PyTorch's `python train.py ...`, found 'sample.py'"):
        resolve_run_config("biggan", read_config_file(path), [(["data"], "store")])


def labelled_store(path: Path, count: int, classes: int = 10) -> Path:
    images = np.random.default_rng(0).integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    labels = (np.arange(count) % classes).reshape(-1, 1).astype(np.int64)
    return write_store(path, images, resolution=32, source="test", labels=labels,
                       label_columns=[("class", [f"c{i}" for i in range(classes)])])


def test_epochs_count_iterations_as_train_py(tmp_path):
    """An iteration reads batch × D steps × D accumulations real images; each epoch's partial last load is dropped."""
    store = open_dataset(labelled_store(tmp_path / "store", 50))
    config = BigGANConfig(g_ch=4, d_ch=4, latent_dim=8, shared_dim=0, g_shared=False, hier=False, g_attention=[],
                          d_attention=[], batch_size=2, num_d_steps=2, num_d_accumulations=3, epochs=5)
    family = BigGANFamily(config, store, torch.device("cpu"), DistInfo())
    assert family.total_steps() == 5 * (50 // 12)
    assert family.lengthening_override() == "model.epochs=10"
    config.batch_size = 20
    with pytest.raises(ConfigError, match="model.epochs: an iteration reads 120 real images .* holds 50"):
        BigGANFamily(config, store, torch.device("cpu"), DistInfo()).total_steps()
    assert BigGANConfig().steps == 150000 and BigGANConfig(epochs=2).steps is None
    with pytest.raises(ConfigError, match="model.steps \\(10\\) and model.epochs \\(2\\) both set"):
        BigGANConfig(steps=10, epochs=2)
    with pytest.raises(ConfigError, match="model.epochs: expected a positive integer"):
        BigGANConfig(epochs=0)
    saved = to_dict(BigGANConfig(epochs=2))
    assert BigGANFamily.extends_schedule(saved, {**saved, "epochs": 3})
    assert not BigGANFamily.extends_schedule(saved, {**saved, "epochs": 1})
    assert not BigGANFamily.extends_schedule(saved, {**saved, "epochs": 3, "g_lr": 1.0})
    assert not BigGANFamily.extends_schedule(saved, {**saved, "epochs": None, "steps": 100})
    by_steps = to_dict(BigGANConfig(steps=4))
    assert BigGANFamily.extends_schedule(by_steps, {**by_steps, "steps": 8})


@pytest.mark.slow
def test_a_tiny_launch_script_trains_and_resumes_from_the_command_line(tmp_path, capsys):
    store = labelled_store(tmp_path / "cifar", 48)
    launch = script(tmp_path, "--shuffle --batch_size 4 --num_D_steps 2 --num_D_accumulations 1 --num_epochs 2 "
                    "--dataset C10 --G_ch 4 --D_ch 4 --dim_z 8 --G_attn 0 --D_attn 0 --G_init N02 --D_init N02 "
                    "--G_lr 2e-4 --D_lr 2e-4 --ema --use_ema --ema_start 2 --save_every 6 --test_every 1000 "
                    "--num_save_copies 1 --seed 3")
    run = tmp_path / "run"
    common = ["train", "biggan", "-c", str(launch), "--data", str(store), "--run-dir", str(run), "--set",
              "metrics=[]", "--set", "best_metric=null", "--set", "log_every=6"]
    assert main([*common, "--until", "6"]) == 0
    assert main(common) == 0  # resumes from the saved config
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r.get("event") for r in log] == [None, "resume", None]
    log = [r for r in log if "event" not in r]
    assert [r["step"] for r in log] == [6, 12]  # 2 epochs × ⌊48 / (4 × 2)⌋ iterations
    assert all({"loss_D_real", "loss_D_fake", "loss_G"} <= set(r) and np.isfinite(r["loss_G"]) for r in log)
    saved = json.loads((run / "config.json").read_text())
    assert (saved["seed"], saved["keep_checkpoints"], saved["model"]["epochs"], saved["model"]["ema_start"]) == (
        3, 1, 2, 2)
    assert sorted(p.name for p in (run / "checkpoints").glob("*.safetensors")) == ["00000012.safetensors"]
    capsys.readouterr()
    assert main(common) == 0
    said = "".join(capsys.readouterr())
    assert "already finished at step 12" in said and "--set model.epochs=4" in said


# --- against the official checkout (GANFORGE_REFS) ---------------------------------------------------------------

def test_the_flag_table_is_train_pys_parser():
    official = argparse_options(next(reference_checkout("BigGAN-PyTorch").rglob("utils.py")), "prepare_parser")
    assert {name: (option["kind"], option["default"]) for name, option in official.items()} == _TRAIN_FLAGS
    assert {name: option["dest"] for name, option in official.items() if option["dest"] != name} == _DESTINATIONS


def test_every_official_launch_script_translates():
    scripts = sorted(reference_checkout("BigGAN-PyTorch").rglob("scripts/launch_*.sh"))
    if not scripts:
        pytest.skip("needs the BigGAN-PyTorch checkout's scripts/*.sh in GANFORGE_REFS (benchmarks/README.md says how)")
    presets = {"launch_cifar_ema.sh": "biggan_cifar10.yaml", "launch_BigGAN_bs256x8.sh":
               "biggan_imagenet128_bs256x8.yaml", "launch_BigGAN_deep.sh": "biggan_deep_imagenet128.yaml"}
    translated = {}
    for path in scripts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            translated[path.name] = to_dict(resolve_run_config("biggan", read_config_file(path), [(["data"], "x")]))
        # the ImageNet scripts use the multi-epoch sampler, whose num_epochs² epochs the translation says it cuts;
        # every script runs DataParallel without cross-replica BN, whose per-GPU batch norm it explains
        text, said = path.read_text(), [str(warning.message) for warning in caught]
        assert any("issue #44" in line for line in said) == ("--use_multiepoch_sampler" in text), path.name
        assert any("--parallel without --cross_replica" in line for line in said) == (
            "--parallel" in text and "--cross_replica" not in text), path.name
        assert len(said) == sum(("--use_multiepoch_sampler" in text, "--parallel" in text)), path.name
    assert set(presets) <= set(translated) and len(translated) == 7
    for name, preset_file in presets.items():
        ours = translated[name]
        preset = to_dict(resolve_run_config("biggan", read_config_file(CONFIGS / preset_file), [(["data"], "x")]))
        # the presets' deliberate choices: the official README's lengths in steps, FID for the best copies (its
        # advice off ImageNet), a log line per 100 iterations
        assert {key for key in ours["model"] if ours["model"][key] != preset["model"][key]} == {"steps", "epochs"}
        assert {key for key in ours if key != "model" and ours[key] != preset[key]} <= {
            "best_metric", "log_every", "sample_every"}, name
    sngan = translated["launch_SNGAN.sh"]["model"]
    assert (sngan["num_d_steps"], sngan["betas"], sngan["ema"], sngan["g_shared"]) == (5, [0.0, 0.9], False, False)


def test_info_describes_a_script_without_data(tmp_path, capsys):
    """The deep script's networks (launch_BigGAN_deep.sh's parameter counts) from the script alone."""
    deep = script(tmp_path, "--model BigGANdeep --dataset I128_hdf5 --shuffle --batch_size 256 --num_G_accumulations 8 "
                  "--num_D_accumulations 8 --num_D_steps 1 --G_lr 1e-4 --D_lr 4e-4 --G_attn 64 --D_attn 64 --G_ch 128 "
                  "--D_ch 128 --G_depth 2 --D_depth 2 --SN_eps 1e-6 --adam_eps 1e-6 --G_shared --G_init ortho "
                  "--D_init ortho --hier --dim_z 128 --shared_dim 128 --ema --use_ema --ema_start 20000 "
                  "--G_eval_mode --use_multiepoch_sampler")
    formatwarning = warnings.formatwarning
    with pytest.warns(UserWarning, match="issue #44"):
        assert main(["info", "biggan", "-c", str(deep)]) == 0
    assert warnings.formatwarning is formatwarning  # the CLI's one-line form of warnings is its own, not left behind
    assert _warning_line(UserWarning("x y"), UserWarning, "biggan_flags.py", 9) == "ganforge: warning: x y\n"
    said = capsys.readouterr().out
    assert "G            50,244,484 parameters" in said and "D            34,590,210 parameters" in said
    assert "classes: 1000" in said and "effective_batch: 2048" in said



def test_only_rank_zero_repeats_a_scripts_warnings(tmp_path, monkeypatch, capsys):
    """Under torchrun every rank translates the same script: its warnings come from rank 0 alone, not W times."""
    launch = script(tmp_path, "--dataset C10 --shuffle --parallel")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning from ganforge on rank 1 would fail the command
        assert main(["info", "biggan", "-c", str(launch)]) == 0
    monkeypatch.setenv("RANK", "0")
    with pytest.warns(UserWarning, match="--parallel without --cross_replica"):
        assert main(["info", "biggan", "-c", str(launch)]) == 0
    capsys.readouterr()


def test_dataparallel_without_cross_replica_batch_norm_is_explained(tmp_path):
    """Every launch script runs DataParallel: each GPU normalises G's batch norm over its share of the batch, which
    one process does not; torchrun with a process per GPU does. With --cross_replica the whole batch is normalised."""
    import warnings

    with pytest.warns(UserWarning, match="launch.sh: --parallel without --cross_replica: .* each GPU's share of the "
                                         "batch .* train under torchrun with one process per GPU it had"):
        assert translated(tmp_path, "--shuffle --parallel").model.sync_bn is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert translated(tmp_path, "--shuffle --parallel --cross_replica").model.sync_bn is True
        assert translated(tmp_path, "--shuffle").model.sync_bn is False
