"""Spectral normalisation the way BigGAN-PyTorch does it (not `torch.nn.utils.spectral_norm`).

The power-iteration vectors ``u{i}`` and the singular-value estimates ``sv{i}`` are *buffers*, so they are part of
the state dict: checkpoints carry them, the EMA generator averages them, and official checkpoints import
exactly. The weight is divided by the first estimated singular value; with ``num_svs > 1`` the further vectors
are Gram–Schmidt-orthogonalised estimates of the next singular values, kept for monitoring only.

Training mode runs ``num_itrs`` power-iteration steps and writes u and σ back. Eval mode runs one step from the
stored u and writes nothing back, so sampling never changes the network (the official code runs its
``num_itrs`` steps from the same stored u in eval mode, which gives the same single-step result).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.nn.layout import is_channels_last


@dataclass(frozen=True)
class SNSettings:
    """Power-iteration settings of one network (BigGAN-PyTorch's num_SVs, num_SV_itrs, SN_eps)."""

    num_svs: int = 1
    num_itrs: int = 1
    eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.num_svs < 1:
            raise ValueError(f"spectral norm num_svs must be >= 1, got {self.num_svs}")
        if self.num_itrs < 1:
            raise ValueError(f"spectral norm num_itrs must be >= 1, got {self.num_itrs}")
        if not self.eps > 0:
            raise ValueError(f"spectral norm eps must be > 0, got {self.eps}")


def _remove_projections(x: Tensor, basis: list[Tensor]) -> Tensor:
    """Gram–Schmidt: x minus its components along earlier (row) vectors, so later estimates find other SVs."""
    for y in basis:
        x = x - (y @ x.t()) * y / (y @ y.t())
    return x


def power_iteration(matrix: Tensor, us: list[Tensor], eps: float) -> tuple[list[Tensor], list[Tensor]]:
    """One power-iteration step per left vector: (singular values, updated left vectors).

    ``matrix`` is [out, in], each u is [1, out]. The vectors are computed without gradient; the singular values
    σᵢ = vᵢ Wᵀ uᵢᵀ keep the gradient to W, as in the SN paper, so training sees d(W/σ)/dW.
    """
    new_us: list[Tensor] = []
    vs: list[Tensor] = []
    svs: list[Tensor] = []
    for u in us:
        with torch.no_grad():
            v = F.normalize(_remove_projections(u @ matrix, vs), eps=eps)
            vs.append(v)
            u = F.normalize(_remove_projections(v @ matrix.t(), new_us), eps=eps)
            new_us.append(u)
        svs.append(((v @ matrix.t()) @ u.t()).squeeze())
    return svs, new_us


def _as_matrix(weight: Tensor) -> Tensor:
    """The weight as [out, in], a view whatever its layout: a channels_last kernel (eager networks on every device)
    flattens in (kh, kw, in) order, which permutes W's columns, and the power iteration's σ and u do not depend on the
    order of the columns (v, which does, is recomputed from u at every step). A plain reshape would copy it at every
    forward (BigGAN at full CIFAR widths: 520 copies of 256×256×3×3 kernels per step, 0.2 s on 2 CPU cores)."""
    if is_channels_last(weight):
        weight = weight.permute(0, 2, 3, 1)
    return weight.reshape(weight.shape[0], -1)


class SpectralNormMixin:
    """Adds u/sv buffers and `normalized_weight()` to a layer with a ``weight`` whose dim 0 is the output side."""

    weight: Tensor
    training: bool

    def _init_spectral_norm(self, settings: SNSettings, num_outputs: int) -> None:
        self.sn = settings
        for i in range(settings.num_svs):
            self.register_buffer(f"u{i}", torch.randn(1, num_outputs))  # type: ignore[attr-defined]
            self.register_buffer(f"sv{i}", torch.ones(1))  # type: ignore[attr-defined]

    def singular_values(self) -> list[Tensor]:
        """The last training-mode σ estimates (logging; the forward recomputes σ₀)."""
        return [getattr(self, f"sv{i}") for i in range(self.sn.num_svs)]

    def normalized_weight(self) -> Tensor:
        """W / σ₀; advances and stores u (and σ) only in training mode.

        The power iteration runs in the weight's own precision even under autocast: bf16/fp16 u vectors would
        drift and σ would be off by percents.
        """
        matrix = _as_matrix(self.weight)
        us = [getattr(self, f"u{i}") for i in range(self.sn.num_svs)]
        with torch.autocast(device_type=matrix.device.type, enabled=False):
            for _ in range(self.sn.num_itrs if self.training else 1):
                svs, us = power_iteration(matrix, us, self.sn.eps)
        if self.training:
            with torch.no_grad():
                for i, (u, sv) in enumerate(zip(us, svs, strict=True)):
                    getattr(self, f"u{i}").copy_(u)
                    getattr(self, f"sv{i}").copy_(sv.detach())
        return self.weight / svs[0]


class SNConv2d(nn.Conv2d, SpectralNormMixin):
    """Conv2d whose weight is divided by its spectral norm on every forward."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, padding: int = 0,
                 bias: bool = True, settings: SNSettings | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self._init_spectral_norm(settings or SNSettings(), out_channels)

    def applied_parameters(self) -> tuple[Tensor, Tensor | None]:
        """W / σ₀ and the bias (advancing u in training mode, as forward does)."""
        return self.normalized_weight(), self.bias

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, *self.applied_parameters())


class SNLinear(nn.Linear, SpectralNormMixin):
    """Linear layer whose weight is divided by its spectral norm on every forward."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 settings: SNSettings | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_spectral_norm(settings or SNSettings(), out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(nn.Embedding, SpectralNormMixin):
    """Embedding table normalised as a [num_embeddings, dim] matrix (D's projection embedding)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, settings: SNSettings | None = None) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self._init_spectral_norm(settings or SNSettings(), num_embeddings)

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self.normalized_weight())


def singular_value_estimates(net: nn.Module) -> dict[str, Tensor]:
    """Every spectrally normalised layer's σ estimates, named as in the state dict (`blocks.0.conv1.sv0`): what
    BigGAN-PyTorch logs of G and D (its utils.get_SVs), since σ₀ blowing up in some layers is the sign of the
    collapse the BigGAN paper analyses (§4.1). A compiled net's names are its original module's."""
    found = {}
    for name, module in net.named_modules():
        if isinstance(module, SpectralNormMixin):
            prefix = name.removeprefix("_orig_mod").removeprefix(".")
            for i, value in enumerate(module.singular_values()):
                found[f"{prefix}.sv{i}" if prefix else f"sv{i}"] = value
    return found


def conv2d(in_channels: int, out_channels: int, kernel_size: int, *, sn: SNSettings | None,
           bias: bool = True) -> nn.Conv2d:
    """A 'same'-padded conv, spectrally normalised when `sn` is given."""
    padding = kernel_size // 2
    if sn is None:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
    return SNConv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias, settings=sn)


def linear(in_features: int, out_features: int, *, sn: SNSettings | None, bias: bool = True) -> nn.Linear:
    """A linear layer, spectrally normalised when `sn` is given."""
    if sn is None:
        return nn.Linear(in_features, out_features, bias=bias)
    return SNLinear(in_features, out_features, bias=bias, settings=sn)


def embedding(num_embeddings: int, embedding_dim: int, *, sn: SNSettings | None) -> nn.Embedding:
    """An embedding table, spectrally normalised when `sn` is given."""
    if sn is None:
        return nn.Embedding(num_embeddings, embedding_dim)
    return SNEmbedding(num_embeddings, embedding_dim, settings=sn)
