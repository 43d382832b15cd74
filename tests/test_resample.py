"""upsample_nearest_2x against F.interpolate, which it stands in for in every network and the PGAN real-image blend."""

import pytest
import torch
import torch.nn.functional as F

from ganforge.nn.resample import upsample_nearest_2x


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 16, 8, 8), (1, 1, 1, 1)])
def test_values_gradients_and_layout_equal_torch_interpolate(shape, layout):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=layout).requires_grad_(True)
    expected = F.interpolate(x, scale_factor=2.0, mode="nearest")
    got = upsample_nearest_2x(x)
    assert torch.equal(got, expected)
    assert got.stride() == expected.stride()  # no layout flip for the next convolution to undo
    upstream = torch.randn_like(expected)
    (grad_expected,) = torch.autograd.grad(expected, x, upstream)
    (grad_got,) = torch.autograd.grad(got, x, upstream)
    assert torch.equal(grad_got, grad_expected)  # torch's own backward: the same sums in the same order


def test_nchw_on_the_cpu_takes_the_broadcast_route():
    """The route this module exists for (torch's kernel is the one that runs for channels_last and off the CPU)."""
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert type(upsample_nearest_2x(x).grad_fn).__name__ == "_NearestUpsample2xBackward"
    cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert "UpsampleNearest2D" in type(upsample_nearest_2x(cl).grad_fn).__name__


def test_a_gradient_penalty_can_differentiate_through_it():
    """create_graph through the custom backward: gradcheck and gradgradcheck in float64."""
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(upsample_nearest_2x, (x,))
    assert torch.autograd.gradgradcheck(upsample_nearest_2x, (x,))


def test_torch_func_grad_goes_through_it():
    """torch.func.grad (the route by which a gradient penalty can be compiled, benchmarks/README.md) sees torch's
    values."""
    x = torch.randn(2, 3, 4, 4)

    def total(fn):
        return lambda t: (fn(t) ** 2).sum()

    reference = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
    torch.testing.assert_close(torch.func.grad(total(upsample_nearest_2x))(x), torch.func.grad(total(reference))(x))
