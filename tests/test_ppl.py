"""Perceptual path length (stylegan2-ada's ppl_zfull / ppl_zend) and the LPIPS VGG-16 it measures with: the path,
the crop, the percentile filter and the scale by hand; the run command end to end with a stand-in LPIPS."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import ganforge
from ganforge.cli import main
from ganforge.metrics import lpips as lpips_module
from ganforge.metrics.lpips import LPIPS, VGG16Features, load_lpips_heads
from ganforge.metrics.ppl import lpips_view, path_distances, path_length, unit_slerp


def test_the_path_is_the_references_slerp_with_the_norm_interpolated() -> None:
    a, b = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 4.0, 0.0]])  # orthogonal: the angle is π/2
    for t in (0.0, 0.25, 0.5, 1.0):
        expected = torch.tensor([[math.cos(t * math.pi / 2), math.sin(t * math.pi / 2), 0.0]]) * (2 + 2 * t)
        assert torch.allclose(unit_slerp(a, b, torch.tensor([[t]])), expected, atol=1e-6)


def test_lpips_sees_the_references_crop_at_most_256_px_in_rgb() -> None:
    images = torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 1, 4, 4)  # 16 px
    cropped = lpips_view(images, crop=True)  # c = 2: rows 6-13, columns 4-11
    assert cropped.shape == (1, 3, 8, 8) and torch.equal(cropped[0, 2], images[0, 0, 6:14, 4:12])
    assert lpips_view(images, crop=False).shape == (1, 3, 16, 16)
    large = torch.rand(1, 3, 1024, 1024)
    assert torch.allclose(lpips_view(large, crop=False), torch.nn.functional.avg_pool2d(large, 4))
    # the factor is the whole image's (1024 → 256): the 512 px crop is averaged to 128 px, as the reference does
    assert torch.allclose(lpips_view(large, crop=True),
                          torch.nn.functional.avg_pool2d(large[:, :, 384:896, 256:768], 4))
    assert lpips_view(torch.rand(1, 3, 512, 512), crop=True).shape == (1, 3, 128, 128)
    assert lpips_view(torch.rand(1, 3, 256, 256), crop=True).shape == (1, 3, 128, 128)


def test_a_path_at_constant_speed_has_its_squared_speed_as_length() -> None:
    """G(z) = z as an image and a squared-difference "LPIPS": the distance of a step ε is |dz/dt|², which on the
    quarter circle from 2·e1 to 2·e2 is (2 · π/2)² at every t, for full and end paths alike."""
    def draw(count: int, generator: torch.Generator, calls=[0]) -> dict[str, torch.Tensor]:  # noqa: B006
        calls[0] += 1
        z = torch.zeros(count, 4)
        z[:, 0 if calls[0] % 2 else 1] = 2.0
        return {"z": z}

    def squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).square().sum(dim=(1, 2, 3))

    for sampling in ("full", "end"):
        distances = path_distances(lambda inputs: inputs["z"].view(-1, 1, 2, 2), draw, squared, 10,
                                   sampling=sampling, crop=False, batch_size=4)
        assert distances.shape == (10,)
        # ×3: the grey image is repeated into three channels
        assert np.allclose(distances, 3 * math.pi**2, rtol=1e-3)


def test_a_generator_giving_nan_pixels_is_refused_not_measured() -> None:
    """One NaN distance makes the percentiles and the mean NaN: refused as the other metrics refuse NaN images."""
    def draw(count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"z": torch.randn(count, 4, generator=generator)}

    def diverged(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        images = inputs["z"].view(-1, 1, 2, 2).clone()
        images[-1, 0, 0, 0] = float("nan")
        return images

    with pytest.raises(ValueError, match=r"^perceptual path length: the generator gives NaN or infinite pixel"):
        path_distances(diverged, draw, lambda a, b: (a - b).square().sum(dim=(1, 2, 3)), 6, crop=False)


def test_the_length_drops_the_distances_outside_the_1st_and_99th_percentiles() -> None:
    distances = np.arange(1.0, 201.0)  # percentile 1 at position 1.99 (lower: 2), 99 at 197.01 (higher: 199)
    assert path_length(distances) == pytest.approx(np.arange(2.0, 200.0).mean())
    assert path_length(np.array([5.0, 5.0, 5.0])) == 5.0
    with pytest.raises(ValueError, match="sampling 'middle'"):
        path_distances(lambda inputs: inputs["z"], lambda k, g: {"z": torch.zeros(k, 1)}, lambda a, b: a, 2,
                       sampling="middle")


def test_lpips_vgg16_reads_torchvisions_layout_and_the_wheels_heads() -> None:
    backbone = VGG16Features()
    assert [key for key in backbone.state_dict() if key.endswith("weight")] == [
        f"features.{i}.weight" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    try:
        heads = load_lpips_heads("vgg")
    except lpips_module.LPIPSWeightsError as err:
        pytest.skip(str(err))
    assert [head.shape[1] for head in heads] == [64, 128, 256, 512, 512]
    metric = LPIPS(backbone, heads).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(metric(x, x), torch.zeros(2))
        assert bool((metric(x, x.flip(0)) > 0).all())


def test_evaluate_run_ppl_records_the_length(tmp_path, monkeypatch, capsys) -> None:
    ganforge.train({"family": "pgan", "data": "builtin:shapes?count=64&resolution=16", "progress": False,
                    "tensorboard": False, "sample_every": 100,
                    "model": {"resolution": 16, "latent_dim": 8, "widths": [8, 8, 8], "schedule": {
                        "max_iter_at_scale": [2, 2, 2], "alpha_jumps": 1, "alpha_jump_size": 1, "batch_size": 4}}},
                   tmp_path / "run")
    monkeypatch.setattr(lpips_module, "load_lpips_vgg", lambda device=None: (
        lambda a, b: (a - b).square().mean(dim=(1, 2, 3))))  # VGG-16's 528 MB are not at hand offline
    assert main(["evaluate", str(tmp_path / "run"), "--ppl", "end", "--n", "6", "--ppl-crop", "off"]) == 0
    out = capsys.readouterr().out
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 6 and row["n"] == 6 and row["ppl_crop"] == "none" and row["ppl_zend"] > 0
    assert f"PPL_zend  {row['ppl_zend']:12.4f}" in out
    assert main(["evaluate", str(tmp_path / "run"), "--ppl", "full", "--metrics", "swd"]) == 2
    assert "--ppl with --metrics: the path length is measured on its own" in capsys.readouterr().err
    for args in ([str(tmp_path / "run")], ["--fake", str(tmp_path / "run"), "--real", "x"]):
        assert main(["evaluate", *args, "--ppl-crop", "off"]) == 2
        assert "--ppl-crop off: for --ppl" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "run")]) == 0  # the report draws the new metric's rows
    monkeypatch.undo()  # the size check comes before any weights are looked for
    assert main(["evaluate", str(tmp_path / "run"), "--ppl", "full"]) == 2
    assert ("--ppl: LPIPS VGG-16 reads images of 16 px or more (its fifth block follows four 2x2 poolings), and this "
            "run's 16 px images give 8 px after the centre crop (--ppl-crop off keeps them whole)") in (
        capsys.readouterr().err)


def test_convolutions_run_without_tf32_inside_and_as_the_caller_had_them_after() -> None:
    from ganforge.metrics.float32 import no_tf32_convolutions

    for before in (True, False):
        torch.backends.cudnn.allow_tf32 = before
        with no_tf32_convolutions():
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is before
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default


def test_a_conditional_paths_ends_share_the_classes_of_a_training_image(tmp_path, monkeypatch) -> None:
    from ganforge.data.store import open_dataset
    from ganforge.families.pgan import PGANFamily

    data = "builtin:shapes?count=64&resolution=32"
    ganforge.train({"family": "pgan", "data": data, "progress": False, "tensorboard": False, "sample_every": 100,
                    "model": {"resolution": 32, "latent_dim": 8, "widths": [8, 8, 8, 8], "variant": "zoo",
                              "conditions": ["background", "shape"], "schedule": {
                                  "max_iter_at_scale": [1, 1, 1, 1], "alpha_jumps": 0, "batch_size": 4}}},
                   tmp_path / "run")
    seen = []
    generate = PGANFamily.generate
    monkeypatch.setattr(PGANFamily, "generate", lambda self, inputs, net, plan: (
        seen.append(inputs["labels"].cpu()), generate(self, inputs, net, plan))[1])
    monkeypatch.setattr(lpips_module, "load_lpips_vgg", lambda device=None: (
        lambda a, b: (a - b).square().mean(dim=(1, 2, 3))))
    assert main(["evaluate", str(tmp_path / "run"), "--ppl", "full", "--n", "8"]) == 0
    rows = {tuple(row) for row in open_dataset(data).labels[:, [1, 0]].tolist()}  # the generator's column order
    labels = seen[0]
    assert labels.shape == (16, 2) and torch.equal(labels[:8], labels[8:])  # both ends of each path alike
    assert {tuple(row) for row in labels.tolist()} <= rows


def test_the_reports_curve_keeps_one_crop(tmp_path) -> None:
    from ganforge.viz.run_data import read_run

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 1, "n": 8, "source": "evaluate", "ppl_zfull": 10.0, "ppl_crop": "centre"},
            {"step": 2, "n": 8, "source": "evaluate", "ppl_zfull": 12.0, "ppl_crop": "centre"},
            {"step": 2, "n": 8, "source": "evaluate", "ppl_zfull": 50.0, "ppl_crop": "none"},  # newer, other crop
            {"step": 3, "n": 8, "source": "evaluate", "ppl_zfull": 11.0, "ppl_crop": "centre"}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run / "log.jsonl").write_text(json.dumps({"step": 1, "loss_G": 1.0}) + "\n")
    assert [(r["step"], r["ppl_zfull"]) for r in read_run(run).curve_points("ppl_zfull")] == [
        (1, 10.0), (2, 12.0), (3, 11.0)]
