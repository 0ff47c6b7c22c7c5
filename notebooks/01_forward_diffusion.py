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
# Notation (the same everywhere in the series): $\beta_t$ is the noise added at step $t$,
# $\alpha_t = 1-\beta_t$, $\bar\alpha_t = \prod_{i \le t} \alpha_i$ is the signal kept, and
# $\epsilon \sim \mathcal N(0, I)$ is standard Gaussian noise. Steps run $t = 0, \dots, T-1$ with
# $T = 1000$, as in `diffusers`. Mind the first index: $x_0$ is the clean data, but the
# timestep $t = 0$ of a schedule is already one step of noise ($\bar\alpha_0 = 1 - \beta_0$), so
# "$t = 0$" in a panel title means one step noised; `nbhelpers` writes clean data as the
# timestep $-1$ ($\bar\alpha = 1$).

# %%
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

# %% [markdown]
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

# %%
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

# %% [markdown]
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
# This closed form is what makes training cheap: pick a random $t$, one draw of $\epsilon$, and
# you have a training pair, with no need to simulate the chain. It is `D.q_sample`.

# %%
closed = {t: D.q_sample(x0, t, alpha_bar, torch.randn(x0.shape, generator=g, dtype=x0.dtype))
          for t in show_at}
scatter_panels([closed[t] for t in show_at], [f"t = {t} (closed form)" for t in show_at],
               colors=[labels] * len(show_at));

# %% [markdown]
# ### Check: the closed form matches step-by-step noising
#
# The two rows look alike; now we measure it. For every sample we know $x_0$, so from the
# step-by-step result we can compute the *standardised residual*
# $z = (x_t - \sqrt{\bar\alpha_t} x_0) / \sqrt{1-\bar\alpha_t}$. If the closed form is right, $z$
# is standard normal: mean 0 and variance 1 in each coordinate. With $N$ samples the estimates
# carry standard errors of $1/\sqrt N$ (mean) and $\sqrt{2/N}$ (variance); we accept a deviation of
# up to 5 standard errors. We also compare the mean and variance of $x_t$ across the two methods.

# %%
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

# %% [markdown]
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

# %%
schedules = {name: D.alpha_bar_from_betas(D.make_betas(name))
             for name in ("linear", "cosine", "scaled_linear")}
schedule_curves(schedules);

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'schedule':<14}{'alpha_bar[999]':>15}{'log SNR[999]':>14}"
      f"{'t: alpha_bar<0.5':>18}{'steps with |log SNR|<4':>24}")
for name, ab in schedules.items():
    log_snr = torch.log(D.snr(ab))
    half = int((ab < 0.5).nonzero()[0])
    useful = int((log_snr.abs() < 4).sum())
    print(f"{name:<14}{ab[-1].item():>15.2e}{log_snr[-1].item():>14.2f}{half:>18d}{useful:>24d}")

# %% [markdown]
# Reading the table (these numbers are exact properties of the schedules, printed by the cell):
#
# * The **linear** schedule destroys the signal fastest: $\bar\alpha$ falls below one half
#   already at $t = 259$, and its last step sits at $\log \mathrm{SNR} = -10.12$, far below any
#   useful range. 591 of its 1000 steps have $|\log\mathrm{SNR}| < 4$.
# * The **cosine** schedule keeps half the signal until $t = 496$ and spends 835 steps in that
#   middle range; it ends at essentially pure noise ($\bar\alpha = 2.4 \times 10^{-9}$). It was
#   designed for small images, where the linear schedule wastes its last few hundred steps.
# * **Scaled-linear**, Stable Diffusion's schedule, sits between the two early on (half the signal
#   is gone at $t = 354$), has the most steps in the middle range (857), and, crucially, **never
#   reaches pure noise**: at $t = 999$, $\bar\alpha = 4.66 \times 10^{-3}$, a $\log\mathrm{SNR}$ of
#   $-5.36$.
#
# Scaled-linear is gentler than linear only *later* on: its first $\beta$ is $8.5 \times 10^{-4}$,
# more than eight times the linear schedule's $10^{-4}$, but it grows only to $0.012$ instead of
# $0.02$. Stable Diffusion denoises a $4 \times 64 \times 64$ *latent* of its autoencoder rather
# than pixels, and uses the schedule of the Latent Diffusion models it descends from.
#
# Its end has a flaw (Lin et al. 2024, *Common Diffusion Noise Schedules and Sample Steps are
# Flawed*). In **training**, the noisiest input the model ever sees, at $t = 999$, still holds a
# trace of the image: $\bar\alpha_{999} = 4.66 \times 10^{-3}$, so the mean brightness of the
# picture leaks through the noise. In **sampling**, the chain starts from pure $\mathcal N(0, I)$,
# which holds no such trace. The model learned to read the overall brightness off its input and
# is never given one, so it keeps to medium brightness: this is why SD 1.x struggles to make very
# dark or very bright images. Lin et al. fix it by rescaling the schedule to zero terminal SNR.
# Their second flaw is in the sampler: with `diffusers`' default "leading" spacing and SD's
# `steps_offset=1`, a sampler with few steps does not even start at the last training step; the
# check of section 5 prints where it starts. Keep both in mind in notebook 04.

# %% [markdown]
# ## 4. A real photograph
#
# The same closed form applies to every pixel of an image (each of the $3 \times H \times W$
# numbers gets its own $\epsilon$). Our photograph is Rear Admiral Grace Hopper, an official
# U.S. Navy portrait in the public domain, which ships with `matplotlib` as sample data, so no
# download is needed. Rows are schedules, columns are steps; the noise $\epsilon$ is the same
# everywhere, so only $\bar\alpha_t$ differs.

# %%
photo = to_tensor(example_photo(128))          # (3, 128, 128) in [-1, 1]
eps = torch.randn(photo.shape, generator=torch.Generator().manual_seed(1))
steps = [0, 100, 250, 400, 600, 999]
frames = [to_uint8(D.q_sample(photo, t, ab, eps)) for ab in schedules.values() for t in steps]
image_grid(frames, titles=[f"t = {t}" for t in steps] * 3, ncols=len(steps),
           row_labels=list(schedules));

# %% [markdown]
# ### A slider for $t$
#
# Drag $t$ and watch the three schedules side by side (left to right: linear, cosine,
# scaled-linear). The picture is computed in closed form for each position, with one fixed
# $\epsilon$, so moving back and forth is instant and always shows the same noise. Notice that the
# face disappears at a different $t$ under each schedule, but at a similar $\bar\alpha_t$ (shown
# under the image): what you can see depends on the signal-to-noise ratio, not on the step index.

# %%
forward_slider(photo, schedules, eps, value=250)

# %% [markdown]
# The slider only displays a function, `nbhelpers.widgets.forward_frame(photo, t, schedules, eps)`.
# A headless test run cannot drag a slider, so the check below tests that function: at $t = 0$ it
# must return the photograph with a trace of noise ($\bar\alpha_0 = 1 - 10^{-4}$ under the linear
# schedule, so a correlation above 0.99), and at $t = 999$ almost nothing of it (a correlation near
# zero).

# %%
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

# %% [markdown]
# ## 5. Check: our scaled-linear schedule is Stable Diffusion's, and where its sampler starts
#
# Stable Diffusion 1.x ships a scheduler configuration with `beta_schedule="scaled_linear"`,
# `beta_start=0.00085`, `beta_end=0.012` and 1000 training steps. `diffusers` turns that into
# `alphas_cumprod`. Ours is computed in float64; `diffusers` works in float32, so we allow
# $10^{-6}$. Then the sampler's timesteps: `D.inference_timesteps` against `diffusers`'
# `DDIMScheduler` configured as SD 1.4 ships it ("leading" spacing, `steps_offset=1`).

# %%
# NBVAL_CHECK_OUTPUT
from diffusers import DDIMScheduler, DDPMScheduler

alpha_bar_sd = schedules["scaled_linear"]
sd_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                             beta_start=0.00085, beta_end=0.012)
diff = (schedules["scaled_linear"] - sd_scheduler.alphas_cumprod.double()).abs().max().item()
assert diff < 1e-6, diff
print("scaled-linear alpha_bar equals diffusers' to within 1e-6:", diff < 1e-6)

# where SD's DDIM sampler starts: "leading" spacing, steps_offset=1 (SD 1.4's scheduler config)
for n_steps in (10, 20, 50):
    sd_ddim = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                            beta_start=0.00085, beta_end=0.012, steps_offset=1,
                            set_alpha_to_one=False, clip_sample=False)
    sd_ddim.set_timesteps(n_steps)
    ours = D.inference_timesteps(n_steps, spacing="leading", offset=1)
    assert sd_ddim.timesteps.tolist() == ours
    print(f"{n_steps} DDIM steps start at t = {ours[0]} (alpha_bar = {alpha_bar_sd[ours[0]]:.2e}, "
          f"not t = 999), end at t = {ours[-1]}; same timesteps as diffusers: True")

# %% [markdown]
# The first step of an $n$-step sampler is $t = T - T/n + 1$: almost one whole spacing short of
# $t = 999$ (18 timesteps for 50 steps, 98 for 10), where $\bar\alpha$ (printed) is larger
# still than at $t = 999$. So on top of the schedule's own flaw, a short sampler hands the model
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
# We do not know $x_0$, but a diffusion model predicts the noise, $\hat\epsilon(x_t, t)$, and the
# closed form of section 2 solved for $x_0$ turns that into an estimate (eq. 15):
#
# $$ \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon}{\sqrt{\bar\alpha_t}} . $$
#
# * **Ancestral sampling (DDPM).** Put $\hat x_0$ into the posterior and draw from it:
#   $x_{t-1} = \tilde\mu_t(x_t, \hat x_0) + \sqrt{\tilde\beta_t}\, z$ with $z \sim \mathcal N(0, I)$,
#   and no noise on the last step. So one step is: $\hat\epsilon \to \hat x_0 \to$ mean, plus noise
#   (`D.ddpm_step`). A sampler with fewer steps than $T$ jumps from $t$ to an earlier $t'$; the
#   same formulas hold with $\bar\alpha_{t-1}$ replaced by $\bar\alpha_{t'}$ and $\beta_t$ by the
#   effective $1 - \bar\alpha_t / \bar\alpha_{t'}$, which is what `ddpm_step` does.
# * **DDIM** (Song et al. 2021, eq. 12). Take the same $\hat x_0$ and noise it back to level $t'$,
#   re-using the predicted noise for most of the way:
#   $x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\,\hat\epsilon +
#   \sigma_t z$, with
#   $\sigma_t = \eta\,\sqrt{(1-\bar\alpha_{t'})/(1-\bar\alpha_t)}\,\sqrt{1-\bar\alpha_t/\bar\alpha_{t'}}$
#   (eq. 16). With $\eta = 0$ the step is deterministic: the same starting noise always gives the
#   same sample, which is why the sliders of notebooks 04 to 06 can move $s$ and keep the picture.
#   With $\eta = 1$, $\sigma_t^2 = \tilde\beta_t$ and the step is the DDPM step (`D.ddim_step`).
#
# Here the "model" is exact: on our 2-D world the best possible prediction,
# $\hat\epsilon = \mathbb E[\epsilon \mid x_t]$, is known in closed form (`world.eps_model`;
# notebook 02 explains why it is the right target). Both samplers, 50 steps on Stable Diffusion's
# schedule, from the same pure noise:

# %%
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

# %% [markdown]
# Both samplers turn the same cloud of noise back into six blobs. Notebook 03 uses the DDPM
# sampler with trained networks in place of the exact $\hat\epsilon$; notebooks 04 to 07 use DDIM
# with $\eta = 0$, as Stable Diffusion users mostly do.
#
# ### Check: our steps are `diffusers`' steps
#
# One step of each sampler on a random $x_t$ and a random "prediction" $\hat\epsilon$ (only the
# arithmetic is tested, so any numbers do), against `DDPMScheduler.step` and
# `DDIMScheduler.step` configured with SD's schedule, with the same noise $z$; and the exact
# identity above: DDIM with $\eta = 1$ is the DDPM step.

# %%
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

# %% [markdown]
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
# Smaller, by a lot. For small $\beta$, $\log \bar\alpha_{T-1} = \sum \log(1-\beta_t) \approx
# -\sum \beta_t$, and the sum of an evenly spaced sequence is $T \cdot (\beta_{\min} +
# \beta_{\max})/2$: about $-10.05$ for $T = 1000$ and $-20.1$ for $T = 2000$. So $\bar\alpha$ drops
# from about $4 \times 10^{-5}$ to about $2 \times 10^{-9}$ (check:
# `D.alpha_bar_from_betas(D.linear_betas(2000))[-1]`). This is why $\beta$ ranges are tied to $T$.
# </details>
#
# **2. Where does the face vanish?** On the slider, find the $t$ at which you can no longer tell
# there is a face, for each of the three schedules. Then read $\log\mathrm{SNR}$ at those three
# $t$ off the curves in section 3. What do you notice?
#
# <details><summary>Answer</summary>
#
# The three $t$ differ (the linear schedule loses the face first, scaled-linear later), but the
# three $\log\mathrm{SNR}$ values are close to each other. Visibility is a function of the
# signal-to-noise ratio, not of the step index: a schedule is just a choice of how to walk
# through SNR values.
# </details>
#
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
