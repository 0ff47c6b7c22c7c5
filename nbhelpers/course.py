"""The workshop's two paths: a one-day path of at most six hours, and the extension.

One list says which notebook belongs where and how long each section takes to *teach* (a plan:
talking through the prose, the exercise, the room's questions); the time each notebook takes to
*run* is measured by ``bench/notebooks.py``, which writes both into ``docs/teaching.md``.
``tests/test_course.py`` holds the notebooks to it: every notebook in exactly one place, the
one-day path within :data:`CONTACT_LIMIT` minutes, and no one-day notebook leaning on a notebook
outside the path (a pointer to the extension is written "extension notebook NN").
"""

from __future__ import annotations

from dataclasses import dataclass

#: minutes of contact time a one-day workshop has (breaks not counted)
CONTACT_LIMIT = 360


@dataclass(frozen=True)
class Lesson:
    """One notebook of a path: its file name (without ``.ipynb``) and its sections' minutes."""

    notebook: str
    title: str
    sections: tuple[tuple[str, int], ...]

    @property
    def number(self) -> str:
        return self.notebook.split("_", 1)[0]

    @property
    def minutes(self) -> int:
        return sum(m for _, m in self.sections)


#: done before the day (the evening before, or in the first minutes of the room's setup)
BEFORE = (
    Lesson("00_setup_check", "Setup check", (("the report and the slider", 10),)),
)

#: the one-day path, in teaching order
ONE_DAY = (
    Lesson("01_forward_diffusion", "Forward diffusion", (
        ("1-2 noise step by step, the closed form; exercise: q_sample", 15),
        ("3 three schedules, the SNR, Lin et al.'s fix", 10),
        ("4-5 a photograph, SD's schedule and where its sampler starts", 5),
        ("6 the posterior (exercise: posterior_mean), DDPM and DDIM", 15),
        ("recap", 5),
    )),
    Lesson("02_score_and_bayes", "The score and the Bayes split", (
        ("1 the score and Tweedie's formula; exercise: score_from_eps", 12),
        ("2 the Bayes split", 8),
        ("3 scaling the classifier term; exercise: conditional_score", 10),
        ("4 the convention for s, what a sampler draws", 10),
        ("recap", 5),
    )),
    Lesson("03_classifier_vs_free_guidance", "Classifier guidance against classifier-free", (
        ("1 classifier guidance: two networks; exercise: the classifier shift", 15),
        ("2-3 classifier-free guidance (exercise: the CFG combine), side by side", 15),
        ("4 fidelity against diversity", 10),
        ("5 guided sampling is not sampling the tilted density", 10),
        ("recap", 5),
    )),
    Lesson("04_guidance_in_stable_diffusion", "Guidance inside Stable Diffusion", (
        ("1 the loop, line by line, checked", 15),
        ("exercise: one step of the SD loop with CFG", 10),
        ("2 three predictions step by step", 5),
        ("3 sliders for s, and a sweep", 10),
        ("Try it", 5),
        ("recap", 5),
    )),
    Lesson("05_textual_inversion", "Textual inversion: a new word for a style", (
        ("1 one new row in the embedding table", 10),
        ("exercise: the textual-inversion loss", 10),
        ("2 preparing the images, framing", 10),
        ("3 training <mosaic>", 10),
        ("4 using the word: with and without, where the vector went, scales", 10),
        ("recap", 5),
    )),
    Lesson("06_textual_inversion_on_your_pictures", "Textual inversion on your own pictures", (
        ("1 your folder: sizes, captions, what a CPU can learn", 10),
        ("2-3 framing, templates", 10),
        ("exercise: filling a template", 5),
        ("4 training, where the vector went", 10),
        ("5 using the word: s = 7 and 14, a sweep", 5),
        ("6-7 saving and loading (the A1111 word is the file name), the command line", 10),
        ("recap", 5),
    )),
)

#: the extension: a second day, or take-home reading, in suggested order
EXTENSION = (
    Lesson("04b_measuring_guidance", "Measuring guidance: adherence, diversity, variants", (
        ("1 adherence, diversity and saturation; where the subject appears; C4, C5", 20),
        ("why a large s saturates, tested", 10),
        ("2 variants: negative prompt, rescale, interval", 10),
        ("Try it and recap", 5),
    )),
    Lesson("05b_textual_inversion_claims", "Textual inversion: the claims measured", (
        ("measuring a recipe over training runs; the baselines", 10),
        ("1 where the search starts", 15),
        ("2 one vector or sixteen (C3)", 10),
        ("3 s = 7 or 14 with the learned word (C4)", 10),
        ("4 how many images (C1)", 10),
    )),
    Lesson("07_textual_inversion_against_bias", "Textual inversion against a biased word", (
        ("1-2 the bias against the captions' own mix, the overwrite", 25),
        ("3 the mix over training runs at s = 1, 3, 7.5", 25),
        ("4 compute; what it fixes and what it does not", 10),
    )),
)


def one_day_minutes() -> int:
    """Contact minutes of the one-day path (the setup check is done before the day)."""
    return sum(lesson.minutes for lesson in ONE_DAY)


def lesson(notebook: str) -> Lesson:
    """The lesson of a notebook file name (with or without ``.ipynb``)."""
    stem = notebook.removesuffix(".ipynb")
    for item in BEFORE + ONE_DAY + EXTENSION:
        if item.notebook == stem:
            return item
    raise KeyError(f"notebook {notebook!r} is in no path of nbhelpers.course; add it to "
                   "ONE_DAY or EXTENSION")
