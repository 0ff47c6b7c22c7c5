"""Notebook 06's exercise (filling a prompt template) and its recap.

The reference must be the trainer's own template filling; each named mistake gets its own hint;
nonsense (a stub, an exception, a non-string, a non-callable) gets a hint, never a traceback.
"""

from __future__ import annotations

import numpy as np
import pytest

from nbhelpers.exercises import RECAP_06, check_fill_template
from nbhelpers.exercises.own_pictures import FILL_TEMPLATE, _cases, fill_template_reference
from nbhelpers.ti.captions import draw_prompts, fill_template, load_templates


def tidy_solution(template, token, caption):
    """What a learner writes: the notebook's solution."""
    text = template.replace("[name]", token).replace("[filewords]", caption)
    if not caption:
        text = " ".join(text.split())
        text = text.replace(" ,", ",").replace(",,", ",")
        text = text.strip(" ,")
    return text


def test_reference_is_the_trainers_template_filling():
    """The reference gives the prompts draw_prompts builds for a training step."""
    templates = load_templates("style")
    captions = ["a fox in the snow", "", "two boats, a harbour", ""] * 5
    drawn = draw_prompts(captions, templates, "<my-style>", np.random.default_rng(3))
    picks = np.random.default_rng(3).integers(len(templates), size=len(captions)).tolist()
    assert drawn == [fill_template_reference(templates[k], "<my-style>", c)
                     for k, c in zip(picks, captions, strict=True)]
    for case in _cases():
        assert fill_template_reference(**case) == fill_template(
            case["template"], case["token"], case["caption"])


def test_cases_cover_empty_captions_and_tags_in_the_middle():
    cases = _cases()
    assert any(c["caption"] == "" for c in cases) and any(c["caption"] for c in cases)
    empty_outputs = [fill_template_reference(**c) for c in cases if not c["caption"]]
    assert any(c["template"].startswith("[filewords]") for c in cases)
    assert all("  " not in out and ", ," not in out for out in empty_outputs)


def test_the_solution_passes():
    verdict = check_fill_template(tidy_solution)
    assert verdict.ok and str(verdict).startswith("correct: "), verdict


def test_the_package_function_passes():
    assert check_fill_template(fill_template_reference).ok


@pytest.mark.parametrize("wrong, words", [
    (lambda template, token, caption: template.replace("[name]", token),
     "still contains a tag"),
    (lambda template, token, caption: tidy_solution(template, token.strip("<>"), caption),
     "angle brackets"),
    (lambda template, token, caption: tidy_solution(template, caption, token), "swapped"),
    (lambda template, token, caption:
     template.replace("[name]", caption).replace("[filewords]", token), "swapped"),
    (lambda template, token, caption:
     template.replace("[name]", token).replace("[filewords]", caption),
     "tidy the result when the caption is empty"),
    (lambda template, token, caption:
     template.replace("[name]", token).replace("[filewords]", caption).strip(),
     "tidy the result when the caption is empty"),
])
def test_each_named_mistake_gets_its_hint(wrong, words):
    verdict = check_fill_template(wrong)
    assert not verdict.ok and words in verdict.message, verdict
    assert str(verdict).startswith("not yet: ")


def test_an_other_mistake_shows_the_case():
    verdict = check_fill_template(lambda template, token, caption: tidy_solution(
        template, token, caption).upper())
    assert not verdict.ok and "expected" in verdict.message and "template" in verdict.message


def _stub(template, token, caption):
    raise NotImplementedError("replace [name] by the token and [filewords] by the caption")


def _raises(template, token, caption):
    return template["name"]


@pytest.mark.parametrize("fn, words", [
    (_stub, "not written yet. Hint: replace [name] by the token"),
    (_raises, "raised TypeError"),
    (lambda template, token, caption: None, "did you forget `return`"),
    (lambda template, token, caption: [template], "a string; it returned list"),
    (lambda template, token, caption: float("nan"), "a string; it returned float"),
    (lambda template, token: template, "could not be called"),
    ("fill_template", "pass your function itself"),
    (None, "pass your function itself"),
])
def test_nonsense_gets_a_hint_not_a_traceback(fn, words):
    verdict = check_fill_template(fn)
    assert not verdict.ok and words in verdict.message, verdict
    assert "Traceback" not in verdict.message


def test_exercise_names_the_function():
    assert FILL_TEMPLATE.name == "fill_template"


def test_recap_right_wrong_and_unanswered():
    right = {1: "a", 2: "b", 3: 1024}
    assert RECAP_06.check(right).ok
    assert "3 of 3 right" in RECAP_06.check(right).message
    wrong = RECAP_06.check({1: "b", 2: "b", 3: 1024})
    assert not wrong.ok and "not quite" in wrong.message
    assert RECAP_06.questions[0].why in wrong.message
    number = RECAP_06.check({1: "a", 2: "b", 3: 768})
    assert not number.ok and RECAP_06.questions[2].why in number.message
    unanswered = RECAP_06.check({1: None, 2: None, 3: None})
    assert not unanswered.ok and "not answered yet" in unanswered.message
    assert len(RECAP_06.questions) == 3 and "Recap" in RECAP_06._repr_markdown_()
