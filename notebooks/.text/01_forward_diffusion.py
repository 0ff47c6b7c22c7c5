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
# # 01 · Forward diffusion: how data turns into noise
#
# A diffusion model learns to *undo* a fixed process that slowly turns data into noise. Before we
# can talk about guidance (notebooks 02 to 04) or textual inversion (05, 06), we need that
# forward process in our hands. In this notebook you will:
#
# 1. noise a 2-D data set one small step at a time, and watch its structure dissolve;
# 2. derive the shortcut $q(x_t \mid x_0)$ that jumps to any step at once, and **check** that it
#    agrees with step-by-step noising;
# 3. compare three noise schedules (linear, cosine, and Stable Diffusion's scaled-linear) through
#    their signal-to-noise ratio;
# 4. noise a real photograph with a slider for $t$;
# 5. **check** that our scaled-linear schedule is exactly the one `diffusers` uses for Stable
#    Diffusion, and see where its sampler starts;
# 6. run the process backwards: the DDPM posterior, ancestral sampling and DDIM, **checked**
#    against `diffusers`' own samplers.
#
# Along the way you write two functions yourself, the closed form of section 2 and the posterior
# mean of section 6, and a check tells you whether they are right. A recap of three questions
# closes the notebook.
#
# Time: about 50 minutes.
#
# Notation (the same everywhere in the series): $\beta_t$ is the noise added at step $t$,
# $\alpha_t = 1-\beta_t$, $\bar\alpha_t = \prod_{i \le t} \alpha_i$ is the signal kept,
# $\epsilon \sim \mathcal N(0, I)$ is standard Gaussian noise, $\sigma_t = \sqrt{1-\bar\alpha_t}$ is
# the standard deviation of the noise in $x_t$ (section 2 shows why), and $q_t$ is the density of
# the noised data $x_t$. Steps run $t = 0, \dots, T-1$ with $T = 1000$, as in `diffusers`. Mind
# the first index: $x_0$ is the clean data, but the timestep $t = 0$ of a schedule is already one
# step of noise ($\bar\alpha_0 = 1 - \beta_0$), so
# "$t = 0$" in a panel title means one step noised; `nbhelpers` writes clean data as the
# timestep $-1$ ($\bar\alpha = 1$).
#
# The symbols and words of this lesson are explained in `docs/glossary.md`, each with the notebook that teaches it.

# %% slideshow={"slide_type": "-"}
import torch
import matplotlib.pyplot as plt

from nbhelpers import diffusion as D
from nbhelpers.images import example_photo, to_tensor, to_uint8
from nbhelpers.mixtures import default_world
from nbhelpers.plotting import image_grid, scatter_panels, schedule_curves
from nbhelpers.profile import get_profile
from nbhelpers.widgets import forward_slider

P = get_profile()
print(f"profile: {P.name}, {P.n_samples} samples for the statistical checks")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Noise, one step at a time
#
# Each step of the forward process shrinks the current sample a little and adds a little fresh
# Gaussian noise (Ho et al. 2020, eq. 2):
#
# $$ q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\, x_{t-1},\; \beta_t I\big),
# \qquad x_t = \sqrt{1-\beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \epsilon_t . $$
#
# The shrink factor $\sqrt{1-\beta_t}$ is what keeps the variance in check: if $x_{t-1}$ has unit
# variance, so does $x_t$. That is why this is called the *variance-preserving* process, and why
# data is scaled to roughly unit variance first (images to $[-1, 1]$).
#
# Our data is the series' 2-D world: six Gaussian blobs, coloured by the class they belong to
# (class 0 blue on the left, class 1 red on the right). We noise it with the linear schedule of the
# original DDPM paper, $\beta$ from $10^{-4}$ to $0.02$.

# %% slideshow={"slide_type": "-"}
world = default_world()
g = torch.Generator().manual_seed(0)
x0, _, labels = world.sample(P.n_samples, generator=g)

betas = D.linear_betas(1000)
alpha_bar = D.alpha_bar_from_betas(betas)
show_at = [0, 50, 150, 300, 999]

x, iterated = x0.clone(), {}
for t in range(1000):
    x = D.q_step(x, t, betas, torch.randn(x.shape, generator=g, dtype=x.dtype))
    if t in show_at:
        iterated[t] = x.clone()

scatter_panels([iterated[t] for t in show_at], [f"t = {t} (step by step)" for t in show_at],
               colors=[labels] * len(show_at));

# %% [markdown] slideshow={"slide_type": "-"}
# By $t = 300$ the blobs have merged; by $t = 999$ what is left is, to the eye, a standard
# Gaussian. The class colours are still attached to the points, but nothing in their positions
# tells them apart any more. Generating data means running this film backwards.
#
# ## 2. Jumping straight to step $t$
#
# A sum of independent Gaussians is Gaussian, so the $t$ small steps compose into one. Unrolling
# the recursion, the coefficient of $x_0$ is $\prod_i \sqrt{\alpha_i} = \sqrt{\bar\alpha_t}$, and the
# noise variances add up to $1 - \bar\alpha_t$ (Ho et al. 2020, eq. 4):
#
# $$ q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\, x_0,\; (1-\bar\alpha_t) I\big),
# \qquad x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon . $$
#
# The noise in $x_t$ has standard deviation $\sigma_t = \sqrt{1-\bar\alpha_t}$, the symbol
# notebook 02 onwards writes: $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sigma_t\, \epsilon$.
#
# This closed form is what makes training cheap: pick a random $t$, one draw of $\epsilon$, and
# you have a training pair, with no need to simulate the chain. It is `D.q_sample`.

# %% slideshow={"slide_type": "-"}
closed = {t: D.q_sample(x0, t, alpha_bar, torch.randn(x0.shape, generator=g, dtype=x0.dtype))
          for t in show_at}
scatter_panels([closed[t] for t in show_at], [f"t = {t} (closed form)" for t in show_at],
               colors=[labels] * len(show_at));

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Check: the closed form matches step-by-step noising
#
# The two rows look alike; now we measure it. For every sample we know $x_0$, so from the
# step-by-step result we can compute the *standardised residual*
# $z = (x_t - \sqrt{\bar\alpha_t} x_0) / \sqrt{1-\bar\alpha_t}$. If the closed form is right, $z$
# is standard normal: mean 0 and variance 1 in each coordinate. With $N$ samples the estimates
# carry standard errors of $1/\sqrt N$ (mean) and $\sqrt{2/N}$ (variance); we accept a deviation of
# up to 5 standard errors. We also compare the mean and variance of $x_t$ across the two methods.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
N = x0.shape[0]
se_mean, se_var = 1 / N ** 0.5, (2 / N) ** 0.5
for t in show_at[1:]:
    ab = alpha_bar[t]
    z = (iterated[t] - ab.sqrt() * x0) / (1 - ab).sqrt()
    residual_ok = bool((z.mean(0).abs() < 5 * se_mean).all()
                       and ((z.var(0) - 1).abs() < 5 * se_var).all())
    # the two methods give x_t with the same mean and variance (difference of two estimates)
    spread = iterated[t].var(0).sqrt()
    means_ok = bool(((iterated[t].mean(0) - closed[t].mean(0)).abs()
                     < 5 * (2 ** 0.5) * spread / N ** 0.5).all())
    vars_ok = bool(((iterated[t].var(0) / closed[t].var(0) - 1).abs() < 5 * 2 * se_var).all())
    assert residual_ok and means_ok and vars_ok, t
    print(f"t = {t:3d}: residual ~ N(0, 1): {residual_ok}; same mean: {means_ok}; "
          f"same variance: {vars_ok}")

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Exercise: write the closed form
#
# Write `q_sample(x0, eps, alpha_bar_t)`, which returns
# $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon$. Here `alpha_bar_t` is one
# number (a 0-dimensional tensor, so `alpha_bar_t.sqrt()` works), and `x0` and `eps` are tensors
# of the same shape. Then run the check below it: it compares your function with the reference on
# a few random cases and, if they differ, says how.

# %% slideshow={"slide_type": "-"}
import torch


def q_sample(x0, eps, alpha_bar_t):
    """x_t from x0 and eps (section 2's closed form)."""
    ### HINT: scale x0 by sqrt(alpha_bar_t) and eps by sqrt(1 - alpha_bar_t), then add them
    ### BEGIN SOLUTION
    return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * eps
    ### END SOLUTION


# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import check_q_sample

check_q_sample(q_sample)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. Three noise schedules
#
# How fast the signal fades is set by the schedule $\beta_t$. Three are in common use:
#
# * **linear** (Ho et al. 2020): $\beta$ from $10^{-4}$ to $0.02$, evenly spaced;
# * **cosine** (Nichol and Dhariwal 2021, eq. 17): $\bar\alpha$ is *defined* to fall smoothly,
#   $\bar\alpha(u) = f(u)/f(0)$ with $f(u) = \cos^2\!\big(\tfrac{u + 0.008}{1.008}\tfrac{\pi}{2}\big)$
#   and $u$ the fraction of the $T$ steps applied (the division by $f(0)$ makes $\bar\alpha = 1$
#   before the first step). The betas follow as $\beta = 1 - \bar\alpha(u)/\bar\alpha(u - 1/T)$,
#   clipped to at most $0.999$ as in the paper and in `D.cosine_betas`: without the clip the last
#   step would be $\beta = 1$ ($f(1) = 0$), a step that deletes the signal and cannot be inverted;
# * **scaled-linear** (Rombach et al. 2022, Stable Diffusion): linear in $\sqrt\beta$, from
#   $0.00085$ to $0.012$.
#
# The fair way to compare them is the **signal-to-noise ratio**
# $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$: the power of the data term over the power of
# the noise term in $x_t$. Steps where $\log \mathrm{SNR}$ is very large or very small teach the model
# little: the image is either nearly clean or nearly pure noise.

# %% slideshow={"slide_type": "-"}
schedules = {name: D.alpha_bar_from_betas(D.make_betas(name))
             for name in ("linear", "cosine", "scaled_linear")}
schedule_curves(schedules);

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
print(f"{'schedule':<14}{'alpha_bar[999]':>15}{'log SNR[999]':>14}"
      f"{'t: alpha_bar<0.5':>18}{'steps with |log SNR|<4':>24}")
table = {}
for name, ab in schedules.items():
    log_snr = torch.log(D.snr(ab))
    row = table[name] = dict(end=ab[-1].item(), log_snr_end=log_snr[-1].item(),
                             half=int((ab < 0.5).nonzero()[0]),
                             useful=int((log_snr.abs() < 4).sum()))
    print(f"{name:<14}{row['end']:>15.2e}{row['log_snr_end']:>14.2f}{row['half']:>18d}"
          f"{row['useful']:>24d}")

# %% slideshow={"slide_type": "-"}
from IPython.display import Markdown


def sci(x):
    """x in LaTeX's a x 10^b, two digits."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return rf"{mantissa} \times 10^{{{int(exponent)}}}"


lin, cos, sl = table["linear"], table["cosine"], table["scaled_linear"]
# the reading below is true of these three schedules; the asserts keep it so
assert lin["half"] < sl["half"] < cos["half"]
assert sl["useful"] == max(r["useful"] for r in table.values()) and sl["end"] > 1e-3
Markdown(rf"""
Reading the table (exact properties of the schedules, printed from the table's values):

* The **linear** schedule destroys the signal fastest: $\bar\alpha$ falls below one half
  already at $t = {lin['half']}$, and its last step sits at
  $\log \mathrm{{SNR}} = {lin['log_snr_end']:.2f}$, far below any useful range.
  ${lin['useful']}$ of its $1000$ steps have $|\log\mathrm{{SNR}}| < 4$.
* The **cosine** schedule keeps half the signal until $t = {cos['half']}$ and spends
  ${cos['useful']}$ steps in that middle range; it ends at essentially pure noise
  ($\bar\alpha_{{999}} = {sci(cos['end'])}$). It was designed for small images, where the
  linear schedule wastes its last few hundred steps.
* **Scaled-linear**, Stable Diffusion's schedule, sits between the two early on (half the signal
  is gone at $t = {sl['half']}$), has the most steps in the middle range (${sl['useful']}$),
  and, crucially, **never reaches pure noise**: at $t = 999$,
  $\bar\alpha = {sci(sl['end'])}$, a $\log\mathrm{{SNR}}$ of ${sl['log_snr_end']:.2f}$.
""")

# %% [markdown] slideshow={"slide_type": "-"}
# Scaled-linear is gentler than linear only *later* on: its first $\beta$ is $8.5 \times 10^{-4}$,
# more than eight times the linear schedule's $10^{-4}$, but it grows only to $0.012$ instead of
# $0.02$. Stable Diffusion denoises a $4 \times 64 \times 64$ *latent* of its autoencoder rather
# than pixels, and uses the schedule of the Latent Diffusion models it descends from.
#
# Its end has a flaw (Lin et al. 2024, *Common Diffusion Noise Schedules and Sample Steps are
# Flawed*). In **training**, the noisiest input the model ever sees, at $t = 999$, still holds a
# trace of the image ($\bar\alpha_{999}$, in the table, is small but not zero), so the mean
# brightness of the picture leaks through the noise. In **sampling**, the chain starts from pure
# $\mathcal N(0, I)$, which holds no such trace. The model learned to read the overall brightness
# off its input and is never given one, so it keeps to medium brightness: this is why SD 1.x
# struggles to make very dark or very bright images. Lin et al.'s fix has four parts that go
# together:
#
# 1. **zero terminal SNR**: rescale the schedule so that $\bar\alpha_{T-1} = 0$, pure noise in
#    training as in sampling;
# 2. **v-prediction** instead of $\epsilon$-prediction: at SNR $0$ the input *is* the noise,
#    $x_{T-1} = \epsilon$, so predicting $\epsilon$ says nothing about the image, and
#    $\hat x_0 = (x_t - \sigma_t \hat\epsilon)/\sqrt{\bar\alpha_t}$ divides by zero:
#    $\epsilon$-prediction is undefined at SNR $0$, while the target
#    $v = \sqrt{\bar\alpha_t}\,\epsilon - \sigma_t x_0$ (`D.velocity`) is $-x_0$ there;
# 3. **trailing timesteps**, so that the sampler starts at $t = T-1$ (their second flaw, below);
# 4. **rescaled classifier-free guidance**, because at zero terminal SNR large guidance scales
#    over-expose images (guidance rescale, `nbhelpers.guidance.rescale_guidance`; it is tried in
#    extension notebook 04b).
#
# So the first two need the model fine-tuned: rescaling the schedule of SD 1.x at sampling time,
# alone, does not fix it. Their second flaw is in the sampler: with `diffusers`' default
# "leading" spacing and SD's `steps_offset=1`, a sampler with few steps does not even start at the
# last training step; the check of section 5 prints where it starts. Keep both in mind in
# notebook 04.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. A real photograph
#
# The same closed form applies to every pixel of an image (each of the $3 \times H \times W$
# numbers gets its own $\epsilon$). Our photograph is Rear Admiral Grace Hopper, an official
# U.S. Navy portrait in the public domain, which ships with `matplotlib` as sample data, so no
# download is needed. Rows are schedules, columns are steps; the noise $\epsilon$ is the same
# everywhere, so only $\bar\alpha_t$ differs.

# %% slideshow={"slide_type": "-"}
photo = to_tensor(example_photo(128))          # (3, 128, 128) in [-1, 1]
eps = torch.randn(photo.shape, generator=torch.Generator().manual_seed(1))
steps = [0, 100, 250, 400, 600, 999]
frames = [to_uint8(D.q_sample(photo, t, ab, eps)) for ab in schedules.values() for t in steps]
image_grid(frames, titles=[f"t = {t}" for t in steps] * 3, ncols=len(steps),
           row_labels=list(schedules));

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### A slider for $t$
#
# Drag $t$ and watch the three schedules side by side (left to right: linear, cosine,
# scaled-linear). The picture is computed in closed form for each position, with one fixed
# $\epsilon$, so moving back and forth is instant and always shows the same noise. Notice that the
# face disappears at a different $t$ under each schedule, but at a similar $\bar\alpha_t$ (shown
# under the image): what you can see depends on the signal-to-noise ratio, not on the step index.

# %% slideshow={"slide_type": "-"}
forward_slider(photo, schedules, eps, value=250)

# %% [markdown] slideshow={"slide_type": "-"}
# The slider only displays a function, `nbhelpers.widgets.forward_frame(photo, t, schedules, eps)`.
# A headless test run cannot drag a slider, so the check below tests that function: at $t = 0$ it
# must return the photograph with a trace of noise ($\bar\alpha_0 = 1 - 10^{-4}$ under the linear
# schedule, so a correlation above $0.99$), and at $t = 999$ almost nothing of it (a correlation
# near zero).

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.widgets import forward_frame

def correlation(a, b):
    a, b = torch.as_tensor(a).double().flatten(), torch.as_tensor(b).double().flatten()
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

clean = to_uint8(photo)
linear_only = {"linear": schedules["linear"]}
first = forward_frame(photo, 0, linear_only, eps)
last = forward_frame(photo, 999, linear_only, eps)
assert correlation(first, clean) > 0.99
assert abs(correlation(last, clean)) < 0.1
print("t = 0 shows the photograph (correlation > 0.99):", correlation(first, clean) > 0.99)
print("t = 999 (linear) is uncorrelated with it (|correlation| < 0.1):",
      abs(correlation(last, clean)) < 0.1)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. Check: our scaled-linear schedule is Stable Diffusion's, and where its sampler starts
#
# Stable Diffusion 1.x ships a scheduler configuration with `beta_schedule="scaled_linear"`,
# `beta_start=0.00085`, `beta_end=0.012` and 1000 training steps. `diffusers` turns that into
# `alphas_cumprod`. Ours is computed in float64; `diffusers` works in float32, so we allow
# $10^{-6}$. Then the sampler's timesteps: `D.inference_timesteps` against `diffusers`'
# `DDIMScheduler` given the timestep settings of SD 1.4's scheduler configuration ("leading"
# spacing, `steps_offset=1`). That configuration names a different sampler, `PNDMScheduler`
# (a pseudo-numerical multistep method); its timesteps start at the same place, which the check
# also tests.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler

alpha_bar_sd = schedules["scaled_linear"]
sd_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                             beta_start=0.00085, beta_end=0.012)
diff = (schedules["scaled_linear"] - sd_scheduler.alphas_cumprod.double()).abs().max().item()
assert diff < 1e-6, diff
print("scaled-linear alpha_bar equals diffusers' to within 1e-6:", diff < 1e-6)

# where SD's samplers start: "leading" spacing, steps_offset=1 (SD 1.4's scheduler config)
sd_config = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                 beta_end=0.012, steps_offset=1, set_alpha_to_one=False)
short_of_999 = {}
for n_steps in (10, 20, 50):
    sd_ddim = DDIMScheduler(**sd_config, clip_sample=False)
    sd_pndm = PNDMScheduler(**sd_config, skip_prk_steps=True)
    sd_ddim.set_timesteps(n_steps)
    sd_pndm.set_timesteps(n_steps)
    ours = D.inference_timesteps(n_steps, spacing="leading", offset=1)
    assert sd_ddim.timesteps.tolist() == ours and int(sd_pndm.timesteps[0]) == ours[0]
    short_of_999[n_steps] = 999 - ours[0]
    print(f"{n_steps} DDIM steps start at t = {ours[0]} (alpha_bar = {alpha_bar_sd[ours[0]]:.2e}, "
          f"{short_of_999[n_steps]} timesteps short of t = 999), end at t = {ours[-1]}; "
          "same timesteps as diffusers: True; PNDM starts there too: True")

# %% [markdown] slideshow={"slide_type": "-"}
# The first step of an $n$-step sampler is $t = T - T/n + 1$: almost one whole spacing short of
# $t = 999$ (the check prints by how much), where $\bar\alpha$ (printed) is larger still than at
# $t = 999$. So on top of the schedule's own flaw, a short sampler hands the model
# pure noise where, in training, an input at that $t$ held even more of the image. Lin et al.
# recommend "trailing" spacing, which starts at $t = 999$
# (`D.inference_timesteps(n, spacing="trailing")`).
#
# ## 6. Running the film backwards: the reverse process and two samplers
#
# Generating data runs the chain in reverse: from $x_T \sim \mathcal N(0, I)$ step by step down to
# clean data. The reverse of one forward step, $q(x_{t-1} \mid x_t)$, depends on the whole data
# distribution and is unknown. But *given the clean point* $x_0$ it is a Gaussian in closed form,
# the **posterior** of the forward process (Ho et al. 2020, eqs. 6-7):
#
# $$ q(x_{t-1} \mid x_t, x_0) = \mathcal N\big(\tilde\mu_t(x_t, x_0),\; \tilde\beta_t I\big),
# \qquad \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\, x_0
# + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\, x_t,
# \qquad \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t . $$
#
# The mean blends the clean point and the current one. A sampler with fewer steps than $T$ jumps
# from $t$ to an earlier $t'$; the same formulas hold with $\bar\alpha_{t-1}$ replaced by
# $\bar\alpha_{t'}$, and with the *effective* step $\alpha = \bar\alpha_t / \bar\alpha_{t'}$,
# $\beta = 1 - \alpha$ in place of $\alpha_t$ and $\beta_t$ (for one step, $t' = t - 1$, they are
# the same).
#
# ### Exercise: the posterior mean
#
# Write `posterior_mean(x_t, x0, alpha_bar_t, alpha_bar_prev)`, the mean $\tilde\mu$ of a jump
# from $t$ to $t'$, where `alpha_bar_prev` is $\bar\alpha_{t'}$:
#
# $$ \alpha = \frac{\bar\alpha_t}{\bar\alpha_{t'}}, \quad \beta = 1 - \alpha, \qquad
# \tilde\mu = \frac{\sqrt{\bar\alpha_{t'}}\,\beta}{1-\bar\alpha_t}\, x_0
# + \frac{\sqrt{\alpha}\,(1-\bar\alpha_{t'})}{1-\bar\alpha_t}\, x_t . $$

# %% slideshow={"slide_type": "-"}
def posterior_mean(x_t, x0, alpha_bar_t, alpha_bar_prev):
    """The mean of q(x_{t'} | x_t, x0) for a jump t -> t' (alpha_bar_prev is alpha_bar at t')."""
    ### HINT: first alpha = alpha_bar_t / alpha_bar_prev and beta = 1 - alpha, then the two terms
    ### BEGIN SOLUTION
    alpha = alpha_bar_t / alpha_bar_prev
    beta = 1 - alpha
    return (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar_t) * x0
            + alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * x_t)
    ### END SOLUTION


# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import check_posterior_mean

check_posterior_mean(posterior_mean)

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### From the posterior to two samplers
#
# We do not know $x_0$, but a diffusion model predicts the noise, $\hat\epsilon(x_t, t)$, and the
# closed form of section 2 solved for $x_0$ turns that into an estimate (eq. 15):
#
# $$ \hat x_0 = \frac{x_t - \sigma_t\,\hat\epsilon}{\sqrt{\bar\alpha_t}}, \qquad
# \sigma_t = \sqrt{1-\bar\alpha_t} . $$
#
# * **Ancestral sampling (DDPM).** Put $\hat x_0$ into the posterior and draw from it:
#   $x_{t'} = \tilde\mu(x_t, \hat x_0) + \sqrt{\tilde\beta}\, z$ with $z \sim \mathcal N(0, I)$,
#   and no noise on the last step. So one step is: $\hat\epsilon \to \hat x_0 \to$ mean (your
#   `posterior_mean`), plus noise (`D.ddpm_step`).
# * **DDIM** (Song, Meng and Ermon 2021, *Denoising Diffusion Implicit Models*, eq. 12). Take the
#   same $\hat x_0$ and noise it back to level $t'$, re-using the predicted noise for most of the
#   way:
#   $x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\tilde\sigma^2}\,\hat\epsilon +
#   \tilde\sigma z$, with
#   $\tilde\sigma = \eta\,\sqrt{(1-\bar\alpha_{t'})/(1-\bar\alpha_t)}\,\sqrt{1-\bar\alpha_t/\bar\alpha_{t'}}$
#   (eq. 16; the paper writes $\sigma_t$ for this fresh noise's scale, we write $\tilde\sigma$ so as
#   not to mix it up with the noise level $\sigma_t = \sqrt{1-\bar\alpha_t}$). With $\eta = 1$,
#   $\tilde\sigma^2 = \tilde\beta$ and the step is the DDPM step (`D.ddim_step`). With $\eta = 0$ no
#   fresh noise enters. A seeded DDPM sampler is deterministic too (same seed, same picture), so
#   that is not what $\eta = 0$ adds. What it adds is that the sample is a function of the
#   starting noise $x_T$ alone (and of the guidance scale $s$, from notebook 02 on), and a
#   continuous one: the steps discretise an ordinary differential equation, so a nearby $x_T$ or
#   a nearby $s$ gives a nearby picture. That is what the sliders of notebooks 04 to 06 rely on
#   when they move $s$ and keep the picture.
#
# Here the "model" is exact: on our 2-D world the best possible prediction,
# $\hat\epsilon = \mathbb E[\epsilon \mid x_t]$, is known in closed form (`world.eps_model`;
# notebook 02 explains why it is the right target). Both samplers, 50 steps on Stable Diffusion's
# schedule, from the same pure noise:

# %% slideshow={"slide_type": "-"}
ts = D.inference_timesteps(50, spacing="trailing")        # 999, 979, ..., 19
x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2), dtype=x0.dtype)
exact_eps = world.eps_model(alpha_bar_sd)                  # (x_t, t) -> E[eps | x_t]
generated = {m: D.sample_loop(exact_eps, x_T, alpha_bar_sd, ts, method=m,
                              generator=torch.Generator().manual_seed(3))
             for m in ("ddpm", "ddim")}
panels = [x_T, generated["ddpm"], generated["ddim"], x0]
scatter_panels(panels, ["x_T: pure noise", "DDPM, 50 steps", "DDIM (eta = 0), 50 steps",
                        "the data"],
               colors=[world.class_posterior(p)[:, 1] for p in panels]);   # red: class 1

# %% [markdown] slideshow={"slide_type": "-"}
# Both samplers turn the same cloud of noise back into six blobs. Notebook 03 uses the DDPM
# sampler with trained networks in place of the exact $\hat\epsilon$; notebooks 04 to 06 (and the
# extension notebooks) use DDIM with $\eta = 0$, for the continuity above. That is this series'
# choice, not what Stable Diffusion users mostly run: SD 1.4 ships a `PNDMScheduler`
# configuration (section 5), and users of the AUTOMATIC1111 web UI mostly sample with
# "Euler a" or one of the DPM++ samplers. All of them run on the schedule of section 3 and the
# $\hat\epsilon \to \hat x_0$ step of this section.
#
# ### Check: our steps are `diffusers`' steps
#
# One step of each sampler on a random $x_t$ and a random "prediction" $\hat\epsilon$ (only the
# arithmetic is tested, so any numbers do), against `DDPMScheduler.step` and
# `DDIMScheduler.step` configured with SD's schedule, with the same noise $z$; and the exact
# identity above: DDIM with $\eta = 1$ is the DDPM step.

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(4)
x_t, eps_hat = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
z = torch.randn(2, 4, 8, 8, generator=g)
ab32 = alpha_bar_sd.float()
config = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
              beta_end=0.012, clip_sample=False)

ddpm = DDPMScheduler(**config)
ddpm.set_timesteps(50)
t, t_prev = (int(v) for v in ddpm.timesteps[10:12])
theirs = ddpm.step(eps_hat, t, x_t, generator=torch.Generator().manual_seed(5)).prev_sample
ours = D.ddpm_step(x_t, eps_hat, t, t_prev, ab32, generator=torch.Generator().manual_seed(5))
gap_ddpm = (ours.x_prev - theirs).abs().max().item()

ddim = DDIMScheduler(**config, steps_offset=1, set_alpha_to_one=False)
ddim.set_timesteps(50)
t, t_prev = (int(v) for v in ddim.timesteps[10:12])
gap_ddim = max((D.ddim_step(x_t, eps_hat, t, t_prev, ab32, eta=eta, noise=z).x_prev
                - ddim.step(eps_hat, t, x_t, eta=eta, variance_noise=z).prev_sample)
               .abs().max().item() for eta in (0.0, 1.0))

same = (D.ddim_step(x_t.double(), eps_hat.double(), t, t_prev, alpha_bar_sd, eta=1.0,
                    noise=z.double()).x_prev
        - D.ddpm_step(x_t.double(), eps_hat.double(), t, t_prev, alpha_bar_sd,
                      noise=z.double()).x_prev).abs().max().item()
assert gap_ddpm < 1e-5 and gap_ddim < 1e-5 and same < 1e-12, (gap_ddpm, gap_ddim, same)
print("ddpm_step equals diffusers' DDPMScheduler.step (within 1e-5):", gap_ddpm < 1e-5)
print("ddim_step equals diffusers' DDIMScheduler.step, eta = 0 and 1 (within 1e-5):",
      gap_ddim < 1e-5)
print("DDIM with eta = 1 is the DDPM step (float64, within 1e-12):", same < 1e-12)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Try it
#
# Change a value, predict what will happen, then run. Answers are folded below each exercise.
#
# **1. More steps, same range.** Build the linear schedule with `T = 2000` (same $\beta$ range:
# `D.linear_betas(2000)`). Will $\bar\alpha$ at the last step be larger or smaller than with 1000
# steps? By roughly how much?
#
# <details><summary>Answer</summary>
#
# Smaller, by a lot. For small $\beta$,
# $\log \bar\alpha_{T-1} = \sum \log(1-\beta_t) \approx -\sum \beta_t$, and the sum of an
# evenly spaced sequence is $T \cdot (\beta_{\min} + \beta_{\max})/2$: about $-10.05$ for
# $T = 1000$ and $-20.1$ for $T = 2000$. So $\bar\alpha$ drops from about $4 \times 10^{-5}$ to
# about $2 \times 10^{-9}$ (check:
# `D.alpha_bar_from_betas(D.linear_betas(2000))[-1]`). This is why $\beta$ ranges are tied to $T$.
# </details>
#
# **2. Where does the face vanish?** On the slider, find the $t$ at which you can no longer tell
# there is a face, for each of the three schedules. Then read $\log\mathrm{SNR}$ at those three
# $t$ off the curves in section 3. What do you notice?
#
# <details><summary>Answer</summary>
#
# The three $t$ differ: the linear schedule loses the face first, scaled-linear later, and the
# cosine schedule keeps it longest. But the three $\log\mathrm{SNR}$ values are close to each other,
# and with one fixed $\epsilon$ they have to be: two schedules at the same $\bar\alpha$ show exactly
# the same picture. Visibility is a function of the signal-to-noise ratio, not of the step index:
# a schedule is just a choice of how to walk through SNR values. The cell below takes one level,
# $\log\mathrm{SNR} = -3$, and prints the first step at which each schedule reaches it: compare
# with your three $t$.
# </details>

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
reaches = {name: int((torch.log(D.snr(ab)) < -3).nonzero()[0]) for name, ab in schedules.items()}
for name, t in reaches.items():
    print(f"{name:<14} reaches log SNR = -3 at t = {t}")
assert reaches["linear"] < reaches["scaled_linear"] < reaches["cosine"]
print("the cosine schedule gets there last, then scaled-linear, then linear:", True)

# %% [markdown] slideshow={"slide_type": "-"}
# **3. A brutal schedule.** Set `betas = torch.full((10,), 0.5, dtype=torch.float64)` (ten steps
# that each add as much noise as they keep) and rerun the check of section 2 on it (you will need
# `show_at = [0, 3, 9]`). Does the closed form still hold?
#
# <details><summary>Answer</summary>
#
# Yes. The derivation never used small $\beta$: composing Gaussian steps gives a Gaussian with
# coefficient $\sqrt{\bar\alpha_t}$ and variance $1 - \bar\alpha_t$ for any sequence of $\beta_t$ in
# $(0, 1)$. Here $\bar\alpha_9 = 0.5^{10} \approx 0.001$. Small steps matter for the *reverse*
# process, where each step is only approximately Gaussian.
# </details>

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Recap
#
# Three questions on this notebook. Answer them in the cell after the questions (a letter, or a
# number), then run it: each answer is checked and explained.

# %% slideshow={"slide_type": "-"}
from nbhelpers.exercises import RECAP_01

RECAP_01

# %% slideshow={"slide_type": "-"}
# NBVAL_CHECK_OUTPUT
from nbhelpers.exercises import RECAP_01

### BEGIN SOLUTION
answer_1 = "b"
answer_2 = 0.5
answer_3 = "b"
### END SOLUTION
RECAP_01.check({1: answer_1, 2: answer_2, 3: answer_3})
