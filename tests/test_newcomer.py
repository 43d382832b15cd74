"""Issue 14's newcomer findings, one test each: what a first user trips over, on tiny runs written without training."""

import logging

import numpy as np
import pytest
import torch
from conftest import shared_path
from pgan_tiny import TINY_PGAN
from PIL import Image
from stargan2_tiny_run import CONFIGS, write_domain_folders

import ganforge
from ganforge.cli import main
from ganforge.config import read_config_file
from ganforge.data.domains import prepare_domain_folders
from ganforge.data.prepare import PrepareError, prepare_celeba_cropped, skip_summary
from ganforge.evaluation.run_metrics import evaluate_folders
from ganforge.evaluation.stargan2 import default_val_store
from ganforge.families import resolve_run_config
from ganforge.interop.biggan import BigGANImportError, import_biggan_pytorch
from ganforge.models.stargan2 import Generator, MappingNetwork
from ganforge.run_loader import build_family, dataset_placeholder, new_family
from ganforge.training.checkpoint import write_run
from ganforge.viz.grid import make_grid, to_uint8
from ganforge.viz.translate import average_styles, latent_grids, translate_with_styles


@pytest.fixture
def overshooting_pgan_run(tmp_path):
    """A tiny PGAN run (written at step 4) whose generators' weights are scaled up so their output overshoots
    [-1, 1], as PGAN's tanh-free generator does in practice."""
    config = resolve_run_config(None, dict(TINY_PGAN))
    family = new_family(config)
    with torch.no_grad():
        for name in ("G", "G_ema"):
            for param in family.nets[name].parameters():
                param.mul_(3.0)
    return write_run(tmp_path / "run", config, family, 4)


def test_generate_clamps_to_the_documented_range_and_raw_keeps_the_network_output(overshooting_pgan_run):
    model = ganforge.load(overshooting_pgan_run)
    raw = model.generate(n=8, seed=1, raw=True)
    assert raw.abs().max() > 1  # the network itself overshoots
    images = model.generate(n=8, seed=1)
    torch.testing.assert_close(images, raw.clamp(-1, 1), rtol=0, atol=0)
    assert images.min() == -1 or images.max() == 1


def test_generate_at_a_missing_step_names_the_steps_that_exist(overshooting_pgan_run, capsys):
    assert main(["generate", str(overshooting_pgan_run), "--step", "999", "-o", str(overshooting_pgan_run / "g")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"ganforge generate: error: {overshooting_pgan_run}: no checkpoint at step 999; "
                     "steps with a checkpoint: 4")
    assert not (overshooting_pgan_run / "g").exists()


@pytest.fixture
def tiny_biggan_run(tmp_path):
    """An untrained tiny class-conditional run (the weights do not matter to where files go)."""
    torch.manual_seed(0)
    model = {"g_ch": 4, "d_ch": 4, "latent_dim": 16, "shared_dim": 8, "g_attention": [], "d_attention": [],
             "batch_size": 4, "steps": 4}
    config = resolve_run_config(None, {"family": "biggan", "data": "builtin:shapes?count=64&resolution=32",
                                       "model": model})
    return write_run(tmp_path / "biggan", config, new_family(config), 4)


def test_generate_npz_alone_needs_no_out_folder_and_creates_none(tiny_biggan_run, tmp_path, capsys):
    npz = tmp_path / "samples.npz"
    assert main(["generate", str(tiny_biggan_run), "--npz", str(npz), "--n", "3", "--seed", "2"]) == 0
    assert capsys.readouterr().out.strip().startswith(f"wrote 1 file(s) to {npz} from step 4")
    with np.load(npz, allow_pickle=False) as saved:
        assert saved["x"].shape == (3, 3, 32, 32) and saved["x"].dtype == np.uint8 and saved["y"].shape == (3,)
    unused = tmp_path / "unused"  # a folder nothing would be written to: said, not silently ignored
    assert main(["generate", str(tiny_biggan_run), "--npz", str(npz), "-o", str(unused), "--n", "2",
                 "--overwrite"]) == 2
    assert f"-o {unused}: --npz {npz} is the only output and names its own file" in capsys.readouterr().err
    assert not unused.exists()
    assert main(["generate", str(tiny_biggan_run), "--n", "2"]) == 2  # images need a folder
    assert "-o/--out: required" in capsys.readouterr().err


def test_prepare_celeba_on_wrongly_sized_images_says_so_in_one_line(tmp_path, caplog):
    source = tmp_path / "src"
    source.mkdir()
    for index in range(5):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(source / f"{index:06d}.png")
    with caplog.at_level(logging.WARNING), pytest.raises(PrepareError) as raised:
        prepare_celeba_cropped(source, tmp_path / "out", workers=1)
    assert str(raised.value) == (
        f"{source}: none of the 5 images is a valid aligned CelebA image (178×218); skipped 5 of 5 files: "
        "5 × size 64×64, expected aligned CelebA 178×218 (000000.png, 000001.png, 000002.png, …)")
    assert caplog.records == []  # no line per skipped file


def test_skip_summary_counts_per_reason_most_common_first():
    skipped = [{"file": "a", "reason": "empty file"}, {"file": "b", "reason": "bad size"},
               {"file": "c", "reason": "bad size"}]
    assert skip_summary(skipped, 10, examples=1) == "skipped 3 of 10 files: 2 × bad size (b, …); 1 × empty file (a)"


def test_biggan_import_at_another_resolution_names_only_what_differs(tmp_path):
    weights = shared_path("fixtures", "official", "biggan", "r64")
    at_32 = [(["model", "resolution"], 32), (["model", "g_attention"], []), (["model", "d_attention"], []),
             (["model", "batch_size"], 4)]
    with pytest.raises(BigGANImportError) as raised:
        import_biggan_pytorch(weights, tmp_path / "run", data="builtin:shapes?count=16&resolution=64", overrides=at_32)
    assert str(raised.value) == (
        f"{weights}: the run for builtin:shapes?count=16&resolution=64 does not fit the checkpoint: "
        "resolution 32 (checkpoint: 64), n_classes 4 (checkpoint: 10), g_attention () (checkpoint: (32,)), "
        "d_attention () (checkpoint: (8,)); the checkpoint is 64 px: import it at that resolution (BigGAN builds "
        "32, 64, 128, 256 px, each with its own weights' shapes); the data's first label column must have 10 classes")
    assert not (tmp_path / "run").exists()


def test_evaluate_without_inception_weights_computes_swd_and_warns_once(tmp_path, capsys, no_feature_weights):
    rng = np.random.default_rng(0)
    fake, real = tmp_path / "fake.npz", tmp_path / "real.npz"
    np.savez(fake, images=rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8))
    np.savez(real, images=rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8))
    swd_only = evaluate_folders(fake, real, ["swd"])
    partial = evaluate_folders(fake, real, ["swd", "kid"])
    assert set(partial["results"]) == {"swd"}
    assert partial["results"]["swd"]["avg"] == swd_only["results"]["swd"]["avg"]
    assert partial["warning"].startswith("warning: kid not computed: The FID Inception weights "
                                         "pt_inception-2015-12-05-6726825d.pth are not available and could not be "
                                         "downloaded")
    assert f"put it at {no_feature_weights / 'weights' / 'pt_inception-2015-12-05-6726825d.pth'}" in partial["warning"]
    assert main(["evaluate", "--fake", str(fake), "--real", str(real), "--metrics", "swd,kid,fid"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("16 generated images against 16 real\nSWD x1e3") and out.count("not computed") == 1
    assert "kid, fid not computed" in out and "biased" not in out  # no FID computed: no note on its bias
    assert main(["evaluate", "--fake", str(fake), "--real", str(real), "--metrics", "kid"]) == 2  # nothing left
    assert "could not be downloaded" in capsys.readouterr().err
    # a file the user names that is not there is a typo to fix, not weights to do without
    missing = tmp_path / "no_inception.pth"
    assert main(["evaluate", "--fake", str(fake), "--real", str(real), "--metrics", "swd,kid",
                 "--inception-weights", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == (f"ganforge evaluate: error: The FID Inception weights file {missing} "
                                               "(from the argument) does not exist")


def test_stargan2_trains_on_the_folder_prepare_wrote_with_its_only_label_column(tmp_path, capsys):
    stores = tmp_path / "stores"
    prepare_domain_folders(write_domain_folders(tmp_path / "folders"), stores, resolution=32)
    capsys.readouterr()
    raw = read_config_file(CONFIGS / "stargan2_tiny.yaml")  # names domain_column "shape", as the README's run
    raw.update(data=str(stores))
    raw["model"].update(base_dim=4, max_conv_dim=8, mapping_dim=8, batch_size=2)
    family = build_family(resolve_run_config(None, raw), torch.device("cpu"))
    assert capsys.readouterr().err == (f"data: {stores} holds the train/ and val/ stores of `ganforge prepare`; "
                                       f"using {stores / 'train'}\nmodel.domain_column: 'shape' is not a label "
                                       f"column of {stores / 'train'}; using its only column 'domain'\n")
    assert family.dataset.source == str((stores / "train").absolute()) and family.dataset.count == 12
    assert family.domain_column == "domain" and family.domain_names == ["dark", "light"]
    assert default_val_store(family.dataset.source) == stores / "val"
    loaded = build_family(resolve_run_config(None, raw), torch.device("cpu"), dataset_placeholder(
        family.dataset.manifest))  # how a trained run is loaded: the same column, said only where images are used
    assert loaded.domain_column == "domain" and capsys.readouterr().err == ""


@pytest.mark.parametrize("w_hpf", [0.0, 1.0])
def test_batched_latent_grids_match_one_generator_call_per_style(w_hpf):
    """Batching changes only float rounding (a batched convolution may sum in another order): outputs agree to
    1e-5 and the uint8 grids to one level in a few pixels."""
    torch.manual_seed(0)
    G = Generator(img_size=32, style_dim=16, max_conv_dim=8, w_hpf=w_hpf, base_dim=4).eval()
    F = MappingNetwork(latent_dim=8, style_dim=16, num_domains=4, hidden_dim=8).eval()
    x_src = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    masks = None if w_hpf == 0 else tuple(torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(k))
                                          for k in (2, 3))
    styles = torch.randn(5, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        one_by_one = torch.cat([G(x_src, style.expand(3, -1), masks).clamp(-1, 1) for style in styles])
    torch.testing.assert_close(translate_with_styles(G, x_src, styles, masks, batch_size=4), one_by_one,
                               rtol=0, atol=1e-5)
    grids = latent_grids(G, F, x_src, 4, 8, torch.Generator().manual_seed(5), psis=(0.5, 1.0), num_z=2, masks=masks)
    generator = torch.Generator().manual_seed(5)
    z = torch.randn(2, 8, generator=generator)
    s_avg = average_styles(F, 4, 8, generator)
    for psi in (0.5, 1.0):
        rows = [x_src]
        with torch.no_grad():
            for domain in range(4):
                for style in torch.lerp(s_avg[domain].expand(2, -1), F(z, torch.full((2,), domain)), psi):
                    rows.append(G(x_src, style.expand(3, -1), masks).clamp(-1, 1))
        expected = make_grid(to_uint8(torch.cat(rows)), columns=3).astype(int)
        assert grids[psi].shape == expected.shape
        difference = np.abs(grids[psi].astype(int) - expected)
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
