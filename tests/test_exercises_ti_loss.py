"""Notebook 05's exercise: the textual-inversion loss check and the recap.

The reference is held to the package's own pieces: the rows to ``TrainableRows`` (its output
and where its gradient goes), the noised latents to ``nbhelpers.diffusion.q_sample``, the loss
to ``mse_loss`` as ``_micro_batch_loss`` takes it. Then each named mistake must get its own hint,
and nonsense a hint rather than a traceback.
"""

from __future__ import annotations

import torch
from torch import nn

from nbhelpers.diffusion import q_sample
from nbhelpers.exercises import RECAP_05, check_ti_loss
from nbhelpers.exercises.ti_loss import _cases, rows_with_new_vector, ti_loss_reference
from nbhelpers.ti.rows import TrainableRows


def _learner(table, v, ids, new_id, encoder, unet, z0, eps, alpha_bar_t):
    """A correct answer written another way (a mask instead of torch.where)."""
    mask = (ids == new_id).unsqueeze(-1).to(v.dtype)
    rows = mask * v + (1 - mask) * table.detach()[ids]
    z_t = torch.sqrt(alpha_bar_t) * z0 + torch.sqrt(1 - alpha_bar_t) * eps
    return nn.functional.mse_loss(unet(z_t, encoder(rows)), eps)


def _splice(table, v, ids, new_id, detach_table=True, use_v=True):
    base = table.detach() if detach_table else table
    return torch.where((ids == new_id)[..., None], v if use_v else base[new_id], base[ids])


def _loss(rows, encoder, unet, z0, eps, alpha_bar_t, target=None, sqrt=(True, True)):
    a, b = alpha_bar_t, 1 - alpha_bar_t
    z_t = (a.sqrt() if sqrt[0] else a) * z0 + (b.sqrt() if sqrt[1] else b) * eps
    return ((unet(z_t, encoder(rows)) - (eps if target is None else target)) ** 2).mean()


def test_the_rows_are_the_package_s_trainable_rows_and_only_v_gets_gradient():
    for case in _cases():
        table, v, ids, new_id = case["table"], case["v"], case["ids"], case["new_id"]
        rows = TrainableRows(nn.Embedding.from_pretrained(table.detach().clone()), [new_id],
                             v.detach()[None])
        theirs = rows(ids)
        mine = rows_with_new_vector(table, v, ids, new_id)
        torch.testing.assert_close(mine, theirs.to(mine.dtype), rtol=1e-6, atol=1e-6)
        weights = torch.randn_like(mine)
        (mine * weights).sum().backward()
        (theirs * weights.float()).sum().backward()
        assert table.grad is None
        torch.testing.assert_close(v.grad, rows.vectors.grad[0].double(), rtol=1e-5, atol=1e-5)


def test_the_reference_is_the_trainer_s_loss():
    for case in _cases():
        T = 50
        alpha_bar = torch.linspace(0.99, 0.02, T, dtype=torch.float64)
        t = torch.randint(0, T, (len(case["z0"]),))
        case["alpha_bar_t"] = alpha_bar[t][:, None]
        x_t = q_sample(case["z0"], t, alpha_bar, case["eps"])
        cond = case["encoder"](rows_with_new_vector(case["table"], case["v"], case["ids"],
                                                    case["new_id"]))
        theirs = nn.functional.mse_loss(case["unet"](x_t, cond), case["eps"])
        torch.testing.assert_close(ti_loss_reference(**case), theirs)


def test_the_reference_and_another_correct_answer_pass():
    assert check_ti_loss(ti_loss_reference).ok
    verdict = check_ti_loss(_learner)
    assert verdict.ok, verdict
    assert str(verdict).startswith("correct: ")


def _mistake(**how):
    def ti_loss(table, v, ids, new_id, encoder, unet, z0, eps, alpha_bar_t):
        rows = _splice(table, v, ids, new_id, detach_table=how.get("detach", True),
                       use_v=how.get("use_v", True))
        return _loss(rows, encoder, unet, z0, eps, alpha_bar_t,
                     target=z0 if how.get("x0") else None, sqrt=how.get("sqrt", (True, True)))
    return ti_loss


def _hint(fn) -> str:
    verdict = check_ti_loss(fn)
    assert not verdict.ok
    assert "Traceback" not in verdict.message
    return verdict.message


def test_each_named_mistake_gets_its_own_hint():
    assert "detach the table" in _hint(_mistake(detach=False))
    assert "only v may receive gradient" in _hint(_mistake(detach=False))
    assert "predicts the noise: compare" in _hint(_mistake(x0=True))
    assert "variances" in _hint(_mistake(sqrt=(False, False)))
    assert "sqrt(1 - alpha_bar_t): a square root" in _hint(_mistake(sqrt=(True, False)))
    assert "sqrt(alpha_bar_t): a square root" in _hint(_mistake(sqrt=(False, True)))
    assert "does not depend on v" in _hint(_mistake(use_v=False))


def test_a_loss_without_gradient_is_named():
    def as_float(**kw):
        return float(ti_loss_reference(**kw).detach())

    def v_detached(table, v, **kw):
        return ti_loss_reference(table, v.detach(), **kw)

    assert "carries no gradient" in _hint(as_float)
    assert "carries no gradient" in _hint(v_detached)


def test_nonsense_gets_a_hint_not_a_traceback():
    def stub(**kw):
        raise NotImplementedError("splice v into the rows, then noise and compare with eps")

    def boom(**kw):
        raise RuntimeError("shapes do not match")

    def per_element(**kw):
        return ti_loss_reference(**kw) * torch.ones(3)

    def nan(**kw):
        return ti_loss_reference(**kw) * float("nan")

    def wrong_names(a, b, c):
        return a

    assert "not written yet. Hint: splice v into the rows" in _hint(stub)
    assert "raised RuntimeError: shapes do not match" in _hint(boom)
    assert "shape (3,)" in _hint(per_element)
    assert "NaN or inf" in _hint(nan)
    assert "could not be called" in _hint(wrong_names)
    assert "pass your function itself" in _hint("ti_loss")
    assert "did you forget `return`" in _hint(lambda **kw: None)
    assert str(check_ti_loss(stub)).startswith("not yet: ")


def test_recap():
    assert RECAP_05.check({1: "b", 2: "b", 3: 3.072}).ok
    assert RECAP_05.check({1: "(B)", 2: "b", 3: 3}).ok
    wrong = RECAP_05.check({1: "a", 2: "b", 3: 3.072})
    assert not wrong.ok and "gradient reaches only the new row" in wrong.message
    assert "768 numbers of 4 bytes" in RECAP_05.check({1: "b", 2: "b", 3: 30}).message
    unanswered = RECAP_05.check({1: None, 2: None, 3: None})
    assert not unanswered.ok and unanswered.message.count("not answered yet") == 3
    assert "Recap" in RECAP_05._repr_markdown_()
