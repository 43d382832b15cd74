"""BigGAN-PyTorch-style spectral norm: convergence, buffers, eval-mode stability, gradient through σ."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganforge.nn.spectral_norm import SNConv2d, SNEmbedding, SNLinear, SNSettings, conv2d, embedding, linear


def _converge(layer: nn.Module, steps: int = 300) -> None:
    layer.train()
    with torch.no_grad():
        for _ in range(steps):
            layer.normalized_weight()


@pytest.mark.parametrize(
    "make",
    [
        lambda: SNLinear(24, 16),
        lambda: SNConv2d(5, 12, 3, padding=1),
        lambda: SNEmbedding(10, 7),
    ],
    ids=["linear", "conv", "embedding"],
)
def test_power_iteration_converges_to_largest_singular_value(make):
    torch.manual_seed(0)
    layer = make()
    matrix = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    _converge(layer)
    sigma = torch.linalg.matrix_norm(matrix, ord=2)
    assert abs(layer.sv0.item() - sigma.item()) < 1e-3
    normalized = layer.normalized_weight().detach().reshape(matrix.shape)
    assert torch.linalg.matrix_norm(normalized, ord=2).item() == pytest.approx(1.0, abs=1e-3)


def test_second_vector_estimates_second_singular_value():
    torch.manual_seed(1)
    layer = SNLinear(20, 12, settings=SNSettings(num_svs=2, num_itrs=5))
    _converge(layer, 200)
    expected = torch.linalg.svdvals(layer.weight.detach())
    assert layer.sv0.item() == pytest.approx(expected[0].item(), abs=1e-3)
    assert layer.sv1.item() == pytest.approx(expected[1].item(), abs=1e-3)


def test_buffers_are_state_and_only_training_advances_them():
    torch.manual_seed(2)
    layer = SNLinear(8, 6, settings=SNSettings(num_svs=2))
    assert {"u0", "sv0", "u1", "sv1"} <= set(layer.state_dict())
    assert layer.u0.shape == (1, 6) and layer.sv0.shape == (1,)
    layer.eval()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(4, 8)
    for _ in range(3):
        layer(x)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key
    layer.train()
    layer(x)
    assert not torch.equal(layer.u0, before["u0"])
    assert not torch.equal(layer.sv0, before["sv0"])


def test_eval_output_uses_one_step_from_stored_u():
    torch.manual_seed(3)
    layer = SNLinear(8, 6, settings=SNSettings(num_itrs=4)).eval()
    matrix = layer.weight.detach()
    v = torch.nn.functional.normalize(layer.u0 @ matrix)
    u = torch.nn.functional.normalize(v @ matrix.t())
    sigma = (v @ matrix.t() @ u.t()).item()
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), x @ (matrix / sigma).t() + layer.bias)


def test_gradient_flows_through_sigma():
    torch.manual_seed(4)
    layer = SNLinear(7, 5)
    _converge(layer, 200)
    layer.eval()
    probe = torch.randn(5, 7)
    (layer.normalized_weight() * probe).sum().backward()
    weight = layer.weight.detach()
    v = torch.nn.functional.normalize(layer.u0 @ weight)
    u = torch.nn.functional.normalize(v @ weight.t())
    sigma = (v @ weight.t() @ u.t()).item()
    # d/dW <W/σ, P> = P/σ − <W, P>/σ² · uᵀv  (dσ/dW = uᵀv for the detached singular vectors)
    expected = probe / sigma - (weight * probe).sum() / sigma**2 * (u.t() @ v)
    torch.testing.assert_close(layer.weight.grad, expected, atol=1e-5, rtol=1e-4)


def test_factories_build_plain_layers_without_settings():
    assert type(conv2d(3, 4, 3, sn=None)) is nn.Conv2d
    assert conv2d(3, 4, 3, sn=None).padding == (1, 1)
    assert type(linear(3, 4, sn=None)) is nn.Linear
    assert type(embedding(3, 4, sn=None)) is nn.Embedding
    settings = SNSettings(num_svs=1, num_itrs=2, eps=1e-6)
    layer = conv2d(3, 4, 1, sn=settings, bias=False)
    assert isinstance(layer, SNConv2d) and layer.bias is None and layer.sn == settings and layer.padding == (0, 0)


@pytest.mark.parametrize(("kwargs", "name"), [({"num_svs": 0}, "num_svs"), ({"num_itrs": 0}, "num_itrs"),
                                               ({"eps": 0.0}, "eps")])
def test_settings_reject_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SNSettings(**kwargs)


def test_power_iteration_keeps_full_precision_under_autocast():
    torch.manual_seed(5)
    layer = SNLinear(32, 16)
    reference = layer.normalized_weight().detach()
    torch.manual_seed(5)
    autocast_layer = SNLinear(32, 16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        weight = autocast_layer.normalized_weight()
    assert weight.dtype == torch.float32 and autocast_layer.u0.dtype == torch.float32
    torch.testing.assert_close(weight.detach(), reference)
    torch.testing.assert_close(autocast_layer.u0, layer.u0)


def test_channels_last_kernel_is_read_as_a_view_with_the_same_sigma_and_u():
    """Eager networks hold channels_last kernels: the power iteration reads them without a copy, in a column order
    that σ, u and the output do not depend on (float64, two SVs, several steps, against the NCHW layer)."""
    from ganforge.nn.spectral_norm import _as_matrix

    torch.manual_seed(3)
    nchw = SNConv2d(5, 7, 3, padding=1, settings=SNSettings(num_svs=2, num_itrs=2)).double()
    cl = SNConv2d(5, 7, 3, padding=1, settings=SNSettings(num_svs=2, num_itrs=2)).double()
    cl.load_state_dict(nchw.state_dict())
    cl.to(memory_format=torch.channels_last)
    assert _as_matrix(cl.weight).data_ptr() == cl.weight.data_ptr()  # a view, not a copy
    x = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    for _ in range(3):
        out_nchw, out_cl = nchw(x), cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, out_nchw, rtol=1e-12, atol=1e-12)
    for key in ("u0", "sv0", "u1", "sv1"):
        torch.testing.assert_close(getattr(cl, key), getattr(nchw, key), rtol=1e-12, atol=1e-12)
