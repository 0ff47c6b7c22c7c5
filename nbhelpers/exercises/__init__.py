"""Exercises learners write, and the checks that answer them (one module per lesson).

In a lesson the learner writes a function (in the instructor's copy the body stands between
nbgrader's ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the learner's copy, made by
``make learner-copies``, has a stub that raises ``NotImplementedError`` with a hint), then calls
its check, e.g. ``check_q_sample(q_sample)``. Each check answers with a
:class:`~nbhelpers.exercises.core.Verdict`: correct, a named common mistake, or how far off.
Each lesson ends with a :class:`~nbhelpers.exercises.recap.Recap` of three questions.

* :mod:`~nbhelpers.exercises.core` runs the learner's function beside the reference and
  recognises wrong answers; :mod:`~nbhelpers.exercises.recap` holds questions and recaps;
* one module per lesson of the one-day path (:mod:`nbhelpers.course`):
  :mod:`~nbhelpers.exercises.forward` (01), :mod:`~nbhelpers.exercises.score` (02),
  :mod:`~nbhelpers.exercises.cfg` (03), :mod:`~nbhelpers.exercises.sd_loop` (04),
  :mod:`~nbhelpers.exercises.ti_loss` (05), :mod:`~nbhelpers.exercises.own_pictures` (06).
"""

from __future__ import annotations

from .cfg import *  # noqa: F403
from .core import Exercise, Verdict, WrongAnswer, check
from .forward import *  # noqa: F403
from .own_pictures import *  # noqa: F403
from .recap import Question, Recap
from .score import *  # noqa: F403
from .sd_loop import *  # noqa: F403
from .ti_loss import *  # noqa: F403

__all__ = ["Exercise", "Question", "Recap", "Verdict", "WrongAnswer", "check"]
for _module in (cfg, forward, own_pictures, score, sd_loop, ti_loss):  # noqa: F405
    __all__ += list(_module.__all__)
