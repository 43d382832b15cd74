"""BigGAN sampling tools on values: per-class sheets, interpolations in z / class embedding / both, truncation
(true truncated normal and variance scaling), the truncation sweep's IS/FID, NPZ export, and the errors for runs
and options they do not apply to."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from pgan_tiny import TINY_PGAN
from PIL import Image

from ganforge.api import LoadedModel, build_family, dataset_placeholder
from ganforge.evaluation.run_metrics import generated_batches
from ganforge.families import resolve_run_config
from ganforge.metrics.fid import FeatureStats, fid
from ganforge.metrics.inception_score import inception_score
from ganforge.models.biggan import sample_latents
from ganforge.viz import class_sampling as cs
from ganforge.viz.grid import label_grid, to_uint8

SHAPES = "builtin:shapes?count=64&resolution=32"


def tiny_model(family: str = "biggan", **model: Any) -> LoadedModel:
    """An untrained tiny run's model (weights do not matter for the sampling logic)."""
    torch.manual_seed(0)
    settings = {"g_ch": 4, "d_ch": 4, "latent_dim": 16, "shared_dim": 8, "g_attention": [], "d_attention": [],
                "batch_size": 4, "steps": 4, **model}
    data = TINY_PGAN if family == "pgan" else {"family": family, "data": SHAPES, "model": settings}
    config = resolve_run_config(None, copy.deepcopy(data))
    loaded = build_family(config, torch.device("cpu"))
    for net in loaded.nets.values():
        net.eval().requires_grad_(False)
    return LoadedModel(family=loaded, config=config, step=0, plan=loaded.plan(0))


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny_model()


def direct(model: LoadedModel, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """G_ema(z, y) in eval mode, called without the tools under test."""
    with torch.no_grad():
        return model.nets["G_ema"](z, y)


def test_class_sheet_rows_are_classes_and_columns_share_z(model):
    images = cs.class_sheet(model, 3, [2, 0], seed=5, truncation=0.5)
    z = sample_latents(3, 16, truncation=0.5, generator=torch.Generator().manual_seed(5))
    assert z.abs().max() <= 0.5
    expected = torch.cat([direct(model, z, torch.full((3,), 2)), direct(model, z, torch.zeros(3, dtype=torch.long))])
    torch.testing.assert_close(images, expected)


def test_class_sheets_split_into_files_of_rows_per_sheet(model, tmp_path):
    paths = cs.write_class_sheets(model, tmp_path, 2, rows_per_sheet=3)
    assert [p.name for p in paths] == ["per_class-000.png", "per_class-001.png"]  # 4 shape classes: 3 + 1 rows
    title = f"{cs.model_caption(model)}\nrows: classes; columns: one z each"
    names = model.family.class_names()

    def captioned(rows: int, labels: list[str]) -> tuple[int, int]:
        return label_grid(np.zeros((2 + rows * 34, 2 + 2 * 34, 3), np.uint8), title, labels).shape[1::-1]

    with Image.open(paths[0]) as first, Image.open(paths[1]) as second:
        assert first.size == captioned(3, names[:3]) and second.size == captioned(1, names[3:])
    [single] = cs.write_class_sheets(model, tmp_path, 2)
    assert single.name == "per_class.png"


@pytest.mark.parametrize("space", cs.INTERPOLATION_SPACES)
def test_interpolation_ends_are_the_drawn_samples(model, space):
    rows, frames = 2, 4
    images = cs.interpolation_sheet(model, space, rows, frames, seed=3, truncation=1.5, method="scale")
    draws = torch.Generator().manual_seed(3)
    z_from, z_to = (sample_latents(rows, 16, truncation=1.5, method="scale", generator=draws) for _ in range(2))
    y_from = torch.randint(4, (rows,), generator=draws)
    y_to = (y_from + 1 + torch.randint(3, (rows,), generator=draws)) % 4  # never the row's first class
    first, last = images[::frames], images[frames - 1::frames]
    torch.testing.assert_close(first, direct(model, z_from, y_from))
    end_z = z_from if space == "class" else z_to
    end_y = y_from if space == "z" else y_to
    torch.testing.assert_close(last, direct(model, end_z, end_y), atol=1e-5, rtol=1e-5)
    if space == "class":  # halfway: the mean of the two shared embeddings at the first z
        g = model.nets["G_ema"]
        mid = cs.interpolation_sheet(model, space, rows, 3, seed=3, truncation=1.5, method="scale")[1::3]
        with torch.no_grad():
            halfway = g.synthesize(z_from, (g.embed(y_from) + g.embed(y_to)) / 2)
        torch.testing.assert_close(mid, halfway)


def test_interpolation_sheets_are_written(model, tmp_path):
    paths = cs.write_interpolation_sheets(model, tmp_path, ["z", "both"], rows=3, frames=5)
    assert [p.name for p in paths] == ["interp_z.png", "interp_both.png"]
    title = f"{cs.model_caption(model)}\ninterpolation in both: a row per path, 5 frames"
    labels = cs.interpolation_row_labels(model, "both", 3)
    with Image.open(paths[1]) as sheet:
        assert sheet.size == label_grid(np.zeros((2 + 3 * 34, 2 + 5 * 34, 3), np.uint8), title,
                                        labels).shape[1::-1]


@pytest.mark.parametrize("space", cs.INTERPOLATION_SPACES)
def test_interpolation_rows_are_labelled_with_the_classes_they_show(model, space):
    names = model.family.class_names()
    draws = torch.Generator().manual_seed(3)
    for _ in range(2):
        sample_latents(2, 16, generator=draws)
    y_from = torch.randint(4, (2,), generator=draws)
    y_to = (y_from + 1 + torch.randint(3, (2,), generator=draws)) % 4
    assert bool((y_to != y_from).all())  # a class blend ends at another class ("dog -> dog" was a row of one)
    expected = ([names[int(a)] for a in y_from] if space == "z"
                else [f"{names[int(a)]} -> {names[int(b)]}" for a, b in zip(y_from, y_to, strict=True)])
    assert cs.interpolation_row_labels(model, space, 2, seed=3) == expected


def test_class_interpolation_needs_a_shared_embedding():
    model = tiny_model(g_shared=False, hier=False, shared_dim=0)
    assert cs.interpolation_sheet(model, "z", 1, 2).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"model.g_shared: false.*interpolate in 'z' only"):
        cs.interpolation_sheet(model, "class", 1, 2)
    with pytest.raises(ValueError, match="interpolation space must be one of"):
        cs.interpolation_sheet(model, "y", 1, 2)


def test_options_refuse_other_families(tmp_path):
    pgan = tiny_model("pgan")
    with pytest.raises(ValueError, match="--per-class applies to class-conditional BigGAN runs.*'pgan'"):
        cs.write_class_sheets(pgan, tmp_path, 2)


def test_an_unconditional_run_exports_its_samples_as_x_alone(tmp_path):
    """--npz of any family that samples from latents: the images generate draws from the seed, no y."""
    pgan = tiny_model("pgan")
    path = cs.export_npz(pgan, tmp_path / "pgan.npz", 5, seed=4, batch_size=2)
    with np.load(path, allow_pickle=False) as archive:
        assert archive.files == ["x"]
        x = archive["x"]
    draws = torch.Generator().manual_seed(4)
    expected = [to_uint8(pgan.generate(pgan.family.sample_latents(count, draws))).transpose(0, 3, 1, 2)
                for count in (2, 2, 1)]
    np.testing.assert_array_equal(x, np.concatenate(expected))


def test_npz_round_trip(model, tmp_path):
    path = cs.export_npz(model, tmp_path / "out" / "samples.npz", 5, seed=2, truncation=0.4, batch_size=2)
    with np.load(path, allow_pickle=False) as archive:
        assert archive.files == ["x", "y"]
        x, y = archive["x"], archive["y"]
    assert x.dtype == np.uint8 and x.shape == (5, 3, 32, 32) and y.dtype == np.int64 and y.shape == (5,)
    # the samples `generate --n 5 --seed 2 --truncation 0.4` writes as files: z (truncated) and y of seed 2, drawn
    # for all samples at once (the batches drew z and y per batch from one stream, so the NPZ's images were others)
    z = sample_latents(5, 16, truncation=0.4, generator=torch.Generator().manual_seed(2))
    labels = model.latents(5, seed=2)["y"]
    np.testing.assert_array_equal(x, to_uint8(direct(model, z, labels)).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(y, labels.numpy())
    assert not list(path.parent.glob(".*partial"))
    more = cs.export_npz(model, tmp_path / "more.npz", 9, seed=2, truncation=0.4, batch_size=4)
    with np.load(more, allow_pickle=False) as archive:  # sample i is the same whatever n and the batches
        np.testing.assert_array_equal(archive["x"][:5], x)
        np.testing.assert_array_equal(archive["y"][:5], y)
    with pytest.raises(ValueError, match="must end in .npz"):
        cs.export_npz(model, tmp_path / "samples.bin", 1)


def stand_in_features(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A cheap deterministic extractor: per-channel means and stds as 'pool', a fixed projection as logits."""
    x = images.double() / 255
    pool = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
    weights = torch.arange(12, dtype=torch.float64).reshape(6, 2) - 5
    return pool, pool @ weights * 4


def test_truncation_sweep_values(model):
    reals = np.random.default_rng(0).integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    rows = cs.truncation_sweep(model, [0.5, None], n=6, reals=reals, features=stand_in_features, seed=1,
                               splits=2, batch_size=4)
    real_pool, _ = stand_in_features(torch.from_numpy(reals))
    assert [row["truncation"] for row in rows] == [0.5, None]
    for row, psi in zip(rows, [0.5, None], strict=True):
        images = np.concatenate([x for x, _ in cs.iter_samples(model, 6, seed=1, truncation=psi, batch_size=4)])
        pool, logits = stand_in_features(torch.from_numpy(images))
        assert (row["is_mean"], row["is_std"]) == pytest.approx(inception_score(logits, splits=2))
        assert row["fid"] == pytest.approx(fid(FeatureStats.from_features(pool), FeatureStats.from_features(real_pool)))
        assert row["n"] == 6 and row["method"] == "resample"
    assert rows[0]["fid"] != rows[1]["fid"]
    table = cs.format_sweep(rows)
    assert table.splitlines()[1].split()[0] == "0.5" and table.splitlines()[2].split()[0] == "none"


def test_parse_truncations():
    assert cs.parse_truncations("0.5, 1,none") == [0.5, 1.0, None]
    with pytest.raises(ValueError, match=r"'x' is not a number"):
        cs.parse_truncations("0.5,x")
    for bad in ("0", "inf", "1e400", "nan"):  # inf reached the sweep after earlier outputs were written
        with pytest.raises(ValueError, match=rf"must be finite and > 0, got '{bad}'"):
            cs.parse_truncations(bad)


def test_truncated_normal_and_scaling_bounds():
    draws = torch.Generator().manual_seed(0)
    z = sample_latents(20000, 8, truncation=0.3, method="resample", generator=draws)
    # a truncated normal on [-0.3, 0.3]: its variance 1 - 2ψφ(ψ)/(2Φ(ψ) - 1) = 0.02964 (nearly uniform's 0.03)
    assert z.abs().max() <= 0.3 and z.var().item() == pytest.approx(0.02964, rel=0.02)
    plain = sample_latents(20000, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.sign(z), torch.sign(plain))  # the same draws, mapped: common to every ψ
    scaled = sample_latents(2000, 8, truncation=0.3, method="scale", generator=draws)
    assert scaled.abs().max() > 0.3 and scaled.std() == pytest.approx(0.3, rel=0.05)


def thousand_class_model() -> LoadedModel:
    """A tiny 1,000-class model built without data (n_classes from the config), like an ImageNet run's shape."""
    settings = {"g_ch": 4, "d_ch": 4, "latent_dim": 4, "shared_dim": 4, "g_attention": [], "d_attention": [],
                "resolution": 32, "n_classes": 1000}
    config = resolve_run_config("biggan", {"data": "absent-store", "model": settings})
    manifest = {"source": "absent-store", "count": 0, "resolution": 32, "channels": 3, "levels": [], "labels": []}
    family = build_family(config, torch.device("cpu"), dataset_placeholder(manifest))
    return LoadedModel(family=family, config=config, step=0, plan=family.plan(0))


@pytest.mark.slow
def test_metric_and_sweep_samples_draw_every_class_uniformly_under_their_seed():
    """50,000 samples of a 1,000-class model, as training-time/`evaluate` metrics and the truncation sweep draw them:
    every class within mean ± 5σ of its binomial count (50 ± 35), the same classes again under the same seed.
    (They used to cycle 0..63 in every batch of 64: 936 classes never drawn.)"""
    model = thousand_class_model()
    drawn: list[torch.Tensor] = []

    def record(inputs: dict[str, torch.Tensor], net: str, plan: Any) -> torch.Tensor:
        drawn.append(inputs["y"].cpu())  # the classes are under test, not the network
        return torch.zeros(len(inputs["y"]), 3, 32, 32)

    model.family.generate = record
    n, mean = 50_000, 50.0
    sigma = (n * (1 / 1000) * (1 - 1 / 1000)) ** 0.5
    for draw in (lambda seed: list(generated_batches(model.family, model.plan, n, seed, batch_size=5000)),
                 lambda seed: list(cs.iter_samples(model, n, seed=seed, batch_size=5000))):
        runs = []
        for seed in (3, 3, 4):
            drawn.clear()
            draw(seed)
            runs.append(torch.cat(drawn))
        counts = torch.bincount(runs[0], minlength=1000)
        assert len(runs[0]) == n and len(counts) == 1000
        assert ((counts - mean).abs() <= 5 * sigma).all(), (counts.min(), counts.max())
        assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_generate_class_cycles_the_chosen_classes_by_name_or_index(model, tmp_path):
    """`generate --class` (BigGAN-PyTorch issue #28: sample a chosen class): every sample's class is one asked for,
    in turn, into single files, a grid or an NPZ; the images are G(z, chosen y) for the same z."""
    from ganforge.viz.generate import GenerateRequest, write_generated

    names = model.family.class_names()
    npz = tmp_path / "chosen.npz"
    write_generated(model, GenerateRequest(out=None, n=5, seed=2, npz=npz, classes=f"{names[2]},0"))
    with np.load(npz) as archive:
        assert archive["y"].tolist() == [2, 0, 2, 0, 2]
        drawn = model.latents(5, 2)
        np.testing.assert_array_equal(archive["x"], cs.uint8_nchw(direct(model, drawn["z"], torch.tensor(
            [2, 0, 2, 0, 2]))))
    batches = list(cs.iter_samples(model, 5, seed=2, batch_size=2, classes=cs.class_choice(model, "0,1,2")))
    assert [classes.tolist() for _, classes in batches] == [[0, 1], [2, 0], [1]]  # the cycle runs across batches
    files = write_generated(model, GenerateRequest(out=tmp_path / "files", n=3, seed=2, classes="1")).files
    assert [path.name for path in files] == [f"0002-0000{k}-{names[1]}.png" for k in range(3)]
    for option, message in ((dict(classes="nothing"), r"--class: 'nothing' is not a class of this run"),
                            (dict(classes="9"), r"an index below 4"),
                            (dict(classes="1", per_class=2), r"--class: for single images, --grid and --npz; not "
                                                             r"with --per-class")):
        with pytest.raises(ValueError, match=message):
            write_generated(model, GenerateRequest(out=tmp_path / "x", **option))
    with pytest.raises(ValueError, match=r"--class: this run's generator takes no classes \(a pgan run without "
                                         r"model.conditions\)"):
        write_generated(tiny_model("pgan"), GenerateRequest(out=tmp_path / "y", classes="1"))


def test_generate_class_of_a_label_conditioned_pgan_fixes_its_columns():
    from ganforge.viz.class_sampling import class_choice

    config = copy.deepcopy(TINY_PGAN)
    config["model"]["conditions"] = ["shape", "background"]
    torch.manual_seed(0)
    resolved = resolve_run_config(None, config)
    loaded = build_family(resolved, torch.device("cpu"))
    pgan = LoadedModel(family=loaded, config=resolved, step=0, plan=loaded.plan(0))
    drawn = pgan.latents(6, 1)
    chosen = class_choice(pgan, "square,background=dark")(drawn)
    shapes, backgrounds = pgan.family.conditioning()[0][1], pgan.family.conditioning()[1][1]
    assert chosen["labels"][:, 0].tolist() == [shapes.index("square")] * 6
    assert chosen["labels"][:, 1].tolist() == [backgrounds.index("dark")] * 6
    assert torch.equal(chosen["z"], drawn["z"])
    partly = class_choice(pgan, "shape=0,shape=ring")(drawn)["labels"]
    assert partly[:, 0].tolist() == [0, 3, 0, 3, 0, 3] and torch.equal(partly[:, 1], drawn["labels"][:, 1])
    with pytest.raises(ValueError, match=r"--class colour=red: no label column 'colour' \(columns: shape, "):
        class_choice(pgan, "colour=red")


def test_generate_keeps_the_class_sheets_an_earlier_generate_wrote(model, tmp_path):
    """Per-class and interpolation sheets are refused over their earlier files (names as class_sampling writes
    them), and replaced with `overwrite`."""
    from ganforge.viz.generate import GenerateRequest, write_generated

    first = write_generated(model, GenerateRequest(out=tmp_path, n=2, per_class=2, interpolate_class=3,
                                                   interp_spaces="z,class")).files
    assert sorted(path.name for path in first) == ["interp_class.png", "interp_z.png", "per_class.png"]
    before = {path: path.read_bytes() for path in first}
    for option in (dict(per_class=2), dict(interpolate_class=3, interp_spaces="class")):
        with pytest.raises(ValueError, match=r"already there \(an earlier generate's\?\)"):
            write_generated(model, GenerateRequest(out=tmp_path, n=2, seed=5, **option))
    assert {path: path.read_bytes() for path in first} == before
    assert write_generated(model, GenerateRequest(out=tmp_path, n=2, interpolate_class=3, interp_spaces="both")).files
    again = write_generated(model, GenerateRequest(out=tmp_path, n=2, seed=5, per_class=2, overwrite=True)).files
    assert [path.name for path in again] == ["per_class.png"] and again[0].read_bytes() != before[again[0]]


def test_a_plain_interpolation_keeps_each_rows_drawn_class(model, tmp_path, monkeypatch):
    """`generate --interpolate` built its path of z alone, so BigGAN's y defaulted per frame: the class changed at
    every frame and the first frame was not sample 0. Each row now keeps its first latent's class."""
    from ganforge.viz.generate import GenerateRequest, write_generated

    drawn = model.latents(3, 3)
    seen = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda inputs: seen.append(inputs) or generate(inputs))
    write_generated(model, GenerateRequest(out=tmp_path, n=3, seed=3, interpolate=4))
    y = torch.cat([inputs["y"] for inputs in seen])
    assert y.tolist() == [int(drawn["y"][0])] * 4 + [int(drawn["y"][1])] * 4
    assert torch.equal(torch.cat([inputs["z"] for inputs in seen])[0], drawn["z"][0])  # frame 0 is sample 0


@pytest.mark.parametrize("family", ["biggan", "pgan+conditions", "dcgan"])
def test_sample_i_of_a_seed_is_the_same_whatever_n(family):
    """`generate --n 4` and `--n 8` named sample 2 alike and drew it in other classes (drawn after every latent),
    and with a latent width like BigGAN's 120 or DCGAN's 100 torch's sampler redrew the last latent of an odd n."""
    name, _, conditions = family.partition("+")
    if name == "dcgan":
        config = resolve_run_config("dcgan", {"data": SHAPES, "model": {"latent_dim": 100, "features_g": 4}})
        built = build_family(config, torch.device("cpu"))
        model = LoadedModel(family=built, config=config, step=0, plan=built.plan(0))
    else:
        model = tiny_model(name, latent_dim=120) if name == "biggan" else tiny_model("pgan")
    if conditions:
        raw = copy.deepcopy(TINY_PGAN)
        raw["model"]["conditions"] = ["shape", "background"]
        config = resolve_run_config(None, raw)
        built = build_family(config, torch.device("cpu"))
        model = LoadedModel(family=built, config=config, step=0, plan=built.plan(0))
    few, many = model.latents(5, seed=7), model.latents(9, seed=7)
    assert set(few) == set(many) and len(few) == (1 if name == "dcgan" else 2)
    for key in few:
        assert torch.equal(few[key], many[key][:5]), key


def test_generate_refuses_inputs_the_model_does_not_take(model):
    """Labels given to BigGAN (whose classes are "y") were ignored: it drew its default cycle of classes."""
    z = model.latents(4)["z"]
    with pytest.raises(ValueError, match=r"generate: 'labels': not an input of this model \(it takes condition, y, "
                                         r"z\)"):
        model.generate({"z": z, "labels": torch.tensor([[3]] * 4)})
    model.generate({"z": z, "condition": model.nets["G_ema"].shared(torch.tensor([1, 2, 3, 0]))})
    with pytest.raises(ValueError, match="generate: y holds 1 samples and z 4"):
        model.generate({"z": z, "y": torch.tensor([1])})


@pytest.mark.parametrize(("option", "message"), [
    (dict(interpolate_class=3, interp_spaces="z,clas"), r"--interp-spaces z,clas: 'clas' is not one of z, class"),
    (dict(per_class=2, truncation_sweep="0.5,abc"), r"--truncation-sweep 0.5,abc: .*'abc' is not a number"),
    (dict(truncation_sweep="0.5", inception_weights="missing.pth"), r"--inception-weights missing.pth: no such file"),
    (dict(truncation=float("inf")), r"--truncation inf: expected a finite ψ > 0"),
    (dict(interpolate=3, n=1), r"--interpolate with --n 1: a path runs between two latents"),
    (dict(out="a-file"), r"-o .*a-file: a file; expected a folder"),
    (dict(npz="."), r"--npz \.: a folder; expected the .npz file to write"),
    (dict(nearest=2, real="no-such-store"), r"no-such-store does not exist"),
])
def test_bad_generate_options_are_refused_before_anything_is_written(model, tmp_path, option, message):
    """They failed after earlier outputs (per_class.png, interp_z.png) were written, which then refused the
    corrected command as already there, or left an empty folder."""
    from pathlib import Path

    from ganforge.viz.generate import GenerateRequest, write_generated

    (tmp_path / "a-file").write_text("mine")
    out = tmp_path / "out" if option.get("out") is None else tmp_path / option.pop("out")
    npz = Path(option.pop("npz")) if "npz" in option else None
    with pytest.raises(ValueError, match=message):
        write_generated(model, GenerateRequest(out=out, npz=npz, **{"n": 2, **option}))
    assert not (tmp_path / "out").exists() and (tmp_path / "a-file").read_text() == "mine"
