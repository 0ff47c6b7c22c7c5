"""Notebook 06's exercise: filling a prompt template as the trainer does, and the recap.

``fill_template(template, token, caption)`` puts the new word where ``[name]`` stands and the
picture's caption where ``[filewords]`` stands (AUTOMATIC1111's template syntax). When the
caption is empty the tag vanishes, and the spaces and commas it leaves are tidied: runs of
spaces become one, no space before a comma, repeated commas merge, and commas or spaces at
either end go. The reference is the package's own :func:`nbhelpers.ti.captions.fill_template`,
the function :func:`~nbhelpers.ti.captions.draw_prompts` calls for every training prompt.

The results are strings, so the comparison is exact and the mistakes are recognised by what the
learner's prompt looks like (a tag still in it, the token without its brackets, the caption
where the token belongs, ``", ,"`` or double spaces left by an empty caption): each
:class:`~nbhelpers.exercises.core.WrongAnswer` here computes a *test* ``(got, case) -> bool``
rather than a value.
"""

from __future__ import annotations

import torch

from .core import Exercise, Verdict, WrongAnswer, _Refused, call_learner, seeded
from .recap import Question, Recap

__all__ = ["check_fill_template", "fill_template_reference", "RECAP_06"]


def fill_template_reference(template: str, token: str, caption: str) -> str:
    """The package's own template filling (what every training prompt goes through)."""
    from nbhelpers.ti.captions import fill_template

    return fill_template(template, token, caption)


#: templates the cases draw from: tags first, last and in the middle, as in 06's template file
_TEMPLATES = (
    "a painting of [filewords], in the style of [name]",
    "[filewords], [name] style",
    "a picture of [filewords] by [name]",
    "[filewords], art by [name]",
    "a picture in the style of [name], [filewords]",
    "[name], [filewords], oil on canvas",
    "a photo of a [name]",
)
_TOKENS = ("<my-style>", "<watercolour-fox>", "<grandmas-quilts>")
_CAPTIONS = ("a fox in the snow", "a lighthouse at dusk", "two boats, a harbour")


def _cases(seed: int = 106) -> list[dict]:
    """Every template once with a caption and once with an empty one, tokens drawn at random."""
    g = seeded(seed)
    out = []
    for empty in (False, True):
        for template in _TEMPLATES:
            token = _TOKENS[_randint(g, len(_TOKENS))]
            caption = "" if empty else _CAPTIONS[_randint(g, len(_CAPTIONS))]
            out.append(dict(template=template, token=token, caption=caption))
    return out


def _randint(g: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (1,), generator=g))


def _swapped_tags(template: str) -> str:
    return (template.replace("[name]", "\0").replace("[filewords]", "[name]")
            .replace("\0", "[filewords]"))


def _is_swapped(got: str, template: str, token: str, caption: str) -> bool:
    if not caption:
        return False                  # the non-empty cases tell
    return got == fill_template_reference(_swapped_tags(template), caption, token) or (
        token not in got and caption in got and got.count(caption) > template.count("[filewords]"))


def _untidy(got: str, template: str, token: str, caption: str) -> bool:
    return not caption and ("  " in got or ", ," in got or ",," in got or " ," in got
                            or got != got.strip(" ,"))


_MISTAKES = (
    WrongAnswer("a tag left in the prompt",
                lambda got, template, token, caption: "[filewords]" in got or "[name]" in got,
                "your prompt still contains a tag: replace *both* [name] (by the token) and "
                "[filewords] (by the caption), even when the caption is empty"),
    WrongAnswer("the token without its angle brackets",
                lambda got, template, token, caption: token not in got
                and token.strip("<>") in got,
                "the token goes in whole, angle brackets included ('<my-style>', not "
                "'my-style'): the brackets are part of the new word, so it cannot collide with "
                "a word the model already knows"),
    WrongAnswer("token and caption swapped", _is_swapped,
                "the token and the caption are swapped: [name] is the new word (the token), "
                "[filewords] is what the picture shows (the caption)"),
    WrongAnswer("an empty caption's spaces and commas left", _untidy,
                "with an empty caption the tag vanishes but its neighbours stay: tidy the "
                "result when the caption is empty (runs of spaces to one, no space before a "
                "comma, ', ,' to ',', and no comma or space at either end)"),
)

FILL_TEMPLATE = Exercise(
    name="fill_template", reference=fill_template_reference, cases=_cases, wrong=_MISTAKES,
    done="[name] becomes the token, [filewords] the caption, and an empty caption leaves a "
         "tidy prompt: the prompts the trainer draws (nbhelpers.ti.captions.draw_prompts)")


def _as_prompt(value, name: str) -> str:
    if not isinstance(value, str):
        what = "None (did you forget `return`?)" if value is None else type(value).__name__
        raise _Refused(f"`{name}` should return the filled-in prompt, a string; it returned "
                       f"{what}")
    return value


def check_strings(fn, ex: Exercise) -> Verdict:
    """:func:`~nbhelpers.exercises.core.check` for functions that return strings: exact
    comparison on every case, then the first mistake whose test fits a wrong case."""
    cases = list(ex.cases())
    wrong_cases = []
    try:
        for case in cases:
            got = _as_prompt(call_learner(fn, ex.name, dict(case)), ex.name)
            expected = ex.reference(**case)
            if got != expected:
                wrong_cases.append((case, got, expected))
    except _Refused as refused:
        return Verdict(False, str(refused))
    if not wrong_cases:
        return Verdict(True, ex.done)
    for mistake in ex.wrong:
        if any(mistake.compute(got, **case) for case, got, _ in wrong_cases):
            return Verdict(False, mistake.hint)
    case, got, expected = wrong_cases[0]
    return Verdict(False, f"for template {case['template']!r}, token {case['token']!r} and "
                          f"caption {case['caption']!r} you returned {got!r}; expected "
                          f"{expected!r} ({len(wrong_cases)} of {len(cases)} cases differ)")


def check_fill_template(fill_template) -> Verdict:
    """Check the learner's ``fill_template(template, token, caption)`` against the trainer's."""
    return check_strings(fill_template, FILL_TEMPLATE)


RECAP_06 = Recap("06 · Textual inversion on your own pictures", (
    Question("Your pictures are watercolours; one shows a fox in the snow. Which caption helps "
             "the new word learn the watercolour style?",
             choices=("a fox in the snow", "a fox in the snow, watercolour",
                      "watercolour painting"),
             answer="a",
             why="a caption says what is in the picture and leaves the style out: whatever the "
                 "caption does not explain is what the new word has to learn. Name the style "
                 "in the caption and the caption's words carry it instead"),
    Question("A wide picture has its subject at the right-hand end. Which framing keeps the "
             "subject in the square training image?",
             choices=("center: the middle square", "focal: the square with the most edges and "
                      "colour contrast", "any: every framing keeps the whole picture"),
             answer="b",
             why="the centre crop cuts the ends of the long side, where the subject is; focal "
                 "moves the square to the detail (buckets, which keeps the whole picture in a "
                 "wider training shape, would keep it too)"),
    Question("An SD 1.x embedding holds rows of 768 numbers. How wide is a row of SD 2.x's text "
             "encoder (OpenCLIP ViT-H), the reason the file cannot be used there?",
             answer=1024, tolerance=0.5,
             why="SD 2.x has another text encoder, 1024 wide with its own vocabulary: a vector "
                 "learned in SD 1.x's 768-wide space has no meaning there (not even the right "
                 "length), so the word has to be trained again on SD 2.x"),
))
