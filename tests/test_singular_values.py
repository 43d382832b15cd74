"""BigGAN-PyTorch's SV logs: every spectrally normalised layer's σ estimates of the trained G and D at each log point,
in singular_values.jsonl and the report (the BigGAN paper's collapse signal)."""

from __future__ import annotations

import json
import sys

import pytest
import safetensors.torch
import torch
from reliability_runs import tiny_run

import ganforge
from ganforge.data.store import open_dataset
from ganforge.distributed import DistInfo
from ganforge.families import resolve_run_config
from ganforge.families.biggan import BigGANFamily
from ganforge.nn.spectral_norm import SNConv2d, SNSettings, singular_value_estimates
from ganforge.viz import plots
from ganforge.viz.report import write_report
from ganforge.viz.run_data import leading_singular_values, read_run


def test_estimates_are_the_state_dicts_sv_buffers_as_biggan_pytorch_selects_them():
    net = torch.nn.Sequential(SNConv2d(3, 4, 3, settings=SNSettings(num_svs=2)), torch.nn.ReLU(), SNConv2d(4, 4, 1))
    net(torch.randn(2, 3, 8, 8))  # a training-mode forward writes σ
    state = net.state_dict()
    estimates = singular_value_estimates(net)
    # utils.get_SVs: every state-dict entry whose name contains "sv"
    assert list(estimates) == [key for key in state if "sv" in key] == ["0.sv0", "0.sv1", "2.sv0"]
    assert all(torch.equal(estimates[key], state[key]) for key in estimates)
    assert list(singular_value_estimates(torch.compile(net))) == list(estimates)  # names of the original module
    assert singular_value_estimates(torch.nn.Linear(2, 2)) == {}


def test_biggan_nets_report_every_sv_buffer():
    config = resolve_run_config("biggan", tiny_run("biggan"))
    family = BigGANFamily(config.model, open_dataset(config.data), torch.device("cpu"), DistInfo())
    for name in ("G", "D"):
        state = family.nets[name].state_dict()
        assert list(singular_value_estimates(family.nets[name])) == [k for k in state if "sv" in k]


@pytest.mark.slow
def test_a_biggan_run_logs_them_at_each_log_point_and_the_report_plots_them(tmp_path):
    run = tmp_path / "run"
    ganforge.train(tiny_run("biggan", log_every=2), run)  # 8 steps
    records = [json.loads(line) for line in (run / "singular_values.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    weights = safetensors.torch.load_file(str(run / "checkpoints" / "00000008.safetensors"))
    last = records[-1]
    for net in ("G", "D"):  # the trained networks' buffers at that step, not the EMA copy's
        keys = [k for k in weights if k.startswith(f"net/{net}/") and k.rsplit(".", 1)[-1].startswith("sv")]
        assert keys and all(last[f"{net}.{k.removeprefix(f'net/{net}/')}"] == float(weights[k]) for k in keys)
    assert not any(key.startswith("G_ema.") for key in last)
    assert len({json.dumps({k: v for k, v in r.items() if k not in ("step", "kimg")}) for r in records}) == 4  # moving

    data = read_run(run)
    by_net = leading_singular_values(data.singular_values)
    assert sorted(by_net) == ["D", "G"] and all(key.endswith(".sv0") for keys in by_net.values() for key in keys)
    page = write_report([run]).read_text()
    assert "<h2>Spectral norms</h2>" in page
    if plots.available():
        assert 'alt="singular values of the spectrally normalised layers"' in page


@pytest.mark.slow
def test_networks_without_spectral_norm_write_no_file(tmp_path):
    ganforge.train(tiny_run("wgan-gp", log_every=2), tmp_path / "run")
    assert not (tmp_path / "run" / "singular_values.jsonl").exists()
    assert "Spectral norms" not in write_report([tmp_path / "run"]).read_text()


def test_the_plot_needs_records(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert plots.singular_value_figure(read_run(tmp_path)) is None


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
