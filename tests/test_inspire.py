"""`ganforge inspire` (pytorch_GAN_zoo's inspirational generation): the search finds the latents of pictures the
generator made, reports the loss of the latents it returns, restarts at a tenth of the learning rate (which the zoo
meant and never did), writes what it says, and refuses what it cannot search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pgan_tiny import TINY_PGAN
from reliability_runs import tiny_run

import ganforge
from ganforge.cli import main
from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.metrics.vgg_texture import VGGFeatures, VGGTexture
from ganforge.run_loader import LoadedModel, build_family
from ganforge.viz.grid import save_image, to_uint8
from ganforge.viz.inspire import inspire, load_pictures


@pytest.fixture(scope="module")
def pgan_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("inspire") / "run"
    ganforge.train(TINY_PGAN, run)
    return run


@pytest.fixture(scope="module")
def pgan(pgan_run) -> LoadedModel:
    return ganforge.load(pgan_run)


def pixel_error(images: torch.Tensor, pictures: torch.Tensor) -> torch.Tensor:
    return (images - pictures[:, None]).square().flatten(2).mean(dim=2)


def start_latents(model: LoadedModel, picture: int, runs: int, seed: int) -> torch.Tensor:
    """The latents picture `picture`'s search starts from: its own stream of the seed."""
    stream = int(np.random.SeedSequence([seed, picture]).generate_state(1)[0])
    return model.family.sample_latents(runs, torch.Generator().manual_seed(stream))["z"]


def test_the_search_finds_pictures_the_generator_made(pgan) -> None:
    pictures = pgan.generate(n=2, seed=5)
    start = pixel_error(torch.stack([pgan.generate(start_latents(pgan, k, 2, 1)) for k in range(2)]), pictures)
    found = inspire(pgan, pictures, runs=2, steps=300, lr=0.1, realism=0.0, seed=1)
    assert found.images.shape == (2, 2, *pictures.shape[1:]) and found.latents.shape == (2, 2, 16)
    error = pixel_error(found.images, pictures)
    assert (error[:, 0] < 0.15 * start.min(dim=1).values).all()  # the best run: from 0.3-0.45 to under 0.05
    assert (error.max(dim=1).values < 0.5 * start.min(dim=1).values).all()  # every run far nearer than its start
    assert (found.losses[:, :-1] <= found.losses[:, 1:]).all()  # runs best first
    assert [phase["lr"] for phase in found.phases] == pytest.approx([0.1, 0.01, 0.001])
    best = [phase["mean_best_loss"] for phase in found.phases]
    assert best[0] >= best[1] >= best[2]


def test_a_pictures_search_does_not_depend_on_the_other_pictures(pgan) -> None:
    """All pictures' runs were one batch: D's minibatch-stddev groups (and a batch-norm G) mixed them, so adding a
    picture to the command moved another's result. Each is searched alone now, as the zoo searches one per call."""
    pictures = pgan.generate(n=3, seed=11)
    alone = inspire(pgan, pictures[:1], runs=2, steps=12, lr=0.3, realism=0.03, seed=4)
    together = inspire(pgan, pictures, runs=2, steps=12, lr=0.3, realism=0.03, seed=4)
    torch.testing.assert_close(together.latents[0], alone.latents[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(together.losses[0], alone.losses[0], rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match=r"finite realism ≥ 0, got runs 1, steps 12, lr 0.3, realism nan"):
        inspire(pgan, pictures[:1], steps=12, lr=0.3, realism=float("nan"))


def test_the_reported_loss_is_that_of_the_returned_latents(pgan) -> None:
    """The zoo kept the vector after each Adam step with the loss measured before it."""
    pictures = pgan.generate(n=1, seed=7)
    found = inspire(pgan, pictures, runs=3, steps=30, lr=0.3, realism=0.03, seed=2)
    family, plan = pgan.family, pgan.plan
    z = found.latents[0].to(pgan.device)
    with torch.no_grad():
        images = family.generate({"z": z}, family.sample_net, plan)
        expected = ((z.square().mean(dim=1) - 1) ** 2 + (pictures - images).square().flatten(1).mean(dim=1)
                    - 0.03 * family.critic_score(images, plan))
    torch.testing.assert_close(found.losses[0], expected.cpu(), rtol=1e-5, atol=1e-6)


def test_the_cli_writes_a_grid_latents_and_a_summary_per_picture(pgan, pgan_run, tmp_path, capsys) -> None:
    paths = []  # two pictures of one name, in two folders
    for index, image in enumerate(to_uint8(pgan.generate(n=2, seed=3))):
        paths.append(tmp_path / f"folder{index}" / "picture.png")
        save_image(image, paths[-1])
    out = tmp_path / "out"
    assert main(["inspire", str(pgan_run), *map(str, paths), "-o", str(out), "--runs", "2", "--steps", "9",
                 "--lr", "0.1"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 5 file(s) to {out} from step {pgan.step} of {pgan_run}"
    summary = json.loads((out / "inspire.json").read_text())
    assert summary["net"] == "G_ema" and summary["search"] == {
        "runs": 2, "steps": 9, "lr": 0.1, "realism": 0.03, "seed": 0, "features": [["pixels", 1.0]],
        "vgg_weights": None, "feature_size": None}
    assert len(summary["phases"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["00_picture_inspired.png", "00_picture_latents.npz",
                                                     "01_picture_inspired.png", "01_picture_latents.npz",
                                                     "inspire.json"]
    before = (out / "inspire.json").read_text()
    assert main(["inspire", str(pgan_run), str(paths[0]), "-o", str(out), "--steps", "9"]) == 2
    assert "inspire.json and 2 more: already there (an earlier search's?)" in capsys.readouterr().err
    assert (out / "inspire.json").read_text() == before  # the first search's record, not one of its pictures
    assert main(["inspire", str(pgan_run), str(paths[0]), str(paths[0]), "-o", str(tmp_path / "b")]) == 2
    assert "given more than once" in capsys.readouterr().err
    for path in paths:
        entry = summary["pictures"][str(path)]
        assert len(entry["losses"]) == 2 and set(entry["spread"]) == {"mean_distance", "mean_agreement",
                                                                      "agreement_std"}
        assert (out / entry["grid"]).is_file()
        with np.load(out / entry["latents"]) as latents:
            assert latents["z"].shape == (2, 16) and latents["loss"].tolist() == pytest.approx(entry["losses"])


def test_a_grey_model_gets_grey_pictures(tmp_path) -> None:
    red = tmp_path / "red.png"
    save_image(np.full((12, 12, 3), [255, 0, 0], dtype=np.uint8), red)
    grey = load_pictures([red], (1, 8, 8))
    assert grey.shape == (1, 1, 8, 8)
    torch.testing.assert_close(grey, torch.full((1, 1, 8, 8), 0.299 * 255 / 127.5 - 1))
    with pytest.raises(ConfigError, match="latent search: .*missing.png is not a file"):
        load_pictures([tmp_path / "missing.png"], (3, 8, 8))


def test_a_dcgan_critic_scores_the_search(tmp_path) -> None:
    run = tmp_path / "run"
    ganforge.train(tiny_run("wgan-gp"), run)
    model = ganforge.load(run)
    pictures = model.generate(n=1, seed=4)
    with pytest.warns(UserWarning, match=r"--runs 2: the generator samples on its batch's statistics"):
        found = inspire(model, pictures, runs=2, steps=6, lr=0.1, seed=1)  # (a batch of 2: said, as generate does)
    assert torch.isfinite(found.losses).all() and found.images.shape == (1, 2, *pictures.shape[1:])
    from ganforge.viz.inspire import write_inspirations

    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(ConfigError, match=r"-o .*a-file: a file; expected a folder"):  # before the search
        write_inspirations(model, [tmp_path / "missing.png"], tmp_path / "a-file")


def test_families_whose_critic_needs_a_class_are_refused(tmp_path) -> None:
    config = resolve_run_config("biggan", tiny_run("biggan"))
    family = build_family(config, torch.device("cpu"))
    model = LoadedModel(family=family, config=config, step=0, plan=family.plan(0))
    pictures = model.generate(n=1)
    for realism in (0.03, 0.0):  # the realism term aside, the search would fix a random class per latent
        with pytest.raises(ConfigError, match=r"biggan: latent search \(ganforge inspire\) is for unconditional"):
            inspire(model, pictures, steps=3, realism=realism)
    with pytest.raises(ConfigError, match="expected runs ≥ 1, steps ≥ 3"):
        inspire(model, pictures, steps=2)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> tuple[Path, VGGFeatures]:
    """A VGG-19 file in torchvision's layout with random weights (the real one is 548 MB and a download)."""
    torch.manual_seed(0)
    features = VGGFeatures()
    for conv in features.features:
        if isinstance(conv, torch.nn.Conv2d):
            torch.nn.init.normal_(conv.weight, 0.0, (2.0 / (9 * conv.in_channels)) ** 0.5)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-standin.pth"
    torch.save(features.state_dict(), path)
    return path, features


def test_the_search_weighs_pixels_and_the_zoos_vgg_texture(pgan, vgg_file) -> None:
    """The zoo's `-f id vgg19 --weights 0.5 2`: each extractor's mean squared feature difference, weighted."""
    path, features = vgg_file
    pictures = pgan.generate(n=1, seed=7)
    found = inspire(pgan, pictures, runs=2, steps=6, lr=0.3, seed=2, features=[("pixels", 0.5), ("vgg19", 2.0)],
                    vgg_weights=path, feature_size=32)
    family, plan, texture = pgan.family, pgan.plan, VGGTexture(features, size=32)
    z = found.latents[0].to(pgan.device)
    with torch.no_grad():
        images = family.generate({"z": z}, family.sample_net, plan)
        expected = ((z.square().mean(dim=1) - 1) ** 2 + 0.5 * (pictures - images).square().flatten(1).mean(dim=1)
                    + 2.0 * (texture(pictures) - texture(images)).square().mean(dim=1)
                    - 0.03 * family.critic_score(images, plan))
    torch.testing.assert_close(found.losses[0], expected.cpu(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("options", "message"), [
    ({"features": [("pixel", 1.0)]}, r"features \['pixel'\] must name each of pixels, vgg19, vgg16 at most once"),
    ({"features": [("pixels", 1.0), ("pixels", 2.0)]}, r"at most once"),
    ({"features": []}, r"at least one"),
    ({"features": [("pixels", 0.0)]}, r"feature weights must be > 0"),
    ({"vgg_weights": "vgg19.pth"}, r"serve the vgg19/vgg16 features only; add one to the features"),
    ({"feature_size": 64}, r"serve the vgg19/vgg16 features only"),
    ({"features": [("vgg19", 1.0), ("vgg16", 1.0)], "vgg_weights": "vgg19.pth"}, r"one VGG weights file for two"),
    ({"features": [("vgg19", 1.0)], "feature_size": 16}, r"feature size 16 is too small .* \(at least 32\)"),
])
def test_feature_settings_that_would_do_nothing_are_refused(pgan, options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        inspire(pgan, pgan.generate(n=1), steps=3, **options)


def test_the_cli_reads_weighted_features(pgan, pgan_run, vgg_file, tmp_path, capsys) -> None:
    picture = tmp_path / "picture.png"
    save_image(to_uint8(pgan.generate(n=1, seed=3))[0], picture)
    out = tmp_path / "out"
    assert main(["inspire", str(pgan_run), str(picture), "-o", str(out), "--steps", "3", "--features",
                 "pixels,vgg19=0.5", "--vgg-weights", str(vgg_file[0]), "--feature-size", "32"]) == 0
    search = json.loads((out / "inspire.json").read_text())["search"]
    assert search["features"] == [["pixels", 1.0], ["vgg19", 0.5]] and search["feature_size"] == 32
    capsys.readouterr()
    for bad in ("vgg19=x", "vgg19="):
        with pytest.raises(SystemExit, match="2"):
            main(["inspire", str(pgan_run), str(picture), "-o", str(out), "--features", bad])
        assert f"expected NAME[=WEIGHT],... (e.g. pixels,vgg19=0.5), got '{bad}'" in capsys.readouterr().err
    assert main(["inspire", str(pgan_run), str(picture), "-o", str(out), "--steps", "3", "--features", "vgg19",
                 "--vgg-weights", str(vgg_file[0]), "--overwrite"]) == 0
    assert json.loads((out / "inspire.json").read_text())["search"]["feature_size"] == 128  # the size used
