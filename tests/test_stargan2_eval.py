"""StarGAN v2 evaluation on a tiny trained run: per-task FID and LPIPS recomputed from what the metric networks
saw, determinism, the JSON per step, the end-to-end path on stand-in Inception and AlexNet weights, the
torchvision-Inception protocol on stand-in weights, and errors."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from stargan2_tiny_run import SPLIT_COUNTS, train_tiny_run
from test_lpips import TinyBackbone

from ganforge.data.store import DatasetError
from ganforge.evaluation import stargan2 as stargan2_evaluation
from ganforge.evaluation.stargan2 import (
    TORCHVISION_INCEPTION,
    TORCHVISION_INCEPTION_URL,
    evaluate_stargan2,
    fid_extractor,
    load_torchvision_inception,
    torchvision_preprocess,
)
from ganforge.metrics.fid import fid
from ganforge.metrics.inception import InceptionV3FID, InceptionWeightsError
from ganforge.metrics.lpips import LPIPS, AlexNetFeatures, pairwise_diversity


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    run, stores = train_tiny_run(tmp_path_factory.mktemp("eval"))
    return {"run": run, "stores": stores}


def inception_standin(path: Path) -> dict[str, torch.Tensor]:
    """The FID Inception stand-in of ../shared/fixtures/inception/recipe.py (random, seeded per key)."""
    folder = shared_path("fixtures", "inception")
    spec = importlib.util.spec_from_file_location("inception_recipe", folder / "recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    state = recipe.standin_state_dict(json.loads((folder / "layout.json").read_text()))
    torch.save(state, path)
    return state


class Recording:
    """A cheap feature extractor (per-channel means and a 2×2 pooled grey image) that keeps what it saw."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8
        self.batches.append(images.clone())
        x = images.double()
        grey = torch.nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), 2).flatten(1)
        return torch.cat([x.mean(dim=(2, 3)), grey], 1)


class RecordingLPIPS(LPIPS):
    def __init__(self) -> None:
        super().__init__(TinyBackbone(), [torch.ones(1, 3, 1, 1), torch.ones(1, 2, 1, 1)])
        self.requires_grad_(False)
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        self.pairs.append((x0, x1))
        return super().forward(x0, x1)


def test_references_come_in_whole_batches_of_shuffled_epochs_as_the_official_loader() -> None:
    refs = np.arange(100, 107)  # 7 references, batches of 3: two batches per epoch, the 7th image dropped
    stream = stargan2_evaluation._reference_batches(refs, 3, torch.Generator().manual_seed(0))
    batches = [next(stream) for _ in range(6)]
    assert all(len(b) == 3 for b in batches)
    for epoch in range(3):
        drawn = np.concatenate(batches[2 * epoch:2 * epoch + 2])
        assert len(set(drawn)) == 6 and set(drawn) <= set(refs)  # no reference twice within an epoch
    assert len({tuple(b) for b in batches}) > 2  # each epoch reshuffled
    again = stargan2_evaluation._reference_batches(refs, 3, torch.Generator().manual_seed(0))
    assert all((next(again) == b).all() for b in batches)
    few = stargan2_evaluation._reference_batches(refs[:2], 32, torch.Generator().manual_seed(0))
    assert [sorted(next(few)) for _ in range(3)] == [[100, 101]] * 3  # fewer than a batch: all of them each time


@pytest.mark.slow
def test_values_are_fid_and_lpips_of_what_the_networks_saw(tiny) -> None:
    extractor, lpips = Recording(), RecordingLPIPS()
    report = evaluate_stargan2(tiny["run"], device="cpu", feature_extractor=extractor, lpips=lpips, max_val=2,
                               batch_size=2)
    metrics = report["metrics"]
    tasks = ["light2dark", "dark2light"]  # target-major order, as officially
    assert list(metrics) == [f"{m}_{mode}/{t}" for mode in ("latent", "reference") for t in [*tasks, "mean"]
                             for m in ("LPIPS", "FID")]
    per_domain = SPLIT_COUNTS["train"] // 2  # batches of 2 training images
    reals = [torch.cat(extractor.batches[k * per_domain:(k + 1) * per_domain]) for k in range(2)]
    assert [len(b) for b in reals] == [SPLIT_COUNTS["train"]] * 2
    fakes = extractor.batches[2 * per_domain:]
    pairs = list(lpips.pairs)
    assert len(fakes) == 4 * 10 and all(len(b) == 2 for b in fakes)  # 4 tasks × 10 outputs of 2 sources
    for index, (mode, task, trg) in enumerate([(m, t, k) for m in ("latent", "reference")
                                               for t, k in zip(tasks, (0, 1), strict=True)]):
        features = torch.cat([extractor(b) for b in fakes[index * 10:(index + 1) * 10]])
        assert metrics[f"FID_{mode}/{task}"] == pytest.approx(fid(features, extractor(reals[trg])), rel=1e-9)
        first = pairs[index * 45:index * 45 + 9]  # (0, 1), (0, 2), ..., (0, 9): one batch of sources per task
        outputs = [first[0][0]] + [pair[1] for pair in first]
        assert metrics[f"LPIPS_{mode}/{task}"] == pytest.approx(pairwise_diversity(lpips, outputs), rel=1e-6)
    for mode in ("latent", "reference"):
        assert metrics[f"FID_{mode}/mean"] == pytest.approx(np.mean([metrics[f"FID_{mode}/{t}"] for t in tasks]))
    assert report["protocol"]["sources_per_task"] == {"light2dark": 2, "dark2light": 2}
    saved = json.loads((tiny["run"] / "eval" / "stargan2-00000002.json").read_text())
    assert saved["metrics"] == metrics and saved["step"] == 2
    again = evaluate_stargan2(tiny["run"], device="cpu", feature_extractor=Recording(), lpips=RecordingLPIPS(),
                              max_val=2, batch_size=2, write=False)
    assert again["metrics"] == metrics


@pytest.mark.slow  # 8 full-size Inception passes: ~40 s on the loaded 2-core machine
def test_end_to_end_on_stand_in_inception_and_alexnet(tiny, tmp_path: Path) -> None:
    inception_standin(tmp_path / "inception.pth")
    torch.manual_seed(0)
    torch.save(AlexNetFeatures().state_dict(), tmp_path / "alexnet.pth")
    pytest.importorskip("importlib.metadata").files("lpips")
    report = evaluate_stargan2(tiny["run"], device="cpu", modes=("latent",), num_outs=2, max_val=1, max_train=2,
                               fid_network="tf-inception", inception_weights=tmp_path / "inception.pth",
                               alexnet_weights=tmp_path / "alexnet.pth")
    metrics = report["metrics"]
    assert set(metrics) == {f"{m}_latent/{t}" for m in ("LPIPS", "FID") for t in ("light2dark", "dark2light", "mean")}
    assert all(np.isfinite(v) and v >= 0 for v in metrics.values())
    assert metrics["LPIPS_latent/mean"] > 0 and metrics["FID_latent/mean"] > 0
    assert report["protocol"]["fid_network"] == "tf-inception"
    assert report["protocol"]["real_images_per_domain"] == {"dark": 2, "light": 2}


@pytest.mark.slow
def test_torchvision_inception_protocol_on_stand_in_weights(tmp_path: Path) -> None:
    state = inception_standin(tmp_path / "fid.pth")
    tv = {k: v for k, v in state.items() if not k.startswith("fc.")}
    tv.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000),
               "AuxLogits.fc.weight": torch.zeros(1000, 768)})
    torch.save(tv, tmp_path / "inception_v3_google.pth")
    net = load_torchvision_inception(tmp_path / "inception_v3_google.pth")
    assert not hasattr(net, "fc")
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = torchvision_preprocess(images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    assert x.shape == (1, 3, 299, 299)
    corner = torch.from_numpy(np.asarray(images[0, :, 0, 0], dtype=np.float32)) / 255
    torch.testing.assert_close(x[0, :, 0, 0] * torch.tensor([0.229, 0.224, 0.225]) + mean.flatten(), corner,
                               atol=1e-5, rtol=0)  # PIL's bilinear keeps the corner pixel here
    extract = fid_extractor("torchvision-inception", tmp_path / "inception_v3_google.pth")
    features = extract(images)
    assert features.shape == (1, 2048)
    fid_net = InceptionV3FID()
    fid_net.load_state_dict({**fid_net.state_dict(), **state})
    # same weights, other pooling and preprocessing: different features
    assert not torch.allclose(features, fid_net.eval()(images)[0], atol=1e-3)
    with pytest.raises(InceptionWeightsError, match=r"missing\.pth \(from the argument\) does not exist"):
        load_torchvision_inception(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="fid_network: 'clip' is not one of"):
        fid_extractor("clip")


def test_torchvision_inception_weights_are_looked_up_and_downloaded_checked(tmp_path: Path, monkeypatch) -> None:
    """The paper's FID network is the default, so its file is found like every other: environment, cache, a
    download checked against torchvision's published digest prefix, else a message naming file, URL and place."""
    monkeypatch.delenv("GANFORGE_TORCHVISION_INCEPTION_WEIGHTS", raising=False)

    def offline(url, timeout):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(InceptionWeightsError) as caught:
        load_torchvision_inception(cache_dir=tmp_path / "cache")
    for part in (TORCHVISION_INCEPTION_URL, str(tmp_path / "cache" / "inception_v3_google-0cc3c7bd.pth"),
                 "--inception-weights", "GANFORGE_TORCHVISION_INCEPTION_WEIGHTS", "sha256 starts with 0cc3c7bd"):
        assert part in str(caught.value)
    state = {k: v for k, v in inception_standin(tmp_path / "fid.pth").items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "tv.pth")
    payload = (tmp_path / "tv.pth").read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    with pytest.raises(InceptionWeightsError, match="not the expected file"):
        load_torchvision_inception(cache_dir=tmp_path / "cache")
    digest = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(stargan2_evaluation, "TORCHVISION_INCEPTION", replace(TORCHVISION_INCEPTION, sha256=digest[:8]))
    assert not load_torchvision_inception(cache_dir=tmp_path / "cache").training
    assert (tmp_path / "cache" / "inception_v3_google-0cc3c7bd.pth").read_bytes() == payload


@pytest.mark.slow
def test_stargan2_runs_are_evaluated_with_the_papers_fid_network_by_default(tiny, monkeypatch, capsys) -> None:
    """`ganforge evaluate RUN` uses torchvision's ImageNet Inception, as the official evaluation; the output and
    the JSON say which network produced the FID; --fid-network tf-inception stays an option."""
    from ganforge.cli import main

    asked = []

    def extractor(network, weights=None, device="cpu"):
        asked.append(network)
        return Recording()

    monkeypatch.setattr(stargan2_evaluation, "fid_extractor", extractor)
    monkeypatch.setattr(stargan2_evaluation, "load_lpips", lambda weights, device: RecordingLPIPS())
    assert main(["evaluate", str(tiny["run"]), "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert asked == ["torchvision-inception"]
    assert "FID by torchvision-inception: torchvision ImageNet Inception-v3 (the official StarGAN v2 evaluation)" in out
    saved = json.loads((tiny["run"] / "eval" / "stargan2-00000002.json").read_text())["protocol"]
    assert saved["fid_network"] == "torchvision-inception" and saved["face_masks"] is False
    assert main(["evaluate", str(tiny["run"]), "--n", "1", "--fid-network", "tf-inception"]) == 0
    assert asked[-1] == "tf-inception" and "FID by tf-inception: TF FID Inception" in capsys.readouterr().out


@pytest.mark.slow
def test_errors_name_the_problem(tiny, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_outs: LPIPS diversity needs at least 2"):
        evaluate_stargan2(tiny["run"], num_outs=1)
    with pytest.raises(ValueError, match=r"modes: \['sideways'\]"):
        evaluate_stargan2(tiny["run"], modes=("sideways",))
    with pytest.raises(DatasetError, match=r"no validation store found beside .*val \(expected"):
        evaluate_stargan2(tiny["run"], device="cpu", train=tiny["stores"] / "val", feature_extractor=Recording(),
                          lpips=RecordingLPIPS())
    with pytest.raises(DatasetError, match=r"has no label column 'domain'"):
        evaluate_stargan2(tiny["run"], device="cpu", val="builtin:shapes?count=8&resolution=32",
                          feature_extractor=Recording(), lpips=RecordingLPIPS())


@pytest.mark.slow
def test_cli_evaluate_routes_stargan2_runs_to_the_paper_protocol(tiny, tmp_path: Path, capsys) -> None:
    from ganforge.cli import main

    missing = tmp_path / "no-inception.pth"
    assert main(["evaluate", str(tiny["run"]), "--inception-weights", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "ganforge evaluate: error:" in err and str(missing) in err


@pytest.mark.slow
def test_cli_evaluate_refuses_options_a_stargan2_run_would_ignore(tiny, capsys) -> None:
    from ganforge.cli import main

    assert main(["evaluate", str(tiny["run"]), "--metrics", "fid", "--all"]) == 2
    assert capsys.readouterr().err.strip() == (
        "ganforge evaluate: error: --metrics and --all: a stargan2 run is evaluated by the StarGAN v2 protocol "
        "(LPIPS and FID per domain task); leave them out")


@pytest.mark.slow
def test_training_evaluates_by_the_protocol_at_metric_ticks_and_keeps_the_best(tmp_path: Path, monkeypatch) -> None:
    """The official eval_every: at each metric tick the EMA networks as they are get the same values as the saved
    checkpoint of that step under `ganforge evaluate`, into metrics.jsonl, and best.json ranks by FID; the
    training images go through the FID network at the first tick only."""
    monkeypatch.setattr(stargan2_evaluation, "check_protocol_ready", lambda *args, **kwargs: None)  # stand-ins below
    extractor = Recording()
    monkeypatch.setattr(stargan2_evaluation, "_cached_extractor", lambda weights, device: extractor)
    monkeypatch.setattr(stargan2_evaluation, "_cached_lpips", lambda device: RecordingLPIPS())
    run, _ = train_tiny_run(tmp_path, steps=4, metrics=["fid", "lpips"], metrics_every=2,
                            best_metric="FID_latent/mean", keep_best=1, checkpoint_every=2)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    translations_per_tick = 2 * 2 * 10 * SPLIT_COUNTS["val"]  # 2 modes × 2 tasks × 10 outputs of each source
    assert sum(len(b) for b in extractor.batches) == 2 * SPLIT_COUNTS["train"] + 2 * translations_per_tick
    for record in records:
        assert record["fid_network"] == "torchvision-inception"
        offline = evaluate_stargan2(run, step=record["step"], device="cpu", feature_extractor=Recording(),
                                    lpips=RecordingLPIPS(), max_val=2048, write=False)["metrics"]
        assert sorted(offline) == sorted(k for k in record if "/" in k)
        assert {"FID_latent/light2dark", "LPIPS_reference/mean"} <= set(offline)
        # at the tick the style encoder is in the training layout (channels_last), loaded here it is NCHW: on some
        # CPUs oneDNN then sums in another order (reference-mode LPIPS 1.7e-6 apart on an AMD EPYC)
        assert all(record[key] == pytest.approx(value, rel=1e-5, abs=1e-9) for key, value in offline.items())
    best = json.loads((run / "best.json").read_text())
    lowest = min(records, key=lambda r: r["FID_latent/mean"])
    assert best == {"metric": "FID_latent/mean", "best": [{"step": lowest["step"], "value": lowest["FID_latent/mean"]}]}


@pytest.mark.slow
def test_a_protocol_metric_checks_its_stores_and_weights_before_training(tmp_path: Path) -> None:
    from ganforge.config import ConfigError
    from ganforge.data.store import open_dataset
    from ganforge.evaluation.stargan2 import check_protocol_ready

    _, stores = train_tiny_run(tmp_path, steps=1)
    with pytest.raises(ConfigError, match=r"^metrics: the StarGAN v2 protocol .* no validation store beside the "
                                          r"training store .*val \(expected .*`ganforge prepare"):
        check_protocol_ready(str(stores / "val"), ["fid"])
    missing = tmp_path / "no-inception.pth"
    with pytest.raises(ConfigError, match=f"^metrics: .*{missing}.*does not exist.*torchvision's Inception file as "
                                          "inception_weights"):
        check_protocol_ready(str(stores / "train"), ["fid"], missing)
    check_protocol_ready(open_dataset(stores).source, [])  # `data: OUT` opens OUT/train, whose val is beside it


@pytest.mark.slow
def test_a_run_saved_with_image_set_metrics_still_loads_and_resumes(tmp_path: Path) -> None:
    """Before the protocol ran at metric ticks a stargan2 config could list `swd`/`fid`, which scored its (source,
    translation) pairs as generated images; such a saved run must still load and resume, those metrics dropped
    with a warning (they could not be removed on resume: metrics are not a resumable change)."""
    import ganforge
    from ganforge.families import migrated_saved_config
    from ganforge.run_loader import load_run
    from ganforge.training import checkpoint as ckpt

    run, _ = train_tiny_run(tmp_path, steps=2)
    old = {"metrics": ["swd", "kid"], "metrics_every": 2, "best_metric": "swd_avg", "fid_mode": "clean"}
    for path in [run / "config.json", *sorted((run / "checkpoints").glob("*.json"))]:
        record = json.loads(path.read_text())
        record.get("config", record).update(old)
        path.write_text(json.dumps(record))  # as a run of an earlier version saved it (the hash covers tensors only)
    assert migrated_saved_config({"family": "pgan", **old}) == {"family": "pgan", **old}  # only translating ones
    with pytest.warns(UserWarning, match=r"saved metrics \['swd', 'kid'\] scored its \(source, translation\)"):
        model = load_run(run)
    assert (model.config.metrics, model.config.best_metric, model.config.fid_mode) == ([], None, "legacy-tf")
    saved = json.loads((run / "config.json").read_text())
    with pytest.warns(UserWarning, match="no longer computed"):
        ganforge.train({**migrated_saved_config(saved), "model": {**saved["model"], "steps": 3}}, run)
    assert ckpt.resolve_checkpoint(run).step == 3
