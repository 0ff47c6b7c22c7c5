"""docs/glossary.md, the learners' glossary, and the notation table of the package's docstring
(``nbhelpers.__doc__``) name the same symbols, so the two cannot drift apart; and the learners'
pages are linked from the README's first screen."""

from __future__ import annotations

import re
from pathlib import Path

import nbhelpers

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"
LEARNER_PAGES = ("docs/learners.md", "docs/preinstall.md", "docs/glossary.md")


def docstring_symbols(doc: str) -> list[str]:
    """The symbols of the docstring's notation table: each row's first column, and the
    symbols a row defines in passing ("``x0``  clean sample; ``x_t`` noisy sample")."""
    lines = doc.splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"=+( +=+)+", line.strip())]
    assert len(rules) >= 3, "the docstring has no notation table (three ===== rules)"
    body = lines[rules[1] + 1:rules[2]]
    symbols = []
    for line in body:
        first = re.match(r"``([^`]+)``\s", line)
        if first:  # a row (continuation lines start with spaces)
            symbols.append(first.group(1))
            symbols += re.findall(r";\s+``([A-Za-z_][A-Za-z0-9_]*)``\s+\w", line)
    return symbols


def glossary_symbols(text: str) -> set[str]:
    """The symbols in the first column of the glossary's notation table."""
    return set(re.findall(r"^\| `([^`]+)` \|", text, re.M))


def test_docstring_table_is_parsed():
    symbols = docstring_symbols(nbhelpers.__doc__)
    assert {"T", "t", "beta", "alpha", "alpha_bar", "sigma", "snr", "x0", "x_t", "eps",
            "eps_hat", "x0_hat", "v", "score", "s"} <= set(symbols), symbols


def test_every_symbol_of_the_docstring_is_in_the_glossary():
    missing = [s for s in docstring_symbols(nbhelpers.__doc__)
               if s not in glossary_symbols(GLOSSARY.read_text())]
    assert not missing, (f"docs/glossary.md's notation table has no row for {missing}: the "
                         "docstring of nbhelpers/__init__.py defines them")


def test_glossary_has_no_symbol_the_docstring_lacks():
    extra = glossary_symbols(GLOSSARY.read_text()) - set(docstring_symbols(nbhelpers.__doc__))
    assert not extra, f"add {sorted(extra)} to the notation table of nbhelpers/__init__.py"


def test_each_symbol_and_term_says_where_it_is_taught():
    text = GLOSSARY.read_text()
    rows = [r for r in text.splitlines() if re.match(r"^\| `", r)]
    for row in rows:
        assert re.search(r"\| (0\d|not in a lesson)[^|]*\|$", row), row
    terms = re.findall(r"^\*\*(.+?)\*\* \((.*?)\)\.", text, re.M)
    assert len(terms) >= 25
    for term, where in terms:
        assert re.match(r"0\d|see ", where) or "notation" in where, (term, where)
    names = " ".join(t.lower() for t, _ in terms)
    for term in ("tweedie", "cfg", "classifier guidance", "tilted density", "ddpm", "ddim",
                 "eta", "latent", "vae scaling factor", "unet", "text encoder", "token",
                 "embedding row", "textual inversion", "init word", "template", "[name]",
                 "[filewords]", "framing", "evaluator", "wilson interval", "profile"):
        assert term in names, f"docs/glossary.md has no entry for {term!r}"


def test_learner_pages_are_linked_from_the_readme_first_screen():
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    for page in (*LEARNER_PAGES, "docs/teaching.md"):
        assert (ROOT / page).exists(), page
        assert f"]({page})" in first_screen, f"README's first screen does not link {page}"
