"""StarGAN v2 face masks (w_hpf > 0): the FAN and its mask recipe against the official network's outputs on fixed
faces (stand-in weights in the official wing.ckpt layout), the weights lookup and its refusals, and the masks
reaching the generator wherever the official solver passes them."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path
from safetensors.torch import load_file

from ganforge.config import ConfigError
from ganforge.data.loader import BatchLoader
from ganforge.data.store import ImageDataset
from ganforge.distributed import DistInfo
from ganforge.families import resolve_run_config
from ganforge.families import stargan2 as family_module
from ganforge.families.stargan2 import StarGAN2Family
from ganforge.models.fan import FAN, FanWeightsError, face_masks, load_fan, masks_from_heatmaps, read_fan_state
from ganforge.training.engine import Trainer

ATOL = 1e-4  # the fixture README's tolerance
# 32 px: the smallest size with a high-pass injection (the official one happens at 32, 64 and 128 px)
TINY = {"resolution": 32, "domain_column": None, "base_dim": 4, "max_conv_dim": 8, "mapping_dim": 8, "latent_dim": 4,
        "style_dim": 8, "w_hpf": 1.0, "batch_size": 2, "randcrop_prob": 0.0}


def wing(name: str) -> Path:
    return shared_path("fixtures", "official", "stargan_v2", "wing", name)


@pytest.fixture(scope="module")
def standin() -> FAN:
    return load_fan(wing("wing_standin.ckpt"))


def faces(count: int = 4, resolution: int = 32) -> ImageDataset:
    """Two domains of random images (the generator plumbing does not need real faces)."""
    images = np.random.default_rng(0).integers(0, 256, (count, 3, resolution, resolution), dtype=np.uint8)
    manifest = {"resolution": resolution, "count": count, "channels": 3,
                "labels": [{"name": "domain", "classes": ["female", "male"]}]}
    return ImageDataset({resolution: images}, labels=(np.arange(count) % 2)[:, None], manifest=manifest,
                        fingerprint="test", source="memory")


def build(**model) -> StarGAN2Family:
    config = resolve_run_config("stargan2", {"data": "builtin:shapes", "model": {**TINY, **model}})
    torch.manual_seed(0)
    return StarGAN2Family(config.model, faces(), torch.device("cpu"), DistInfo())


# --- the network and the mask recipe against the official outputs -------------------------------------------------

def test_layout_is_the_official_state_dict() -> None:
    meta = json.loads(wing("meta.json").read_text())["checkpoint"]
    with torch.device("meta"):
        fan = FAN()
    assert {k: list(v.shape) for k, v in fan.state_dict().items()} == meta["keys"]
    assert sum(p.numel() for p in fan.parameters()) == meta["params"] == 6_333_603


@pytest.mark.slow
def test_heatmaps_and_masks_match_the_official_network(standin: FAN) -> None:
    io_tensors = load_file(wing("wing_io.safetensors"))
    with torch.no_grad():
        heatmaps = standin(io_tensors["x"] * 0.5 + 0.5)
    torch.testing.assert_close(heatmaps, io_tensors["heatmaps_raw"], atol=ATOL, rtol=0)

    def masks(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # get_heatmap on 256 px input: drop the boundary map, ×4 with corners aligned, then the recipe
        return masks_from_heatmaps(F.interpolate(raw[:, :-1], scale_factor=4, mode="bilinear", align_corners=True))

    official = (io_tensors["mask0"], io_tensors["mask1"])
    for ours, expected in zip(masks(io_tensors["heatmaps_raw"]), official, strict=True):  # the recipe alone
        torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
    # End to end, a heatmap value within the network's rounding (which differs between CPU kernels, e.g. AVX2 and
    # AVX-512) of the recipe's 0.1 threshold flips one landmark's contribution to a pixel: seen on up to 2 pixels of
    # 131,072; a wrong recipe or network changes thousands
    def assert_masks_match(ours: torch.Tensor, expected: torch.Tensor) -> None:
        assert ours.shape == expected.shape
        assert int(((ours - expected).abs() > ATOL).sum()) <= 1e-4 * expected.numel()

    for ours, expected in zip(masks(heatmaps), official, strict=True):
        assert_masks_match(ours, expected)
    # the whole get_heatmap path from 64 px faces (resized to 256 first)
    coarse, fine = face_masks(standin, io_tensors["x64"])
    assert_masks_match(coarse, io_tensors["mask0_64"])
    assert_masks_match(fine, io_tensors["mask1_64"])
    assert coarse.shape == (2, 1, 256, 256) and 0 < float(fine.mean()) < float(coarse.mean()) < 1


def test_recipe_on_a_hand_made_heatmap() -> None:
    """One left-eye landmark (channel 60) peaked at row 100: cut below 0.1, normalised to 1, then the eye recipe
    shift(−8)³ + shift(−24) puts 1 at rows 108 and 124 of both masks; a dropped outer-chin channel adds nothing."""
    heatmaps = torch.zeros(1, 98, 256, 256)
    heatmaps[0, 60, 100, 50] = 0.5
    heatmaps[0, 60, 0, 0] = 0.05  # below the 0.1 cut: becomes the minimum 0
    heatmaps[0, 3, 10, 10] = 0.9  # outer chin: zeroed
    coarse, fine = masks_from_heatmaps(heatmaps)
    expected = torch.zeros(1, 1, 256, 256)
    expected[0, 0, [108, 124], 50] = 0.5 / (0.5 + 1e-6)
    expected[0, 0, 108, 50] **= 3
    torch.testing.assert_close(coarse, expected)
    torch.testing.assert_close(fine, expected)


# --- the weights file ------------------------------------------------------------------------------------------

def test_weights_file_refusals_name_the_problem(tmp_path: Path) -> None:
    torch.save({"net": {}}, tmp_path / "other.ckpt")
    with pytest.raises(FanWeightsError, match=r"other\.ckpt: expected the wing\.ckpt layout"):
        read_fan_state(tmp_path / "other.ckpt")
    state = torch.load(wing("wing_standin.ckpt"), map_location="cpu", weights_only=True)["state_dict"]
    del state["l0.weight"]
    state["bn1.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "broken.ckpt")
    with pytest.raises(FanWeightsError, match=r"missing \['l0\.weight'\].*wrong shapes \['bn1\.weight \(3,\) != "
                                              r"\(64,\)'\]"):
        read_fan_state(tmp_path / "broken.ckpt")


def test_w_hpf_is_refused_without_the_weights(tmp_path: Path, monkeypatch) -> None:
    """Offline, no option, no environment variable, empty cache: one line naming the file, its URL, where to put
    it and both ways to pass it; nothing trains without masks."""
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANFORGE_WING_WEIGHTS", raising=False)

    def offline(url, timeout):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConfigError) as caught:
        build()
    message = str(caught.value)
    for part in ("model.w_hpf = 1 (the official default, for aligned faces: CelebA-HQ) needs the official face masks",
                 "other data: set model.w_hpf=0", "wing.ckpt", "dropbox.com/s/tjxpypwpt38926e",
                 str(tmp_path / "cache" / "weights" / "wing.ckpt"), "--wing-weights", "GANFORGE_WING_WEIGHTS"):
        assert part in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=r"missing\.ckpt \(from the argument\) does not exist"):
        build(wing_weights=str(tmp_path / "missing.ckpt"))
    with pytest.raises(ConfigError, match="model.wing_weights: .* is only used with w_hpf > 0"):
        build(w_hpf=0.0, wing_weights=str(wing("wing_standin.ckpt")))


@pytest.mark.slow
def test_weights_from_environment_and_a_checked_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANFORGE_WING_WEIGHTS", str(wing("wing_standin.ckpt")))
    assert build().fan is not None
    monkeypatch.delenv("GANFORGE_WING_WEIGHTS")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>Dropbox</html>"))
    with pytest.raises(ConfigError, match=r"downloaded https://www.dropbox.com/\S+ but it is not the file expected .*: "
                                          r"refused to load as StarGAN v2 face-mask .*; not saved") as refused:
        build()
    assert ".part" not in str(refused.value)  # the temporary file it went to, deleted: not named
    assert not (tmp_path / "cache" / "weights" / "wing.ckpt").exists()  # a wrong download is not kept
    payload = wing("wing_standin.ckpt").read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    family = build()
    assert (tmp_path / "cache" / "weights" / "wing.ckpt").read_bytes() == payload
    assert not family.fan.training and not any(p.requires_grad for p in family.fan.parameters())


# --- masks wherever the official solver passes them --------------------------------------------------------------

class GeneratorSpy:
    """Records (x, masks) of every generator call."""

    def __init__(self, generator: torch.nn.Module) -> None:
        self.calls: list[tuple[torch.Tensor, tuple | None]] = []
        self.forward = generator.forward
        generator.forward = self

    def __call__(self, x, style, masks=None, **reuse):  # reuse: a shared encoding of x (StarGAN2Family)
        self.calls.append((x.detach().clone(), masks))
        return self.forward(x, style, masks, **reuse)


def fake_masks(fan, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A cheap stand-in for the FAN: masks that depend on the image (so each call's source can be told)."""
    level = (x.mean(dim=1, keepdim=True) + 1) / 2
    return level.clamp(0, 1), level.square().clamp(0, 1)


@pytest.mark.slow
def test_every_generator_call_of_a_step_gets_the_official_masks(monkeypatch) -> None:
    """D phases and the first passes of the G phases use the masks of the sources; each cycle reconstruction uses
    the masks of its fake (official solver: `masks = nets.fan.get_heatmap(x_fake)` before `x_rec`)."""
    monkeypatch.setattr(family_module, "face_masks", fake_masks)
    family = build(wing_weights=str(wing("wing_standin.ckpt")))
    spy = GeneratorSpy(family.nets["G"])
    loader = BatchLoader(family.dataset, seed=0, dist=family.dist, device=family.device,
                         options=family.data_options())
    batch = loader.next(family.plan(0).batch_size, family.img_size)
    made = []
    make = family.step_inputs
    family.step_inputs = lambda *args: made.append(make(*args)) or made[-1]
    for phase in family.phases(0, family.plan(0)):
        phase.loss(batch)  # the first phase's batch, handed on to the others as the engine does
    (inputs,) = made  # made once, shared by the four phases
    torch.testing.assert_close(inputs.masks, fake_masks(None, inputs.x_src))
    assert len(spy.calls) == 8  # D: 1 + 1; G: fake, second fake, reconstruction, twice
    for index, (x, masks) in enumerate(spy.calls):
        if index in (4, 7):  # the reconstructions G(x_fake, E(x, y), masks of x_fake)
            assert not torch.equal(x, inputs.x_src)
            torch.testing.assert_close(masks, fake_masks(None, x))
        else:
            assert torch.equal(x, inputs.x_src) and masks is inputs.masks
    x, masks = spy.calls[0]
    style = family.nets["F"](inputs.z1, inputs.y_trg)
    with torch.no_grad():  # the masks do change the output: the skip path is live
        assert (spy.forward(x, style, masks) - spy.forward(x, style, None)).abs().max() > 1e-3
    sampled = family.sample_latents(2, torch.Generator().manual_seed(0))
    spy.calls.clear()
    family.generate(sampled, "G", family.plan(0))
    torch.testing.assert_close(spy.calls[0][1], fake_masks(None, sampled["x"]))


@pytest.mark.slow  # ~30 s: the FAN runs at 256 px on every source and fake
def test_tiny_w_hpf_run_with_the_stand_in_weights(tmp_path: Path) -> None:
    config = resolve_run_config("stargan2", {
        "data": "builtin:shapes?count=16&resolution=32", "progress": False, "tensorboard": False,
        "sample_every": 100, "checkpoint_every": 100, "sample_count": 2, "model": {
            **TINY, "domain_column": "background", "steps": 2, "wing_weights": str(wing("wing_standin.ckpt"))}})
    trainer = Trainer(config, tmp_path / "run")
    spy = GeneratorSpy(trainer.family.nets["G"])
    assert trainer.train().step == 2
    assert len(spy.calls) > 16 and all(masks is not None for _, masks in spy.calls)  # 8 per step, then samples
    x_fake, masks = spy.calls[4]
    torch.testing.assert_close(masks, face_masks(trainer.family.fan, x_fake))
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert all(np.isfinite(record[key]) for key in ("D_latent_real", "G_latent_cyc", "G_ref_sty"))


@pytest.mark.slow
def test_evaluation_and_translation_give_the_generator_the_masks_of_the_sources(tmp_path: Path, monkeypatch) -> None:
    """Official eval.py and sample mode: `masks = nets.fan.get_heatmap(x_src)` for every G call on those sources."""
    from stargan2_tiny_run import write_domain_folders
    from test_stargan2_eval import Recording, RecordingLPIPS

    from ganforge.data.domains import prepare_domain_folders
    from ganforge.evaluation.stargan2 import evaluate_stargan2
    from ganforge.models.stargan2 import Generator
    from ganforge.viz.translate import translate

    monkeypatch.setattr(family_module, "face_masks", fake_masks)
    folders = write_domain_folders(tmp_path / "folders")
    prepare_domain_folders(folders, tmp_path / "stores", resolution=32)
    config = resolve_run_config("stargan2", {
        "data": str(tmp_path / "stores" / "train"), "progress": False, "tensorboard": False, "sample_every": 100,
        "sample_count": 2, "model": {**TINY, "steps": 1, "wing_weights": str(wing("wing_standin.ckpt"))}})
    Trainer(config, tmp_path / "run").train()
    calls = []
    encode = Generator.encode_sources  # every use of G (forward, batched latent grids) encodes its sources here

    def recording(self, x, masks=None):
        calls.append((x.clone(), masks))
        return encode(self, x, masks)

    monkeypatch.setattr(Generator, "encode_sources", recording)
    report = evaluate_stargan2(tmp_path / "run", device="cpu", feature_extractor=Recording(), lpips=RecordingLPIPS(),
                               max_val=1, num_outs=2, write=False)
    assert report["protocol"]["face_masks"] is True
    translate(tmp_path / "run", folders / "val" / "dark", folders / "val", tmp_path / "out", num_z=1, psis=(1.0,),
              device="cpu")
    assert len(calls) == 2 * 2 * 2 + 6 + 2 * 1  # eval: modes × tasks × outputs; reference grid: 6 refs; latent grid
    for x, masks in calls:
        torch.testing.assert_close(masks, fake_masks(None, x))
    with pytest.raises(ConfigError, match=r"nope\.ckpt \(from the argument\) does not exist"):
        translate(tmp_path / "run", folders / "val" / "dark", folders / "val", tmp_path / "out2", device="cpu",
                  wing_weights=tmp_path / "nope.ckpt")
