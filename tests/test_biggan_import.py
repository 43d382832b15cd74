"""BigGAN-PyTorch import: official outputs reproduced, legacy format, optimiser state, safety and clear errors."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import shared_path
from safetensors.torch import load_file

import ganforge
from ganforge.data.store import write_store
from ganforge.families.biggan_flags import BigGANFlagsError, config_from_official
from ganforge.interop.biggan import (
    BigGANImportError,
    OfficialBigGAN,
    import_biggan_pytorch,
    load_biggan_pytorch,
    load_restricted,
    read_training_state,
)
from ganforge.models.biggan import BigGANArch

CONFIGS = ["c32", "r64", "i128"]


def _close(got: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def fixture_dir(cfg: str) -> Path:
    return shared_path("fixtures", "official", "biggan", cfg)


@functools.cache
def _io(cfg: str) -> dict[str, torch.Tensor]:
    return load_file(fixture_dir(cfg) / "io.safetensors")


@functools.cache
def _imported(cfg: str) -> OfficialBigGAN:
    """One import per config for the whole module; tests that change state work on a deep copy."""
    return load_biggan_pytorch(fixture_dir(cfg))


def _our_buffer_key(key: str) -> str:
    return key.replace("stored_mean", "running_mean").replace("stored_var", "running_var")


@pytest.mark.parametrize("cfg", CONFIGS)
def test_eval_outputs_match_official(cfg, resampling_route):
    imported = _imported(cfg)
    io = _io(cfg)
    assert not imported.G.training and not imported.D.training
    with torch.no_grad():
        for name, generator in (("G", imported.G), ("G_ema", imported.G_ema)):
            if f"{name}.shared_y" in io:
                _close(generator.embed(io["y"]), io[f"{name}.shared_y"])
            _close(generator(io["z"], io["y"]), io[f"{name}.eval.out"])
        _close(imported.D(io["G.eval.out"], io["y"]), io["D.eval.fake"])
        _close(imported.D(io["G_ema.eval.out"], io["y"]), io["D.eval.fake_ema"])
        _close(imported.D(io["x_real"], io["y_real"]), io["D.eval.real"])


@pytest.mark.parametrize("cfg", CONFIGS)
def test_train_mode_outputs_and_buffer_updates_match_official(cfg, resampling_route):
    imported = _imported(cfg)
    io = _io(cfg)
    generator, discriminator = copy.deepcopy(imported.G).train(), copy.deepcopy(imported.D).train()
    with torch.no_grad():
        _close(generator(io["z"], io["y"]), io["G.train.out"])
        _close(discriminator(torch.cat([io["G.eval.out"], io["x_real"]]), torch.cat([io["y"], io["y_real"]])),
               io["D.train.out"])
    for net, role in ((generator, "G"), (discriminator, "D")):
        state = net.state_dict()
        prefix = f"{role}.train.buffers_after."
        after = {_our_buffer_key(k[len(prefix):]): v for k, v in io.items() if k.startswith(prefix)}
        assert set(after) == {name for name, _ in net.named_buffers()}
        for key, value in after.items():
            _close(state[key], value)


def test_legacy_format_reads_through_the_restricted_route(tmp_path):
    source = fixture_dir("c32")
    legacy = source / "legacy_format" / "G_ema.pth"
    with legacy.open("rb") as handle:
        assert handle.read(2) != b"PK"  # not a zip: the pre-1.6 torch.save format
    zipped, old = load_restricted(source / "G_ema.pth"), load_restricted(legacy)
    assert list(old) == list(zipped)
    for key in zipped:
        assert torch.equal(old[key], zipped[key]), key
    for name in ("G.pth", "D.pth", "state_dict.pth"):
        (tmp_path / name).symlink_to(source / name)
    (tmp_path / "G_ema.pth").symlink_to(legacy)
    imported = load_biggan_pytorch(tmp_path)
    with torch.no_grad():
        _close(imported.G_ema(_io("c32")["z"], _io("c32")["y"]), _io("c32")["G_ema.eval.out"])


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {self.target}",))


def test_a_released_state_dict_in_the_legacy_format_with_its_activation_modules_imports(tmp_path):
    """The 2019 releases' state_dict.pth is a pre-1.6 file whose config pickles nn.ReLU by its class's persistent
    id, which torch's weights-only reader refuses ("Only persistent_load of storage"); it reads through restricted
    globals (the stand-in class for ReLU), and a file that also names anything else is still refused unrun."""
    source = fixture_dir("c32")
    state = read_training_state(source / "state_dict.pth")
    official = {**state, "config": {**state["config"], "G_activation": torch.nn.ReLU(),
                                    "D_activation": torch.nn.ReLU(inplace=True)}}
    for name in ("G.pth", "D.pth", "G_ema.pth"):
        (tmp_path / name).symlink_to(source / name)
    torch.save(official, tmp_path / "state_dict.pth", _use_new_zipfile_serialization=False)
    assert read_training_state(tmp_path / "state_dict.pth") == state
    imported = load_biggan_pytorch(tmp_path)
    with torch.no_grad():
        _close(imported.G_ema(_io("c32")["z"], _io("c32")["y"]), _io("c32")["G_ema.eval.out"])
    marker = tmp_path / "pwned"
    for evil in ({"config": {"act": torch.nn.ReLU()}, "itr": _Evil(marker)},
                 {"itr": _Evil(marker), "config": {"act": torch.nn.ReLU()}}):
        torch.save(evil, tmp_path / "state_dict.pth", _use_new_zipfile_serialization=False)
        with pytest.raises(BigGANImportError, match=r"state_dict.pth: refused .*(system|GLOBAL)"):
            read_training_state(tmp_path / "state_dict.pth")
        assert not marker.exists()


def test_training_state_and_flags():
    state = read_training_state(fixture_dir("c32") / "state_dict.pth")
    assert state["itr"] == 2 and state["epoch"] == 0 and state["best_FID"] == 999999
    assert state["config"]["G_activation"] == "ReLU"  # the pickled nn.ReLU became inert data
    config = config_from_official(state["config"])
    assert config == BigGANArch(resolution=32, n_classes=10, g_ch=8, d_ch=8, dim_z=128, g_shared=False,
                                  shared_dim=0, hier=False, g_attention=(), d_attention=(), g_init="N02",
                                  d_init="N02", g_sn=config.g_sn, d_sn=config.d_sn)
    assert config.g_sn.eps == 1e-8 and config.d_sn.num_itrs == 1


def test_optimizer_state_reindexed_to_our_parameters():
    imported = _imported("c32")
    official = torch.load(fixture_dir("c32") / "G_optim.pth", weights_only=True)
    official_names = [k for k in load_restricted(fixture_dir("c32") / "G.pth")
                      if not k.endswith(("u0", "sv0", "stored_mean", "stored_var"))]
    converted = imported.optimizer_states["G"]
    params = dict(imported.G.named_parameters())
    ours = list(params)
    for official_index, name in enumerate(official_names):
        mine = converted["state"][ours.index(name)]
        assert torch.equal(mine["exp_avg"], official["state"][official_index]["exp_avg"]), name
        assert mine["exp_avg"].shape == params[name].shape
    optimizer = torch.optim.Adam(imported.G.parameters())
    optimizer.load_state_dict(converted)
    assert optimizer.param_groups[0]["lr"] == 2e-4 and optimizer.param_groups[0]["eps"] == 1e-8
    assert set(imported.optimizer_states) == {"G", "D"}


class _CreatesFile:
    """Unpickling this object would call open(path, 'w'), i.e. run code and create a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("name", ["G.pth", "state_dict.pth"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, name):
    marker = tmp_path / "pwned.txt"
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save({"itr": _CreatesFile(marker)}, weights / name)
    with pytest.raises(BigGANImportError, match=f"{name}.*refused"):
        load_biggan_pytorch(weights, config=BigGANArch(resolution=32, n_classes=2, g_ch=4, d_ch=4,
                                                         g_attention=(), d_attention=()))
    assert not marker.exists()


def _tiny_official_folder(tmp_path: Path, g_state: dict) -> Path:
    weights = tmp_path / "weights"
    weights.mkdir(parents=True)
    torch.save(g_state, weights / "G.pth")
    (weights / "D.pth").symlink_to(fixture_dir("c32") / "D.pth")
    (weights / "state_dict.pth").symlink_to(fixture_dir("c32") / "state_dict.pth")
    return weights


def test_missing_and_misshapen_keys_are_named(tmp_path):
    state = load_restricted(fixture_dir("c32") / "G.pth")
    del state["blocks.1.0.bn2.gain.weight"]
    with pytest.raises(BigGANImportError, match=r"G\.pth: missing tensors \['blocks\.1\.0\.bn2\.gain\.weight'\]"):
        load_biggan_pytorch(_tiny_official_folder(tmp_path / "a", state))
    state = load_restricted(fixture_dir("c32") / "G.pth")
    state["linear.weight"] = state["linear.weight"][:, :5]
    with pytest.raises(BigGANImportError, match=r"'linear\.weight' has shape \(512, 5\)"):
        load_biggan_pytorch(_tiny_official_folder(tmp_path / "b", state))
    state = load_restricted(fixture_dir("c32") / "G.pth")
    state["blocks.0.0.extra"] = torch.zeros(1)
    with pytest.raises(BigGANImportError, match="unexpected key 'blocks.0.0.extra'"):
        load_biggan_pytorch(_tiny_official_folder(tmp_path / "c", state))


def test_dataparallel_prefix_is_dropped(tmp_path):
    state = {f"module.{k}": v for k, v in load_restricted(fixture_dir("c32") / "G.pth").items()}
    imported = load_biggan_pytorch(_tiny_official_folder(tmp_path, state))
    assert imported.G_ema is None
    with torch.no_grad():
        _close(imported.G(_io("c32")["z"], _io("c32")["y"]), _io("c32")["G.eval.out"])


def test_folder_and_config_errors(tmp_path):
    with pytest.raises(BigGANImportError, match="not found"):
        load_biggan_pytorch(tmp_path / "absent")
    with pytest.raises(BigGANImportError, match=r"no state_dict.pth with the run's flags \(BigGAN-PyTorch saves it "
                                                r"beside G.pth: copy it into the folder"):
        load_biggan_pytorch(tmp_path)
    (tmp_path / "G.pth").write_bytes(b"x")
    with pytest.raises(BigGANImportError, match=rf"G.pth: a file; give the BigGAN-PyTorch weights folder that holds "
                                                rf"it .*: {tmp_path}$"):
        load_biggan_pytorch(tmp_path / "G.pth")
    torch.save({"itr": "abc", "config": {}}, tmp_path / "state_dict.pth")
    with pytest.raises(BigGANImportError, match=r"state_dict.pth: 'itr' must be the iteration count \(an integer\), "
                                                "got 'abc'"):
        read_training_state(tmp_path / "state_dict.pth")
    flags = read_training_state(fixture_dir("i128") / "state_dict.pth")["config"]
    with pytest.raises(BigGANFlagsError, match="'model' = 'StyleGAN'; expected 'BigGAN' or 'BigGANdeep'"):
        config_from_official({**flags, "model": "StyleGAN"})
    deep = config_from_official({**flags, "model": "BigGANdeep", "G_depth": 3, "D_depth": 1})
    assert (deep.deep, deep.g_depth, deep.d_depth, deep.g_dim_z) == (True, 3, 1, flags["dim_z"])  # no z chunks
    assert not config_from_official({**flags, "G_depth": 3}).deep  # BigGAN.py ignores the depth flags
    with pytest.raises(BigGANFlagsError, match="'mybn' = True"):
        config_from_official({**flags, "mybn": True})
    with pytest.raises(BigGANFlagsError, match="'G_init' = 'kaiming'"):
        config_from_official({**flags, "G_init": "kaiming"})
    with pytest.raises(BigGANFlagsError, match="'G_attn' = 'x'"):
        config_from_official({**flags, "G_attn": "x"})
    assert config_from_official({**flags, "G_attn": "4_64"}).g_attention == (64,)  # 4 is no G stage: ignored
    without_size = {k: v for k, v in flags.items() if k not in ("resolution", "n_classes")}
    assert config_from_official(without_size).n_classes == 1000  # I128_hdf5 → ImageNet


def _ten_class_store(tmp_path: Path) -> str:
    """16 labelled 32×32 images over 10 classes: new data of the c32 checkpoint's class count."""
    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    labels = (np.arange(16) % 10)[:, None].astype(np.int64)
    write_store(tmp_path / "ten", images, resolution=32, source="random", labels=labels,
                label_columns=[("class", [f"c{i}" for i in range(10)])])
    return str(tmp_path / "ten")


@pytest.mark.slow
def test_import_as_run_then_resume_and_fine_tune(tmp_path):
    data, run = _ten_class_store(tmp_path), tmp_path / "run"
    recipe = {"steps": 3, "batch_size": 4, "num_d_steps": 1, "g_lr": 1e-5}
    import_biggan_pytorch(fixture_dir("c32"), run, data=data, overrides=[(["model", k], v) for k, v in recipe.items()])
    config = json.loads((run / "config.json").read_text())
    # the fixture run's flags (its warm-up used EMA from iteration 0 at decay 0.9)
    assert config["model"]["ema_start"] == 0 and config["model"]["ema_decay"] == 0.9
    assert config["model"]["g_init"] == "N02" and config["model"]["g_lr"] == 1e-5
    assert config["model"]["sn_eps"] == 1e-8 and config["model"]["num_d_steps"] == 1
    loaded = ganforge.load(run)
    assert loaded.step == 2  # the official iteration
    io = _io("c32")
    with torch.no_grad():
        _close(loaded.nets["G_ema"](io["z"], io["y"]), io["G_ema.eval.out"])
        _close(loaded.nets["D"](io["x_real"], io["y_real"]), io["D.eval.real"])
    before = _imported("c32")
    result = ganforge.train(run / "config.json", run)  # resumes from the imported checkpoint: one more iteration
    assert result.step == 3 and not result.interrupted
    tuned = ganforge.load(run)
    assert not torch.equal(tuned.nets["G"].linear.weight, before.G.linear.weight)
    optimizer_state = safetensors.torch.load_file(str(run / "checkpoints" / "00000003.safetensors"))
    assert any(key.startswith("opt/G/") for key in optimizer_state)


def test_import_refuses_data_with_another_class_count(tmp_path):
    with pytest.raises(BigGANImportError, match="must have 10 classes"):
        import_biggan_pytorch(fixture_dir("c32"), tmp_path / "run", data="builtin:shapes?count=16&resolution=32",
                              overrides=[(["model", "batch_size"], 4)])
