"""Learned models on the exact 2-D world: denoisers and a noisy classifier, and their training.

Notebook 03 trains these on the CPU in seconds and compares them with the exact quantities of
:mod:`nbhelpers.mixtures`. Data is drawn fresh from the world at every step, so there is no
overfitting to speak of: the only errors are those of the network and the optimiser.

Models:
    :class:`Denoiser2D`        ``eps_theta(x_t, t, y)``; ``y = None`` is the unconditional
                               (null-label) branch. Trained with label dropout it serves both
                               branches of classifier-free guidance ([CFG] Algorithm 1).
    :class:`NoisyClassifier2D` ``p_phi(y | x_t, t)``, trained on noised data ([CG] section 4.1).

References:
    [DDPM] Ho, Jain, Abbeel 2020 (Algorithm 1: the training loop; eq. 14: the simple loss).
    [CG]   Dhariwal, Nichol 2021, Diffusion Models Beat GANs on Image Synthesis.
    [CFG]  Ho, Salimans 2022, Classifier-Free Diffusion Guidance.
    [TF]   Vaswani et al. 2017 (section 3.5: sinusoidal position embedding, used for t).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nbhelpers.diffusion import EpsModel, q_sample, schedule_at
from nbhelpers.guidance import cfg_combine, classifier_guided_eps
from nbhelpers.mixtures import GaussianMixture2D


def timestep_embedding(t: Tensor, dim: int = 32, T: int = 1000) -> Tensor:
    """Sinusoidal embedding of integer timesteps ([TF] section 3.5), shape ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :] * (1000.0 / T)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _mlp(d_in: int, hidden: int, depth: int, d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.SiLU()]
    layers.append(nn.Linear(hidden, d_out))
    return nn.Sequential(*layers)


class Denoiser2D(nn.Module):
    """``eps_theta(x_t, t, y)``: a small MLP on ``[x_t, emb(t), emb(y)]``.

    Args:
        n_classes: 0 for an unconditional model; otherwise the label embedding has
            ``n_classes + 1`` rows, the last one the null label used for ``y = None``.
        hidden, depth: width and number of hidden layers.
    """

    def __init__(self, n_classes: int = 0, hidden: int = 128, depth: int = 3,
                 t_dim: int = 32) -> None:
        super().__init__()
        self.n_classes, self.t_dim = n_classes, t_dim
        self.label_emb = nn.Embedding(n_classes + 1, 16) if n_classes else None
        self.net = _mlp(2 + t_dim + (16 if n_classes else 0), hidden, depth, 2)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | int | None = None) -> Tensor:
        """Noise prediction ``(B, 2)`` for points ``x`` ``(B, 2)`` at timesteps ``t`` ``(B,)``."""
        parts = [x, timestep_embedding(t, self.t_dim)]
        if self.label_emb is not None:
            null = torch.full((x.shape[0],), self.n_classes, dtype=torch.long, device=x.device)
            y = null if y is None else torch.as_tensor(y, device=x.device).expand(x.shape[0])
            parts.append(self.label_emb(y.long()))
        elif y is not None:
            raise ValueError("this Denoiser2D is unconditional (n_classes=0); pass y=None")
        return self.net(torch.cat(parts, dim=1))


class NoisyClassifier2D(nn.Module):
    """``log p_phi(y | x_t, t)``: an MLP on ``[x_t, emb(t)]`` giving class logits."""

    def __init__(self, n_classes: int, hidden: int = 128, depth: int = 3,
                 t_dim: int = 32) -> None:
        super().__init__()
        self.t_dim = t_dim
        self.net = _mlp(2 + t_dim, hidden, depth, n_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Class logits ``(B, C)``."""
        return self.net(torch.cat([x, timestep_embedding(t, self.t_dim)], dim=1))

    def grad_log_prob(self, x: Tensor, t: Tensor, y: Tensor | int) -> Tensor:
        """``grad_x log p_phi(y | x_t)`` by autograd, shape ``(B, 2)`` ([CG] Algorithm 1)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logp = torch.log_softmax(self(x, t), dim=1)
            y = torch.as_tensor(y, device=x.device).long().expand(x.shape[0])
            picked = logp.gather(1, y[:, None]).sum()
            (grad,) = torch.autograd.grad(picked, x)
        return grad


@dataclass
class FitState:
    """What a trainer hands its callback after each step."""

    step: int
    loss: float


def _training_batch(world: GaussianMixture2D, alpha_bar: Tensor, batch_size: int,
                    g: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """[DDPM] Algorithm 1, lines 2-4: x0 ~ data, t ~ U{0..T-1}, eps ~ N(0, I); then x_t."""
    x0, _, y = world.sample(batch_size, generator=g)
    x0 = x0.float()
    t = torch.randint(0, len(alpha_bar), (batch_size,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return q_sample(x0, t, alpha_bar, eps), t, eps, y


def _optimise(model: nn.Module, loss_of_batch: Callable[[torch.Generator], Tensor], *,
              steps: int, lr: float, seed: int,
              callback: Callable[[FitState], None] | None) -> list[float]:
    """Adam with a cosine decay to ``lr / 20``; ``loss_of_batch(g)`` draws a batch and scores it."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 20)
    losses = []
    model.train()
    for step in range(steps):
        loss = loss_of_batch(g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if callback is not None:
            callback(FitState(step, losses[-1]))
    model.eval()
    return losses


def train_denoiser(model: Denoiser2D, world: GaussianMixture2D, alpha_bar: Tensor, *,
                   steps: int, batch_size: int = 512, lr: float = 2e-3, p_uncond: float = 0.15,
                   seed: int = 0,
                   callback: Callable[[FitState], None] | None = None) -> list[float]:
    """Train ``model`` with the simple loss ``|eps - eps_theta(x_t, t, y)|^2`` ([DDPM] eq. 14).

    For a conditional model each label is replaced by the null label with probability
    ``p_uncond`` ([CFG] Algorithm 1), so the one network learns both branches.

    Returns:
        the loss of every step.
    """
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond (label dropout) must lie in [0, 1), got {p_uncond}")

    def loss_of_batch(g: torch.Generator) -> Tensor:
        x_t, t, eps, y = _training_batch(world, alpha_bar, batch_size, g)
        if model.n_classes > 0:
            drop = torch.rand(batch_size, generator=g) < p_uncond
            pred = model(x_t, t, torch.where(drop, torch.full_like(y, model.n_classes), y))
        else:
            pred = model(x_t, t)
        return ((pred - eps) ** 2).mean()

    return _optimise(model, loss_of_batch, steps=steps, lr=lr, seed=seed, callback=callback)


def train_classifier(model: NoisyClassifier2D, world: GaussianMixture2D, alpha_bar: Tensor, *,
                     steps: int, batch_size: int = 512, lr: float = 2e-3, seed: int = 0,
                     callback: Callable[[FitState], None] | None = None) -> list[float]:
    """Train a noisy classifier with cross-entropy on ``(x_t, t) -> y`` ([CG] section 4.1)."""
    def loss_of_batch(g: torch.Generator) -> Tensor:
        x_t, t, _, y = _training_batch(world, alpha_bar, batch_size, g)
        return nn.functional.cross_entropy(model(x_t, t), y)

    return _optimise(model, loss_of_batch, steps=steps, lr=lr, seed=seed, callback=callback)


# --------------------------------------------------------------------------------------------
# Guided eps models, ready for diffusion.sample_loop
# --------------------------------------------------------------------------------------------


def cfg_eps_model(model: Denoiser2D, y: int, s: float | Tensor) -> EpsModel:
    """Classifier-free guidance with one network: both branches in one batched call."""
    @torch.no_grad()
    def eps_model(x: Tensor, t: Tensor) -> Tensor:
        n = x.shape[0]
        labels = torch.cat([torch.full((n,), model.n_classes), torch.full((n,), y)])
        eps_uncond, eps_cond = model(torch.cat([x, x]).float(), torch.cat([t, t]),
                                     labels).to(x.dtype).chunk(2)
        return cfg_combine(eps_uncond, eps_cond, s)
    return eps_model


def classifier_guided_eps_model(denoiser: Denoiser2D, classifier: NoisyClassifier2D,
                                alpha_bar: Tensor, y: int, s: float | Tensor) -> EpsModel:
    """Classifier guidance: an unconditional denoiser plus ``s`` times a classifier gradient."""
    def eps_model(x: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            eps = denoiser(x.float(), t).to(x.dtype)
        grad = classifier.grad_log_prob(x.float(), t, y).to(x.dtype)
        return classifier_guided_eps(eps, grad, schedule_at(alpha_bar, t, x), s)
    return eps_model


# --------------------------------------------------------------------------------------------
# Measuring guided samples against the exact world
# --------------------------------------------------------------------------------------------


def fidelity(world: GaussianMixture2D, x: Tensor, y: int) -> float:
    """Fraction of samples whose exact posterior ``p(y | x)`` favours the prompted class."""
    post = world.class_posterior(x.to(world.means.dtype))
    return float((post.argmax(dim=1) == y).double().mean())


def within_mode_spread(world: GaussianMixture2D, x: Tensor, min_count: int = 5) -> float:
    """Diversity inside the modes: RMS distance of samples to their mode's sample mean.

    Each sample goes to its most responsible component; the spread ``sqrt(trace Cov)`` of each
    component's samples is averaged, weighted by counts (components with fewer than
    ``min_count`` samples are left out). Guidance shrinks it as it sharpens each mode.
    """
    x = x.to(world.means.dtype)
    owner = world.responsibilities(x).argmax(dim=1)
    total, count = 0.0, 0
    for k in range(world.n_components):
        pts = x[owner == k]
        if len(pts) >= min_count:
            total += len(pts) * float(((pts - pts.mean(0)) ** 2).sum(1).mean().sqrt())
            count += len(pts)
    if count == 0:
        raise ValueError(f"no component holds {min_count} or more of the {len(x)} samples")
    return total / count


def mode_coverage(world: GaussianMixture2D, x: Tensor, y: int, min_share: float = 0.25) -> float:
    """Fraction of class ``y``'s components that the samples visit.

    Each sample goes to its most responsible component; a component counts as covered when it
    holds at least ``min_share`` times the share ``p(x | y)`` gives it.
    """
    x = x.to(world.means.dtype)
    owner = world.responsibilities(x).argmax(dim=1)
    mine = (world.labels == y).nonzero().flatten()
    expected = world.weights[mine] / world.weights[mine].sum()
    got = torch.stack([(owner == k).double().mean() for k in mine])
    return float((got >= min_share * expected).double().mean())
