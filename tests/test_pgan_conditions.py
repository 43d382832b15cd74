"""PGAN label conditioning as pytorch_GAN_zoo's AC-GAN: G's one-hot input, D's class logits, the classification
loss and its weight on the zoo's batch-summed scale, sampling with classes, config refusals, an end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pgan_tiny import TINY_PGAN
from test_pgan_family import tiny

import ganforge
from ganforge.cli import main
from ganforge.config import ConfigError
from ganforge.data.loader import Batch
from ganforge.families.pgan_zoo_config import zoo_config_to_ganforge
from ganforge.models.pgan import PGANArch, PGANDiscriminator, PGANGenerator
from ganforge.nn.norm import pixel_norm
from ganforge.run_loader import load_run
from ganforge.training.engine import Trainer
from ganforge.viz.class_sampling import label_sheet

CONDITIONED = {"variant": "zoo", "conditions": ["background", "shape"]}  # store order is shape, background


def test_g_reads_the_latent_and_one_hot_classes_normalised_together():
    arch = PGANArch(resolution=8, widths=[8, 8], latent_dim=5, variant="zoo", label_sizes=[3, 2])
    G = PGANGenerator(arch)
    z, labels = torch.randn(4, 5), torch.tensor([[0, 1], [2, 0], [1, 1], [2, 1]])
    seen = []
    G.blocks[0].dense.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    G(z, 1, 0.0, labels)
    one_hot = torch.tensor([[1, 0, 0, 0, 1], [0, 0, 1, 1, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 1]], dtype=z.dtype)
    assert torch.allclose(seen[0], pixel_norm(torch.cat([z, one_hot], 1)), rtol=0, atol=1e-6)
    assert G.blocks[0].dense.weight.shape[1] == 5 + 5
    with pytest.raises(ValueError, match=r"expects labels of shape \[4, 2\] .* got None"):
        G(z, 1)
    with pytest.raises(ValueError, match=r"labels given to an unconditional generator"):
        PGANGenerator(PGANArch(resolution=8, widths=[8, 8], latent_dim=5))(z, 1, 0.0, labels)


def test_d_scores_first_then_one_logit_per_class():
    arch = PGANArch(resolution=8, widths=[8, 8], latent_dim=5, variant="zoo", label_sizes=[3, 2])
    D = PGANDiscriminator(arch)
    x = torch.randn(4, 3, 8, 8)
    raw = []
    D.blocks[0].dense1.register_forward_hook(lambda module, inputs, output: raw.append(output))
    score, logits = D(x, 1, return_label_logits=True)
    assert raw[0].shape == (4, 6) and torch.equal(score, raw[0][:, :1]) and torch.equal(logits, raw[0][:, 1:])
    assert torch.equal(D(x, 1), score)
    both = D(x, 1, return_features=True, return_label_logits=True)  # GDPP with conditions: one call
    assert len(both) == 3 and torch.equal(both[0], score) and torch.equal(both[2], logits)
    assert both[1].shape == (4, 8)
    with pytest.raises(ValueError, match="label logits asked of an unconditional D"):
        PGANDiscriminator(PGANArch(resolution=8, widths=[8, 8], latent_dim=5))(x, 1, return_label_logits=True)
    with pytest.raises(ValueError, match="with styles"):
        PGANArch(resolution=8, widths=[8, 8], styles=True, label_sizes=[2])


def test_classification_loss_is_the_summed_cross_entropy_of_each_column(tmp_path):
    family = Trainer(tiny(**CONDITIONED), tmp_path / "run").family
    assert family.arch.label_sizes == [4, 4] and family.condition_columns == [1, 0]
    assert family.describe()["conditions"] == {"background": 4, "shape": 4}
    logits, labels = torch.randn(6, 8), torch.tensor([[0, 3], [1, 2], [2, 1], [3, 0], [1, 1], [2, 2]])
    by_hand = sum(-F.log_softmax(logits[:, 4 * k:4 * k + 4], 1)[torch.arange(6), labels[:, k]].mean()
                  for k in range(2))
    assert family.classification_loss(logits, labels) == pytest.approx(float(by_hand), rel=1e-6)


@pytest.mark.parametrize("loss", ["wgan-gp", "wgan-gp+gdpp", "logistic-r1", "lazy-r1"])
def test_each_phase_adds_its_weighted_classification(tmp_path, loss):
    """The zoo adds a batch-mean classification loss (weight w) to WGAN-GP losses summed over the batch: on
    ganforge's mean scale, w / N; against logistic-r1's mean loss, w. The D phase scores the reals' own classes, the
    G phase the classes G was given, with GDPP from the same D call as the score and the features."""
    extra = {"wgan-gp": {}, "wgan-gp+gdpp": {"gdpp": 1.0}, "logistic-r1": {"loss": "logistic-r1"},
             "lazy-r1": {"loss": "logistic-r1", "r1_interval": 4}}[loss]
    per_sample = 1 / 4 if loss.startswith("wgan-gp") else 1.0
    runs = {w: Trainer(tiny(**CONDITIONED, **extra, condition_weight_d=w, condition_weight_g=2 * w),
                       tmp_path / str(w)) for w in (0.0, 3.0)}
    images = torch.rand(4, 3, 4, 4) * 2 - 1
    batch = Batch(images=images, labels=torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]]))
    results = {}
    for weight, trainer in runs.items():
        phases = {phase.name: phase for phase in trainer.family.phases(0, trainer.family.plan(0))}
        torch.manual_seed(7)
        d_loss, d_logs = phases["D"].loss(batch)
        calls = []
        hook = trainer.family.nets["D"].register_forward_hook(lambda *_, calls=calls: calls.append(1))
        g_loss, g_logs = phases["G"].loss(batch if "gdpp" in loss else None)
        hook.remove()
        assert len(calls) == (2 if "gdpp" in loss else 1)  # GDPP: the fakes once, the reals' features once
        results[weight] = tuple(float(value.detach()) for value in (
            d_loss, d_logs["classification_D"], g_loss, g_logs["classification_G"]))
    (d0, cd0, g0, cg0), (d3, cd3, g3, cg3) = results[0.0], results[3.0]
    assert (cd0, cg0) == (cd3, cg3)  # same networks, same draws
    assert d3 - d0 == pytest.approx(3.0 * per_sample * cd0, rel=1e-5)
    assert g3 - g0 == pytest.approx(6.0 * per_sample * cg0, rel=1e-5)
    family = runs[0.0].family
    with torch.no_grad():  # the D phase's classification is of the reals' own classes, columns reordered
        _, logits = family.nets["D"](images, 0, return_label_logits=True)
    assert cd0 == pytest.approx(float(family.classification_loss(logits, batch.labels[:, [1, 0]])), rel=1e-5)


def test_the_paper_variant_scores_fakes_of_the_reals_classes_and_draws_g_classes_from_the_data(tmp_path):
    """The TF code's AC-GAN (D_wgangp_acgan, G_wgan_acgan): D's fakes get the real batch's classes and D's loss adds
    the cross-entropy on reals and fakes; G's classes are those of random training images; mean losses, weight w."""
    family = Trainer(tiny(conditions=["background", "shape"], condition_weight_d=2.0), tmp_path / "run").family
    seen = []
    family.nets["G"].register_forward_hook(lambda module, args, output: seen.append((args[3], output)))
    phases = {phase.name: phase for phase in family.phases(0, family.plan(0))}
    images, labels = torch.rand(4, 3, 4, 4) * 2 - 1, torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]])
    torch.manual_seed(3)
    loss, logs = phases["D"].loss(Batch(images=images, labels=labels))
    fake_labels, fakes = seen[0]
    assert torch.equal(fake_labels, labels[:, [1, 0]])
    with torch.no_grad():
        real_logits = family.nets["D"](images, 0, return_label_logits=True)[1]
        fake_logits = family.nets["D"](fakes, 0, return_label_logits=True)[1]
    expected = (family.classification_loss(real_logits, labels[:, [1, 0]])
                + family.classification_loss(fake_logits, labels[:, [1, 0]]))
    assert float(logs["classification_D"]) == pytest.approx(float(expected), rel=1e-6)
    torch.manual_seed(5)
    drawn = family.random_labels(6)
    torch.manual_seed(5)
    rows = torch.randint(64, (6,))
    assert torch.equal(drawn, torch.as_tensor(family.dataset.labels[:, [1, 0]])[rows])


def test_zoo_terms_are_divided_by_the_batch_only_against_the_zoos_summed_wgan_gp_loss(tmp_path):
    """GDPP and the AC-GAN classification loss: w / N against the zoo's batch-summed WGAN-GP loss, w itself against
    a mean loss (logistic-r1, as the zoo's own logistic loss) and in the paper variant."""
    weights = {name: Trainer(tiny(**model), tmp_path / name).family.zoo_term_weight(2.0, 8) for name, model in {
        "zoo": {"variant": "zoo"}, "zoo-logistic": {"variant": "zoo", "loss": "logistic-r1"}, "paper": {}}.items()}
    assert weights == {"zoo": 0.25, "zoo-logistic": 2.0, "paper": 2.0}


def test_config_refusals_name_the_key(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"model.condition_weight_d: does nothing without model.conditions"):
        tiny(variant="zoo", condition_weight_d=1.0)
    with pytest.raises(ConfigError, match=r"model.conditions: expected a list of distinct label column names"):
        tiny(variant="zoo", conditions=["shape", "shape"])
    with pytest.raises(ConfigError, match=r"model.condition_weight_g: expected a number >= 0, got -1"):
        tiny(variant="zoo", conditions=["shape"], condition_weight_g=-1)
    with pytest.raises(ConfigError, match=r"model.conditions: .*not with model.styles"):
        tiny(variant="zoo", conditions=["shape"], styles=True)
    with pytest.raises(ConfigError, match=r"model.conditions: no label column 'colour' in the dataset builtin:shapes"
                                          r".*\(it has label columns \['shape', 'background'\]\)$"):
        Trainer(tiny(variant="zoo", conditions=["colour"]), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"no label column 'class' .*\(`ganforge prepare` names class folders' "
                                          r"column 'class'; a zoo config's imagefolderDataset conditions on it\)"):
        Trainer(tiny(variant="zoo", conditions=["class"]), tmp_path / "run")
    missing = str(tmp_path / "absent-store")
    assert main(["info", "pgan", "--set", f"data={missing}", "--set", "model.variant=zoo", "--set",
                 "model.conditions=[class]"]) == 2
    assert capsys.readouterr().err.strip() == (f"ganforge info: error: model.conditions: the class counts of "
                                               f"['class'] come from the label columns of the store, and {missing} "
                                               "is not at hand")
    assert tiny(variant="zoo", conditions=["shape"]).model.condition_weight_d == 1.0


def test_zoo_configs_condition_on_class_folders_as_the_zoo_does():
    """The zoo's dtd preset (datasets.py dtd): class folders (imagefolderDataset) and weightConditionD/G 1.0; the
    zoo conditions G on the folders even with both weights 0. Attribute files are not read."""
    dtd = {"pathDB": "data/dtd", "imagefolderDataset": True,
           "config": {"weightConditionD": 1.0, "weightConditionG": 1.0, "maxIterAtScale": [48000, 96000]}}
    model = zoo_config_to_ganforge(dtd)["model"]
    assert (model["conditions"], model["condition_weight_d"], model["condition_weight_g"]) == (["class"], 1.0, 1.0)
    folders_only = zoo_config_to_ganforge({**dtd, "config": {"maxIterAtScale": [48000, 96000]}})["model"]
    assert (folders_only["conditions"], folders_only["condition_weight_d"]) == (["class"], 0.0)
    assert "conditions" not in zoo_config_to_ganforge({**dtd, "imagefolderDataset": False,
                                                       "config": {"maxIterAtScale": [48000, 96000]}})["model"]
    with pytest.raises(ConfigError, match=r"config.weightConditionD: 1.0: the zoo's AC-GAN needs classes, from class "
                                          r"folders \(imagefolderDataset: true.*model.conditions"):
        zoo_config_to_ganforge({"pathDB": "builtin:shapes", "config": {"weightConditionD": 1.0}})
    with pytest.raises(ConfigError, match=r"^pathAttribDict: ganforge does not read the zoo's attribute files"):
        zoo_config_to_ganforge({"pathDB": "builtin:shapes", "pathAttribDict": "attribs.json"})


@pytest.mark.slow
def test_a_conditional_run_trains_resumes_exactly_and_generates_by_class(tmp_path, capsys):
    config = {**TINY_PGAN, "model": {**TINY_PGAN["model"], **CONDITIONED}}
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    ganforge.train(config, straight)
    ganforge.train(config, pieces, until=9)
    ganforge.train(config, pieces)
    for name in ("straight", "pieces"):
        records = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        assert all(r["classification_D"] > 0 and r["classification_G"] > 0 for r in records if "loss_D" in r)
    model, resumed = load_run(straight), load_run(pieces)
    inputs = model.latents(8, seed=3)
    assert inputs["labels"].shape == (8, 2) and int(inputs["labels"].max()) < 4
    assert torch.equal(inputs["labels"], model.latents(8, seed=3)["labels"])
    assert torch.equal(model.generate(n=8, seed=3), resumed.generate(n=8, seed=3))
    # the classes reach the image: the same z with other classes draws another image
    other = {"z": inputs["z"], "labels": (inputs["labels"] + 1) % 4}
    assert not torch.allclose(model.generate(inputs), model.generate(other))
    out = tmp_path / "interp"
    assert main(["generate", str(straight), "-o", str(out), "--n", "3", "--interpolate", "4"]) == 0
    assert (out / "interpolation.png").is_file()
    # per-class sheets: a sheet per conditioning column, rows differ only in that column's class
    sheets = tmp_path / "sheets"
    assert main(["generate", str(straight), "-o", str(sheets), "--per-class", "3"]) == 0
    assert sorted(p.name for p in sheets.iterdir()) == ["per_class-background.png", "per_class-shape.png"]
    sheet = label_sheet(model, 1, 3, seed=0)  # the shape column: 4 rows of 3
    drawn = model.latents(3, 0)
    for shape in range(4):
        labels = drawn["labels"].clone()
        labels[:, 1] = shape
        # the sheet is one batch of 12: on some CPUs (an AMD EPYC) oneDNN sums it in another order than a batch of
        # 3 (1.1e-5 apart there); a wrong class moves pixels by O(1)
        torch.testing.assert_close(sheet[3 * shape:3 * shape + 3],
                                   model.generate({"z": drawn["z"], "labels": labels}), rtol=0, atol=1e-4)
    assert not torch.equal(sheet[:3], sheet[3:6])
    exported = tmp_path / "samples.npz"
    assert main(["generate", str(straight), "--npz", str(exported), "--n", "5", "--seed", "3"]) == 0
    with np.load(exported, allow_pickle=False) as archive:
        assert archive["x"].shape == (5, 3, 16, 16) and archive["y"].dtype == np.int64
        np.testing.assert_array_equal(archive["y"], model.latents(5, seed=3)["labels"].numpy())
