"""Notebook 05's exercise: the textual-inversion loss, with only the new row trainable.

``ti_loss(table, v, ids, new_id, encoder, unet, z0, eps, alpha_bar_t)`` is steps 2 to 5 of the
training step that ``nbhelpers.ti.train._micro_batch_loss`` takes: look the token ids up in the
frozen embedding table, except that positions holding ``new_id`` get the trainable vector ``v``
(what :class:`nbhelpers.ti.rows.TrainableRows` does); run the text encoder on those rows; noise
the latents in closed form, ``z_t = sqrt(ab) z0 + sqrt(1 - ab) eps``; return the mean squared
error between the UNet's noise prediction and ``eps``.

The check hands the learner a ``table`` that requires gradients, as a real embedding weight does,
and small seeded stand-ins for the encoder and the UNet. It compares the loss with the reference
(:func:`nbhelpers.exercises.core.check`, which names the common mistakes by their values), then
calls ``backward()`` on the learner's loss: the gradient must reach ``v``, equal the reference's,
and leave ``table.grad`` empty, since only the new row is trained.
"""

from __future__ import annotations

import torch

from .core import Exercise, Verdict, WrongAnswer, _Refused, as_tensor, call_learner, check, seeded
from .recap import Question, Recap

__all__ = ["check_ti_loss", "RECAP_05", "ti_loss_reference", "rows_with_new_vector"]

_WIDTH, _VOCAB, _LENGTH, _LATENT = 6, 10, 5, 4   # the stand-in model's sizes


def rows_with_new_vector(table: torch.Tensor, v: torch.Tensor, ids: torch.Tensor,
                         new_id: int) -> torch.Tensor:
    """``table[ids]`` from the frozen table, with ``v`` at the positions holding ``new_id``."""
    hit = (ids == new_id)[..., None]                       # (B, L, 1)
    return torch.where(hit, v, table.detach()[ids])         # gradient reaches v only


def ti_loss_reference(table, v, ids, new_id, encoder, unet, z0, eps, alpha_bar_t):
    """The loss of one textual-inversion step: ``mean((unet(z_t, encoder(rows)) - eps)^2)``."""
    cond = encoder(rows_with_new_vector(table, v, ids, new_id))
    z_t = alpha_bar_t.sqrt() * z0 + (1 - alpha_bar_t).sqrt() * eps
    return ((unet(z_t, cond) - eps) ** 2).mean()


class _Linear:
    """A seeded stand-in: ``tanh`` of linear maps (a tiny text encoder or UNet)."""

    def __init__(self, seed: int, *shapes: tuple[int, int]) -> None:
        g = seeded(seed)
        self.weights = [torch.randn(*s, generator=g, dtype=torch.float64) / s[0] ** 0.5
                        for s in shapes]


class _Encoder(_Linear):
    """``rows (B, L, W) -> cond (B, W)``: each position mixed, then pooled (order matters)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed, (_WIDTH, _WIDTH), (_LENGTH, _WIDTH))

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        mix, pos = self.weights
        return torch.tanh(rows @ mix + pos).mean(dim=-2)


class _UNet(_Linear):
    """``(z_t (B, Z), cond (B, W)) -> predicted noise (B, Z)``."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed, (_LATENT, _LATENT), (_WIDTH, _LATENT))

    def __call__(self, z_t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        a, b = self.weights
        return 2 * torch.tanh(z_t @ a + 2 * cond @ b)


def _cases(seed: int = 105) -> list[dict]:
    """Three cases; each table row of ``new_id`` is its init word's row, ``v`` has moved away."""
    g = seeded(seed)
    out = []
    for i, batch in enumerate((3, 2, 4)):
        table = torch.randn(_VOCAB, _WIDTH, generator=g, dtype=torch.float64)
        new_id = _VOCAB - 1 - i
        ids = torch.randint(0, _VOCAB - 3, (batch, _LENGTH), generator=g)
        ids[:, 1 + i % 3] = new_id                           # the new word, once per prompt
        v = table[new_id] + torch.randn(_WIDTH, generator=g, dtype=torch.float64)
        out.append(dict(table=table.requires_grad_(True), v=v.requires_grad_(True), ids=ids,
                        new_id=new_id, encoder=_Encoder(seed + i), unet=_UNet(seed + 10 + i),
                        z0=torch.randn(batch, _LATENT, generator=g, dtype=torch.float64),
                        eps=torch.randn(batch, _LATENT, generator=g, dtype=torch.float64),
                        alpha_bar_t=torch.rand(batch, 1, generator=g, dtype=torch.float64)
                        * 0.9 + 0.05))
    return out


def _variant(target="eps", signal_sqrt=True, noise_sqrt=True, use_v=True):
    """A loss with one of the common mistakes (for the wrong answers)."""
    def loss(table, v, ids, new_id, encoder, unet, z0, eps, alpha_bar_t):
        rows = rows_with_new_vector(table, v if use_v else table[new_id], ids, new_id)
        a, b = alpha_bar_t, 1 - alpha_bar_t
        z_t = (a.sqrt() if signal_sqrt else a) * z0 + (b.sqrt() if noise_sqrt else b) * eps
        return ((unet(z_t, encoder(rows)) - (eps if target == "eps" else z0)) ** 2).mean()
    return loss


TI_LOSS = Exercise(
    name="ti_loss", reference=ti_loss_reference, cases=_cases,
    done="the loss is the model's own noise-prediction error with v spliced in, and backward() "
         "reaches v alone",
    atol=1e-8, rtol=1e-6,
    wrong=(
        WrongAnswer("x0 as the target", _variant(target="z0"),
                    "the model predicts the noise: compare unet(z_t, cond) with eps, not with "
                    "the clean latents z0"),
        WrongAnswer("no square roots", _variant(signal_sqrt=False, noise_sqrt=False),
                    "alpha_bar_t and 1 - alpha_bar_t are variances; z_t = sqrt(alpha_bar_t) z0 "
                    "+ sqrt(1 - alpha_bar_t) eps uses their square roots"),
        WrongAnswer("no square root on the noise", _variant(noise_sqrt=False),
                    "the noise's coefficient in z_t is sqrt(1 - alpha_bar_t): a square root is "
                    "missing"),
        WrongAnswer("no square root on the signal", _variant(signal_sqrt=False),
                    "the coefficient of z0 in z_t is sqrt(alpha_bar_t): a square root is "
                    "missing"),
        WrongAnswer("the table's row for new_id", _variant(use_v=False),
                    "your loss does not depend on v: positions holding new_id must get the "
                    "trainable vector v, not the table's row (build the rows with "
                    "torch.where((ids == new_id)[..., None], v, table.detach()[ids]))"),
    ))

_LEAK = ("the loss is right, but backward() put a gradient into the whole embedding table: "
         "detach the table (table.detach()[ids]) and build the rows with torch.where, so that "
         "only v may receive gradient")
_NO_GRAD = ("the loss is right, but it carries no gradient: keep v in the computation as a "
            "tensor (no v.detach(), no .item(), no numpy, no torch.no_grad()) so that "
            "backward() can reach v")
_V_CUT = ("the loss is right, but backward() gives v no gradient: do not detach v or copy it "
          "into the table under torch.no_grad(); splice it in with torch.where")


def _gradient_verdict(fn) -> Verdict | None:
    """``None`` when the learner's loss sends the reference's gradient to ``v`` and none to
    ``table``; otherwise the verdict that says what is wrong."""
    for mine, theirs in zip(_cases(), _cases(), strict=True):
        ti_loss_reference(**mine).backward()
        try:
            out = call_learner(fn, TI_LOSS.name, theirs)
            as_tensor(out, torch.zeros((), dtype=torch.float64), TI_LOSS.name)
        except _Refused as refused:
            return Verdict(False, str(refused))
        if not isinstance(out, torch.Tensor) or out.grad_fn is None:
            return Verdict(False, _NO_GRAD)
        try:
            out.backward()
        except Exception as exc:  # noqa: BLE001 - the learner's graph may fail anywhere
            return Verdict(False, f"backward() through your loss failed ({type(exc).__name__}); "
                                  "build it from v with torch operations only")
        leak = theirs["table"].grad
        if leak is not None and bool(leak.abs().max() > 0):
            return Verdict(False, _LEAK)
        got, want = theirs["v"].grad, mine["v"].grad
        if got is None or not bool(got.abs().max() > 0):
            return Verdict(False, _V_CUT)
        if not torch.allclose(got, want, atol=1e-8, rtol=1e-6):
            return Verdict(False, f"the loss is right but v.grad differs from the reference's by "
                                  f"up to {float((got - want).abs().max()):.3g}: is v used "
                                  "anywhere besides the positions holding new_id?")
    return None


def check_ti_loss(ti_loss) -> Verdict:
    """Check the learner's ``ti_loss(table, v, ids, new_id, encoder, unet, z0, eps,
    alpha_bar_t)``: its value, then where ``backward()`` sends the gradient."""
    verdict = check(ti_loss, TI_LOSS)
    if not verdict.ok:
        return verdict
    gradient = _gradient_verdict(ti_loss)
    return verdict if gradient is None else gradient


RECAP_05 = Recap("05 · Textual inversion", (
    Question("What does textual inversion train?",
             choices=("the UNet's cross-attention weights",
                      "the new token's row (or rows) of the text encoder's embedding table",
                      "the whole text encoder",
                      "the VAE's decoder"),
             answer="b",
             why="every weight of the UNet, the text encoder and the VAE stays frozen; the "
                 "gradient reaches only the new row, which is why the result is a file of a few "
                 "kilobytes"),
    Question("The loss of a run hardly falls. Why?",
             choices=("the learning rate is too small",
                      "most of the noise-prediction error is noise that no word can explain, and "
                      "each step draws new timesteps and noise",
                      "the run failed: the word was not learned"),
             answer="b",
             why="the frozen model already predicts most of the noise it can; the word can only "
                 "remove the part of the error that depends on the style. Judge the word by its "
                 "pictures and the evaluator's share, not by the loss"),
    Question("How many kilobytes does one learned vector for SD 1.4 take, stored as 32-bit "
             "floats? (1 kB = 1000 bytes)",
             answer=3.072, tolerance=0.1,
             why="SD 1.4's text encoder is 768 wide: 768 numbers of 4 bytes are 3072 bytes, "
                 "about 3 kB (the toy model's 128-wide row is 512 bytes)"),
))
