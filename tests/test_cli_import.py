"""`ganforge import stargan2 | biggan-pytorch` from the command line: official files → runs that load and sample."""

import numpy as np
import safetensors.torch
import torch
from conftest import shared_path

import ganforge
from ganforge.cli import main
from ganforge.data.store import write_store


def labelled_store(path, resolution, classes, count):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 3, resolution, resolution), dtype=np.uint8)
    labels = (np.arange(count) % classes).reshape(-1, 1).astype(np.int64)
    return write_store(path, images, resolution=resolution, source="test", labels=labels,
                       label_columns=[("class", [f"c{i}" for i in range(classes)])])


def test_import_stargan2_official_files(tmp_path, capsys):
    fixtures = shared_path("fixtures", "official", "stargan_v2")
    data = labelled_store(tmp_path / "domains", 128, 3, 6)
    run = tmp_path / "run"
    assert main(["import", "stargan2", str(fixtures / "small_nets_ema.ckpt"),
                 str(fixtures / "small_nets_discriminator.ckpt"), "-o", str(run), "--data", str(data)]) == 0
    io = safetensors.torch.load_file(str(fixtures / "small_io.safetensors"))
    model = ganforge.load(run)
    torch.testing.assert_close(model.nets["F_ema"](io["z"], io["y_trg"]), io["s_latent"], atol=1e-5, rtol=1e-5)
    assert main(["import", "stargan2", str(fixtures / "small_nets_ema.ckpt"), "-o", str(tmp_path / "r2")]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_import_biggan_pytorch_weights_folder(tmp_path, capsys):
    folder = shared_path("fixtures", "official", "biggan", "c32")
    data = labelled_store(tmp_path / "cifar_like", 32, 10, 20)
    run = tmp_path / "run"
    assert main(["import", "biggan-pytorch", str(folder), "-o", str(run), "--data", str(data)]) == 0
    model = ganforge.load(run)
    assert set(model.nets) == {"G", "D", "G_ema"}
    assert main(["import", "biggan-pytorch", str(folder), "-o", str(tmp_path / "r2"), "--data", str(data),
                 "--set", "steps=5"]) == 2
    assert "takes model.KEY=VALUE" in capsys.readouterr().err
