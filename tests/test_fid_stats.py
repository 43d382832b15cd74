"""Reference statistics files (pytorch-fid / TTUR `.npz`: mu, sigma): round trip, foreign files, refusals, and
`ganforge stats` / `ganforge evaluate --real-stats` end to end on stand-in Inception weights
(../shared/fixtures/inception/README.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image
from safetensors import safe_open

from ganforge.cli import main
from ganforge.config import ConfigError
from ganforge.data.store import DatasetError
from ganforge.evaluation.run_metrics import random_subset
from ganforge.metrics.evaluate import evaluate
from ganforge.metrics.fid import FeatureStats
from ganforge.metrics.fid_stats import (
    ReferenceStats,
    StatsFileError,
    check_stats_output,
    read_stats,
    stats_of_features,
    write_stats,
)


@pytest.fixture(scope="module")
def features() -> tuple[np.ndarray, np.ndarray]:
    """Two pool3-like feature sets (non-negative, correlated), 24 rows each."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(16, 2048))
    a = np.maximum(rng.normal(size=(24, 16)) @ mixing * 0.1 + 0.3, 0).astype(np.float32)
    b = np.maximum(rng.normal(size=(24, 16)) @ mixing * 0.1 + 0.35, 0).astype(np.float32)
    return a, b


@pytest.fixture(scope="module")
def standin_weights(tmp_path_factory) -> Path:
    recipe = shared_path("fixtures", "inception", "recipe.py")
    spec = importlib.util.spec_from_file_location("inception_recipe", recipe)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    weights = tmp_path_factory.mktemp("inception") / "standin.pth"
    torch.save(module.standin_state_dict(json.loads((recipe.parent / "layout.json").read_text())), weights)
    return weights


def test_round_trip_gives_the_in_memory_fid(features, tmp_path):
    a, b = features
    path = write_stats(tmp_path / "a.npz", stats_of_features(a, "clean"))
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["count", "fid_mode", "mu", "sigma"]
        assert archive["mu"].dtype == archive["sigma"].dtype == np.float64
        assert archive["mu"].shape == (2048,) and archive["sigma"].shape == (2048, 2048)
        np.testing.assert_allclose(archive["mu"], a.astype(np.float64).mean(0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(archive["sigma"], np.cov(a.astype(np.float64), rowvar=False), rtol=0, atol=1e-12)
    stats, in_memory = read_stats(path, "clean"), FeatureStats.from_features(a)
    assert (stats.count, stats.fid_mode) == (24, "clean")
    # exactly the in-memory mean and covariance, so FID against the file is FID against the features (the FID
    # itself, rel 1e-6, is checked end to end in test_stats_and_evaluate_real_stats_end_to_end)
    assert np.array_equal(stats.mean, in_memory.mean.numpy()) and np.array_equal(stats.cov, in_memory.cov.numpy())
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left beside it


def test_a_foreign_pytorch_fid_file_without_extra_keys_is_read(features, tmp_path):
    a = features[0]
    path = tmp_path / "fid_stats_foreign.npz"
    sigma = np.cov(a, rowvar=False).astype(np.float32)  # TTUR's published files can hold float32
    np.savez(path, mu=a.mean(0), sigma=sigma)
    stats = read_stats(path, "legacy-tf")  # the mode is unknown: not refused
    assert (stats.count, stats.fid_mode) == (None, None)
    assert stats.mean.dtype == stats.cov.dtype == np.float64
    assert np.array_equal(stats.mean, a.mean(0).astype(np.float64)) and np.array_equal(stats.cov, sigma)


def _write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


GOOD_MU, GOOD_SIGMA = np.zeros(2048), np.eye(2048)


@pytest.mark.parametrize("arrays,message", [
    ({"mu": GOOD_MU}, r"expected the keys 'mu' and 'sigma' \(pytorch-fid / TTUR layout\), found \['mu'\]"),
    ({"mu": np.zeros(100), "sigma": np.eye(100)},  # not the size of pool3 or of a block (64, 192, 768)
     r"expected 'mu' of shape \(2048,\) and 'sigma' of shape \(2048, 2048\) \(Inception pool3\), got \(100,\) and "
     r"\(100, 100\)"),
    ({"mu": np.full(2048, np.nan), "sigma": GOOD_SIGMA}, r"'mu' holds non-finite values \(NaN or infinity\)"),
    ({"mu": GOOD_MU, "sigma": np.eye(2048, dtype=np.int64)}, r"expected floating-point 'sigma', got int64"),
    ({"mu": GOOD_MU, "sigma": GOOD_SIGMA, "fid_mode": np.array("tf")}, r"'fid_mode' 'tf' is not one of legacy-tf, "),
    ({"mu": GOOD_MU, "sigma": GOOD_SIGMA, "count": np.array(1)}, r"'count' must be an integer of at least 2"),
    ({"mu": GOOD_MU, "sigma": -GOOD_SIGMA}, r"'sigma' is not a covariance matrix \(it must be symmetric with a "
                                            r"non-negative diagonal\)"),  # it gave FID -860
    ({"mu": GOOD_MU, "sigma": GOOD_SIGMA + np.triu(np.ones((2048, 2048)), 1)}, "'sigma' is not a covariance"),
])
def test_bad_files_are_refused_naming_the_file_and_what_was_expected(tmp_path, arrays, message):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(StatsFileError, match=f"^{path}: {message}") as info:
        read_stats(path)
    assert "\n" not in str(info.value)


def test_unreadable_files_and_other_modes_are_refused(tmp_path):
    text = tmp_path / "stats.npz"
    text.write_text("mu sigma")
    with pytest.raises(StatsFileError, match=rf"^{text}: not a readable .npz statistics file \(no .npz archive of "
                                             r"arrays\)$"):  # not numpy's advice to load it with pickle
        read_stats(text)
    pickled = _write(tmp_path / "pickled.npz", mu=np.array([{"a": 1}], dtype=object), sigma=GOOD_SIGMA)
    with pytest.raises(StatsFileError, match=f"^{pickled}: not a readable .npz statistics file"):
        read_stats(pickled)  # object arrays need pickle, which is never loaded
    with pytest.raises(StatsFileError, match="no such statistics file"):
        read_stats(tmp_path / "missing.npz")
    clean = write_stats(tmp_path / "clean.npz", ReferenceStats(GOOD_MU, GOOD_SIGMA, 10, "clean"))
    with pytest.raises(ConfigError, match=r"statistics made with fid_mode clean, and this evaluation uses legacy-tf; "
                                          r"give --fid-mode clean"):
        read_stats(clean, "legacy-tf")


def test_outputs_are_checked_before_anything_is_computed(tmp_path, capsys):
    images = tmp_path / "images.npz"
    images.write_bytes(b"not read")
    for out, message in ((tmp_path / "stats.txt", "must end in .npz"), (tmp_path, "is a folder"),
                         (images, "is the input")):
        with pytest.raises(ConfigError, match=message):
            check_stats_output(out, images)
    assert check_stats_output(tmp_path / "new" / "stats.npz") == tmp_path / "new" / "stats.npz"
    kept = write_stats(tmp_path / "kept.npz", ReferenceStats(GOOD_MU, GOOD_SIGMA, 10, "clean"))
    with pytest.raises(ConfigError, match=r"kept.npz: exists; --overwrite \(Python: overwrite=True\) replaces it"):
        write_stats(kept, ReferenceStats(GOOD_MU + 1, GOOD_SIGMA, 10, "clean"))  # hours of ImageNet features
    assert read_stats(kept).mean.max() == 0
    replaced = write_stats(kept, ReferenceStats(GOOD_MU + 1, GOOD_SIGMA, 10, "clean"), overwrite=True)
    assert read_stats(replaced).mean.max() == 1
    assert main(["stats", str(images), "-o", str(kept)]) == 2
    assert capsys.readouterr().err.strip().endswith("kept.npz: exists; --overwrite (Python: overwrite=True) replaces "
                                                     "it, or give another name")
    assert main(["stats", str(images), "-o", str(tmp_path / "stats.txt")]) == 2  # no weights needed to refuse
    assert capsys.readouterr().err.strip() == (f"ganforge stats: error: {tmp_path / 'stats.txt'}: a statistics file "
                                               "must end in .npz (the pytorch-fid / TTUR layout)")
    assert images.read_bytes() == b"not read" and not (tmp_path / "stats.txt").exists()


def test_kid_against_statistics_is_refused_in_one_line(features, tmp_path, capsys):
    path = write_stats(tmp_path / "a.npz", stats_of_features(features[0], "legacy-tf"))
    fakes = tmp_path / "fakes.npz"
    np.savez(fakes, images=np.zeros((2, 3, 8, 8), np.uint8))
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(path), "--metrics", "fid,kid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganforge evaluate: error: kid: need(s) the real images") and "\n" not in err
    assert "fid alone" in err
    with pytest.raises(ValueError, match=r"^pr: need\(s\) the real images .* serve fid alone"):
        evaluate(np.zeros((2, 3, 8, 8), np.uint8), None, ["pr"], real_stats=read_stats(path))
    with pytest.raises(ValueError, match=r"serve fid, which is not among the metrics \(is\)$"):  # nothing reads them
        evaluate(np.zeros((2, 3, 8, 8), np.uint8), None, ["is"], real_stats=read_stats(path))


def _write_pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index:03d}.png")
    return folder


@pytest.mark.slow
def test_stats_and_evaluate_real_stats_end_to_end(standin_weights, tmp_path, capsys):
    rng = np.random.default_rng(5)
    reals = _write_pngs(tmp_path / "reals", rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8))
    fakes = _write_pngs(tmp_path / "fakes", rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8))
    weights = ["--inception-weights", str(standin_weights)]
    out = tmp_path / "stats" / "reals.npz"
    assert main(["stats", str(reals), "-o", str(out), "--fid-mode", "clean", *weights]) == 0
    assert capsys.readouterr().out.strip() == (f"wrote {out}: Inception pool3 mean and covariance of 4 images of "
                                               f"{reals} (for fid, fid_mode clean)")
    assert (read_stats(out).count, read_stats(out).fid_mode) == (4, "clean")

    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(out), "--fid-mode", "clean", *weights]) == 0
    header, from_stats, bias_note, small_set = capsys.readouterr().out.strip().splitlines()
    assert header == f"4 generated images against the statistics in {out} (4 images)"
    assert from_stats.startswith("FID") and from_stats.endswith("  (clean)")
    assert bias_note.startswith("(FID from fewer than the 50,000 generated images papers use is biased upwards")
    assert small_set == ("(warning: fid of 2048-d features from a set of 4 images, no more than their dimensions: "
                         "its covariance is singular and the distance far above what more images give; use more "
                         "images, or a narrower Inception block (fid64, fid192, fid768: pytorch-fid's --dims))")
    assert main(["evaluate", "--fake", str(fakes), "--real", str(reals), "--metrics", "fid", "--fid-mode", "clean",
                 *weights]) == 0
    header, from_images, _, _ = capsys.readouterr().out.strip().splitlines()
    assert header == "4 generated images against 4 real"
    assert float(from_stats.split()[1]) == pytest.approx(float(from_images.split()[1]), rel=1e-6)
    foreign = tmp_path / "foreign.npz"  # the same statistics as pytorch-fid writes them: mu and sigma only
    np.savez(foreign, mu=read_stats(out).mean, sigma=read_stats(out).cov)
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(foreign), "--fid-mode", "clean", *weights]) == 0
    header, fid_line, _, _, note = capsys.readouterr().out.strip().splitlines()
    assert header == f"4 generated images against the statistics in {foreign}" and fid_line == from_stats
    assert note == (f"note: {foreign} does not say its FID mode (a file from elsewhere); it is compared as clean "
                    "(TTUR's files are legacy-tf, pytorch-fid's --save-stats files pytorch-fid)")

    # the file says clean: a legacy-tf evaluation (the default) is refused before any image is read
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(out), *weights]) == 2
    assert "statistics made with fid_mode clean, and this evaluation uses legacy-tf" in capsys.readouterr().err


@pytest.mark.slow
def test_the_real_feature_cache_is_keyed_by_mode(standin_weights, tmp_path):
    rng = np.random.default_rng(6)
    fake, real = (rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8) for _ in range(2))
    values = {}
    for mode in ("legacy-tf", "clean", "legacy-tf"):  # KID: real features as FID needs, without its 2048^2 algebra
        values.setdefault(mode, []).append(evaluate(fake, real, ["kid"], inception_weights=standin_weights,
                                                    real_cache_key="set", cache_dir=tmp_path, fid_mode=mode)["kid"])
    caches = sorted(tmp_path.glob("*.safetensors"))
    modes = sorted(safe_open(str(path), framework="pt").metadata()["fid_mode"] for path in caches)
    assert modes == ["clean", "legacy-tf"]  # one cache per mode; the second legacy-tf run read its own
    assert values["legacy-tf"][0] == values["legacy-tf"][1] != values["clean"][0]


@pytest.mark.slow
def test_a_runs_generator_against_statistics_matches_evaluate_run(standin_weights, standin_vgg16, tmp_path, capsys):
    from pgan_tiny import TINY_PGAN

    import ganforge

    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run)
    reals = _write_pngs(tmp_path / "reals", np.random.default_rng(7).integers(0, 256, (4, 3, 16, 16), np.uint8))
    weights = ["--inception-weights", str(standin_weights)]
    stats = tmp_path / "reals.npz"
    assert main(["stats", str(reals), "-o", str(stats), *weights]) == 0
    capsys.readouterr()
    records = (run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else ""
    assert main(["evaluate", "--fake", str(run), "--real-stats", str(stats), "--n", "4", *weights]) == 0
    from_stats = capsys.readouterr().out.strip().splitlines()[1]
    assert from_stats.endswith("  (legacy-tf)")
    assert ((run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else "") == records
    # the same EMA images (same seed) against the images themselves: the run's own evaluation, recorded with its mode
    assert main(["evaluate", str(run), "--real", str(reals), "--metrics", "fid", "--n", "4", *weights]) == 0
    header, from_images = capsys.readouterr().out.strip().splitlines()[:2]
    assert header == "step 20: 4 generated images against 4 real"
    assert float(from_stats.split()[1]) == pytest.approx(float(from_images.split()[1]), rel=1e-6)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["fid_mode"] == "legacy-tf" and record["n"] == 4
    assert record["fid"] == pytest.approx(float(from_images.split()[1]), rel=1e-4)
    # KID and precision/recall settings other than the papers' are recorded with the values they gave
    assert main(["evaluate", str(run), "--real", str(reals), "--metrics", "kid,pr", "--n", "4", "--kid-subsets", "5",
                 "--kid-subset-size", "3", "--pr-k", "2", *weights]) == 0
    assert "note: KID from subsets" not in capsys.readouterr().out
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert (record["kid_subsets"], record["kid_subset_size"], record["pr_k"]) == (5, 3, 2)
    assert main(["evaluate", str(run), "--real", str(reals), "--metrics", "kid", "--n", "4", *weights]) == 0
    assert ("note: KID from subsets of 4 images (all there are) instead of 1000: its mean is unbiased either way"
            in capsys.readouterr().out)
    assert "kid_subsets" not in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    # a subset size above the images is recorded as used (it was recorded as given); IS says its fewer splits
    assert main(["evaluate", str(run), "--real", str(reals), "--metrics", "kid,is", "--n", "4",
                 "--kid-subset-size", "1000", *weights]) == 0
    assert "(IS over 2 splits of a set of 4 images instead of 10, so that each split holds" in capsys.readouterr().out
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["kid_subset_size"] == 4


def test_stats_of_a_random_choice_of_n_images(standin_weights, tmp_path, capsys):
    """`stats --n N` takes a seeded random choice of N images (`random_subset`), never the first N: stores and
    folders are often sorted by class, and their first N would be a few classes."""
    images = np.random.default_rng(8).integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    folder = _write_pngs(tmp_path / "images", images)
    out = tmp_path / "first2.npz"
    weights = ["--inception-weights", str(standin_weights)]
    assert main(["stats", str(folder), "-o", str(out), "--n", "5", *weights]) == 2
    assert capsys.readouterr().err.strip() == f"ganforge stats: error: --n 5: {folder} holds 3 images"
    assert not out.exists()
    assert main(["stats", str(folder), "-o", str(out), "--n", "2", *weights]) == 0
    written = read_stats(out)
    assert (written.count, written.fid_mode) == (2, "legacy-tf")
    np.savez(tmp_path / "chosen2_images.npz", images=images[random_subset(3, 2, seed=0)])
    again = tmp_path / "again.npz"
    assert main(["stats", str(tmp_path / "chosen2_images.npz"), "-o", str(again), *weights]) == 0
    assert np.array_equal(read_stats(again).mean, written.mean) and np.array_equal(read_stats(again).cov, written.cov)


def whole_set(*args, **kwargs) -> np.ndarray:
    from ganforge.evaluation import run_metrics

    return np.concatenate(list(run_metrics.iter_image_set(*args, **kwargs)))


def test_image_folders_stream_batch_by_batch_and_equal_the_whole_set(tmp_path, monkeypatch):
    """`ganforge stats` of a 50,000-image folder holds one batch of decoded images, not the folder (pytorch-fid
    streams too); the batches concatenate to the whole set, a store's read from its memory map."""
    from ganforge.evaluation import run_metrics

    images = np.random.default_rng(9).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    folder = _write_pngs(tmp_path / "images", images)
    decoded = []
    real_decode = run_metrics._decoded
    monkeypatch.setattr(run_metrics, "_decoded", lambda path, size: decoded.append(path) or real_decode(path, size))
    batches = run_metrics.iter_image_set(folder, batch_size=2)
    first = next(batches)
    assert first.shape == (2, 3, 8, 8) and len(decoded) == 2  # nothing decoded beyond the batch handed out
    rest = list(batches)
    assert [len(b) for b in rest] == [2, 1] and np.array_equal(np.concatenate([first, *rest]), images)
    assert np.array_equal(whole_set(folder, sample=3), images[random_subset(5, 3, seed=0)])
    assert np.array_equal(whole_set(folder, sample=3, seed=1), images[random_subset(5, 3, seed=1)])
    assert run_metrics.image_set_size(folder) == 5
    from ganforge.data.store import write_store

    store = write_store(tmp_path / "store", images, resolution=8, source="test")  # read from its memory map
    assert [len(b) for b in run_metrics.iter_image_set(store, sample=4, batch_size=3)] == [3, 1]
    assert np.array_equal(whole_set(store, sample=4), images[random_subset(5, 4, seed=0)])
    assert np.array_equal(whole_set(store), images) and run_metrics.image_set_size(store) == 5
    Image.new("RGB", (16, 16)).save(folder / "zz-larger.png")  # in the last batch, with a 8 px one
    with pytest.raises(DatasetError, match=r"images of different sizes \[\(3, 8, 8\), \(3, 16, 16\)\]"):
        list(run_metrics.iter_image_set(folder, batch_size=2))


def test_evaluating_two_folders_streams_them_and_equals_the_whole_arrays(tmp_path, monkeypatch):
    """`evaluate --fake DIR --real DIR` reads both sets batch by batch (never a whole folder decoded at once) and
    gives the values of the same images passed as whole arrays."""
    from ganforge.evaluation import run_metrics

    rng = np.random.default_rng(10)
    fakes = _write_pngs(tmp_path / "fakes", rng.integers(0, 256, (20, 3, 16, 16), dtype=np.uint8))
    reals = _write_pngs(tmp_path / "reals", rng.integers(0, 256, (24, 3, 32, 32), dtype=np.uint8))  # brought to 16
    whole = evaluate(whole_set(fakes), whole_set(reals, 16)[random_subset(24, 20, seed=0)], ["swd", "msssim"],
                     n=20)
    largest = []
    real_iter = run_metrics.iter_image_set

    def watched(*args, **kwargs):
        for batch in real_iter(*args, **{**kwargs, "batch_size": 8}):
            largest.append(len(batch))
            yield batch

    monkeypatch.setattr(run_metrics, "iter_image_set", watched)
    streamed = run_metrics.evaluate_folders(fakes, reals, ["swd", "msssim"])["results"]
    assert streamed["swd"] == whole["swd"] and streamed["msssim"] == whole["msssim"]
    assert max(largest) == 8  # batch by batch


def test_two_folders_of_different_sizes_are_each_read_whole_and_swd_compares_equal_counts(standin_weights, tmp_path,
                                                                                         capsys):
    """pytorch-fid and torch-fidelity compute FID from every image of each folder (it was the smaller folder's count
    of each); SWD sorts equal numbers of descriptors: a seeded random choice of the smaller size from each."""
    from ganforge.evaluation import run_metrics

    rng = np.random.default_rng(14)
    fakes = _write_pngs(tmp_path / "fakes", rng.integers(0, 256, (6, 3, 16, 16), dtype=np.uint8))
    reals = _write_pngs(tmp_path / "reals", rng.integers(0, 256, (10, 3, 16, 16), dtype=np.uint8))
    got = run_metrics.evaluate_folders(fakes, reals, ["swd", "fid"], inception_weights=standin_weights)
    fid = evaluate(whole_set(fakes), whole_set(reals), ["fid"], inception_weights=standin_weights)["fid"]
    swd = evaluate(whole_set(fakes), whole_set(reals)[random_subset(10, 6, seed=0)], ["swd"])["swd"]
    assert got["results"]["fid"] == fid and got["results"]["swd"] == swd
    assert list(got["results"]) == ["swd", "fid"]
    assert got["table"].splitlines()[0] == ("6 generated images against 10 real (SWD: a random 6 of each set, as it "
                                            "compares equal counts)")
    assert main(["evaluate", "--fake", str(fakes), "--real", str(reals), "--metrics", "fid", "--inception-weights",
                 str(standin_weights)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "6 generated images against 10 real"


def test_mixed_size_folders_are_brought_to_one_resolution(standin_weights, tmp_path, capsys):
    """`stats DIR --resolution R` and `evaluate --fake DIR --resolution R`: every image centre-cropped and resized to
    R×R (as `prepare` does), which a mixed folder needs and is told to give; the result equals the resized images."""
    from ganforge.data.images import center_crop_resize

    rng = np.random.default_rng(11)
    shapes = [(24, 24), (16, 20), (32, 16), (16, 16)]  # square, landscape, portrait
    pictures = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    folder = tmp_path / "mixed"
    folder.mkdir()
    for index, picture in enumerate(pictures):
        Image.fromarray(picture).save(folder / f"{index:03d}.png")
    expected = np.stack([center_crop_resize(p, 16).transpose(2, 0, 1) for p in pictures])
    assert np.array_equal(whole_set(folder, 16), expected)
    np.savez(tmp_path / "expected.npz", images=expected)

    weights = ["--inception-weights", str(standin_weights)]
    assert main(["stats", str(folder), "-o", str(tmp_path / "no.npz"), *weights]) == 2
    assert "images of different sizes" in capsys.readouterr().err and not (tmp_path / "no.npz").exists()
    assert main(["stats", str(folder), "-o", str(tmp_path / "mixed.npz"), "--resolution", "16", *weights]) == 0
    assert main(["stats", str(tmp_path / "expected.npz"), "-o", str(tmp_path / "expected_stats.npz"), *weights]) == 0
    mixed, resized = read_stats(tmp_path / "mixed.npz"), read_stats(tmp_path / "expected_stats.npz")
    assert np.array_equal(mixed.mean, resized.mean) and np.array_equal(mixed.cov, resized.cov)

    capsys.readouterr()
    assert main(["evaluate", "--fake", str(folder), "--real", str(tmp_path / "expected.npz"), "--resolution", "16",
                 "--metrics", "swd"]) == 0
    assert "4 generated images against 4 real" in capsys.readouterr().out
    # the .npz of 16 px images brought to 8 px alike
    assert np.array_equal(whole_set(tmp_path / "expected.npz", 8),
                          np.stack([center_crop_resize(e.transpose(1, 2, 0), 8).transpose(2, 0, 1) for e in expected]))


@pytest.mark.parametrize(("argv", "message"), [
    (["evaluate", "RUN", "--resolution", "16"], "--resolution brings the images of --fake DIR"),
    (["stats", "DIR", "-o", "x.npz", "--resolution", "0"], "argument --resolution: expected a positive integer"),
])
def test_resolution_where_it_would_do_nothing_is_refused(argv, message, capsys):
    try:
        code = main(argv)  # a command's refusal: one error line
    except SystemExit as exit_:  # argparse's usage error
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err


def test_statistics_of_an_image_set_stream_into_running_sums(monkeypatch):
    """`stats` keeps sums, not every image's features (BigGAN-PyTorch's moments script holds them all and runs out
    of memory on ImageNet, its issue #13): the mean and covariance equal numpy's of the whole feature array."""
    from ganforge.metrics import fid_stats
    from ganforge.metrics.fid_stats import image_set_stats

    mixing = torch.from_numpy(np.random.default_rng(2).normal(size=(12, 2048))).float()
    seen = []

    class Network:
        @staticmethod
        def features(batch: torch.Tensor) -> dict[str, torch.Tensor]:
            seen.append(len(batch))
            return {"2048": batch.float().mean(dim=(2, 3)).repeat(1, 4) @ mixing}

    monkeypatch.setattr(fid_stats, "load_inception", lambda weights, device=None, fid_mode=None: Network)
    updates = []
    update = fid_stats.FeatureStats.update
    monkeypatch.setattr(fid_stats.FeatureStats, "update",
                        lambda self, features: updates.append(len(features)) or update(self, features))
    images = np.random.default_rng(3).integers(0, 256, (300, 3, 8, 8), dtype=np.uint8)
    stats = image_set_stats(images, fid_mode="legacy-tf", batch_size=64, n=290)
    pools = (torch.from_numpy(images[:290]).float().mean(dim=(2, 3)).repeat(1, 4) @ mixing).double().numpy()
    assert seen == [64, 64, 64, 64, 34] and stats.count == 290
    assert updates == [64, 64, 64, 64, 34]  # batch by batch into the sums, never one array of every feature
    assert stats.resolution == 8  # recorded, so that training compares only images of that size with them
    np.testing.assert_allclose(stats.mean, pools.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats.cov, np.cov(pools, rowvar=False), rtol=1e-9, atol=1e-9)


def test_unequal_sets_with_kid_and_pr_settings_and_swd(standin_weights, standin_vgg16, tmp_path):
    """SWD's equal-count pass takes only its own metrics' settings (a --pr-k with swd and pr refused the SWD pass);
    precision/recall reads the VGG-16 features, whose real-set features are cached apart from Inception's."""
    from ganforge.evaluation import run_metrics
    from ganforge.metrics.registry import MetricSettings

    rng = np.random.default_rng(15)
    fakes = _write_pngs(tmp_path / "fakes", rng.integers(0, 256, (8, 3, 16, 16), dtype=np.uint8))
    reals = _write_pngs(tmp_path / "reals", rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8))
    got = run_metrics.evaluate_folders(fakes, reals, ["swd", "pr", "kid"], inception_weights=standin_weights,
                                       settings=MetricSettings(pr_k=2, kid_subset_size=4))
    assert set(got["results"]) == {"swd", "pr", "kid"}
    whole_fakes, whole_reals = whole_set(fakes), whole_set(reals)
    pr = evaluate(whole_fakes, whole_reals, ["pr"], settings=MetricSettings(pr_k=2))["pr"]
    assert got["results"]["pr"] == pr

    reads = []

    def real_batches():
        reads.append(1)
        return iter([whole_reals])

    first = evaluate(whole_fakes, real_batches, ["pr", "kid"], inception_weights=standin_weights,
                     real_cache_key="reals", cache_dir=tmp_path / "cache", settings=MetricSettings(kid_subset_size=4))
    again = evaluate(whole_fakes, real_batches, ["pr", "kid"], inception_weights=standin_weights,
                     real_cache_key="reals", cache_dir=tmp_path / "cache", settings=MetricSettings(kid_subset_size=4))
    assert reads == [1] and again == first
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.safetensors"))
    assert names == ["inception", "vgg16"]
    with pytest.raises(ValueError, match="real statistics of inception features serve fid, which is not among"):
        evaluate(whole_fakes, whole_reals, ["pr"], real_stats=stats_of_features(np.eye(3, 2048), "legacy-tf"))
    with pytest.raises(ConfigError, match=r"^--inception-weights \(inception_weights=\): for fid, fid64, fid192, "
                                          r"fid768, kid, is, "):
        run_metrics.evaluate_folders(fakes, reals, ["pr"], inception_weights=standin_weights)
