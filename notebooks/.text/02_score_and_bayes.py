# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 02 · The score, and the Bayes split of the conditional score
#
# Guidance rests on one line of algebra. In this notebook we derive it, and then, because our 2-D
# world is a Gaussian mixture whose every quantity is known exactly, we **verify** each step to
# float precision instead of taking it on trust. You will:
#
# 1. meet the *score* $\nabla_x \log q_t(x)$ and see why a network trained to predict noise
#    $\epsilon$ has learned it: $\text{score} = -\mathbb E[\epsilon \mid x_t] / \sigma_t$;
# 2. split the conditional score into the unconditional score plus a classifier's gradient:
#    $\nabla \log p(x \mid y) = \nabla \log p(x) + \nabla \log p(y \mid x)$;
# 3. see what happens when the classifier term is multiplied by a *guidance scale* $s$: the
#    density $p(x)\,p(y \mid x)^s$ sharpens;
# 4. fix the convention for $s$ that the rest of the series uses, with a slider to feel it.
#
# You write two one-line functions on the way, the score from a noise prediction (section 1) and
# the scaled Bayes split (section 3), each with a check; a recap of three questions closes the
# notebook.
#
# Time: about 45 minutes.
#
# Notation as in notebook 01: $\bar\alpha_t$ is the signal kept at step $t$,
# $\sigma_t = \sqrt{1-\bar\alpha_t}$ the standard deviation of the noise, so
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sigma_t\,\epsilon$, and $q_t$ the density of the noised
# data $x_t$ ($q_0$ is all but the data density $p$, one step of noise away). With a class $y$,
# $q_t(y \mid x)$ is the probability of class $y$ given the noised point $x_t = x$.
#
# The symbols and words of this lesson are explained in `docs/glossary.md`, each with the notebook that teaches it.

# %% slideshow={"slide_type": "-"}
import torch

from nbhelpers import diffusion as D
from nbhelpers.grids import grid
from nbhelpers.mixtures import CLASS_NAMES, default_world
from nbhelpers.plotting import density_panels, field_panels, scatter_panels
from nbhelpers.profile import get_profile
from nbhelpers.widgets import tilted_density_slider

P = get_profile()
world = default_world()
alpha_bar = D.alpha_bar_from_betas(D.scaled_linear_betas())   # Stable Diffusion's schedule
xs, ys, XY = grid(lim=3.0, n=200)
print(f"profile {P.name}; {world.n_components} Gaussian components, classes {CLASS_NAMES}, "
      f"class prior {world.class_prior().tolist()}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The world
#
# Six Gaussian blobs in the plane. Three belong to class 0 ("left", blue) and three to class 1
# ("right", red). Two of them, near the middle, overlap across the class boundary, so the class
# of a point there is genuinely uncertain. That is where guidance will have something to do.
#
# Under the forward process the noised density $q_t$ is again a mixture of Gaussians: each
# component's mean shrinks by $\sqrt{\bar\alpha_t}$ and its covariance becomes
# $\bar\alpha_t C_k + (1-\bar\alpha_t) I$. So at every $t$ we know $q_t(x)$, its score, and the
# class posterior $p(y \mid x_t)$ exactly.

# %% slideshow={"slide_type": "-"}
x0, _, labels = world.sample(P.n_samples, generator=torch.Generator().manual_seed(0))
show = [0, 200, 400, 600]
densities = [world.noised(alpha_bar[t]).log_prob(XY).exp().reshape(200, 200) for t in show]
density_panels(xs, ys, densities, [f"q_t(x), t = {t}" for t in show]);

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. The score, and why a noise predictor knows it
#
# The **score** of a density is the gradient of its log: $\nabla_x \log q_t(x)$. It is a vector
# field that points uphill, toward more probable points. If we know the score at every noise level,
# we can run the forward process backwards (Song et al. 2021b, *Score-Based Generative Modeling
# through Stochastic Differential Equations*; not the DDIM paper of Song, Meng and Ermon 2021 that
# notebook 01 cites).
#
# A diffusion model is not trained on the score but on noise: it learns $\hat\epsilon(x_t, t)$
# minimising $\mathbb E\,\|\epsilon - \hat\epsilon(x_t, t)\|^2$. The minimiser of a squared error is
# a conditional mean, $\hat\epsilon(x_t, t) = \mathbb E[\epsilon \mid x_t]$, and Tweedie's formula
# links that mean to the score:
#
# $$ \mathbb E[\epsilon \mid x_t] = -\sigma_t\, \nabla_x \log q_t(x_t)
# \qquad\Longleftrightarrow\qquad \text{score} = -\frac{\hat\epsilon}{\sigma_t}. $$
#
# Mind which $\epsilon$: it is the *optimal prediction* $\hat\epsilon = \mathbb E[\epsilon \mid x_t]$,
# the average of all the noises that could have produced $x_t$, that gives the score of the noised
# data $q_t$. The one noise $\epsilon$ actually drawn for a training pair gives
# $-\epsilon/\sigma_t$, the score of $q(x_t \mid x_0)$ for that pair's own $x_0$: a noisy target.
# Its average at a fixed $x_t$, taken over the clean points $x_0$ drawn from the **posterior**
# $p(x_0 \mid x_t)$ (the points that could have produced this $x_t$, each as likely as it is to
# have done so), is the score we want. Not its average over the data $p(x_0)$: that would ignore
# where $x_t$ is.
#
# (Sketch: $q_t(x) = \int p(x_0)\, \mathcal N(x; \sqrt{\bar\alpha_t}x_0, \sigma_t^2 I)\,dx_0$;
# differentiate under the integral, and $\nabla_x \mathcal N = -\frac{x - \sqrt{\bar\alpha_t}x_0}
# {\sigma_t^2}\mathcal N = -\frac{\epsilon}{\sigma_t}\mathcal N$. Divide by $q_t(x)$: the weight
# $p(x_0)\,\mathcal N(x; \sqrt{\bar\alpha_t}x_0, \sigma_t^2 I)/q_t(x)$ is Bayes' $p(x_0 \mid x_t = x)$,
# so $\nabla_x \log q_t(x) = \mathbb E_{x_0 \sim p(x_0 \mid x_t = x)}[-\epsilon/\sigma_t]
# = -\mathbb E[\epsilon \mid x_t = x]/\sigma_t$.)
#
# ### Check: Tweedie's formula, by brute force
#
# We estimate $\mathbb E[\epsilon \mid x_t = x]$ at a few points $x$ *without* using any formula for
# the score: draw many $x_0$ from the data, weight each by how likely it is to have produced $x$
# (the Gaussian $\mathcal N(x; \sqrt{\bar\alpha_t}x_0, \sigma_t^2 I)$), and average the implied
# noise $\epsilon = (x - \sqrt{\bar\alpha_t}x_0)/\sigma_t$. The weights turn draws from the data
# into draws from the posterior $p(x_0 \mid x_t = x)$ (importance sampling), exactly the average
# of the sketch. Then we compare with
# $-\sigma_t \times$ the closed-form score. The Monte Carlo estimate has a standard error that we
# compute alongside; we accept a difference of up to 5 standard errors.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
many_x0, _, _ = world.sample(400_000, generator=torch.Generator().manual_seed(1))
queries = torch.tensor([[-1.0, 1.0], [0.0, 0.0], [1.2, -0.8], [0.5, 0.5]], dtype=torch.float64)
for t in (200, 500):
    ab, sigma = alpha_bar[t], (1 - alpha_bar[t]).sqrt()
    exact = -sigma * world.noised(ab).score(queries)
    ok = True
    for x, target in zip(queries, exact):
        eps = (x - ab.sqrt() * many_x0) / sigma                  # noise each x0 would need
        logw = -0.5 * (eps ** 2).sum(1)                          # log N(x; sqrt(ab) x0, sigma^2)
        w = torch.softmax(logw, 0)
        estimate = (w[:, None] * eps).sum(0)
        stderr = ((w[:, None] ** 2) * (eps - estimate) ** 2).sum(0).sqrt()
        ok &= bool(((estimate - target).abs() < 5 * stderr).all())
    assert ok, t
    print(f"t = {t}: Monte Carlo E[eps | x_t] equals -sigma * exact score at 4 points: {ok}")

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Exercise: the score from a noise prediction
#
# Write `score_from_eps(eps_hat, alpha_bar_t)`, which turns a noise prediction into the score:
# $\text{score} = -\hat\epsilon / \sigma_t$ with $\sigma_t = \sqrt{1-\bar\alpha_t}$.
# `alpha_bar_t` is one number (a 0-dimensional tensor, so `alpha_bar_t.sqrt()` works).

# %% slideshow={"slide_type": "-"}
def score_from_eps(eps_hat, alpha_bar_t):
    """The score of q_t at x_t from the prediction eps_hat = E[eps | x_t] (Tweedie's formula)."""
    ### HINT: divide -eps_hat by sigma_t = sqrt(1 - alpha_bar_t)
    ### BEGIN SOLUTION
    return -eps_hat / (1 - alpha_bar_t).sqrt()
    ### END SOLUTION


# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import check_score_from_eps

check_score_from_eps(score_from_eps)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. The Bayes split
#
# Now add a condition $y$ (here a class; in Stable Diffusion a text prompt). Bayes' rule says
# $p(x \mid y) = p(y \mid x)\,p(x) / p(y)$. Take logs and then gradients with respect to $x$:
#
# $$ \log p(x \mid y) = \log p(x) + \log p(y \mid x) - \log p(y) $$
# $$ \nabla_x \log p(x \mid y) = \nabla_x \log p(x) + \nabla_x \log p(y \mid x) $$
#
# The $\log p(y)$ term vanishes because it does not depend on $x$. This is the whole trick: the
# **conditional score** is the **unconditional score** plus the gradient of a **classifier**. It
# holds at every noise level, with the classifier that looks at *noisy* points:
# $\nabla \log q_t(x \mid y) = \nabla \log q_t(x) + \nabla \log q_t(y \mid x)$.
#
# ### Check: the identity holds to float precision
#
# The three terms are computed independently in `nbhelpers.mixtures`: the conditional score from the
# class's own components, the unconditional score from all components, and the classifier gradient
# from the posterior-weighted responsibilities. If the identity holds, their difference is only
# float64 rounding. We check on the whole $200 \times 200$ grid and on the data samples, at several
# noise levels, with a tolerance of $10^{-10}$.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
for t in (0, 200, 500, 800):
    q = world.noised(alpha_bar[t])
    for y in (0, 1):
        for name, pts in (("grid", XY), ("samples", x0)):
            gap = (q.cond_score(pts, y) - (q.score(pts) + q.classifier_grad(pts, y))).abs().max()
            assert gap < 1e-10, (t, y, name, gap)
    print(f"t = {t}: grad log p(x|y) = grad log p(x) + grad log p(y|x) "
          f"on grid and samples, both classes, within 1e-10: True")

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### The three fields
#
# Each row is a noise level, each column one term of the identity, for the class $y$ = "right".
# Arrows point where the log-density increases (each panel scaled to its own largest arrows). Read
# the top row left to right: the unconditional score pulls toward all six blobs. The classifier
# gradient is close to zero on the right, where the classifier is already sure, and points rightward
# everywhere else, even deep inside the left class: the *log* of a small probability keeps falling
# as the class becomes less likely, so its gradient does not vanish there. Their sum pulls only
# toward the right-class blobs. As $t$ grows the fields become smoother and simpler: at high noise
# every score points roughly toward the centre, and the classifier gradient is a gentle push to the
# right.

# %% slideshow={"slide_type": "-"}
panels, rows = [], []
y = 1
for t in (0, 300, 600):
    q = world.noised(alpha_bar[t])
    field = lambda f: f.reshape(200, 200, 2)
    background = q.log_prob(XY).exp().reshape(200, 200)
    panels += [(background, field(q.score(XY)), "grad log p(x)"),
               (background, field(q.classifier_grad(XY, y)), "grad log p(y | x)"),
               (q.log_prob_given_class(XY, y).exp().reshape(200, 200),
                field(q.cond_score(XY, y)), "grad log p(x | y)")]
    rows.append(f"t = {t}")
field_panels(xs, ys, panels, ncols=3, stride=10, row_labels=rows);

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. Scaling the classifier term
#
# What if we multiply the classifier term by a number $s$?
#
# $$ \nabla_x \log p(x) + s\, \nabla_x \log p(y \mid x) = \nabla_x \log \big[ p(x)\, p(y \mid x)^s \big]. $$
#
# It is the score of a new, *tilted* density $\tilde p_s(x) \propto p(x)\,p(y \mid x)^s$ (and, at
# noise level $t$, the guided score is the score of $q_t(x)\,q_t(y \mid x)^s$). Raising
# $p(y \mid x) \in [0, 1]$ to a power $s > 1$ pushes values below 1 toward 0 much faster than values
# near 1: points where the classifier is merely fairly sure lose mass to points where it is very
# sure. The density **sharpens** onto the most unambiguous parts of the class; the uncertain middle
# blobs fade first.
#
# ### Exercise: the Bayes split, scaled
#
# Write `conditional_score(score_uncond, classifier_grad, s)`, the left-hand side above:
# $\nabla_x \log p(x) + s\, \nabla_x \log p(y \mid x)$, from the unconditional score, the
# classifier's gradient and the scale $s$ (a number). At $s = 1$ it is the conditional score of
# section 2.

# %% slideshow={"slide_type": "-"}
def conditional_score(score_uncond, classifier_grad, s):
    """The score of p(x) p(y | x)^s: the Bayes split with the classifier term scaled by s."""
    ### HINT: keep the unconditional score as it is and add s times the classifier gradient
    ### BEGIN SOLUTION
    return score_uncond + s * classifier_grad
    ### END SOLUTION


# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import check_bayes_split

check_bayes_split(conditional_score)

# %% [markdown] slideshow={"slide_type": "-"}
# The tilted density itself, for the class "right" at four scales:

# %% slideshow={"slide_type": "-"}
scales = [0, 1, 3, 10]
tilted = [world.tilted_density_on_grid(xs, ys, 1, s) for s in scales]
density_panels(xs, ys, tilted, [f"p(x) p(y|x)^{s}" for s in scales]);

# %% [markdown] slideshow={"slide_type": "-"}
# How much of the tilted density lies where the class is "right" (where the exact posterior puts
# more than one half on it)? At $s = 0$ it is the mass of the whole world $p(x)$ on that side:
# close to the class prior printed at the top, but equal to it only if as much of "left" spills
# onto the right side as of "right" onto the left, which our overlapping blobs need not do. At
# $s = 1$ it is the fraction of the class's own mass on its side of the boundary; beyond that it
# climbs toward 1.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
right_side = world.class_posterior(XY)[:, 1] > 0.5
cell = float((xs[1] - xs[0]) * (ys[1] - ys[0]))
masses = []
for s in scales:
    z = world.tilted_density_on_grid(xs, ys, 1, s).flatten()
    masses.append(float(z[right_side].sum() * cell))
    print(f"s = {s:2d}: mass on the 'right' side of the boundary = {masses[-1]:.3f}")
assert all(a < b for a, b in zip(masses, masses[1:]))

# %% slideshow={"slide_type": "-"}
from IPython.display import Markdown

wrong_side = {s: 1 - m for s, m in zip(scales, masses)}
Markdown(f"""
The mass left on the wrong side of the boundary falls fast with $s$: {wrong_side[1]:.1%} for the
honest conditional density ($s = 1$), {wrong_side[3]:.1%} at $s = 3$, {wrong_side[10]:.1%} at
$s = 10$. This is the second half of claim C6 in the README's claims table ("$p(y \\mid x)^s$
amplifies modes"), on the exact density; notebook 03 measures the first half, guidance trading
diversity for fidelity.
""")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. The convention for $s$, once and for all
#
# This series uses the convention of `diffusers` (`guidance_scale`), and so does every figure you
# will see in Stable Diffusion:
#
# | $s$ | at noise level $t$, the guided score is the score of | an exact sampler that follows it draws | name |
# |---|---|---|---|
# | $0$ | $q_t(x)$ | $p(x)$ | unconditional |
# | $1$ | $q_t(x)\,q_t(y \mid x) \propto q_t(x \mid y)$ | $p(x \mid y)$ | conditional, **no extra guidance** |
# | any other $s$ (in practice $s > 1$) | $q_t(x)\,q_t(y \mid x)^s$ | **not** $p(x)\,p(y \mid x)^s$: another density (notebook 03, section 5) | guided |
#
# Only the first two rows sample what the score suggests. For $s > 1$ the tilted density
# $p(x)\,p(y \mid x)^s$ of section 3 is the picture of what guidance aims at, not what the sampler
# draws: the scores $q_t(x)\,q_t(y \mid x)^s$ at the different noise levels are not the noised
# versions of any one density, and notebook 03 measures how far the samples land from it.
#
# Ho and Salimans (2022) write the same thing with $w = s - 1$, so their $w = 0$ is our $s = 1$,
# and Stable Diffusion's default 7.5 is their $w = 6.5$.
#
# **A common slip.** Many blog posts say "guidance scale 1 means no guidance, so the model is
# unconditional". Half right: $s = 1$ means no *extra* guidance, but the model is the
# **conditional** one: it follows the prompt, it just doesn't exaggerate it. The unconditional
# model is $s = 0$. The next check makes this concrete: at $s = 1$ the tilted density *is* the
# conditional density $p(x \mid y)$, and at $s = 0$ it is $p(x)$.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
cond = world.log_prob_given_class(XY, 1).exp().reshape(200, 200)
cond = cond / (cond.sum() * cell)
marginal = world.log_prob(XY).exp().reshape(200, 200)
marginal = marginal / (marginal.sum() * cell)
gap_1 = (world.tilted_density_on_grid(xs, ys, 1, 1.0) - cond).abs().max().item()
gap_0 = (world.tilted_density_on_grid(xs, ys, 1, 0.0) - marginal).abs().max().item()
assert gap_1 < 1e-10 and gap_0 < 1e-10
print("s = 1: tilted density equals the conditional p(x | y) within 1e-10:", gap_1 < 1e-10)
print("s = 0: tilted density equals the unconditional p(x) within 1e-10:", gap_0 < 1e-10)

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### A slider for $s$
#
# Move $s$ from 0 to 10 and watch the class "right" sharpen. Between 0 and 1 the left-class blobs
# fade out; at exactly 1 you see the conditional density; above 1 the overlapping middle blob
# fades and the two far blobs become tighter.

# %% slideshow={"slide_type": "-"}
tilted_density_slider(world, y=1, value=1.0)

# %% [markdown] slideshow={"slide_type": "-"}
# The slider only displays `nbhelpers.widgets.tilted_density_frame(world, y, s)`; a test run
# cannot drag it, so we test that function: the frame at $s = 1$ must be the image of the
# conditional density.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.images import density_image
from nbhelpers.widgets import tilted_density_frame

xs160, ys160, XY160 = grid(3.0, 160)
reference = density_image(world.log_prob_given_class(XY160, 1).exp().reshape(160, 160))
frame = tilted_density_frame(world, 1, 1.0)
max_level_gap = int(abs(frame.astype(int) - reference.astype(int)).max())
assert max_level_gap <= 1
print("slider frame at s = 1 shows p(x | y) (colour levels within 1):", max_level_gap <= 1)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Where this goes next
#
# In practice nobody has the exact classifier $p(y \mid x_t)$. Notebook 03 trains one on noisy data
# (*classifier guidance*), and then shows the trick that made guidance universal: a single network
# trained with and without the label gives the classifier term for free, as the *difference* of two
# noise predictions (*classifier-free guidance*). It also shows a subtlety we glossed over: running
# a sampler with the guided score at every step is **not** the same as sampling
# $p(x)\,p(y \mid x)^s$.
#
# ## Try it
#
# **1. Negative guidance.** Set the slider's range aside and compute
# `world.tilted_density_on_grid(xs, ys, 1, -2.0)`; plot it with `density_panels`. Predict first:
# where does the mass go?
#
# <details><summary>Answer</summary>
#
# With $s < 0$ the factor $p(y \mid x)^{s}$ *rewards* points the classifier thinks are *not* class
# $y$: the mass moves to the left-class blobs, and most strongly to those furthest from the
# boundary: guidance away from a class.
#
# This is **not** what a *negative prompt* does in Stable Diffusion, though the two are often
# confused. A negative prompt $c_-$ keeps $s > 1$ and replaces the *unconditional* branch by
# $c_-$: $\tilde\epsilon = \hat\epsilon(x, c_-) + s\,[\hat\epsilon(x, c) - \hat\epsilon(x, c_-)]$,
# the score of $p(x \mid c_-)^{1-s}\,p(x \mid c)^s$ (extension notebook 04b). It pulls toward $c$
# and away from $c_-$ at once; a negative $s$ with the empty prompt as reference pushes away from
# $c$ and toward nothing in particular.
# </details>
#
# **2. Where is the classifier gradient small?** In the field plot at $t = 0$, the middle column
# is nearly empty on the right half of the plane but not on the left. Predict what
# $\nabla \log p(y{=}\text{right} \mid x)$ does as you move further and further left, then check with
# `world.classifier_grad(torch.tensor([[-2.0, 0.0], [-3.0, 0.0], [-4.0, 0.0]], dtype=torch.float64), 1)`.
#
# <details><summary>Answer</summary>
#
# Where $p(y \mid x) \approx 1$, $\log p(y \mid x) \approx 0$ is flat, so the gradient vanishes.
# Where $p(y \mid x) \approx 0$, $\log p(y \mid x)$ is close to the log-odds of the two classes,
# which keeps changing with $x$ (for Gaussian classes, quadratically or linearly in $x$), so the
# gradient stays large, and grows as you go further left. Guidance never stops pushing a point
# that sits in the wrong class. At $t = 600$ the classes overlap so much that the posterior changes
# slowly everywhere: the push is gentle but reaches the whole plane, which is how guidance moves
# points across the boundary early in sampling.
# </details>
#
# **3. Does the prior matter?** Change the class weights (for example build a
# `GaussianMixture2D` with the weights of the right-class components halved and renormalised) and
# rerun the Bayes check. Does the identity still hold? Does the tilted density at $s = 1$ change?
#
# <details><summary>Answer</summary>
#
# The identity holds for any prior: $\log p(y)$ never depends on $x$, so it always vanishes from the
# gradient. The density at $s = 1$ is $p(x \mid y)$, which depends only on the class's own
# components and their *relative* weights; halving all three right-class weights leaves it
# unchanged, while the unconditional $p(x)$ (and so $s = 0$) changes.
# </details>

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Recap
#
# Three questions on this notebook. Answer them in the cell after the questions (a letter, or a
# number), then run it: each answer is checked and explained.

# %% slideshow={"slide_type": "-"}
from nbhelpers.exercises import RECAP_02

RECAP_02

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import RECAP_02

### BEGIN SOLUTION
answer_1 = -0.5
answer_2 = "b"
answer_3 = "c"
### END SOLUTION
RECAP_02.check({1: answer_1, 2: answer_2, 3: answer_3})
