"""The exact 2-D world: a labelled mixture of Gaussians, noised, scored and guided in closed form.

Every component ``k`` of the mixture carries a class label ``labels[k]``; a class-conditional
density ``p(x | y)`` is the mixture of that class's components with their weights renormalised.
Under the variance-preserving forward process ``x_t = sqrt(alpha_bar) x0 + sigma eps`` the noised
density ``q_t`` is again such a mixture ([DDPM] eq. 4), so every quantity the guidance notebooks
need (densities, class posteriors, scores, classifier gradients, tilted densities and the optimal
noise prediction) is available exactly, with no network and no autograd.

With ``g_k(x) = -C_k^{-1} (x - mu_k)``, the score of component ``k``, and the responsibilities
``r_k(x) = w_k N(x; mu_k, C_k) / p(x)``:

==========================  =========================================================
``score(x)``                ``grad log p(x)       = sum_k r_k(x) g_k(x)``
``cond_score(x, y)``        ``grad log p(x | y)   = sum_{k in y} r_k(x | y) g_k(x)``
``classifier_grad(x, y)``   ``grad log p(y | x)   = cond_score - score`` (Bayes)
``guided_score(x, y, s)``   ``score + s * classifier_grad`` ([CG] section 4.3)
==========================  =========================================================

Tensors are float64 unless the mixture was built from another floating dtype; points ``x`` are
``(N, 2)`` and are converted to the mixture's dtype.

References:
    [DDPM] Ho, Jain, Abbeel 2020, Denoising Diffusion Probabilistic Models.
    [SDE]  Song et al. 2021, Score-Based Generative Modeling through SDEs.
    [CG]   Dhariwal, Nichol 2021, Diffusion Models Beat GANs on Image Synthesis.
    [CFG]  Ho, Salimans 2022, Classifier-Free Diffusion Guidance.
    [PRML] Bishop 2006, Pattern Recognition and Machine Learning, sections 2.3, 9.2 and 11.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nbhelpers.diffusion import EpsModel, schedule_at, score_to_eps
from nbhelpers.grids import grid, mesh, spacing

CLASS_NAMES: tuple[str, ...] = ("left", "right")
"""Names of :func:`default_world`'s classes 0 and 1 (plotted blue and red)."""

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True, eq=False)
class GaussianMixture2D:
    """A mixture of K Gaussians in 2-D whose components carry class labels.

    ``p(x) = sum_k w_k N(x; mu_k, C_k)``; class ``c`` owns the components with
    ``labels[k] == c``, so ``p(y = c) = sum_{k in c} w_k`` and
    ``p(x | c) = sum_{k in c} (w_k / p(c)) N(x; mu_k, C_k)`` ([PRML] section 9.2).

    Attributes:
        means: ``mu``, shape ``(K, 2)``.
        covs: ``C``, shape ``(K, 2, 2)``, symmetric positive definite.
        weights: ``w``, shape ``(K,)``, positive, summing to 1 (within 1e-6).
        labels: class of each component, shape ``(K,)``, long; every class ``0 .. C-1`` must
            own at least one component.

    Array-likes are accepted and converted: floats to float64 (or the dtype of a floating
    ``means`` tensor), labels to long. Frozen; compared by identity (``eq=False``), since
    tensors have no single truth value.
    """

    means: Tensor
    covs: Tensor
    weights: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        given = self.means
        dtype = given.dtype if isinstance(given, Tensor) and given.is_floating_point() \
            else torch.float64
        means = torch.as_tensor(self.means, dtype=dtype)
        covs = torch.as_tensor(self.covs, dtype=dtype, device=means.device)
        weights = torch.as_tensor(self.weights, dtype=dtype, device=means.device)
        labels = torch.as_tensor(self.labels, device=means.device)
        if labels.is_floating_point() and bool((labels != labels.round()).any()):
            raise ValueError(f"labels must be integers, got {labels.tolist()}")
        labels = labels.long()

        if means.ndim != 2 or means.shape[1] != 2 or means.shape[0] < 1:
            raise ValueError(f"means must have shape (K, 2) with K >= 1, got "
                             f"{tuple(means.shape)}")
        K = means.shape[0]
        if covs.shape != (K, 2, 2):
            raise ValueError(f"covs must have shape (K, 2, 2) = ({K}, 2, 2) to match means, got "
                             f"{tuple(covs.shape)}")
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape (K,) = ({K},), got {tuple(weights.shape)}")
        if labels.shape != (K,):
            raise ValueError(f"labels must have shape (K,) = ({K},), got {tuple(labels.shape)}")
        tol = 100 * torch.finfo(dtype).eps
        with torch.no_grad():
            for k in range(K):
                c = covs[k]
                if not torch.allclose(c, c.T, rtol=tol, atol=tol):
                    raise ValueError(f"covs[{k}] = {c.tolist()} is not symmetric; use "
                                     "(C + C.T) / 2")
                eig = torch.linalg.eigvalsh(c)
                if not bool((eig > 0).all()):
                    raise ValueError(f"covs[{k}] = {c.tolist()} is not positive definite "
                                     f"(eigenvalues {eig.tolist()}); every covariance needs "
                                     "two positive eigenvalues")
            if not bool((weights > 0).all()):
                raise ValueError(f"weights must all be positive, got {weights.tolist()}; drop "
                                 "the components with zero weight")
            total = float(weights.sum())
            if abs(total - 1) > 1e-6:
                raise ValueError(f"weights must sum to 1 (within 1e-6), got sum {total!r} for "
                                 f"{weights.tolist()}; divide them by their sum")
            if bool((labels < 0).any()):
                raise ValueError(f"labels must be class indices >= 0, got {labels.tolist()}")
            missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
            if missing:
                raise ValueError(f"labels {labels.tolist()} leave class(es) {missing} without a "
                                 "component; number the classes 0 .. C-1 without gaps")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "covs", covs)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "labels", labels)

    # ----------------------------------------------------------------------------------------
    # Structure
    # ----------------------------------------------------------------------------------------

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return self.means.shape[0]

    @property
    def n_classes(self) -> int:
        """Number of classes C (``labels.max() + 1``; every class owns a component)."""
        return int(self.labels.max()) + 1

    def class_prior(self) -> Tensor:
        """``p(y = c) = sum_{k: labels[k] = c} w_k``, shape ``(C,)``."""
        prior = self.weights.new_zeros(self.n_classes)
        return prior.index_add(0, self.labels, self.weights)

    def mean(self) -> Tensor:
        """Mean of the mixture, ``sum_k w_k mu_k``, shape ``(2,)``."""
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        """Covariance of the mixture, shape ``(2, 2)`` (law of total covariance).

        ``Cov = sum_k w_k (C_k + mu_k mu_k^T) - m m^T`` with ``m`` = :meth:`mean`.
        """
        m = self.mean()
        second = self.covs + self.means[:, :, None] * self.means[:, None, :]
        return (self.weights[:, None, None] * second).sum(0) - torch.outer(m, m)

    def noised(self, alpha_bar_t: float | Tensor) -> GaussianMixture2D:
        """The mixture of ``q_t``, the data noised to level ``alpha_bar_t`` ([DDPM] eq. 4).

        ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps`` is a linear map of ``x0`` plus independent
        Gaussian noise, so component ``N(mu_k, C_k)`` becomes
        ``N(sqrt(ab) mu_k, ab C_k + (1 - ab) I)``; weights and labels are unchanged (the noise
        does not depend on the component). ``alpha_bar_t = 1`` returns the clean mixture,
        ``0`` gives ``N(0, I)`` for every component.

        Args:
            alpha_bar_t: a float or 0-d tensor in ``[0, 1]``.
        """
        ab = torch.as_tensor(alpha_bar_t, dtype=self.means.dtype, device=self.means.device)
        if ab.ndim != 0:
            raise ValueError(f"alpha_bar_t must be a scalar, got shape {tuple(ab.shape)}; for "
                             "per-sample timesteps use eps_hat, which groups rows by t")
        if not 0 <= float(ab) <= 1:
            raise ValueError(f"alpha_bar_t must lie in [0, 1], got {float(ab)!r}")
        eye = torch.eye(2, dtype=self.means.dtype, device=self.means.device)
        return GaussianMixture2D(ab.sqrt() * self.means, ab * self.covs + (1 - ab) * eye,
                                 self.weights, self.labels)

    # ----------------------------------------------------------------------------------------
    # Densities and the class posterior
    # ----------------------------------------------------------------------------------------

    def _x(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x must have shape (N, 2), got {tuple(x.shape)}; use x[None] for "
                             "a single point")
        return x.to(dtype=self.means.dtype, device=self.means.device)

    def _y(self, y: int | Tensor, n: int) -> Tensor:
        """``y`` as an ``(n,)`` long tensor of class indices, validated."""
        yt = torch.as_tensor(y, device=self.means.device)
        if yt.is_floating_point():
            raise ValueError(f"y must be an integer class index, got {yt.tolist()}")
        if yt.ndim == 0:
            yt = yt.expand(n)
        if yt.shape != (n,):
            raise ValueError(f"y must be an int or shape ({n},) to match x, got "
                             f"{tuple(yt.shape)}")
        bad = (yt < 0) | (yt >= self.n_classes)
        if bool(bad.any()):
            raise ValueError(f"class index y = {yt[bad].unique().tolist()} out of range; this "
                             f"mixture has classes 0 .. {self.n_classes - 1}")
        return yt.long()

    def _terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``log w_k + log N(x; mu_k, C_k)`` (N, K) and component scores ``g_k(x)`` (N, K, 2)."""
        prec = torch.linalg.inv(self.covs)                        # (K, 2, 2)
        logdet = torch.linalg.slogdet(self.covs)[1]               # (K,)
        d = x[:, None, :] - self.means[None]                      # (N, K, 2)
        pd = torch.einsum("kij,nkj->nki", prec, d)                # C_k^{-1} (x - mu_k)
        maha = (d * pd).sum(-1)                                   # (N, K)
        logits = self.weights.log() - 0.5 * (maha + logdet + 2 * _LOG_2PI)
        return logits, -pd

    def _class_mask(self, y: Tensor) -> Tensor:
        """``mask[n, k] = labels[k] == y[n]``, shape (N, K)."""
        return self.labels[None, :] == y[:, None]

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log N(x; mu_k, C_k)`` for every component, shape ``(N, K)`` ([PRML] eq. 2.43)."""
        x = self._x(x)
        return self._terms(x)[0] - self.weights.log()

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x) = logsumexp_k (log w_k + log N(x; mu_k, C_k))``, ``(N, 2) -> (N,)``."""
        return torch.logsumexp(self._terms(self._x(x))[0], dim=1)

    def log_prob_given_class(self, x: Tensor, y: int | Tensor) -> Tensor:
        """``log p(x | y)``: the class's own mixture, weights ``w_k / p(y)``, ``(N, 2) -> (N,)``.

        Args:
            x: points, shape ``(N, 2)``.
            y: an int class, or ``(N,)`` classes, one per point.
        """
        x = self._x(x)
        y = self._y(y, x.shape[0])
        logits = self._terms(x)[0].masked_fill(~self._class_mask(y), -math.inf)
        return torch.logsumexp(logits, dim=1) - self.class_prior().log()[y]

    def log_class_posterior(self, x: Tensor) -> Tensor:
        """``log p(y | x) = log p(y) + log p(x | y) - log p(x)`` (Bayes), shape ``(N, C)``.

        Computed as ``logsumexp_{k in y}(log w_k + log N_k(x)) - log p(x)``.
        """
        logits = self._terms(self._x(x))[0]                                  # (N, K)
        owns = self.labels[None, :] == torch.arange(self.n_classes, device=logits.device)[:, None]
        per_class = torch.where(owns[None], logits[:, None, :], -math.inf)   # (N, C, K)
        return torch.logsumexp(per_class, dim=2) - torch.logsumexp(logits, dim=1, keepdim=True)

    def class_posterior(self, x: Tensor) -> Tensor:
        """``p(y | x)`` exactly, by Bayes; shape ``(N, C)``, rows sum to 1."""
        return self.log_class_posterior(x).exp()

    def responsibilities(self, x: Tensor) -> Tensor:
        """``r_k(x) = w_k N(x; mu_k, C_k) / p(x)``, shape ``(N, K)`` ([PRML] eq. 9.13)."""
        return torch.softmax(self._terms(self._x(x))[0], dim=1)

    # ----------------------------------------------------------------------------------------
    # Exact scores (closed forms, no autograd)
    # ----------------------------------------------------------------------------------------

    def score(self, x: Tensor) -> Tensor:
        """``grad_x log p(x) = sum_k r_k(x) (-C_k^{-1} (x - mu_k))``, ``(N, 2) -> (N, 2)``.

        The gradient of a log-sum is the responsibility-weighted average of the components'
        own scores ([PRML] section 9.2); for ``noised(ab)`` it is the score of ``q_t``.
        """
        logits, g = self._terms(self._x(x))
        r = torch.softmax(logits, dim=1)
        return (r[..., None] * g).sum(1)

    def cond_score(self, x: Tensor, y: int | Tensor) -> Tensor:
        """``grad_x log p(x | y) = sum_{k in y} r_k(x | y) (-C_k^{-1} (x - mu_k))``, ``(N, 2)``.

        ``r_k(x | y)`` are the responsibilities within class ``y``'s own mixture: a softmax over
        that class's components only (the others never enter).
        """
        x = self._x(x)
        y = self._y(y, x.shape[0])
        logits, g = self._terms(x)
        r = torch.softmax(logits.masked_fill(~self._class_mask(y), -math.inf), dim=1)
        return (r[..., None] * g).sum(1)

    def classifier_grad(self, x: Tensor, y: int | Tensor) -> Tensor:
        """``grad_x log p(y | x)``, the exact noisy-classifier gradient, shape ``(N, 2)``.

        Differentiating ``log p(y | x) = log sum_{k in y} r_k(x)`` with
        ``grad r_k = r_k (g_k - sum_j r_j g_j)`` gives

            ``grad log p(y | x) = sum_k (1[k in y] r_k(x) / p(y | x) - r_k(x)) g_k(x)``.

        It is evaluated in that form, from the all-component log-responsibilities and the log
        class posterior, not as ``cond_score - score``, so that checking the Bayes identity
        ``cond_score = score + classifier_grad`` ([SDE] section 5) compares two
        different computations.
        """
        x = self._x(x)
        y = self._y(y, x.shape[0])
        logits, g = self._terms(x)
        log_r = torch.log_softmax(logits, dim=1)                              # (N, K)
        mask = self._class_mask(y)
        log_post = torch.logsumexp(log_r.masked_fill(~mask, -math.inf), dim=1, keepdim=True)
        coef = torch.where(mask, (log_r - log_post).exp(), 0.0) - log_r.exp()
        return (coef[..., None] * g).sum(1)

    def guided_score(self, x: Tensor, y: int | Tensor, s: float | Tensor) -> Tensor:
        """Classifier-guided score ``grad log p(x) + s grad log p(y | x)``, shape ``(N, 2)``.

        The score of the tilted density ``p(x) p(y | x)^s`` ([CG] section 4.3). ``s = 0`` is the
        unconditional score, ``s = 1`` the conditional one (Bayes), ``s > 1`` extrapolates;
        classifier-free guidance with weight ``w`` ([CFG] eq. 6) is ``s = w + 1``.

        Args:
            s: guidance scale, a float, 0-d tensor or ``(N,)`` tensor (one per point).
        """
        x = self._x(x)
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
        if s.ndim == 1:
            s = s[:, None]
        return self.score(x) + s * self.classifier_grad(x, y)

    def tilted_log_density(self, x: Tensor, y: int | Tensor, s: float | Tensor) -> Tensor:
        """Unnormalised ``log p(x) + s log p(y | x)``, ``(N, 2) -> (N,)`` ([CG] section 4.3).

        Its gradient is :meth:`guided_score`. At ``s = 1`` it equals ``log p(x | y) + log p(y)``
        (Bayes), at ``s = 0`` it is ``log p(x)``.
        """
        x = self._x(x)
        y = self._y(y, x.shape[0])
        log_post = self.log_class_posterior(x).gather(1, y[:, None])[:, 0]
        return self.log_prob(x) + torch.as_tensor(s, dtype=x.dtype) * log_post

    def tilted_density_on_grid(self, xs: Tensor, ys: Tensor, y: int,
                               s: float | Tensor) -> Tensor:
        """``p(x) p(y | x)^s`` on a grid, normalised so ``sum(Z) * dx * dy = 1``.

        Args:
            xs: ``(Gx,)`` evenly spaced, increasing x coordinates.
            ys: ``(Gy,)`` evenly spaced, increasing y coordinates.
            y: class index; ``s``: guidance scale.

        Returns:
            ``Z``, shape ``(Gy, Gx)``, with ``Z[i, j]`` the density at ``(xs[j], ys[i])``
            (matplotlib's ``meshgrid`` / ``imshow(origin="lower")`` layout, as
            :func:`~nbhelpers.grids.grid`).
        """
        area = spacing(xs, "xs") * spacing(ys, "ys")
        XY = mesh(torch.as_tensor(xs, dtype=self.means.dtype),
                   torch.as_tensor(ys, dtype=self.means.dtype))
        logz = self.tilted_log_density(XY, y, s)
        logz = logz - torch.logsumexp(logz, dim=0) - math.log(area)
        return logz.exp().reshape(len(ys), len(xs))

    def sample_tilted(self, n: int, y: int, s: float, generator: torch.Generator | None = None,
                      lim: float = 4.0, grid_n: int = 400) -> Tensor:
        """Samples of the tilted density ``p(x) p(y | x)^s`` itself (not of guided sampling).

        Draws grid cells of :meth:`tilted_density_on_grid` in proportion to their mass, then a
        uniform point inside the cell: exact up to the grid resolution ``2 lim / grid_n``.

        Returns:
            ``x``, shape ``(n, 2)``.
        """
        xs, ys, _ = grid(lim, grid_n, dtype=self.means.dtype)
        z = self.tilted_density_on_grid(xs, ys, y, s).flatten()
        cell = torch.multinomial(z / z.sum(), n, replacement=True, generator=generator)
        h = float(xs[1] - xs[0])
        jitter = (torch.rand((n, 2), generator=generator, dtype=xs.dtype) - 0.5) * h
        return torch.stack([xs[cell % grid_n], ys[cell // grid_n]], dim=1) + jitter

    # ----------------------------------------------------------------------------------------
    # Sampling and the exact denoiser
    # ----------------------------------------------------------------------------------------

    def sample(self, n: int, generator: torch.Generator | None = None,
               y: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Exact samples: a component ``k ~ w`` (within class ``y`` if given), then
        ``x = mu_k + L_k z`` with ``L_k L_k^T = C_k`` and ``z ~ N(0, I)`` ([PRML] section 11.1.1).

        Returns:
            ``x`` ``(n, 2)``, ``component`` ``(n,)`` long, ``label`` ``(n,)`` long.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n (number of samples) must be a positive integer, got {n!r}")
        w = self.weights
        if y is not None:
            y_ = int(self._y(y, 1)[0])
            w = torch.where(self.labels == y_, w, 0.0)
        component = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn((n, 2), generator=generator, dtype=self.means.dtype,
                        device=self.means.device)
        chol = torch.linalg.cholesky(self.covs)
        x = self.means[component] + torch.einsum("nij,nj->ni", chol[component], z)
        return x, component, self.labels[component]

    def eps_hat(self, x_t: Tensor, t: int | Tensor, alpha_bar: Tensor,
                y: int | Tensor | None = None, s: float | Tensor | None = None) -> Tensor:
        """The exact optimal noise prediction ``E[eps | x_t] = -sqrt(1 - ab_t) grad log q_t``.

        Tweedie's formula ([DDPM] eq. 4 with
        :func:`nbhelpers.diffusion.score_to_eps`) applied to the score of ``noised(ab_t)``:
        unconditional when ``y`` is None, conditional (``grad log q_t(x_t | y)``) when ``y`` is
        given, guided (:meth:`guided_score` at scale ``s``) when ``y`` and ``s`` are given.

        With ``s`` other than 0 or 1, a sampler driven by this does *not* draw from the tilted
        density ``p(x) p(y | x)^s`` of the clean data: the tilt of each noised ``q_t`` is not
        the noised tilt (Bradley, Nakkiran 2024; Chidambaram et al. 2024). In the default
        world, s = 3 for class 1 overshoots: the samples are narrower and further from the
        boundary than :meth:`tilted_density_on_grid` at s = 3.

        Args:
            x_t: noisy points, shape ``(B, 2)``.
            t: int or ``(B,)`` integer timesteps (``-1`` is clean data); rows are grouped by t.
            alpha_bar: schedule, shape ``(T,)``.

        Returns:
            ``eps_hat``, shape ``(B, 2)``, in ``x_t``'s dtype.
        """
        if s is not None and y is None:
            raise ValueError(f"guidance scale s = {s!r} needs a class y to guide towards")
        x = self._x(x_t)
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be an int or shape ({x.shape[0]},), got {tuple(t.shape)}")
        if y is not None:
            y = self._y(y, x.shape[0])
        out = torch.empty_like(x)
        for tv in t.unique():
            rows = t == tv
            ab = schedule_at(alpha_bar, tv, x)
            world = self.noised(ab)
            if y is None:
                score = world.score(x[rows])
            elif s is None:
                score = world.cond_score(x[rows], y[rows])
            else:
                s_ = torch.as_tensor(s, dtype=x.dtype, device=x.device)
                s_ = s_[rows] if s_.ndim == 1 else s_
                score = world.guided_score(x[rows], y[rows], s_)
            out[rows] = score_to_eps(score, ab)
        return out.to(torch.as_tensor(x_t).dtype)

    def eps_model(self, alpha_bar: Tensor, y: int | Tensor | None = None,
                  s: float | Tensor | None = None) -> EpsModel:
        """``(x_t, t) -> eps_hat`` for :func:`nbhelpers.diffusion.sample_loop`; see
        :meth:`eps_hat`."""
        return lambda x_t, t: self.eps_hat(x_t, t, alpha_bar, y=y, s=s)


# --------------------------------------------------------------------------------------------
# The default world
# --------------------------------------------------------------------------------------------


def _rotated_cov(std_major: float, std_minor: float, degrees: float) -> list[list[float]]:
    """``R diag(a^2, b^2) R^T``: an ellipse with standard deviations a, b, turned by degrees."""
    th = math.radians(degrees)
    c, s = math.cos(th), math.sin(th)
    a2, b2 = std_major ** 2, std_minor ** 2
    return [[c * c * a2 + s * s * b2, c * s * (a2 - b2)],
            [c * s * (a2 - b2), s * s * a2 + c * c * b2]]


def default_world(dtype: torch.dtype = torch.float64) -> GaussianMixture2D:
    """The series' fixed teaching world: 6 Gaussians in 2-D, class 0 on the left, 1 on the right.

    ===  ==============  ======  =====  =====================================
    k    mean            weight  class  covariance: std major x minor, turned
    ===  ==============  ======  =====  =====================================
    0    (-1.2,  1.1)    0.22    0      round, std 0.3
    1    (-1.1, -1.1)    0.18    0      0.5 x 0.18, 35 degrees
    2    (-0.15, 0.25)   0.14    0      0.45 x 0.3, 70 degrees
    3    ( 1.1,  1.2)    0.15    1      0.45 x 0.16, -30 degrees
    4    ( 1.25, -0.9)   0.18    1      round, std 0.3
    5    ( 0.2, -0.25)   0.13    1      0.45 x 0.25, 60 degrees
    ===  ==============  ======  =====  =====================================

    Class prior (0.54, 0.46); overall mean about (-0.07, 0.06) and covariance eigenvalues about
    0.95 and 1.14, so the data is of the unit scale the VP process assumes. Components 2 and 5
    overlap across the boundary: about 5% of each class's mass lies where the exact posterior
    favours the other class, which is where guidance visibly changes the samples.
    """
    from_ellipse = [(0.3, 0.3, 0.0), (0.5, 0.18, 35.0), (0.45, 0.3, 70.0),
                    (0.45, 0.16, -30.0), (0.3, 0.3, 0.0), (0.45, 0.25, 60.0)]
    means = torch.tensor([[-1.2, 1.1], [-1.1, -1.1], [-0.15, 0.25],
                          [1.1, 1.2], [1.25, -0.9], [0.2, -0.25]], dtype=dtype)
    covs = torch.tensor([_rotated_cov(*e) for e in from_ellipse], dtype=dtype)
    weights = torch.tensor([0.22, 0.18, 0.14, 0.15, 0.18, 0.13], dtype=dtype)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    return GaussianMixture2D(means, covs, weights, labels)
