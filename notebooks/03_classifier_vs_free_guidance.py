# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Classifier guidance against classifier-free guidance
#
# Notebook 02 showed that guidance is the score of a tilted density,
# $\nabla \log p(x) + s\,\nabla \log p(y \mid x)$, using the *exact* classifier of our 2-D world.
# Real models have no exact classifier. There are two ways to get the second term:
#
# * **Classifier guidance** (Dhariwal and Nichol 2021): train a separate classifier on *noisy*
#   points, $p_\phi(y \mid x_t)$, and add $s$ times its gradient to an unconditional model.
# * **Classifier-free guidance** (Ho and Salimans 2022): train *one* denoiser that sometimes sees the
#   label and sometimes doesn't, and use the difference of its two predictions as the classifier
#   term. This is what Stable Diffusion does.
#
# We train all the networks here, on the CPU, in seconds; sample with both methods and with the
# exact guided score for $s \in \{0, 1, 2, 4, 8\}$; measure **fidelity** and **diversity**
# against $s$; and find out that guided sampling does *not* sample $p(x)\,p(y \mid x)^s$.

# %%
import time

import torch

from nbhelpers import diffusion as D
from nbhelpers import toy2d as M
from nbhelpers.grids import grid
from nbhelpers.guidance import cfg_combine
from nbhelpers.mixtures import default_world
from nbhelpers.plotting import scatter_panels, tradeoff_curve
from nbhelpers.profile import get_profile
from nbhelpers.progress import ProgressBar
from nbhelpers.widgets import class_colors, guided_sampling_slider

torch.set_num_threads(1)                  # networks this small train fastest on one thread
P = get_profile()
world = default_world()
alpha_bar = D.alpha_bar_from_betas(D.scaled_linear_betas())
timesteps = D.inference_timesteps(P.sample_steps_2d)
Y = 1                                     # we always ask for class 1, "right"
N = 4000                                  # samples per batch: fidelity to about +-1%
SCALES = [0, 1, 2, 4, 8]
print(f"profile {P.name}: {P.train_steps_2d} training steps per network, "
      f"{P.sample_steps_2d} sampling steps")

# %% [markdown]
# ## 1. Classifier guidance: two networks
#
# First an **unconditional denoiser** $\hat\epsilon_\theta(x_t, t)$: a small MLP, trained with the
# usual loss $\|\epsilon - \hat\epsilon_\theta(x_t, t)\|^2$ on fresh samples of the world at random
# $t$. Then a **noisy classifier** $p_\phi(y \mid x_t, t)$, trained with cross-entropy on the same
# kind of noised points. It must be trained on noisy points: a classifier of clean data has no idea
# what to say about $x_t$ at $t = 700$, and its gradient there would be meaningless.

# %%
torch.manual_seed(0)
denoiser = M.Denoiser2D()
with ProgressBar(P.train_steps_2d, "unconditional denoiser") as bar:
    denoiser_loss = M.train_denoiser(denoiser, world, alpha_bar, steps=P.train_steps_2d,
                                     seed=1, callback=bar)
classifier = M.NoisyClassifier2D(n_classes=2)
with ProgressBar(P.train_steps_2d, "noisy classifier") as bar:
    classifier_loss = M.train_classifier(classifier, world, alpha_bar, steps=P.train_steps_2d,
                                         seed=2, callback=bar)


# %% [markdown]
# ### How good are the learned pieces?
#
# Because the world is exact, we can grade the networks directly. At a moderate noise level we
# draw points $x_t$, and compare the learned noise prediction with the exact one,
# $\mathbb E[\epsilon \mid x_t] = -\sigma_t \nabla \log q_t(x_t)$, as a relative RMS error; and the
# learned classifier with the exact posterior $p(y \mid x_t)$, as a mean absolute difference in
# probability. Small $t$ is the hardest (the score is sharp and large there); we grade at
# $t = 300$ and $t = 500$.

# %%
# NBVAL_CHECK_OUTPUT
def relative_rms(pred, exact):
    return float(((pred - exact).pow(2).sum(1).mean() / exact.pow(2).sum(1).mean()).sqrt())

grades = {}
for t in (300, 500):
    x0, _, _ = world.sample(4000, generator=torch.Generator().manual_seed(10 + t))
    x_t = D.q_sample(x0, t, alpha_bar, torch.randn(x0.shape, dtype=x0.dtype,
                                                   generator=torch.Generator().manual_seed(t)))
    tt = torch.full((len(x_t),), t)
    with torch.no_grad():
        eps_err = relative_rms(denoiser(x_t.float(), tt).double(), world.eps_hat(x_t, tt, alpha_bar))
        p_learned = torch.softmax(classifier(x_t.float(), tt), 1)[:, Y].double()
    p_exact = world.noised(alpha_bar[t]).class_posterior(x_t)[:, Y]
    grades[t] = (eps_err, float((p_learned - p_exact).abs().mean()))
    assert grades[t][0] < 0.25 and grades[t][1] < 0.05, grades
    print(f"t = {t}: learned eps within 25% RMS of exact: True; "
          f"classifier within 0.05 of exact p(y|x_t): True")

# %%
for t, (e, c) in grades.items():
    print(f"t = {t}: eps relative RMS error {e:.3f}, classifier mean |p - p_exact| {c:.3f}")


# %% [markdown]
# Now the guided sampler. At each step we take the unconditional prediction and subtract $s$ times
# the classifier gradient, scaled by $\sigma_t$ to turn a score into a noise (Dhariwal and Nichol
# 2021, eq. 14):
#
# $$ \tilde\epsilon = \hat\epsilon_\theta(x_t) - s\,\sigma_t\,\nabla_{x_t} \log p_\phi(y \mid x_t)
# \qquad\Longleftrightarrow\qquad
# \tilde{\text{score}} = \nabla \log p_\theta(x_t) + s\,\nabla \log p_\phi(y \mid x_t). $$
#
# We use the ancestral DDPM sampler of notebook 01's schedule, starting every method from the same
# noise, so differences between pictures are differences between methods.

# %%
def run(eps_model, n=N, seed=5):
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return D.sample_loop(eps_model, x_T, alpha_bar, timesteps, method="ddpm",
                         generator=torch.Generator().manual_seed(seed + 1))

classifier_guided = {s: run(M.classifier_guided_eps_model(denoiser, classifier, alpha_bar, Y, s))
                     for s in SCALES}
scatter_panels([classifier_guided[s] for s in SCALES], [f"classifier guidance, s = {s}"
               for s in SCALES], colors=[class_colors(world, classifier_guided[s]) / 255
                                         for s in SCALES]);

# %% [markdown]
# ## 2. Classifier-free guidance: one network, two branches
#
# Bayes again: $\nabla \log p(y \mid x) = \nabla \log p(x \mid y) - \nabla \log p(x)$. The classifier
# term is the *difference between a conditional and an unconditional score*. So instead of a
# classifier we train one denoiser $\hat\epsilon_\theta(x_t, t, y)$ and, 15% of the time, replace
# the label by a "null" label $\varnothing$: the same network then learns both
# $\hat\epsilon(x_t, y) \approx -\sigma_t \nabla \log p(x_t \mid y)$ and
# $\hat\epsilon(x_t, \varnothing) \approx -\sigma_t \nabla \log p(x_t)$. Substituting into the guided
# score and converting back to noise gives the classifier-free guidance combine:
#
# $$ \tilde\epsilon = \hat\epsilon(x_t, \varnothing) + s\,\big[\hat\epsilon(x_t, y) - \hat\epsilon(x_t, \varnothing)\big]
# = (1 - s)\,\hat\epsilon(x_t, \varnothing) + s\,\hat\epsilon(x_t, y). $$
#
# Both branches run in one batched call of the network. In Stable Diffusion the label is the text
# prompt and the null label is the empty prompt `""`.

# %%
cfg_model = M.Denoiser2D(n_classes=2)
with ProgressBar(P.train_steps_2d, "conditional denoiser, 15% label dropout") as bar:
    cfg_loss = M.train_denoiser(cfg_model, world, alpha_bar, steps=P.train_steps_2d,
                                p_uncond=0.15, seed=3, callback=bar)

classifier_free = {s: run(M.cfg_eps_model(cfg_model, Y, s)) for s in SCALES}
exact_guided = {s: run(world.eps_model(alpha_bar, y=Y, s=s)) for s in SCALES}

# %% [markdown]
# ### Check: $s = 0$ is the unconditional model and $s = 1$ the conditional one, exactly
#
# `cfg_combine` is written as $(1-s)\,\hat\epsilon_\varnothing + s\,\hat\epsilon_y$ so that the two
# endpoints hold bit for bit, not just up to rounding. We check on the trained network's outputs.

# %%
# NBVAL_CHECK_OUTPUT
x = torch.randn(512, 2, generator=torch.Generator().manual_seed(7))
t = torch.full((512,), 400)
with torch.no_grad():
    eps_null, eps_y = cfg_model(x, t), cfg_model(x, t, Y)
assert torch.equal(cfg_combine(eps_null, eps_y, 0.0), eps_null)
assert torch.equal(cfg_combine(eps_null, eps_y, 1.0), eps_y)
print("s = 0 gives the unconditional prediction exactly:", True)
print("s = 1 gives the conditional prediction exactly:", True)

# %% [markdown]
# ## 3. Side by side
#
# Rows: the exact guided score (the ideal both methods approximate), classifier guidance, and
# classifier-free guidance. Columns: $s$. Dots are coloured by the *exact* posterior of the class
# they landed in: red is "right", blue is "left", purple is on the fence.
#
# * $s = 0$ samples the whole world, both classes: the unconditional model.
# * $s = 1$ samples the right class, including the middle blob that overlaps the boundary (some
#   points land on the blue side: notebook 02 measured how much of the conditional density's mass
#   lies there).
# * As $s$ grows, points leave the boundary region, the blobs tighten, and the middle blob empties.

# %%
rows = {"exact guided score": exact_guided, "classifier guidance": classifier_guided,
        "classifier-free": classifier_free}
for name, samples in rows.items():
    scatter_panels([samples[s] for s in SCALES], [f"{name}, s = {s}" for s in SCALES],
                   colors=[class_colors(world, samples[s]) / 255 for s in SCALES], size=2.3);

# %% [markdown]
# ## 4. Fidelity against diversity
#
# Two numbers per batch of samples:
#
# * **fidelity**: the fraction of samples that the exact posterior assigns to the requested class;
# * **diversity**: the spread of samples *within* each mode (RMS distance to the mode's mean, each
#   sample assigned to its most responsible component), and **mode coverage**: the fraction of the
#   class's three blobs that still receive at least a quarter of their fair share of samples.
#
# We sweep $s$ more finely and draw the trade-off curve.

# %%
sweep = [0, 0.5, 1, 1.5, 2, 3, 4, 6, 8]
makers = {"exact guided score": lambda s: world.eps_model(alpha_bar, y=Y, s=s),
          "classifier guidance": lambda s: M.classifier_guided_eps_model(
              denoiser, classifier, alpha_bar, Y, s),
          "classifier-free": lambda s: M.cfg_eps_model(cfg_model, Y, s)}
# the panels above already sampled s in SCALES with the same seeds: those are reused
done = {"exact guided score": exact_guided, "classifier guidance": classifier_guided,
        "classifier-free": classifier_free}
measured = {name: [] for name in makers}
print(f"{'method':<22}{'s':>5}{'fidelity':>10}{'spread':>8}{'coverage':>10}")
for name, make in makers.items():
    for s in sweep:
        x = done[name][s] if s in done[name] else run(make(s))
        row = (s, M.fidelity(world, x, Y), M.within_mode_spread(world, x),
               M.mode_coverage(world, x, Y))
        measured[name].append(row)
        print(f"{name:<22}{s:>5}{row[1]:>10.3f}{row[2]:>8.3f}{row[3]:>10.2f}")
tradeoff_curve({k: [r[:3] for r in v] for k, v in measured.items()});

# %%
# NBVAL_CHECK_OUTPUT
for name, rows_ in measured.items():
    fid = [r[1] for r in rows_]
    rising = all(b >= a - 0.02 for a, b in zip(fid, fid[1:])) and fid[-1] > fid[2] > fid[0]
    assert rising, (name, fid)
    print(f"{name}: fidelity rises with s across the sweep: {rising}")
cfg_rows = measured["classifier-free"]
spread_falls = cfg_rows[-1][2] < cfg_rows[2][2]
assert spread_falls
print("classifier-free: within-mode spread at s = 8 is below s = 1:", spread_falls)

# %% [markdown]
# Read the table the cell printed, not a summary of it (the numbers differ a little between
# profiles, which train for different lengths). The shape is always the same: fidelity climbs
# steeply between $s = 0$ and $s = 2$ and then saturates near 1, while the within-mode spread of the
# learned methods keeps falling and, somewhere between $s = 2$ and $s = 4$, coverage drops to two of
# the three blobs: the middle blob, the one that overlaps the other class, is abandoned. That is the fidelity-diversity
# trade-off of guidance (claim C6 in the README's table of claims: "guidance trades diversity
# for fidelity; $p(y \mid x)^s$ amplifies modes", here the modes the classifier is surest about).
# Beyond a point, more $s$ buys no fidelity and only costs diversity.
#
# How do the learned methods compare with the exact guided score at the largest $s$? The next cell
# states what this run measured:

# %%
from IPython.display import Markdown

spread_at = {name: rows_[-1][2] for name, rows_ in measured.items()}    # s = 8, the last row
exact_spread = spread_at["exact guided score"]
def relation(name):
    ratio = spread_at[name] / exact_spread
    return (f"{spread_at[name]:.3f}, {'below' if ratio < 1 else 'above'} the exact guided "
            f"score's {exact_spread:.3f} ({ratio:.2f} times it)")
Markdown(f"At $s = {sweep[-1]}$ in this run ({P.name} profile), the within-mode spread of "
         f"classifier-free guidance is {relation('classifier-free')}; that of classifier "
         f"guidance is {relation('classifier guidance')}.")

# %% [markdown]
# Treat this as an observation about these networks, not a law. A learned method can come out
# tighter than the exact one because its errors are multiplied by $s$ too: the classifier-free
# "classifier" is the difference of two separately imperfect predictions, and any systematic
# error in that difference is extrapolated along with the signal. Whether that is what happens
# here is not something this notebook tests; the exact row is the reference that lets you see the
# size of the effect at all.
#
# ## 5. Guided sampling is not sampling $p(x)\,p(y \mid x)^s$
#
# Notebook 02 said the guided score is the score of the tilted density $p(x)\,p(y \mid x)^s$. It is
# tempting to conclude that the sampler draws from that density. It does not, for $s \ne 0, 1$. We
# can draw exact samples of the tilted density (from its values on a fine grid) and compare them
# with the **exact** guided sampler, which has no learning error at all.

# %%
tilted = {s: world.sample_tilted(N, Y, s, generator=torch.Generator().manual_seed(11))
          for s in (1, 3)}
exact_guided[3] = run(world.eps_model(alpha_bar, y=Y, s=3))
for s in (1, 3):
    g, tl = exact_guided[s], tilted[s]
    print(f"s = {s}: guided sampler mean x = {g[:, 0].mean():.3f}, var x = {g[:, 0].var():.3f}"
          f" | tilted density mean x = {tl[:, 0].mean():.3f}, var x = {tl[:, 0].var():.3f}")
scatter_panels([tilted[3], exact_guided[3]], ["samples of p(x) p(y|x)^3", "guided sampler, s = 3"],
               colors=[class_colors(world, tilted[3]) / 255,
                       class_colors(world, exact_guided[3]) / 255]);


# %%
# NBVAL_CHECK_OUTPUT
def z_score_of_means(a, b):
    return float((a[:, 0].mean() - b[:, 0].mean()) / (a[:, 0].var() / len(a)
                                                       + b[:, 0].var() / len(b)).sqrt())

z1, z3 = z_score_of_means(exact_guided[1], tilted[1]), z_score_of_means(exact_guided[3], tilted[3])
assert abs(z1) < 5 and z3 > 10, (z1, z3)
print("s = 1: guided sampler and tilted density agree (mean x within 5 standard errors):",
      abs(z1) < 5)
print("s = 3: guided sampler overshoots the tilted density (mean x over 10 standard errors"
      " further right):", z3 > 10)


# %% [markdown]
# At $s = 1$ the two agree: the conditional score at every noise level *is* the score of the noised
# conditional density, so the sampler is an honest sampler of $p(x \mid y)$. At $s = 3$ the guided
# sampler lands further right and tighter than $p(x)\,p(y \mid x)^3$.
#
# **Why.** A sampler is correct for a density $\pi$ when it follows the scores of the *noised
# versions of $\pi$*, $\pi_t = \pi * \mathcal N(0, \sigma_t^2)$ (suitably scaled). The guided score
# at step $t$ is the score of $q_t(x)\,q_t(y \mid x)^s$: the noised density tilted by the noised
# classifier. But noising (a convolution) and tilting (a pointwise power) do not commute: the noised
# version of $p(x)\,p(y \mid x)^s$ is not $q_t(x)\,q_t(y \mid x)^s$. The sequence of guided scores
# does not belong to any single diffusion process, and what comes out is something else, sharper
# than the tilted density. (Chidambaram et al. 2024 and Bradley and Nakkiran 2024 analyse this for
# Gaussian mixtures.) So "guidance samples $p(x)\,p(y \mid x)^s$" is a useful picture, not a fact;
# in practice guidance is a knob whose effect we measure, as in section 4.
#
# ## 6. A live slider
#
# Move $s$ and the classifier-free sampler reruns from the same starting noise (1000 points). The
# sampling time for one position is printed below; on a laptop CPU it is a fraction of a second.

# %%
def live_sample(s):
    return run(M.cfg_eps_model(cfg_model, Y, s), n=1000)

start = time.perf_counter()
live_sample(4.0)
print(f"one resample: {time.perf_counter() - start:.2f} s")
guided_sampling_slider(live_sample, world, value=1.0,
                       caption=lambda s: f"classifier-free guidance, s = {s:.1f}")

# %% [markdown]
# ## Try it
#
# **1. No label dropout.** Retrain the conditional denoiser with `p_uncond=0.0` and sample with
# `s = 4`. Predict what goes wrong.
#
# <details><summary>Answer</summary>
#
# With no dropout the network never sees the null label during training, so
# $\hat\epsilon(x_t, \varnothing)$ is whatever an untrained label embedding produces: not the
# unconditional model. The "classifier" term $\hat\epsilon_y - \hat\epsilon_\varnothing$ is then
# garbage, and extrapolating it by $s = 4$ throws samples off the data. The dropout rate is the
# price of having both branches in one network: 10 to 20% costs the conditional branch little.
# </details>
#
# **2. Guidance at $s = 0.5$.** Before running, predict where the samples of the exact guided
# sampler land at $s = 0.5$: like $s = 0$, like $s = 1$, or in between? Then run
# `run(world.eps_model(alpha_bar, y=Y, s=0.5))` and measure `M.fidelity`.
#
# <details><summary>Answer</summary>
#
# In between: the guided score at $s = 0.5$ mixes the unconditional and the conditional score, so
# fidelity lies between the $s = 0$ and $s = 1$ values of the sweep table above (the sweep included
# $s = 0.5$, so you can read it there), and the left-class blobs are still present, but fainter. The
# picture "it samples $p(x)\,p(y \mid x)^{0.5}$" is only approximately right: section 5 showed
# that a guided sampler does not sample the tilted density for any $s$ other than 0 and 1. To see
# how far off it is at $s = 0.5$, compare with exact samples of the tilted density,
# `world.sample_tilted(N, Y, 0.5)`, as section 5 does for $s = 3$.
# </details>
#
# **3. A weaker classifier.** Train the noisy classifier for a tenth of the steps and redo the
# classifier-guided row of section 3. What changes first: fidelity or spread?
#
# <details><summary>Answer</summary>
#
# An undertrained classifier has a smooth, imprecise boundary; its gradient is weaker near the true
# boundary and sometimes points the wrong way far from it. Fidelity at a given $s$ drops first,
# because points near the boundary are pushed less decisively; you need a larger $s$ for the same
# fidelity, and at that larger $s$ the spread shrinks more. A bad classifier costs diversity
# indirectly.
# </details>
