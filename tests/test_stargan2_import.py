"""Import of official StarGAN v2 checkpoints: exact outputs on the reference fixtures, safe loading, clear errors."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import shared_path
from PIL import Image
from safetensors.torch import load_file

from ganforge.data.prepare import prepare_folder
from ganforge.families import resolve_run_config
from ganforge.interop.stargan2 import (
    ImportedStarGAN2,
    StarGAN2ImportError,
    convert_official_stargan2,
    import_stargan2_run,
    infer_stargan2_arch,
    load_official_stargan2,
    read_official_stargan2,
)
from ganforge.models.stargan2 import StarGAN2Arch
from ganforge.nn.stargan_layers import laplacian_kernel
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer

ATOL = 1e-5


def assert_matches_official(ours: torch.Tensor, official: torch.Tensor, name: str = "") -> None:
    """Within 1e-5 of the official output, relative to its largest magnitude (the fixture README allows 1e-5 relative
    on G's images): CPU kernels sum in another order (AVX-512 against AVX2: up to 5e-5 on images reaching 10)."""
    torch.testing.assert_close(ours, official, atol=ATOL * max(1.0, float(official.abs().max())), rtol=0, msg=name)
SMALL = StarGAN2Arch(img_size=128, num_domains=3, max_conv_dim=16, w_hpf=0.0)
TINY = StarGAN2Arch(img_size=32, num_domains=3, latent_dim=4, style_dim=8, max_conv_dim=16, w_hpf=1.0,
                    base_dim=4, mapping_dim=8)
NETS = ("generator", "mapping_network", "style_encoder", "discriminator")


def fixture(name: str) -> Path:
    return shared_path("fixtures", "official", "stargan_v2", name)


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(fixture("small_io.safetensors"))


@pytest.fixture(scope="module")
def small() -> ImportedStarGAN2:
    return load_official_stargan2([fixture("small_nets_ema.ckpt"), fixture("small_nets_discriminator.ckpt")],
                                  require="GFED")


@pytest.fixture(scope="module")
def hpf_generator() -> ImportedStarGAN2:
    return load_official_stargan2(fixture("small_hpf_nets_ema_generator.ckpt"))


def official_states(arch: StarGAN2Arch, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts laid out as the official code writes them (with hpf.filter for a high-pass generator)."""
    torch.manual_seed(seed)
    states = {name: dict(getattr(arch, name)().state_dict()) for name in NETS}
    if arch.w_hpf > 0:
        states["generator"]["hpf.filter"] = laplacian_kernel(arch.w_hpf)
    return states


def save(obj: object, path: Path, *, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.slow
def test_small_networks_reproduce_every_official_output(small: ImportedStarGAN2, io: dict,
                                                          resampling_route: str) -> None:
    G, F, E, D = (small.nets[role] for role in "GFED")
    assert small.arch == SMALL and small.skipped == []
    with torch.no_grad():
        ref_features = E.shared(io["x_ref"]).flatten(1)  # the all-domain columns come from every head at once
        ours = {
            "s_latent": F(io["z"], io["y_trg"]),
            "s_latent_all_domains": torch.stack([head(F.shared(io["z"])) for head in F.unshared], 1),
            "s_ref": E(io["x_ref"], io["y_trg"]),
            "s_ref_all_domains": torch.stack([head(ref_features) for head in E.unshared], 1),
            "s_src": E(io["x_real"], io["y_org"]),
            "x_fake_latent": G(io["x_real"], io["s_latent"]),
            "x_fake_ref": G(io["x_real"], io["s_ref"]),
            "d_real": D(io["x_real"], io["y_org"]),
            "d_real_all_domains": D.main(io["x_real"]).flatten(1),
            "d_fake_latent": D(io["x_fake_latent"], io["y_trg"]),
        }
    for name, value in ours.items():
        assert_matches_official(value, io[name], name)


def test_every_tensor_maps_exactly(small: ImportedStarGAN2, hpf_generator: ImportedStarGAN2) -> None:
    """Output checks cannot see most generator conv biases (an IN follows them), so compare tensor by tensor."""
    official, _ = read_official_stargan2(fixture("small_nets_ema.ckpt"))
    official.update(read_official_stargan2(fixture("small_nets_discriminator.ckpt"))[0])
    roles = {"generator": "G", "mapping_network": "F", "style_encoder": "E", "discriminator": "D"}
    for name, state in official.items():
        ours = small.nets[roles[name]].state_dict()
        assert ours.keys() == state.keys(), name
        assert all(torch.equal(ours[key], state[key]) for key in state), name
    hpf_state = read_official_stargan2(fixture("small_hpf_nets_ema_generator.ckpt"))[0]["generator"]
    assert torch.equal(hpf_state.pop("hpf.filter"), hpf_generator.nets["G"].hpf.filter)
    ours = hpf_generator.nets["G"].state_dict()
    assert ours.keys() == hpf_state.keys() and all(torch.equal(ours[k], hpf_state[k]) for k in hpf_state)


@pytest.mark.slow
def test_high_pass_generator_reproduces_official_outputs(hpf_generator: ImportedStarGAN2, tmp_path: Path,
                                                         io: dict) -> None:
    """Also as the released CelebA-HQ file: without the hpf.filter buffer and in the legacy torch format."""
    assert set(hpf_generator.nets) == {"G"} and hpf_generator.arch.w_hpf == 1.0
    state = torch.load(fixture("small_hpf_nets_ema_generator.ckpt"), map_location="cpu", weights_only=True)
    del state["generator"]["hpf.filter"]
    released = load_official_stargan2(save(state, tmp_path / "100000_nets_ema.ckpt", legacy=True))
    assert released.arch == hpf_generator.arch
    torch.testing.assert_close(released.nets["G"].hpf.filter, laplacian_kernel(1.0))
    with torch.no_grad():
        no_mask = hpf_generator.nets["G"](io["x_real"], io["s_latent"])
        masked = released.nets["G"](io["x_real"], io["s_latent"], (io["masks_0_coarse"], io["masks_1_fine"]))
    assert_matches_official(no_mask, io["hpf_x_fake_latent_nomask"])
    assert_matches_official(masked, io["hpf_x_fake_latent_masks"])


def test_w_hpf_comes_from_the_filter_or_the_caller(tmp_path: Path) -> None:
    states = official_states(TINY)
    states["generator"]["hpf.filter"] = laplacian_kernel(2.0)
    imported = load_official_stargan2(save(states, tmp_path / "w2.ckpt"))
    assert imported.arch.w_hpf == 2.0
    torch.testing.assert_close(imported.nets["G"].hpf.filter, laplacian_kernel(2.0))
    assert imported.arch == replace(TINY, w_hpf=2.0)
    with pytest.raises(StarGAN2ImportError, match=r"w2\.ckpt: 'hpf\.filter' implies w_hpf=2.0, but w_hpf=1.0"):
        load_official_stargan2(tmp_path / "w2.ckpt", w_hpf=1.0)
    del states["generator"]["hpf.filter"]
    assert load_official_stargan2(save(states, tmp_path / "nofilter.ckpt"), w_hpf=3.0).arch.w_hpf == 3.0
    assert load_official_stargan2(tmp_path / "nofilter.ckpt").arch.w_hpf == 1.0  # the CelebA-HQ value
    states["generator"]["hpf.filter"] = torch.ones(3, 3)
    with pytest.raises(StarGAN2ImportError, match=r"bad\.ckpt: 'hpf\.filter' is not a 3×3 Laplacian"):
        load_official_stargan2(save(states, tmp_path / "bad.ckpt"))


def test_no_high_pass_generator_rejects_w_hpf_and_filter(tmp_path: Path) -> None:
    arch = replace(TINY, w_hpf=0.0)
    states = official_states(arch)
    path = save(states, tmp_path / "afhq.ckpt")
    assert load_official_stargan2(path).arch == arch
    with pytest.raises(StarGAN2ImportError, match="w_hpf=1.0 was given but the file has no high-pass generator"):
        load_official_stargan2(path, w_hpf=1.0)
    states["generator"]["hpf.filter"] = laplacian_kernel(1.0)
    with pytest.raises(StarGAN2ImportError, match="'hpf.filter' but the encoder depth of w_hpf = 0"):
        load_official_stargan2(save(states, tmp_path / "odd.ckpt"))


def test_bare_and_data_parallel_state_dicts(tmp_path: Path) -> None:
    states = official_states(TINY)
    for name in ("mapping_network", "style_encoder", "discriminator"):
        path = save(states[name], tmp_path / f"{name}.pt")
        assert read_official_stargan2(path)[0].keys() == {name}
    wrapped = {name: {f"module.{k}": v for k, v in state.items()} for name, state in states.items()}
    imported = load_official_stargan2(save(wrapped, tmp_path / "dp.ckpt"))
    assert imported.arch == TINY
    assert torch.equal(imported.nets["D"].state_dict()["main.0.weight"], states["discriminator"]["main.0.weight"])


def test_fan_is_skipped_and_reported(tmp_path: Path) -> None:
    states = official_states(TINY)
    states["fan"] = {"conv1.weight": torch.zeros(2)}
    imported = load_official_stargan2(save(states, tmp_path / "nets_ema.ckpt"))
    assert imported.skipped == ["fan"] and set(imported.nets) == {"G", "F", "E", "D"}


def test_wrong_shapes_and_keys_name_the_file_and_key(tmp_path: Path) -> None:
    states = official_states(TINY)
    states["discriminator"]["main.1.conv1.weight"] = torch.zeros(4, 4, 5, 5)
    with pytest.raises(StarGAN2ImportError, match=r"shape\.ckpt discriminator: 'main\.1\.conv1\.weight' has "
                                                  r"shape \(4, 4, 5, 5\), .* expects \(4, 4, 3, 3\)"):
        load_official_stargan2(save(states, tmp_path / "shape.ckpt"))
    states = official_states(TINY)
    del states["style_encoder"]["shared.1.conv1.bias"]
    with pytest.raises(StarGAN2ImportError, match=r"missing\.ckpt style_encoder: missing tensors "
                                                  r"\['shared\.1\.conv1\.bias'\]"):
        load_official_stargan2(save(states, tmp_path / "missing.ckpt"))
    states = official_states(TINY)
    states["mapping_network"]["extra.weight"] = torch.zeros(1)
    with pytest.raises(StarGAN2ImportError, match=r"mapping_network: unexpected keys \['extra\.weight'\]"):
        load_official_stargan2(save(states, tmp_path / "extra.ckpt"))


def test_networks_disagreeing_on_the_architecture(tmp_path: Path) -> None:
    states = official_states(TINY)
    states["discriminator"] = official_states(replace(TINY, num_domains=2))["discriminator"]
    with pytest.raises(StarGAN2ImportError, match=r"num_domains is 3 in mapping_network but 2 in discriminator"):
        load_official_stargan2(save(states, tmp_path / "mixed.ckpt"))


def test_missing_and_duplicate_networks(tmp_path: Path) -> None:
    states = official_states(TINY)
    ema = save({k: states[k] for k in NETS[:3]}, tmp_path / "nets_ema.ckpt")
    with pytest.raises(StarGAN2ImportError, match=r"nets_ema\.ckpt: missing networks \['discriminator'\]"):
        load_official_stargan2(ema, require="GFED")
    disc = save({"discriminator": states["discriminator"]}, tmp_path / "disc.ckpt")
    assert set(load_official_stargan2([ema, disc], require="GFED").nets) == {"G", "F", "E", "D"}
    with pytest.raises(StarGAN2ImportError, match=r"nets_ema\.ckpt: 'generator' is also in .*nets_ema\.ckpt"):
        load_official_stargan2([ema, ema])


@pytest.mark.parametrize(("content", "message"), [
    ({"generator": {"state": {}, "param_groups": []}}, "optimiser state"),
    ({"solver": {}}, "unexpected entry 'solver'"),
    ({"generator": {"from_rgb.weight": [1.0]}}, r"'generator\.from_rgb\.weight' must be a tensor, got list"),
    ({"generator": [1]}, "'generator' must be a state dict, got list"),
    ({"fan": {}}, "holds no StarGAN v2 network"),
    ({"conv.weight": torch.zeros(1)}, "not of a StarGAN v2 network"),
    ([torch.zeros(1)], "expected a dict of state dicts, got list"),
])
def test_not_a_stargan2_file(tmp_path: Path, content: object, message: str) -> None:
    path = save(content, tmp_path / "other.ckpt")
    with pytest.raises(StarGAN2ImportError, match=rf"other\.ckpt.*{message}"):
        read_official_stargan2(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(StarGAN2ImportError, match=r"not found: .*absent\.ckpt"):
        read_official_stargan2(tmp_path / "absent.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a torch file")
    with pytest.raises(StarGAN2ImportError, match=r"junk\.ckpt: refused to load"):
        read_official_stargan2(tmp_path / "junk.ckpt")


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = save({"generator": {"from_rgb.weight": _Evil(marker)}}, tmp_path / "evil_nets_ema.ckpt", legacy=legacy)
    with pytest.raises(StarGAN2ImportError, match=r"evil_nets_ema\.ckpt: refused .*system"):
        load_official_stargan2(path)
    assert not marker.exists()


def test_infer_and_convert_directly() -> None:
    states = official_states(TINY)
    arch = infer_stargan2_arch(states)
    assert arch == TINY
    converted = convert_official_stargan2(states, arch)
    assert set(converted) == {"G", "F", "E", "D"} and "hpf.filter" not in converted["G"]
    generator_only = {"generator": SMALL.generator().state_dict()}
    assert infer_stargan2_arch(generator_only).img_size == 128  # from the official width 2^14 / 128
    with pytest.raises(StarGAN2ImportError, match="not 2\\^14 / img_size"):
        infer_stargan2_arch({"generator": {**states["generator"], "from_rgb.weight": torch.zeros(3, 3, 3, 3)}})


# --- official files → a ganforge run ------------------------------------------------------------------------------

def domain_store(tmp_path: Path, domains: int, resolution: int = 128) -> str:
    """A tiny prepared store with one class folder per domain (two flat-colour images each)."""
    src = tmp_path / f"src{domains}"
    for k in range(domains):
        (src / f"d{k}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (resolution, resolution), (40 * k, 80 * i, 120)).save(src / f"d{k}" / f"{i}.png")
    return str(prepare_folder(src, tmp_path / f"store{domains}", resolution=resolution, workers=1))


@pytest.mark.slow
def test_official_files_become_a_resumable_run(tmp_path: Path) -> None:
    ema_file = tmp_path / "000250_nets_ema.ckpt"
    ema_file.write_bytes(fixture("small_nets_ema.ckpt").read_bytes())
    disc_file = fixture("small_nets_discriminator.ckpt")
    data = domain_store(tmp_path, 3)
    run = import_stargan2_run([ema_file, disc_file], tmp_path / "run", data=data,
                              overrides=[(["model", "ds_iter"], 1000), (["model", "lambda_ds"], 2.0)])
    saved = ckpt.latest_valid_checkpoint(run)
    assert saved.step == 250 and saved.meta["family_state"]["lambda_ds"] == pytest.approx(2.0 * (1 - 250 / 1000))
    config = resolve_run_config(None, json.loads((run / "config.json").read_text()))
    assert (config.model.resolution, config.model.max_conv_dim, config.model.w_hpf) == (128, 16, 0.0)
    trainer = Trainer(config, run)  # resumes the imported checkpoint
    official = {**read_official_stargan2(ema_file)[0], **read_official_stargan2(disc_file)[0]}
    nets = trainer.family.nets
    for role, name in (("G", "generator"), ("F", "mapping_network"), ("E", "style_encoder")):
        for net in (nets[role], nets[f"{role}_ema"]):  # EMA-only file: the trained nets start from the EMA
            assert all(torch.equal(net.state_dict()[k], v) for k, v in official[name].items()), role
    assert all(torch.equal(nets["D"].state_dict()[k], v) for k, v in official["discriminator"].items())
    assert trainer.step == 250 and trainer.family.lambda_ds == pytest.approx(1.5)
    with pytest.raises(StarGAN2ImportError, match="already holds a run"):
        import_stargan2_run(ema_file, run, data=data)
    notes = tmp_path / "notes"  # not a run, but someone's files: its config.json would be replaced
    notes.mkdir()
    (notes / "config.json").write_text("{}")
    with pytest.raises(StarGAN2ImportError, match=r"notes is not empty \(config.json\); import into a new or empty "
                                                  "directory"):
        import_stargan2_run(ema_file, notes, data=data)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StarGAN2ImportError, match="afile exists and is not a directory"):
        import_stargan2_run(ema_file, tmp_path / "afile", data=data)
    with pytest.raises(StarGAN2ImportError, match=r"the networks' shapes are the checkpoint's, and --set changes "
                                                  r"model.style_dim 32 \(the checkpoint's: 64\)"):
        import_stargan2_run(ema_file, tmp_path / "styled", data=data, overrides=[(["model", "style_dim"], 32)])
    assert not (tmp_path / "styled").exists()


@pytest.mark.slow
def test_run_import_checks_the_domain_count_and_steps(tmp_path: Path, monkeypatch) -> None:
    # a w_hpf > 0 run needs the face-mask network, an imported one too (here its stand-in weights)
    monkeypatch.setenv("GANFORGE_WING_WEIGHTS", str(fixture("wing/wing_standin.ckpt")))
    states = official_states(TINY)
    ema = save({k: states[k] for k in NETS[:3]}, tmp_path / "000010_nets_ema.ckpt")
    nets = save(states, tmp_path / "000020_nets.ckpt")
    with pytest.raises(StarGAN2ImportError, match=r"files of different steps \[10, 20\]"):
        import_stargan2_run([ema, nets], tmp_path / "run", data=domain_store(tmp_path, 3, 32))
    with pytest.raises(StarGAN2ImportError, match=r"the checkpoint has 3 domains but .*store2 has 2 in column "
                                                  r"'class' \(d0, d1\)"), \
            pytest.warns(UserWarning, match="no discriminator"):
        import_stargan2_run(ema, tmp_path / "run2", data=domain_store(tmp_path, 2, 32))
    generator_only = save({"generator": states["generator"]}, tmp_path / "000010_nets_ema_g.ckpt")
    with pytest.raises(StarGAN2ImportError, match=r"no mapping_network, style_encoder in the files \(they hold "
                                                  r"generator\); a run needs"):  # no random F, E nor domain count
        import_stargan2_run(generator_only, tmp_path / "run5", data=str(tmp_path / "store2"))
    assert not (tmp_path / "run5").exists()
    trained = {k: {n: t if n == "hpf.filter" else t + 1 for n, t in v.items()} for k, v in states.items()}
    nets = save(trained, tmp_path / "000010_nets.ckpt")
    trained["generator"]["hpf.filter"] = laplacian_kernel(2.0)
    with pytest.raises(StarGAN2ImportError, match=r"'hpf\.filter' imply different w_hpf \(1\.0 and 2\.0\)"):
        import_stargan2_run([ema, save(trained, tmp_path / "000010_nets_w2.ckpt")], tmp_path / "run4",
                            data=str(tmp_path / "store3"))
    run = import_stargan2_run([ema, nets], tmp_path / "run3", data=str(tmp_path / "store3"))
    tensors = ckpt.latest_valid_checkpoint(run).tensors
    assert torch.equal(tensors["net/G/from_rgb.weight"], trained["generator"]["from_rgb.weight"])
    assert torch.equal(tensors["net/G_ema/from_rgb.weight"], states["generator"]["from_rgb.weight"])
    assert "net/G/hpf.filter" not in tensors
