"""FD_DINOv2: our DINOv2 ViT against the official code (facebookresearch/dinov2 @ b8931f7, GANFORGE_REFS), the
dgm-eval preprocessing by hand, the metric through `evaluate` (its real-feature cache included), and its weights'
errors."""

from __future__ import annotations

import copy
import json
import sys
import urllib.error
import urllib.request
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_checkout
from pgan_tiny import TINY_PGAN
from PIL import Image
from safetensors.torch import load_file

import ganforge
from ganforge.cli import main
from ganforge.errors import ConfigError
from ganforge.metrics import dinov2
from ganforge.metrics.dinov2 import DINOv2, DINOv2WeightsError
from ganforge.metrics.evaluate import evaluate
from ganforge.metrics.fid import fid

evaluate_module = sys.modules["ganforge.metrics.evaluate"]  # the package exports a function of the same name

def _official_vit(**kwargs):
    """The official DinoVisionTransformer, built as torch hub's dinov2_vitl14 builds it (other widths allowed)."""
    sys.path.insert(0, str(reference_checkout("dinov2", "git clone https://github.com/facebookresearch/dinov2 "
                                                        "GANFORGE_REFS/dinov2, commit b8931f7")))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "xFormers is not available"
            from dinov2.layers import MemEffAttention
            from dinov2.layers import NestedTensorBlock as Block
            from dinov2.models.vision_transformer import DinoVisionTransformer
    finally:
        sys.path.pop(0)
    options = {"img_size": 518, "patch_size": 14, "embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4,
               "block_fn": partial(Block, attn_class=MemEffAttention), "init_values": 1.0, "block_chunks": 0,
               "interpolate_offset": 0.1, "interpolate_antialias": False, **kwargs}
    return DinoVisionTransformer(**options)


def test_the_vitl14_layout_is_the_official_one():
    with torch.device("meta"):
        official, ours = _official_vit().state_dict(), DINOv2().state_dict()
    assert set(official) - set(ours) == set(dinov2.TRAINING_ONLY_KEYS)
    assert {key: value.shape for key, value in ours.items()} == {
        key: value.shape for key, value in official.items() if key not in dinov2.TRAINING_ONLY_KEYS}
    assert sum(value.numel() for value in ours.values()) == 304_367_616


def test_features_equal_the_official_networks_on_random_weights():
    """A narrow network of the same design (random weights drawn large enough that every layer matters), at the
    224 px input FD_DINOv2 uses, so the position grid is resized as for the real network; and at 518 px, where
    it is used as is."""
    torch.manual_seed(0)
    official = _official_vit(embed_dim=64, depth=3, num_heads=4).eval()
    with torch.no_grad():
        for parameter in official.parameters():
            parameter.normal_(0, 0.2)
    ours = DINOv2(dim=64, depth=3, heads=4).eval()
    ours.load_state_dict({k: v for k, v in official.state_dict().items() if k not in dinov2.TRAINING_ONLY_KEYS})
    for size in (224, 518):
        x = torch.randn(3, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(ours.embed(x), official(x), atol=1e-5, rtol=1e-5)


def _tiny() -> DINOv2:
    torch.manual_seed(1)
    model = DINOv2(dim=32, depth=2, heads=4).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    return model


def test_a_block_is_pre_norm_attention_and_mlp_with_layer_scale_by_hand():
    block = _tiny().blocks[0]
    x = torch.randn(2, 5, 32)
    heads, width = 4, 8

    def attention(h: torch.Tensor) -> torch.Tensor:
        q, k, v = (block.attn.qkv(h).view(2, 5, 3, heads, width)[:, :, i].transpose(1, 2) for i in range(3))
        weights = torch.softmax(q @ k.transpose(-1, -2) / width ** 0.5, dim=-1)
        return block.attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 32))

    def layer_norm(h: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
        mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + 1e-6) * norm.weight + norm.bias

    with torch.no_grad():
        h = x + block.ls1.gamma * attention(layer_norm(x, block.norm1))
        gelu = torch.nn.functional.gelu(block.mlp.fc1(layer_norm(h, block.norm2)), approximate="none")
        torch.testing.assert_close(block(x), h + block.ls2.gamma * block.mlp.fc2(gelu), atol=1e-5, rtol=1e-5)


def _by_hand(images: list[Image.Image]) -> torch.Tensor:
    """dgm-eval's transform: torchvision's Resize((224, 224), BICUBIC) on the PIL image, ToTensor, Normalize."""
    out = []
    for image in images:
        pixels = np.asarray(image.convert("RGB").resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255
        out.append((pixels.transpose(2, 0, 1) - np.array([0.485, 0.456, 0.406])[:, None, None])
                   / np.array([0.229, 0.224, 0.225])[:, None, None])
    return torch.tensor(np.stack(out), dtype=torch.float32)


def test_images_are_resized_by_pil_bicubic_to_224_then_imagenet_normalised():
    model = _tiny()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 40, 40), dtype=np.uint8)
    with torch.no_grad():
        expected = model.embed(_by_hand([Image.fromarray(image.transpose(1, 2, 0), "RGB") for image in images]))
        torch.testing.assert_close(model(torch.from_numpy(images)), expected, atol=1e-5, rtol=1e-5)
        # grey images are read as dgm-eval reads them: PIL's convert("RGB")
        grey = images[:, 0]
        expected = model.embed(_by_hand([Image.fromarray(plane, "L") for plane in grey]))
        torch.testing.assert_close(model(torch.from_numpy(grey[:, None])), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="expected uint8"):
        model(torch.zeros(1, 3, 8, 8))


@pytest.fixture
def tiny_dinov2(monkeypatch, tmp_path):
    """`evaluate` with a narrow DINOv2 in place of the 1.2 GB network (its weights file: a stand-in path, which
    only names the real-feature cache); counts the images it embeds."""
    weights = tmp_path / "dinov2_vitl14_pretrain.pth"
    weights.write_bytes(b"stand-in")
    model, seen = _tiny(), []

    def counting(images: torch.Tensor) -> torch.Tensor:
        seen.append(len(images))
        return DINOv2.forward(model, images)

    model.forward = counting
    monkeypatch.setattr(evaluate_module, "resolve_dinov2_weights", lambda path=None: weights)
    monkeypatch.setattr(evaluate_module, "load_dinov2", lambda path, device=None: model)
    return model, seen


def test_fd_dinov2_is_the_frechet_distance_of_the_class_token_features(tiny_dinov2, tmp_path):
    model, seen = tiny_dinov2
    rng = np.random.default_rng(1)
    fake = rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    real = rng.integers(0, 128, (12, 3, 16, 16), dtype=np.uint8)
    with torch.no_grad():
        expected = fid(model(torch.from_numpy(fake)), model(torch.from_numpy(real)))
    seen.clear()
    result = evaluate(fake, real, ["fd_dinov2", "swd"], batch_size=5, real_cache_key="set-a", cache_dir=tmp_path)
    assert result["fd_dinov2"] == pytest.approx(expected, rel=1e-6)
    assert expected > 0.01 and sum(seen) == 24
    # the real set's features come from the cache the second time: only the fakes are embedded
    seen.clear()
    again = evaluate(fake, real, ["fd_dinov2"], batch_size=5, real_cache_key="set-a", cache_dir=tmp_path)
    assert again["fd_dinov2"] == pytest.approx(expected, rel=1e-6) and sum(seen) == 12
    cached = list(tmp_path.glob("dinov2-*.safetensors"))
    assert len(cached) == 1 and '"protocol": "dgm-eval-pil-bicubic-224"' in cached[0].with_suffix(".json").read_text()


def test_offline_the_error_names_the_file_its_url_and_where_to_put_it(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.delenv(dinov2.DINOV2_WEIGHTS.env, raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DINOv2WeightsError) as info:
        dinov2.load_dinov2(cache_dir=tmp_path)
    for needle in ("dinov2_vitl14_pretrain.pth", dinov2.DINOV2_WEIGHTS.url, str(tmp_path), "--dinov2-weights",
                   "GANFORGE_DINOV2_WEIGHTS"):
        assert needle in str(info.value)
    assert not any(tmp_path.iterdir())


def test_a_file_of_another_layout_is_refused_before_loading(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(8, 3, 14, 14)}, path)
    with pytest.raises(DINOv2WeightsError, match=r"other.pth does not have the official dinov2_vitl14 layout: "
                                                  r"missing \['cls_token'"):
        dinov2.read_dinov2_state(path)


def test_without_the_weights_evaluate_prints_the_other_metrics_and_one_warning(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: (_ for _ in ()).throw(
        urllib.error.URLError("no network")))
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(dinov2.DINOV2_WEIGHTS.env, raising=False)
    images = tmp_path / "images.npz"
    np.savez(images, images=np.random.default_rng(0).integers(0, 256, (8, 3, 16, 16), dtype=np.uint8))
    assert main(["evaluate", "--fake", str(images), "--real", str(images), "--metrics", "swd,fd_dinov2"]) == 0
    out = capsys.readouterr().out
    assert "SWD x1e3" in out and "FD_DINOv2" not in out
    assert out.count("warning: fd_dinov2 not computed: ") == 1 and "dinov2_vitl14_pretrain.pth" in out
    assert main(["evaluate", "--fake", str(images), "--real", str(images), "--metrics", "swd",
                 "--dinov2-weights", str(images)]) == 2
    err = capsys.readouterr().err
    assert "--dinov2-weights (dinov2_weights=): for fd_dinov2, which is not among the metrics (swd)" in err


def test_training_refuses_dinov2_weights_without_the_metric_and_missing_weights_with_it(monkeypatch, tmp_path):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: (_ for _ in ()).throw(
        urllib.error.URLError("no network")))
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(dinov2.DINOV2_WEIGHTS.env, raising=False)
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["swd"], metrics_every=8, dinov2_weights=str(tmp_path / "w.pth"))
    with pytest.raises(ConfigError, match="dinov2_weights: set for fd_dinov2, which is not among metrics"):
        ganforge.train(config, tmp_path / "run")
    config.update(metrics=[], metrics_every=0)  # no metrics at all: still a setting that would do nothing
    with pytest.raises(ConfigError, match=r"dinov2_weights: set for fd_dinov2, which is not among metrics \[\]"):
        ganforge.train(config, tmp_path / "run")
    config.update(dinov2_weights=None, pr_k=5)
    with pytest.raises(ConfigError, match=r"^pr_k: set for pr, which is not among the metrics \(none\)$"):
        ganforge.train(config, tmp_path / "run")
    config.update(pr_k=None, metrics_every=8)
    config.update(metrics=["fd_dinov2"], dinov2_weights=None)
    with pytest.raises(DINOv2WeightsError, match="dinov2_vitl14_pretrain.pth"):
        ganforge.train(config, tmp_path / "run")
    assert not Path(tmp_path / "run" / "checkpoints").exists()


def test_training_time_fd_dinov2_is_logged_and_ranks_checkpoints(tiny_dinov2, tmp_path):
    config = copy.deepcopy(TINY_PGAN)
    # metric names in any case, as everywhere (the DINOv2 checks read them as the registry does)
    config.update(metrics=["FD_DINOv2"], metrics_every=16, metrics_n=8, best_metric="fd_dinov2", keep_best=1,
                  dinov2_weights=str(tmp_path / "dinov2_vitl14_pretrain.pth"))
    run = tmp_path / "run"
    ganforge.train(config, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [16, 20] and all(row["fd_dinov2"] > 0 for row in rows)
    assert "fid_mode" not in rows[0]  # not an Inception metric: no FID mode to record
    best = min(rows, key=lambda row: row["fd_dinov2"])
    assert json.loads((run / "best.json").read_text())["best"] == [{"step": best["step"], "value": best["fd_dinov2"]}]


def test_feature_networks_run_in_pytorchs_default_float32_whatever_training_set(tiny_dinov2):
    """The engine allows TF32 matmuls on CUDA; dgm-eval, pytorch-fid and torch-fidelity run without them, so a
    training-time FD_DINOv2 (all matmuls) must too, and the caller's setting comes back after."""
    model, _ = tiny_dinov2
    inside = []
    forward = model.forward
    model.forward = lambda images: (inside.append(torch.backends.cuda.matmul.allow_tf32), forward(images))[1]
    images = np.random.default_rng(2).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    torch.backends.cuda.matmul.allow_tf32 = True  # as the engine sets it on CUDA
    try:
        evaluate(images, images, ["fd_dinov2"])
        assert inside == [False, False] and torch.backends.cuda.matmul.allow_tf32 is True
        with pytest.raises(ValueError, match="need a real image set"):  # restored after an error too
            evaluate(images, None, ["fd_dinov2"])
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture
def tiny_networks(tiny_dinov2, tmp_path, monkeypatch):
    """tiny_dinov2 beside a random-weight FID Inception (its weights file: a stand-in path), both counting the
    images they embed."""
    from ganforge.metrics.inception import InceptionV3FID

    inception_weights = tmp_path / "inception.pth"
    inception_weights.write_bytes(b"inception stand-in")
    inception, inception_seen = InceptionV3FID().eval(), []
    features = inception.features  # the one pass that serves pool3, the logits and the blocks
    inception.features = lambda images: (inception_seen.append(len(images)), features(images))[1]
    monkeypatch.setattr(evaluate_module, "load_inception", lambda path, device=None, fid_mode="": inception)
    return inception_weights, inception_seen, tiny_dinov2[1]


def test_one_pass_feeds_both_networks_and_a_partial_cache_embeds_only_what_is_missing(tiny_networks, tmp_path):
    """fid and fd_dinov2 together: each set is read once for both; with Inception's real features cached and
    DINOv2's not, only DINOv2 embeds the real set again. The Inception cache keeps the name and contents it had
    before DINOv2 (key, weights digest, image count, FID mode), so caches written by earlier versions still hit."""
    import hashlib

    from safetensors import safe_open

    from ganforge.download import file_digest

    weights, inception_seen, dinov2_seen = tiny_networks
    rng = np.random.default_rng(3)
    fake, real = (rng.integers(0, 256, (6, 3, 16, 16), dtype=np.uint8) for _ in range(2))
    options = {"inception_weights": weights, "real_cache_key": "set-b", "cache_dir": tmp_path / "stats", "n": 6}
    first = evaluate(fake, real, ["fid", "fd_dinov2"], **options)
    assert sum(inception_seen) == sum(dinov2_seen) == 12
    ident = hashlib.sha256(f"set-b|{file_digest(weights)}|6|legacy-tf".encode()).hexdigest()[:24]
    inception_cache = tmp_path / "stats" / f"inception-pool-{ident}.safetensors"
    with safe_open(str(inception_cache), "pt") as cached:
        assert list(cached.keys()) == ["pool"] and cached.get_tensor("pool").shape == (6, 2048)
        assert cached.metadata() == {"key": "set-b", "count": "6", "fid_mode": "legacy-tf"}
    assert json.loads(inception_cache.with_suffix(".json").read_text()) == {
        "key": "set-b", "count": 6, "features": "inception pool3", "fid_mode": "legacy-tf"}
    for path in (tmp_path / "stats").glob("dinov2-*"):
        path.unlink()
    inception_seen.clear()
    dinov2_seen.clear()
    again = evaluate(fake, real, ["fid", "fd_dinov2"], **options)
    assert sum(inception_seen) == 6 and sum(dinov2_seen) == 12
    assert again == pytest.approx(first, rel=1e-6)
    # training's fid_real_stats beside real images: the statistics serve FID, the images FD_DINOv2
    from ganforge.metrics.fid import FeatureStats

    real_pool = load_file(inception_cache)["pool"]
    with_stats = evaluate(fake, real, ["fid", "fd_dinov2"], inception_weights=weights,
                          real_stats=FeatureStats.from_features(real_pool))
    assert with_stats == pytest.approx(first, rel=1e-6)


def test_metrics_of_a_missing_network_are_left_out_and_all_missing_files_are_named(monkeypatch, tmp_path):
    from ganforge.evaluation.run_metrics import computable_metrics
    from ganforge.metrics.inception import InceptionWeightsError

    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: (_ for _ in ()).throw(
        urllib.error.URLError("no network")))
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(dinov2.DINOV2_WEIGHTS.env, raising=False)
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    inception = tmp_path / "inception.pth"
    inception.write_bytes(b"found by path")
    left, warning = computable_metrics(["swd", "fid", "fd_dinov2"], inception_weights=inception)
    assert left == ["swd", "fid"] and warning.startswith("warning: fd_dinov2 not computed: ") and "\n" not in warning
    with pytest.raises(InceptionWeightsError) as info:  # nothing left: one error for both files
        computable_metrics(["fid", "fd_dinov2"])
    assert "pt_inception-2015-12-05-6726825d.pth" in str(info.value)
    assert "dinov2_vitl14_pretrain.pth" in str(info.value)


def test_feature_networks_are_loaded_once_per_file_and_device_and_let_go_after_training(tiny_dinov2, tmp_path,
                                                                                        monkeypatch):
    """Training-time metrics call evaluate at every tick: DINOv2 is read and built once (at the start of the run,
    so a bad file fails before the first step), again only for a replaced file, and released when training ends."""
    model, _ = tiny_dinov2
    loads = []
    monkeypatch.setattr(evaluate_module, "load_dinov2", lambda path, device=None: loads.append(device) or model)
    evaluate_module.release_feature_networks()
    images = np.random.default_rng(4).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    for _ in range(2):
        evaluate(images, images, ["fd_dinov2"])
    assert loads == ["cpu"]
    weights = tmp_path / "dinov2_vitl14_pretrain.pth"
    weights.write_bytes(b"another stand-in")  # replaced in place
    evaluate(images, images, ["fd_dinov2"])
    assert loads == ["cpu", "cpu"]

    evaluate_module.release_feature_networks()
    loads.clear()
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["fd_dinov2"], metrics_every=10, metrics_n=4, dinov2_weights=str(weights))
    ganforge.train(config, tmp_path / "run")
    assert loads == ["cpu"]  # at the start, then kept for both ticks
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert evaluate_module._loaded_network.cache_info().currsize == 0


def test_a_weights_file_of_another_layout_stops_training_before_the_first_step(tmp_path):
    wrong = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 8)}, wrong)
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["fd_dinov2"], metrics_every=10, dinov2_weights=str(wrong))
    with pytest.raises(DINOv2WeightsError, match="does not have the official dinov2_vitl14 layout"):
        ganforge.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_kid_and_pr_settings_beyond_the_images_a_tick_compares_are_refused(tmp_path):
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["swd", "kid"], metrics_every=10, metrics_n=16, kid_subset_size=100)
    with pytest.raises(ConfigError, match=r"^kid_subset_size: 100 needs more than the 16 images each metric tick "):
        ganforge.train(config, tmp_path / "run")


def test_a_bad_device_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--fake", "x.npz", "--metrics", "is", "--device", "gpu"])
    assert "expected auto, cpu, cuda, cuda:N or mps, got 'gpu'" in capsys.readouterr().err


def test_fd_dinov2_against_a_statistics_file(monkeypatch, tmp_path, capsys):
    """`ganforge stats --network dinov2` writes FD_DINOv2's statistics (the class token's mean and covariance, the
    network recorded); `evaluate --real-stats FILE` then gives the FD of the images themselves and takes fd_dinov2
    as its metric; the file serves nothing else, and training's fid_real_stats refuses it."""
    from ganforge.evaluation import run_metrics
    from ganforge.metrics import fid_stats

    torch.manual_seed(0)
    model = DINOv2(dim=1024, depth=1, heads=16).eval()  # the real width: statistics files hold 1024-d features
    weights = tmp_path / "dinov2_vitl14_pretrain.pth"
    weights.write_bytes(b"stand-in")
    for module in (evaluate_module, fid_stats):
        monkeypatch.setattr(module, "load_dinov2", lambda path, device=None: model)
    monkeypatch.setattr(evaluate_module, "resolve_dinov2_weights", lambda path=None: weights)
    monkeypatch.setattr(fid_stats, "resolve_dinov2_weights", lambda path=None: weights)
    rng = np.random.default_rng(3)
    reals = tmp_path / "reals"
    reals.mkdir()
    for index, image in enumerate(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)):
        Image.fromarray(image).save(reals / f"{index}.png")
    fakes = tmp_path / "fakes.npz"
    np.savez(fakes, images=rng.integers(0, 128, (5, 3, 16, 16), dtype=np.uint8))
    stats = tmp_path / "dinov2_stats.npz"
    assert main(["stats", str(reals), "-o", str(stats), "--network", "dinov2", "--dinov2-weights", str(weights)]) == 0
    assert "DINOv2 class-token mean and covariance of 6 images" in capsys.readouterr().out
    written = fid_stats.read_stats(stats)
    assert (written.network, written.count, written.fid_mode, written.mean.shape) == ("dinov2", 6, None, (1024,))
    from_file = run_metrics.evaluate_folders(fakes, None, ["fd_dinov2"], real_stats=stats, dinov2_weights=weights)
    from_images = run_metrics.evaluate_folders(fakes, reals, ["fd_dinov2"], dinov2_weights=weights)
    assert from_file["results"]["fd_dinov2"] == pytest.approx(from_images["results"]["fd_dinov2"], rel=1e-6)
    assert from_images["results"]["fd_dinov2"] > 0.1
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(stats), "--dinov2-weights", str(weights)]) == 0
    assert "FD_DINOv2" in capsys.readouterr().out  # the file's metric is the default
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(stats), "--metrics", "fid"]) == 2
    said = capsys.readouterr().err
    assert "fid: need(s) the real images" in said and "statistics of dinov2 features serve fd_dinov2 alone" in said
    assert main(["stats", str(reals), "-o", str(tmp_path / "x.npz"), "--network", "dinov2", "--fid-mode",
                 "clean"]) == 2
    assert "--fid-mode: not for dinov2 statistics (--network dinov2)" in capsys.readouterr().err
    config = {**copy.deepcopy(TINY_PGAN), "metrics": ["fid"], "fid_real_stats": str(stats)}
    with pytest.raises(ConfigError, match="holds dinov2 statistics .* training's FID needs Inception pool3 ones"):
        ganforge.train(config, tmp_path / "run")
