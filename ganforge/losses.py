"""Adversarial losses and regularisers shared by the families (one implementation of each)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ganforge.nn.double_backward import penalised_convolutions

# why the sign of a Wasserstein critic's output is no verdict (see Family.unsigned_critic)
WASSERSTEIN_CRITIC = ("a Wasserstein critic's loss is unchanged by a constant added to its output, so nothing trains "
                      "where its zero lies")


def wgan_critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's loss −(E[D(real)] − E[D(fake)]) as (real part, fake part), −E[D(real)] and E[D(fake)]: the
    critic maximises the Wasserstein estimate; the references log the parts apart (pytorch_GAN_zoo's lossD_real /
    lossD_fake, summed over the batch there; WassersteinGAN's errD_real / errD_fake)."""
    return -d_real.mean(), d_fake.mean()


def wgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.mean()


def logistic_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The original GAN's D loss on logits (BCE, real → 1, fake → 0) as (real part, fake part),
    E[softplus(−D(x))] and E[softplus(D(G(z)))] (PyTorch's DCGAN example's errD_real / errD_fake)."""
    return F.softplus(-d_real).mean(), F.softplus(d_fake).mean()


def nonsaturating_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss, E[softplus(−D(G(z)))]: BCE against the 'real' label, strong where D wins."""
    return F.softplus(-d_fake).mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     mix: torch.Tensor, target: float = 1.0, *, norm_scale: float = 1.0) -> torch.Tensor:
    """WGAN-GP: mean over samples of (s·‖∇ₓ̂ D(x̂)‖₂ − target)², x̂ = mix·real + (1 − mix)·fake, s = `norm_scale`.

    `mix` is U(0, 1) per sample, shaped to broadcast ([N, 1, 1, 1]); the norm runs over all of C·H·W.
    The graph is kept (create_graph) so the penalty trains the critic.

    `norm_scale` lets a caller penalise the gradient with respect to another representation of the same
    images: the official Progressive GAN code differentiates with respect to images nearest-upscaled k× that D
    box-downscales k× again, whose gradient norm is the native one divided by k (norm_scale = 1/k).
    """
    mixed = (mix * real.detach() + (1.0 - mix) * fake.detach()).requires_grad_(True)
    with penalised_convolutions(mixed.device):
        scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1) * norm_scale
    return (norms - target).square().mean()


def drift_penalty(d_real: torch.Tensor) -> torch.Tensor:
    """PGGAN's ε-drift term: keeps the critic's output near zero (multiply by ε = 0.001)."""
    return d_real.square().mean()


def gdpp_loss(fake_features: torch.Tensor, real_features: torch.Tensor) -> torch.Tensor:
    """GDPP (Elfeki et al. 2019): match the eigen-structure of fake and real feature similarity kernels.

    Features are L2-normalised per sample; the kernels φφᵀ are decomposed with torch.linalg.eigh (the zoo's
    torch.symeig is gone). The loss is a magnitude term (1e-4 · MSE of eigenvalues) plus a structure term, the
    negative cosine of matching eigenvectors weighted by the real eigenvalues min-max normalised, as in the paper.
    Real features carry no gradient.
    """
    def eig(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi = F.normalize(features.float(), p=2, dim=1)
        return torch.linalg.eigh(phi @ phi.T)

    fake_values, fake_vectors = eig(fake_features)
    with torch.no_grad():
        real_values, real_vectors = eig(real_features)
    magnitude = 1e-4 * F.mse_loss(fake_values, real_values)
    structure = -(fake_vectors * real_vectors).sum(0)
    spread = real_values.max() - real_values.min()
    weights = (real_values - real_values.min()) / spread if spread > 1e-10 else real_values
    return magnitude + (weights * structure).sum()


def r1_penalty(d_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ½·mean over samples of ‖∇ₓD(x)‖² at real images, i.e. γ/2 with γ = 1.

    It keeps D flat on the data, which stabilises non-saturating training without a Lipschitz constraint. `real`
    must require grad and `d_real` must be computed from it; the graph is kept so the penalty trains D.
    """
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return 0.5 * grad.square().flatten(1).sum(1).mean()


def hinge_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge loss of D (SAGAN/BigGAN) as (real part, fake part): mean relu(1 − D(x)), mean relu(1 + D(G(z))).

    Logits beyond the margin give no gradient, so D stops pushing samples it already separates well.
    """
    return F.relu(1.0 - d_real).mean(), F.relu(1.0 + d_fake).mean()


def hinge_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of G: −mean D(G(z)) (no margin on the generator side)."""
    return -d_fake.mean()


def orthogonal_regularization(weights: list[torch.Tensor]) -> torch.Tensor:
    """BigGAN's modified orthogonal regulariser (Brock et al. 2019, eq. 3): ½ Σ ‖(W Wᵀ) ⊙ (1 − I)‖²_F.

    Each weight is taken as a matrix [out, −1]. Only the overlap between different filters is penalised, not
    their norms, which keeps G amenable to truncation without fighting the spectral norm. The gradient,
    2·[(W Wᵀ) ⊙ (1 − I)]·W per weight, is exactly what BigGAN-PyTorch adds to the gradients.
    """
    penalties = []
    for weight in weights:
        matrix = weight.reshape(weight.shape[0], -1)
        gram = matrix @ matrix.t()
        penalties.append(0.5 * (gram - torch.diag_embed(torch.diagonal(gram))).square().sum())
    return torch.stack(penalties).sum()
