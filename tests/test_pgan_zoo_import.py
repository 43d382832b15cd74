"""Import of pytorch_GAN_zoo PGAN checkpoints: byte-level fidelity with the zoo's outputs and safe loading."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import types
import urllib.request
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import shared_path
from safetensors.torch import load_file

from ganforge.interop.pgan_zoo import (
    ZOO_HUB_CHECKPOINTS,
    ZooCheckpoint,
    ZooDownloadError,
    ZooHubFile,
    ZooImportError,
    convert_zoo_state,
    fetch_zoo_hub,
    import_pgan_zoo,
    read_zoo_checkpoint,
    zoo_alpha,
    zoo_arch,
    zoo_scale,
)
from ganforge.models.pgan import PGANDiscriminator, PGANGenerator


def zoo_file(name: str) -> Path:
    return shared_path("fixtures", "official", "pgan_zoo", name)


@pytest.fixture(scope="module")
def io_tensors() -> dict[str, torch.Tensor]:
    return load_file(zoo_file("small_io.safetensors"))


@pytest.fixture(scope="module")
def ckpt_s3() -> ZooCheckpoint:
    return read_zoo_checkpoint(zoo_file("small_s3_i100.pt"))


@pytest.fixture(scope="module")
def ckpt_s1() -> ZooCheckpoint:
    return read_zoo_checkpoint(zoo_file("small_s1_i32.pt"))


def build(ckpt: ZooCheckpoint, **arch_kwargs: bool) -> tuple[PGANGenerator, PGANGenerator, PGANDiscriminator]:
    arch = zoo_arch(ckpt, **arch_kwargs)
    state = convert_zoo_state(ckpt)
    nets = (PGANGenerator(arch), PGANGenerator(arch), PGANDiscriminator(arch))
    for net, key in zip(nets, ("G", "G_ema", "D"), strict=True):
        net.load_state_dict(state[key], strict=True)
        net.eval()
    return nets


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def check_outputs(ckpt: ZooCheckpoint, io_tensors: dict, prefix: str, **arch_kwargs: bool) -> None:
    g, g_ema, d = build(ckpt, **arch_kwargs)
    scale = zoo_scale(ckpt)
    with torch.no_grad():
        for tag, alpha in (("a0", 0.0), ("a05", 0.5)):
            close(g(io_tensors["z"], scale, alpha), io_tensors[f"{prefix}netG_out_{tag}"])
            close(g_ema(io_tensors["z"], scale, alpha), io_tensors[f"{prefix}avgG_out_{tag}"])
            # D is fed the stored images so errors do not compound.
            for src, key in (("real", "x_real"), ("netG", f"netG_out_{tag}"), ("avgG", f"avgG_out_{tag}")):
                out, features = d(io_tensors[prefix + key], scale, alpha, return_features=True)
                close(out, io_tensors[f"{prefix}netD_out_{src}_{tag}"])
                close(features, io_tensors[f"{prefix}netD_feat_{src}_{tag}"])


def test_reads_config_as_plain_data(ckpt_s3: ZooCheckpoint) -> None:
    meta = json.loads(zoo_file("meta.json").read_text())
    assert ckpt_s3.config == meta["checkpoint"]["config_attributes"]
    assert set(ckpt_s3.netG) == {key.replace(".module.", ".") for key in meta["checkpoint"]["netG"]}
    assert ckpt_s3.avgG is not None and set(ckpt_s3.avgG) == set(ckpt_s3.netG)
    assert zoo_scale(ckpt_s3) == 3 and zoo_alpha(ckpt_s3) == 0.0
    arch = zoo_arch(ckpt_s3)
    assert (arch.resolution, arch.widths, arch.latent_dim, arch.variant) == (32, [32, 32, 32, 16], 32, "zoo")
    assert not arch.zoo_skip_first_d_fade


def test_s1_arch(ckpt_s1: ZooCheckpoint) -> None:
    assert zoo_scale(ckpt_s1) == 1
    arch = zoo_arch(ckpt_s1, reproduce_d_fade_quirk=True)
    assert (arch.resolution, arch.widths, arch.zoo_skip_first_d_fade) == (8, [32, 32], True)


def test_scale3_reproduces_zoo_outputs(ckpt_s3: ZooCheckpoint, io_tensors: dict, resampling_route: str) -> None:
    check_outputs(ckpt_s3, io_tensors, "")


def test_mbstd_edge_cases_match_zoo(ckpt_s3: ZooCheckpoint, io_tensors: dict) -> None:
    _, _, d = build(ckpt_s3)
    with torch.no_grad():
        for tag, count in (("real6", 6), ("real1", 1)):
            out, features = d(io_tensors["x_real"][:count], 3, 0.0, return_features=True)
            close(out, io_tensors[f"netD_out_{tag}_a0"])
            close(features, io_tensors[f"netD_feat_{tag}_a0"])


def test_scale1_reproduces_zoo_outputs_with_quirk(ckpt_s1: ZooCheckpoint, io_tensors: dict) -> None:
    check_outputs(ckpt_s1, io_tensors, "s1_", reproduce_d_fade_quirk=True)


def test_scale1_fixed_d_fades_where_zoo_does_not(ckpt_s1: ZooCheckpoint, io_tensors: dict) -> None:
    _, _, d = build(ckpt_s1)
    x = io_tensors["s1_x_real"]
    with torch.no_grad():
        close(d(x, 1, 0.0), io_tensors["s1_netD_out_real_a0"])
        faded = d(x, 1, 0.5)
    assert (faded - io_tensors["s1_netD_out_real_a05"]).abs().max() > 1e-2


def test_ema_and_g_differ_as_in_zoo(ckpt_s3: ZooCheckpoint) -> None:
    state = convert_zoo_state(ckpt_s3)
    assert set(state) == {"G", "D", "G_ema"}
    diff = max((state["G"][k] - state["G_ema"][k]).abs().max().item() for k in state["G"])
    assert diff == pytest.approx(0.1527538299560547)
    assert torch.equal(state["D"]["blocks.0.dense1.weight"], ckpt_s3.netD["decisionLayer.weight"])
    assert torch.equal(state["G"]["blocks.3.conv1.bias"], ckpt_s3.netG["scaleLayers.2.1.bias"])


@pytest.fixture
def fake_zoo_config_class(monkeypatch: pytest.MonkeyPatch) -> type:
    """A class pickled under the zoo's name, so tests can write zoo-style files without the zoo."""
    module = types.ModuleType("models.utils.config")

    class BaseConfig:
        pass

    BaseConfig.__module__ = "models.utils.config"
    BaseConfig.__qualname__ = "BaseConfig"
    module.BaseConfig = BaseConfig
    for name in ("models", "models.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "models.utils.config", module)
    return BaseConfig


def test_legacy_format_and_keys_with_or_without_module(
    ckpt_s3: ZooCheckpoint, fake_zoo_config_class: type, tmp_path: Path
) -> None:
    config = fake_zoo_config_class()
    vars(config).update(ckpt_s3.config)
    net_d_with_module = {
        key.rsplit(".", 1)[0] + ".module." + key.rsplit(".", 1)[1]: value
        for key, value in ckpt_s3.netD.items()
    }
    path = tmp_path / "legacy_s3.pt"
    torch.save(
        {"config": config, "netG": ckpt_s3.netG, "netD": net_d_with_module},
        path,
        _use_new_zipfile_serialization=False,
    )
    assert not zipfile.is_zipfile(path)  # really the legacy (pre-1.6) format
    legacy = read_zoo_checkpoint(path)
    assert legacy.config == ckpt_s3.config and legacy.avgG is None
    assert all(torch.equal(legacy.netD[k], ckpt_s3.netD[k]) for k in ckpt_s3.netD)
    state = convert_zoo_state(legacy)
    assert all(torch.equal(state["G_ema"][k], state["G"][k]) for k in state["G"])  # no avgG: EMA starts at G


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"config": _Evil(marker), "netG": {}, "netD": {}}, path, _use_new_zipfile_serialization=zip_format
    )
    with pytest.raises(ZooImportError, match=r"evil\.pt: refused .*system"):
        read_zoo_checkpoint(path)
    assert not marker.exists()


def test_not_a_zoo_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ZooImportError, match=r"plain\.pt: expected a dict with keys config, netG"):
        read_zoo_checkpoint(path)
    with pytest.raises(ZooImportError, match="not found"):
        read_zoo_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ZooImportError, match=r"garbage\.pt: refused"):
        read_zoo_checkpoint(garbage)


def acgan_checkpoint(ckpt: ZooCheckpoint, classes: list[str]) -> ZooCheckpoint:
    """`ckpt` as the zoo saves an AC-GAN: the one-hot classes widen G's input and D's decision layer."""
    config = {**ckpt.config, "attribKeysOrder": {"Main": {"order": 0, "values": classes}},
              "categoryVectorDim": len(classes), "latentVectorDim": ckpt.config["noiseVectorDim"] + len(classes)}
    widened = {}
    for role, key, dim in (("netG", "formatLayer.weight", 1), ("avgG", "formatLayer.weight", 1),
                           ("netD", "decisionLayer.weight", 0), ("netD", "decisionLayer.bias", 0)):
        state = widened.setdefault(role, dict(getattr(ckpt, role)))
        extra = list(state[key].shape)
        extra[dim] = len(classes)
        state[key] = torch.cat([state[key], torch.randn(extra)], dim)
    return dataclasses.replace(ckpt, config=config, **widened)


def test_acgan_checkpoints_import_with_the_stores_classes_by_name(ckpt_s3: ZooCheckpoint, tmp_path: Path) -> None:
    """A class-folder AC-GAN (the zoo's attribute "Main", as its DTD model) imports onto a store prepared from the
    same folders: the store orders classes its own way, so G's one-hot inputs and D's class rows are reordered."""
    from ganforge.data.store import write_store
    from ganforge.run_loader import load_run

    zoo_classes = ["striped", "banded", "dotted"]  # the zoo's os.listdir order
    acgan = acgan_checkpoint(ckpt_s3, zoo_classes)
    arch = zoo_arch(acgan)
    assert arch.label_sizes == [3] and arch.latent_dim == 32  # the noise; latentVectorDim adds the classes
    states = convert_zoo_state(acgan)
    G, D = PGANGenerator(arch), PGANDiscriminator(arch)
    G.load_state_dict(states["G"])
    D.load_state_dict(states["D"])
    path = tmp_path / "acgan_s3_i100.pt"
    torch.save({"config": acgan.config, "netG": acgan.netG, "netD": acgan.netD, "avgG": acgan.avgG}, path)
    with pytest.raises(ZooImportError, match=r"an AC-GAN checkpoint; --data must name a store whose label columns "
                                             r"hold its classes \(Main: 3 classes \(striped, banded, dotted"):
        import_pgan_zoo(path, tmp_path / "nodata")
    images, labels = np.zeros((3, 3, 32, 32), dtype=np.uint8), np.array([[0], [1], [2]])
    store = write_store(tmp_path / "store", images, resolution=32, source="test", labels=labels,
                        label_columns=[("class", ["banded", "dotted", "striped"])])
    run = import_pgan_zoo(path, tmp_path / "run", data=str(store))
    model = load_run(run)
    assert model.config.model.conditions == ["class"] and model.config.model.condition_weight_d == 0.0
    z = torch.randn(3, 32)
    for store_class, name in enumerate(["banded", "dotted", "striped"]):
        expected = G(z, 3, 0.0, torch.full((3, 1), zoo_classes.index(name)))
        ours = model.family.nets["G"](z, 3, 0.0, torch.full((3, 1), store_class))
        assert torch.allclose(ours, expected, rtol=0, atol=1e-5)  # classes permuted: G sums its inputs in another order
        # the zoo's criterion reads class j's logit at output column j (from its score column on): as imported,
        # D's logit of store class k is that column of the zoo class of the same name
        zoo_output = torch.cat(D(expected, 3, return_label_logits=True), dim=1)
        score, logits = model.family.nets["D"](expected, 3, return_label_logits=True)
        columns = [zoo_classes.index(n) for n in ["banded", "dotted", "striped"]]
        assert torch.allclose(logits, zoo_output[:, columns], rtol=0, atol=1e-5)
        assert torch.equal(score, zoo_output[:, :1])
    other = write_store(tmp_path / "other", images, resolution=32, source="test", labels=labels,
                        label_columns=[("class", ["banded", "dotted", "woven"])])
    with pytest.raises(ZooImportError, match=r"the store .* has no label column with the classes of the checkpoint's "
                                             r"attribute 'Main'.*its columns: \{'class': 3\}"):
        import_pgan_zoo(path, tmp_path / "run2", data=str(other))
    mismatched = dataclasses.replace(acgan, config={**acgan.config, "categoryVectorDim": 47})
    with pytest.raises(ZooImportError, match=r"'categoryVectorDim' = 47 but 'attribKeysOrder' lists 3 classes"):
        zoo_arch(mismatched)


def test_unsupported_configs_are_named(ckpt_s3: ZooCheckpoint) -> None:
    acgan = dataclasses.replace(ckpt_s3, config={**ckpt_s3.config, "categoryVectorDim": 47})
    with pytest.raises(ZooImportError, match=r"'categoryVectorDim' = 47 but 'attribKeysOrder' lists 0 classes"):
        zoo_arch(acgan)
    no_mbstd = dataclasses.replace(ckpt_s3, config={**ckpt_s3.config, "miniBatchStdDev": False})
    with pytest.raises(ZooImportError, match="'miniBatchStdDev' = False"):
        zoo_arch(no_mbstd)
    wrong_widths = dataclasses.replace(ckpt_s3, config={**ckpt_s3.config, "depthOtherScales": [32, 32, 8]})
    with pytest.raises(ZooImportError, match=r"'scaleLayers\.2\.0\.weight' has shape \(16, 32, 3, 3\)"):
        convert_zoo_state(wrong_widths)
    stray = dataclasses.replace(ckpt_s3, netG={**ckpt_s3.netG, "extra.weight": torch.zeros(1)})
    with pytest.raises(ZooImportError, match="unexpected key 'extra.weight'"):
        convert_zoo_state(stray)
    partial = dict(ckpt_s3.netD)
    del partial["decisionLayer.bias"]
    with pytest.raises(ZooImportError, match=r"netD: missing tensors for \['blocks\.0\.dense1\.bias'\]"):
        convert_zoo_state(dataclasses.replace(ckpt_s3, netD=partial))
    with pytest.raises(ZooImportError, match="'alpha' must be in"):
        zoo_alpha(dataclasses.replace(ckpt_s3, config={**ckpt_s3.config, "alpha": 2.0}))


def test_hub_constant_records_fixture_list() -> None:
    meta = json.loads(zoo_file("meta.json").read_text())
    pgan = [entry for entry in meta["hub_checkpoints"]["files"] if entry["family"] == "PGAN"]
    assert len(ZOO_HUB_CHECKPOINTS) == len(pgan)
    for entry in pgan:
        hub = ZOO_HUB_CHECKPOINTS[entry["hub_model_name"]]
        assert (hub.file, hub.url, hub.resolution) == (entry["file"], entry["url"], entry["resolution"])
        assert entry["file"].endswith(f"-{hub.sha256_prefix}.pth")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> bytes:
    content = b"zoo checkpoint bytes"
    prefix = hashlib.sha256(content).hexdigest()[:8]
    entry = ZooHubFile(f"fake-{prefix}.pth", f"https://example.invalid/fake-{prefix}.pth", prefix, 8)
    monkeypatch.setitem(ZOO_HUB_CHECKPOINTS, "fake", entry)
    return content


def test_fetch_offline_names_file_url_and_destination(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def offline(*_args: object, **_kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    entry = ZOO_HUB_CHECKPOINTS["celeba"]
    with pytest.raises(ZooDownloadError) as info:
        fetch_zoo_hub("celeba", tmp_path / "hub")
    message = str(info.value)
    assert entry.file in message and entry.url in message and str(tmp_path / "hub" / entry.file) in message
    assert list((tmp_path / "hub").iterdir()) == []
    with pytest.raises(ValueError, match="unknown zoo hub checkpoint 'nope'"):
        fetch_zoo_hub("nope", tmp_path)


def test_fetch_downloads_and_verifies(
    fake_hub: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *_a, **_k: io.BytesIO(fake_hub))
    path = fetch_zoo_hub("fake", tmp_path)
    assert path.read_bytes() == fake_hub and path.name == ZOO_HUB_CHECKPOINTS["fake"].file
    monkeypatch.setattr(urllib.request, "urlopen", lambda *_a, **_k: io.BytesIO(b"tampered"))
    path.unlink()
    with pytest.raises(ZooDownloadError, match="does not start with"):
        fetch_zoo_hub("fake", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_copies_verified_local_file(fake_hub: bytes, tmp_path: Path) -> None:
    local = tmp_path / "downloaded.pth"
    local.write_bytes(fake_hub)
    path = fetch_zoo_hub("fake", tmp_path / "hub", local_path=local)
    assert path.read_bytes() == fake_hub
    local.write_bytes(b"wrong file")
    with pytest.raises(ZooDownloadError, match=r"downloaded\.pth: sha256 .* does not start with"):
        fetch_zoo_hub("fake", tmp_path / "other", local_path=local)


def test_fetch_reuses_verified_file_and_rejects_a_wrong_one(
    fake_hub: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_network(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("must not download when a verified copy is already there")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    existing = tmp_path / ZOO_HUB_CHECKPOINTS["fake"].file
    existing.write_bytes(fake_hub)
    assert fetch_zoo_hub("fake", tmp_path) == existing
    existing.write_bytes(b"half a download")
    with pytest.raises(ZooDownloadError, match=rf"{existing.name}: sha256 .* does not start with"):
        fetch_zoo_hub("fake", tmp_path)


def test_a_store_of_other_channels_is_refused_in_one_line(tmp_path: Path) -> None:
    """The zoo's RGB networks and a grey store (MNIST): a one-line refusal naming both, not a state-dict traceback."""
    from ganforge.data.store import write_store
    from ganforge.interop.pgan_zoo import import_pgan_zoo

    grey = write_store(tmp_path / "grey", np.zeros((4, 1, 32, 32), dtype=np.uint8), resolution=32, channels=1,
                       source="test")
    with pytest.raises(ZooImportError, match=r"small_s3_i100\.pt: the checkpoint's networks make 3-channel images, "
                                             r"and .*grey holds 1-channel ones"):
        import_pgan_zoo(zoo_file("small_s3_i100.pt"), tmp_path / "run", data=str(grey))
    assert not (tmp_path / "run").exists()


def test_a_set_that_changes_the_networks_shapes_is_refused_naming_it(tmp_path: Path) -> None:
    """--set model.latent_dim=16 on import failed deep in load_state_dict with a size-mismatch traceback."""
    from ganforge.interop.pgan_zoo import import_pgan_zoo

    with pytest.raises(ZooImportError, match=r"small_s3_i100\.pt: the networks' shapes are the checkpoint's, and --set "
                                             r"changes model.latent_dim 16 \(the checkpoint's: \d+\); leave that "
                                             r"setting out"):
        import_pgan_zoo(zoo_file("small_s3_i100.pt"), tmp_path / "run", overrides=[(["model", "latent_dim"], 16)])
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_without_its_train_config_keeps_its_own_fade(tmp_path: Path, ckpt_s3: ZooCheckpoint,
                                                                  io_tensors: dict) -> None:
    """Alone, small_s3_i100.pt (alpha 0) was placed where the zoo's default fade still ran (alpha 0.995): its
    images were 4.45 off the zoo's. Now a finished fade keeps the run's fade finished, a fade the schedule does not
    reproduce is refused, torch.hub's `-<hash>` names keep their iteration, and a train config beside the file
    that cannot be read is named."""
    from ganforge.run_loader import load_run

    alone = tmp_path / "alone" / "small_s3_i100.pt"
    alone.parent.mkdir()
    alone.write_bytes(zoo_file("small_s3_i100.pt").read_bytes())
    model = load_run(import_pgan_zoo(alone, tmp_path / "run"))
    assert model.plan.progress["alpha"] == 0.0 and model.step == 48000 + 2 * 96000 + 100
    torch.testing.assert_close(model.generate(io_tensors["z"], raw=True), io_tensors["avgG_out_a0"], atol=1e-5,
                               rtol=1e-5)
    fading = tmp_path / "fading" / "small_s3_i100.pt"
    fading.parent.mkdir()
    torch.save({"config": {**ckpt_s3.config, "alpha": 0.5}, "netG": ckpt_s3.netG, "netD": ckpt_s3.netD,
                "avgG": ckpt_s3.avgG}, fading)
    with pytest.raises(ZooImportError, match=r"small_s3_i100.pt: the checkpoint fades its new scale by alpha 0.5, "
                                             r"and the zoo's default schedule \(no small_train_config.json beside "
                                             r"it\) puts iteration 100 of scale 3 at alpha 0.995"):
        import_pgan_zoo(fading, tmp_path / "fading_run")
    assert not (tmp_path / "fading_run").exists()
    hub = tmp_path / "hub" / "small_s3_i100-6196db68.pth"
    hub.parent.mkdir()
    hub.write_bytes(alone.read_bytes())
    config = json.loads(zoo_file("small_train_config.json").read_text())
    (hub.parent / "small_train_config.json").write_text(json.dumps(config))
    assert load_run(import_pgan_zoo(hub, tmp_path / "hub_run")).step == 180  # iteration 100 of scale 3, as unhashed
    (hub.parent / "small_train_config.json").write_text(json.dumps({**config, "alphaJumpMode": "custom"}))
    with pytest.raises(ZooImportError, match=r"hub/small_train_config.json: .*alphaJumpMode.* \(the zoo's train "
                                             r"config beside small_s3_i100-6196db68.pth"):
        import_pgan_zoo(hub, tmp_path / "hub_run2")


def test_an_import_that_fails_writing_leaves_nothing_and_can_be_run_again(tmp_path: Path, monkeypatch) -> None:
    """A full disk while writing the checkpoint left config.json and an empty checkpoints/ in the output folder,
    which then refused the retry as not empty; the error named no file."""
    from ganforge.training import checkpoint

    real_write = checkpoint._write_atomic

    def disk_full(path: Path, data: bytes) -> None:
        if path.suffix == ".safetensors":
            raise OSError(28, "No space left on device")
        real_write(path, data)

    out = tmp_path / "run"
    out.mkdir()  # made empty beforehand: allowed, and kept (its permissions too)
    out.chmod(0o750)
    monkeypatch.setattr(checkpoint, "_write_atomic", disk_full)
    with pytest.raises(checkpoint.CheckpointError, match=rf"could not write the run {out}: No space left on device"):
        import_pgan_zoo(zoo_file("small_s3_i100.pt"), out)
    assert out.is_dir() and not any(out.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    new = tmp_path / "new" / "run"
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device"):
        import_pgan_zoo(zoo_file("small_s3_i100.pt"), new)
    assert not new.exists() and not any(new.parent.iterdir())
    monkeypatch.setattr(checkpoint, "_write_atomic", real_write)
    assert checkpoint.checkpoint_steps(import_pgan_zoo(zoo_file("small_s3_i100.pt"), out)) == [180]
    assert out.stat().st_mode & 0o777 == 0o750 and sorted(p.name for p in out.iterdir()) == ["checkpoints",
                                                                                              "config.json"]
    assert checkpoint.checkpoint_steps(import_pgan_zoo(zoo_file("small_s3_i100.pt"), new)) == [180]
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)  # a symlinked output folder is written through, as before
    import_pgan_zoo(zoo_file("small_s3_i100.pt"), tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and checkpoint.checkpoint_steps(target) == [180]
    (tmp_path / "new" / "here").mkdir()
    monkeypatch.chdir(tmp_path / "new" / "here")
    import_pgan_zoo(zoo_file("small_s3_i100.pt"), ".")  # `-o .`
    assert checkpoint.checkpoint_steps(tmp_path / "new" / "here") == [180]


def test_an_import_killed_into_an_empty_folder_can_be_run_again(tmp_path: Path) -> None:
    """The run is built in a hidden folder inside a given folder (its file system); one a kill left behind made the
    folder "not empty" for every retry. The retry removes it."""
    from ganforge.training import checkpoint

    out = tmp_path / "here"
    (out / ".run.4242-1.partial" / "checkpoints").mkdir(parents=True)  # as a SIGKILL mid-write of `-o .` leaves it
    assert checkpoint.checkpoint_steps(import_pgan_zoo(zoo_file("small_s3_i100.pt"), out)) == [180]
    assert sorted(path.name for path in out.iterdir()) == ["checkpoints", "config.json"]
