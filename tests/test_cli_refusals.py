"""Options that would do nothing, or would lose what is already written, are refused with one line naming them, and
nothing is written or replaced: checkpoints none of which loads, `--until` before the run's step, an option
and a `--set` of the same key, `evaluate --all --step`, `report -o` onto a file that is not a report, `generate`
onto its own earlier files (without `--overwrite`), `generate` options that shape an output not asked for, config
files with a repeated key or no keys; through the Python API, values of the wrong type (train's config, until, load's
step, generate's n, seed and latents), metric names given as one string and NaN images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ganforge.cli import main
from ganforge.config import read_config_file

SHAPES = "builtin:shapes?count=64&resolution=32"
TINY = ["--set", "model.features_g=2", "--set", "model.features_d=2", "--set", "model.latent_dim=8",
        "--set", "model.batch_size=4", "--set", "progress=false", "--set", "tensorboard=false",
        "--set", "checkpoint_every=1", "--set", "sample_count=4", "--set", "model.steps=3"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A 3-step wgan-gp run stopped after step 2."""
    run = tmp_path_factory.mktemp("refusals") / "run"
    assert main(["train", "wgan-gp", "--run", str(run), "--data", SHAPES, *TINY, "--until", "2"]) == 0
    return run


@pytest.fixture()
def run(stopped, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(stopped, copy)
    return copy


def refused(argv: list[str], capsys) -> str:
    """The one error line of a command that must fail with exit status 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith(f"ganforge {argv[0]}: error: ")
    return err[-1]


def test_checkpoints_none_of_which_loads_are_kept_and_the_resume_refused(run, capsys) -> None:
    for tensors in (run / "checkpoints").glob("*.safetensors"):
        tensors.write_bytes(tensors.read_bytes()[:-64])
    before = snapshot(run)
    line = refused(["train", "wgan-gp", "--run", str(run)], capsys)
    assert "none of its checkpoints can be read" in line and "00000002.safetensors" in line and "--restart" in line
    assert snapshot(run) == before  # a start from scratch would have written over them


def test_until_before_the_runs_step_is_refused(run, capsys) -> None:
    before = snapshot(run)
    assert "until=1: the run is at step 2 already, past it" in refused(
        ["train", "wgan-gp", "--run", str(run), "--until", "1"], capsys)
    assert snapshot(run) == before
    assert main(["train", "wgan-gp", "--run", str(run), "--until", "2"]) == 0  # a rerun of the command that stopped
    assert "at step 2 already (--until 2): nothing trained or written" in capsys.readouterr().out
    assert snapshot(run) == before
    with pytest.raises(SystemExit) as stop:
        main(["train", "wgan-gp", "--run", str(run), "--until", "-1"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit):
        main(["train", "wgan-gp", "--run", str(run), "--final-swd", "0"])


def test_until_0_checks_a_new_run_and_trains_nothing(tmp_path, capsys) -> None:
    new = tmp_path / "new"
    assert main(["train", "wgan-gp", "--run", str(new), "--data", SHAPES, *TINY, "--until", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "stopped before step 1 (--until 0): the config and data check out and the networks were built (an untrained "
        f"step-0 checkpoint in {new}; the same command without --until trains)")
    assert [path.name for path in sorted((new / "checkpoints").iterdir())] == ["00000000.json",
                                                                              "00000000.safetensors"]


def test_an_option_and_a_set_of_the_same_key_are_refused(tmp_path, capsys) -> None:
    new = tmp_path / "new"
    line = refused(["train", "wgan-gp", "--run", str(new), "--data", SHAPES, "--set", "data=builtin:shapes", *TINY],
                   capsys)
    assert "--data and --set data=... both set data" in line
    line = refused(["train", "wgan-gp", "--run", str(new), "--data", SHAPES, "--on-nan", "rollback",
                    "--set", "on_nan=stop", *TINY], capsys)
    assert "--on-nan and --set on_nan=... both set on_nan" in line
    assert not new.exists()


def test_evaluate_all_with_step_is_refused(run, capsys) -> None:
    assert "--all evaluates every checkpoint, --step 2" in refused(
        ["evaluate", str(run), "--all", "--step", "2", "--n", "8"], capsys)


def test_report_replaces_only_reports(run, tmp_path, capsys) -> None:
    config = tmp_path / "keep.yaml"
    config.write_text("family: wgan-gp\n")
    assert "expected an .html file name" in refused(["report", str(run), "-o", str(config)], capsys)
    page = tmp_path / "page.html"
    page.write_text("<html>mine</html>")
    assert "is not a report ganforge wrote" in refused(["report", str(run), "-o", str(page)], capsys)
    assert config.read_text() == "family: wgan-gp\n" and page.read_text() == "<html>mine</html>"
    ours = tmp_path / "ours.html"
    assert main(["report", str(run), "-o", str(ours)]) == 0
    ours.write_text(ours.read_text().replace("</body>", "<p>older</p></body>"))
    assert main(["report", str(run), "-o", str(ours)]) == 0  # a report it wrote is replaced
    assert "older" not in ours.read_text()
    before_tag = tmp_path / "before.html"  # a page of a ganforge that wrote no generator tag yet
    before_tag.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>ganforge report: a</title>')
    assert main(["report", str(run), "-o", str(before_tag)]) == 0 and "generator" in before_tag.read_text()


def test_generate_keeps_its_earlier_files_unless_told_to_overwrite(run, tmp_path, capsys) -> None:
    out = tmp_path / "gen"
    assert main(["generate", str(run), "-o", str(out), "--n", "4", "--grid"]) == 0
    grid = (out / "grid.png").read_bytes()
    line = refused(["generate", str(run), "-o", str(out), "--n", "4", "--grid", "--seed", "3"], capsys)
    assert f"{out / 'grid.png'}: already there" in line and "--overwrite" in line
    assert (out / "grid.png").read_bytes() == grid
    assert main(["generate", str(run), "-o", str(out), "--n", "4", "--grid", "--seed", "3", "--overwrite"]) == 0
    assert (out / "grid.png").read_bytes() != grid
    assert main(["generate", str(run), "-o", str(out), "--n", "3"]) == 0  # other names: single files beside it
    assert sorted(p.name for p in out.iterdir()) == ["0000-00000.png", "0000-00001.png", "0000-00002.png", "grid.png"]
    assert "0000-00000.png and 2 more: already there (an earlier generate's?)" in refused(
        ["generate", str(run), "-o", str(out), "--n", "2"], capsys)
    assert main(["generate", str(run), "-o", str(out), "--n", "2", "--seed", "1"]) == 0  # another seed, other names
    npz = tmp_path / "s.npz"
    npz.write_bytes(b"mine")
    assert "s.npz: already there" in refused(["generate", str(run), "--npz", str(npz), "--n", "2"], capsys)
    assert npz.read_bytes() == b"mine"


@pytest.mark.parametrize(("options", "message"), [
    (["--seed", "-1"], "--seed -1: expected a non-negative seed"),
    (["--truncation-method", "scale"], "--truncation-method: for --truncation or --truncation-sweep"),
    (["--real", SHAPES], "--real: for --nearest or --truncation-sweep"),
    (["--interp-spaces", "z"], "--interp-spaces: for --interpolate-class"),
    (["--sweep-n", "10"], "--sweep-n: for --truncation-sweep"),
    (["--grid", "--interpolate", "3"], "--grid and --interpolate"),
    (["--seed", str(2**64)], f"--seed {2**64}: expected a non-negative seed below 2^63"),  # not an overflow trace
    (["--truncation", "0"], "--truncation 0.0: expected a finite ψ > 0"),  # refused before -o is made
])
def test_generate_options_that_would_do_nothing_are_refused(run, tmp_path, capsys, options, message) -> None:
    out = tmp_path / "gen"
    assert message in refused(["generate", str(run), "-o", str(out), "--n", "4", *options], capsys)
    assert not out.exists()


def test_a_missing_checkpoint_file_is_named_as_given(tmp_path, capsys) -> None:
    missing = tmp_path / "nothere.safetensors"
    assert f"{missing}: no such run directory or checkpoint" in refused(
        ["generate", str(missing), "-o", str(tmp_path / "g")], capsys)


@pytest.mark.parametrize(("text", "message"), [
    ("family: wgan-gp\nmodel:\n  lr: 0.1\n  lr: 0.2\n", "key 'lr' is given twice in one mapping (lines 3 and 4"),
    ("# nothing but a comment\n", "the config file is empty"),
])
def test_config_files_whose_keys_would_do_nothing_are_refused(tmp_path, capsys, text, message) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    line = refused(["train", "wgan-gp", "-c", str(config), "--run", str(tmp_path / "r"), "--data", SHAPES], capsys)
    assert f"{config}: {message}" in line and not (tmp_path / "r").exists()


def test_a_json_config_with_a_repeated_key_is_refused(tmp_path, capsys) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"family": "wgan-gp", "seed": 1, "seed": 2}')
    assert "key 'seed' is given twice" in refused(["info", "wgan-gp", "-c", str(config)], capsys)


def test_yaml_merge_keys_may_override_what_they_merge(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("presets:\n  base: &base\n    lr: 0.1\n    batch_size: 4\n  tuned: &tuned\n    <<: *base\n"
                      "    lr: 0.2\nmodel:\n  <<: *tuned\n")
    assert read_config_file(config)["model"] == {"lr": 0.2, "batch_size": 4}


def test_a_run_of_another_family_is_named_as_such(run, tmp_path, capsys) -> None:
    config = tmp_path / "pgan.yaml"
    config.write_text("family: pgan\nmodel:\n  resolution: 8\n  widths: [8, 8]\n")
    before = snapshot(run)
    line = refused(["train", "pgan", "-c", str(config), "--run", str(run), "--data", SHAPES], capsys)
    assert f"{run} is a wgan-gp run, not pgan: resume it with `ganforge train wgan-gp`" in line
    assert snapshot(run) == before


def test_a_run_given_as_real_images_is_refused(run, tmp_path, capsys) -> None:
    fakes = tmp_path / "fakes"
    assert main(["generate", str(run), "-o", str(fakes), "--n", "16"]) == 0
    line = refused(["evaluate", "--fake", str(fakes), "--real", str(run), "--metrics", "swd"], capsys)
    assert f"{run}: a ganforge run, not a set of images" in line


def test_a_new_run_in_a_folder_holding_other_files_says_so(tmp_path, capsys) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(["train", "wgan-gp", "--run", str(folder), "--data", SHAPES, *TINY, "--until", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{folder} holds no run (no config.json): a new run of 3 steps starts there, beside its 1 other entry")
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_usage_error_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "somewhere", "--n", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "ganforge evaluate: error: argument --n: expected a positive integer, got 0 (see ganforge evaluate --help)"]


# --- the same rules through the Python API ------------------------------------------------------------------------

def test_the_python_api_refuses_wrong_types_with_one_line(run, tmp_path) -> None:
    import torch

    import ganforge
    from ganforge.config import ConfigError, RunConfig, to_dict
    from ganforge.families import resolve_run_config
    from ganforge.training.checkpoint import CheckpointError

    with pytest.raises(ConfigError, match="config: expected a RunConfig, a config mapping or a config file path, "
                                          "got list"):
        ganforge.train([1], tmp_path / "a")
    saved = to_dict(ganforge.load(run).config)
    changed = resolve_run_config(None, saved)
    changed.model.batch_size = "4"  # a RunConfig changed by hand is checked again
    with pytest.raises(ConfigError, match="batch_size"):
        ganforge.train(changed, tmp_path / "b")
    with pytest.raises(ConfigError, match="until: expected a whole number of steps, got '2'"):
        ganforge.train(saved, tmp_path / "c", until="2")
    with pytest.raises(ConfigError, match="restart: expected True or False, got 'no'"):  # "no" is true
        ganforge.train(saved, run, restart="no")
    assert ganforge.load(run, device=torch.device("cpu")).device == torch.device("cpu")
    with pytest.raises(ValueError, match="latents: n: expected a positive whole number, got -1"):
        ganforge.load(run).latents(-1)
    assert isinstance(changed, RunConfig) and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    for section, typo, hint in ((changed, "chekpoint_every", "did you mean 'checkpoint_every'"),
                                (changed.model, "critic_step", "did you mean 'critic_steps'"),
                                (changed.augment, "pp", "did you mean 'p'")):  # kept, it would train as if unset
        with pytest.raises(AttributeError, match=rf"{type(section).__name__} has no setting '{typo}'; {hint}"):
            setattr(section, typo, 1)
    with pytest.raises(CheckpointError, match="step: expected a whole step number, got '1'"):
        ganforge.load(run, step="1")
    with pytest.raises(CheckpointError, match="step 1 is for a run directory; a checkpoint file is one step"):
        ganforge.load(run / "checkpoints" / "00000002.safetensors", step=1)
    model = ganforge.load(run)
    width = model.latents(1)["z"].shape[1]
    assert model.generate(torch.randn(3, width, dtype=torch.float64)).shape[0] == 3  # float64 latents are drawn too
    for options, message in ((dict(n=0), "n: expected a positive whole number, got 0"),
                             (dict(seed=-1), r"seed: expected a whole number in 0 \.\. 2\^63 - 1, got -1"),
                             (dict(n=2, net="D"), r"net 'D' is not a generator of this model; its generators are"),
                             (dict(z={"z": torch.randn(2, width), "labels": torch.zeros(1, 1)}),
                              r"'labels': not an input of this model \(it takes z\)"),
                             (dict(z=torch.randn(2, width), n=4), "given latents z, leave them out"),
                             (dict(z=torch.randn(2, width + 1)), rf"z: expected float latents \[N, {width}\]"),
                             (dict(z=[[0.0] * width]), "latents must be torch tensors")):
        with pytest.raises(ValueError, match=message):
            model.generate(**options)


def test_metric_names_and_nan_images_through_the_python_api() -> None:
    import torch

    from ganforge.metrics import swd
    from ganforge.metrics.evaluate import evaluate
    from ganforge.metrics.registry import UnknownMetricError, check_metrics

    assert check_metrics("SWD, msssim") == ["swd", "msssim"]  # a string names metrics as the command line does
    with pytest.raises(UnknownMetricError, match=r"no metric named \(got \[\]\)"):
        check_metrics([])
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    assert evaluate(images, None, "msssim")["msssim"]["pairs"] == 4
    images[3, 1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN pixel values"):
        swd(images, images.flip(0))
    images[3, 1, 2, 2] = float("-inf")  # clamped to black before
    with pytest.raises(ValueError, match="infinite pixel values"):
        evaluate(images, None, "msssim")


def test_a_grey_store_is_refused_by_the_rgb_families(tmp_path, capsys) -> None:
    from PIL import Image

    for domain in ("dark", "light"):
        (tmp_path / "src" / domain).mkdir(parents=True)
        for index in range(2):
            Image.new("L", (32, 32), 40 + 100 * index).save(tmp_path / "src" / domain / f"{index}.png")
    store = tmp_path / "grey"
    assert main(["prepare", "folder", str(tmp_path / "src"), "-o", str(store), "--resolution", "32",
                 "--channels", "1", "--workers", "1"]) == 0
    for family, what in (("stargan2", "StarGAN v2 translates RGB images"), ("biggan", "BigGAN generates RGB images")):
        line = refused(["train", family, "-c", f"configs/{family}_tiny.yaml", "--data", str(store), "--run",
                        str(tmp_path / family), "--until", "0"], capsys)
        assert f"{what}; {store} has 1 channel(s)" in line


def test_restart_with_until_0_is_refused_before_anything_is_deleted(run, capsys) -> None:
    before = snapshot(run)
    assert "until=0 with restart: it would delete what the run wrote" in refused(
        ["train", "wgan-gp", "--run", str(run), "--restart", "--until", "0"], capsys)
    assert snapshot(run) == before


def test_load_takes_numpy_steps_and_names_a_missing_run(run, tmp_path) -> None:
    import numpy as np

    import ganforge
    from ganforge.training.checkpoint import CheckpointError

    assert ganforge.load(run, step=np.int64(1)).step == 1  # e.g. chosen with argmin over a metric
    with pytest.raises(CheckpointError, match="no such run directory or checkpoint"):
        ganforge.load(tmp_path / "typo", step=1)


def test_metric_functions_name_bad_features_and_counts() -> None:
    import numpy as np
    import torch

    from ganforge.metrics import fid, kid, msssim, precision_recall, swd

    features = np.random.default_rng(0).standard_normal((12, 6))
    assert np.isfinite(fid(features.tolist(), features[::-1].tolist()))  # lists are features too
    for call, message in (
            (lambda: fid(features[:, 0], features[:, 0]),
             r"fid: expected real features \[N, D\] with N >= 2 and D >= 1, got torch.float64 \(12,\)"),
            (lambda: fid(features[:1], features), r"with N >= 2 and D >= 1, got torch.float64 \(1, 6\)"),
            (lambda: fid(np.full((4, 6), np.nan), features), "fid: the features hold NaN or infinite values"),
            (lambda: kid(features, features[:, :3], subset_size=4), r"KID: feature sizes differ \(6 vs 3\)"),
            (lambda: kid(features, features, subsets=0, subset_size=4), "KID: subsets=0: expected at least one"),
            (lambda: precision_recall(features, features, k=0),
             r"precision/recall \(pr\) of the real set: k = 0: expected at least 1"),
            (lambda: swd(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
                         n_directions=0), "SWD: n_directions=0: expected at least 1"),
            (lambda: swd(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
                         n_patches=0), "SWD: n_patches and batch_size must be at least 1"),
            (lambda: msssim(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), batch_size=0), "batch_size=0")):
        with pytest.raises(ValueError, match=message):
            call()


def test_an_option_of_another_family_is_named(tmp_path, capsys) -> None:
    assert "--wing-weights: for stargan2 runs (the face-mask network of w_hpf > 0), not wgan-gp" in refused(
        ["train", "wgan-gp", "--run", str(tmp_path / "r"), "--wing-weights", str(tmp_path / "wing.ckpt")], capsys)


def test_a_run_stopped_for_a_reason_of_its_own_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch) -> None:
    """A NaN loss, another rank's failure (RuntimeErrors, which the command line let through as tracebacks), and a
    torchrun rank left blocked in a collective when another failed."""
    import torch.distributed

    import ganforge.api
    from ganforge.training.engine import NonFiniteError

    for raised, line in ((NonFiniteError("step 7, phase D: loss is nan; stopping before it reaches a checkpoint"),
                          "ganforge train: error: step 7, phase D: loss is nan; stopping before it reaches a "
                          "checkpoint"),
                         (torch.distributed.DistBackendError("Connection closed by peer [127.0.0.1]:29500"),
                          "ganforge train: error: rank 1: Connection closed by peer [127.0.0.1]:29500 (where another "
                          "rank failed or was stopped, its error is in its output)")):
        def train(*args, error=raised, **kwargs):
            raise error

        monkeypatch.setattr(ganforge.api, "train", train)
        monkeypatch.setenv("RANK", "1")
        assert refused(["train", "pgan", "--run", str(tmp_path / "run")], capsys) == line


def test_commands_other_than_train_refuse_torchrun(tmp_path, capsys, monkeypatch) -> None:
    """Under torchrun every rank ran `evaluate` whole: the table twice, two identical metrics rows."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert refused(["evaluate", str(tmp_path / "run")], capsys) == (
        "ganforge evaluate: error: runs in one process; launch it without torchrun (train is the command that uses "
        "several)")


def test_a_restart_names_the_saved_value_an_override_makes_meaningless(run, capsys) -> None:
    """A run's config.json holds its defaults as written (an Adam's betas): switching the optimiser on a restart
    says which saved value to drop, and a bad seed is refused before the restart deletes anything."""
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    error = refused(["train", "wgan-gp", "--run", str(run), "--restart", "--set", "model.optimizer=rmsprop"], capsys)
    assert error.endswith(f"({run / 'config.json'} holds the run's config: --set model.betas=null drops the saved "
                          "value)")
    error = refused(["train", "wgan-gp", "--run", str(run), "--restart", "--set", "seed=-1"], capsys)
    assert error == "ganforge train: error: seed: expected an integer from 0 to 2^63 - 1, got -1"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == checkpoints
    assert main(["train", "wgan-gp", "--run", str(run), "--restart", "--set", "model.optimizer=rmsprop", "--set",
                 "model.betas=null", "--until", "1"]) == 0


def test_a_file_given_as_the_run_folder_is_refused(tmp_path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    error = refused(["train", "wgan-gp", "--run", str(notes), "--data", SHAPES, *TINY], capsys)
    assert error == f"ganforge train: error: {notes}: is a file, not a run folder; give a folder for the run"
    assert notes.read_text() == "mine"


def test_the_package_imports_without_torch_and_lists_its_api() -> None:
    """`import ganforge` stays cheap (torch loads on first use of load/train), and dir() shows both for completion."""
    import subprocess
    import sys

    code = ("import sys, ganforge; print('torch' in sys.modules, "
            "{'load', 'train', '__version__'} <= set(dir(ganforge)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr
