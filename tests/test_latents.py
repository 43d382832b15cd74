"""`normal_draws`: a seed's normal draws as rows that any longer draw begins with (torch's CPU sampler redraws the
last block of 16 of a size that is no multiple of 16, and samples below 16 values another way)."""

import pytest
import torch

from ganforge.nn.latents import normal_draws


@pytest.mark.parametrize("width", [1, 3, 8, 100, 120, 512])
def test_a_draw_is_the_start_of_every_longer_draw(width: int) -> None:
    longest = normal_draws(40, width, torch.Generator().manual_seed(5))
    for n in (1, 2, 5, 7, 16, 39):
        assert torch.equal(normal_draws(n, width, torch.Generator().manual_seed(5)), longest[:n]), n
    plain = torch.randn(5, width, generator=torch.Generator().manual_seed(5))
    assert torch.equal(longest[:5], plain) == (5 * width % 16 == 0)  # randn's own values where it draws whole blocks


def test_the_values_are_standard_normal() -> None:
    draws = normal_draws(4000, 25, torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 25) and draws.dtype == torch.float32
    assert abs(draws.mean().item()) < 0.01 and draws.std().item() == pytest.approx(1.0, abs=0.01)
