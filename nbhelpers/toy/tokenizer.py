"""The tiny Stable Diffusion's tokenizer: a ``CLIPTokenizer`` built from the shapes world's words.

Stable Diffusion 1.x reads prompts with CLIP's byte-level BPE tokenizer [CLIP]: text is
lower-cased, split into words and punctuation, every word is written in a 256-character
alphabet that stands for the 256 bytes (``bytes_to_unicode``), the last character of a word
carries the end-of-word marker ``</w>``, and merges, applied in rank order, glue characters into
sub-words and words. The tiny model uses the same class (:class:`transformers.CLIPTokenizer`)
with a vocabulary made here, from the world's ``VOCABULARY`` and ``PUNCTUATION``:

=========================  ====================================================================
ids                        tokens
=========================  ====================================================================
``0 .. 255``               the 256 byte characters, as inside a word (``"r"``)
``256 .. 511``             the same with the end-of-word marker (``"r</w>"``)
``512 .. 512+M-1``         one token per merge, in merge order (``"re"``, ..., ``"red</w>"``)
last two                   ``<|startoftext|>`` (bos) and ``<|endoftext|>`` (eos, pad, unk)
=========================  ====================================================================

This is CLIP's own layout (its vocabulary also starts with the 512 characters and ends with the
two special tokens), only with a few hundred merges instead of 48,894. Because every byte is a
token, any word outside the world's vocabulary still tokenises, into characters or pieces of
known words: ``"mosaic"`` or a textual-inversion placeholder ``"<my-style>"`` never becomes
the unknown token. The merges are learned here by plain BPE [BPE] on the word list (each word
once), run until every vocabulary word is one token, and then checked by tokenising every word.

As in Stable Diffusion, prompts are padded (with ``<|endoftext|>``) or truncated to
``model_max_length = 77`` tokens, ``<|startoftext|>`` and ``<|endoftext|>`` included.

References:
    [CLIP] Radford et al. 2021, Learning Transferable Visual Models From Natural Language
           Supervision (section 2.4: lower-cased byte-pair encoding, 77-token context).
    [BPE]  Sennrich, Haddow, Birch 2016, Neural Machine Translation of Rare Words with Subword
           Units (Algorithm 1: learn merges by counting symbol pairs).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from nbhelpers.toy import world

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
#: Stable Diffusion's context length: prompts are padded or cut to this many tokens.
MODEL_MAX_LENGTH = 77


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's and CLIP's map from the 256 byte values to printable unicode characters.

    Printable ASCII and Latin-1 bytes map to themselves; the other 68 (control characters,
    space, ...) map to ``chr(256 + k)``, so that no token contains whitespace or control codes.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    k = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + k)
            k += 1
    return dict(sorted(table.items()))


def word_symbols(word: str) -> list[str]:
    """A word as the tokenizer sees it before merging: byte characters, ``</w>`` on the last.

    >>> word_symbols("red")
    ['r', 'e', 'd</w>']
    """
    if not word:
        raise ValueError("word_symbols needs a non-empty word")
    table = bytes_to_unicode()
    chars = [table[b] for b in word.encode("utf-8")]
    chars[-1] += END_OF_WORD
    return chars


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that turn each of ``words`` into a single token ([BPE] Algorithm 1).

    Each word counts once. At every step the most frequent adjacent pair of symbols (ties broken
    by the pair itself, so the result is deterministic) is merged in every word, until every
    word is one symbol.

    Returns:
        the merges in rank order, each a pair ``(left, right)``.
    """
    seqs = [word_symbols(w) for w in sorted(set(words))]
    merges: list[tuple[str, str]] = []
    while any(len(s) > 1 for s in seqs):
        counts = Counter(p for s in seqs for p in zip(s, s[1:], strict=False))
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for k, s in enumerate(seqs):
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[k] = out
    return merges


def build_vocab(words: Sequence[str] | None = None,
                ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary (token -> id) and merges of the toy tokenizer (layout in the docstring).

    Args:
        words: the words to make whole tokens; the world's ``VOCABULARY`` and ``PUNCTUATION``
            if None.
    """
    words = list(world.VOCABULARY + world.PUNCTUATION) if words is None else list(words)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + END_OF_WORD for c in chars]
    merges = learn_merges(words)
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def make_tokenizer(words: Sequence[str] | None = None):
    """A ``transformers.CLIPTokenizer`` for the shapes world, 77 tokens long like SD's.

    Returns:
        the tokenizer; save it with ``save_pretrained(folder)`` (writes ``vocab.json``,
        ``merges.txt`` and ``tokenizer.json``) and reload with
        ``CLIPTokenizer.from_pretrained(folder)``.
    """
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab(words)
    tok = CLIPTokenizer(vocab=vocab, merges=list(merges),
                        model_max_length=MODEL_MAX_LENGTH)
    _check_whole_words(tok, world.VOCABULARY + world.PUNCTUATION if words is None else words)
    return tok


def _check_whole_words(tok, words: Iterable[str]) -> None:
    for w in words:
        pieces = tok.tokenize(w)
        if pieces != [w + END_OF_WORD]:
            raise RuntimeError(f"the merges split the vocabulary word {w!r} into {pieces}; "
                               f"this is a bug in learn_merges")


def save_tokenizer(tok, folder: str | Path) -> Path:
    """Save ``tok`` as SD's ``tokenizer/`` folder: ``tokenizer_config.json``, ``tokenizer.json``
    and the plain ``vocab.json`` and ``merges.txt`` that CLIP's original tokenizer reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    if not (folder / "vocab.json").exists():
        (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False) + "\n")
    if not (folder / "merges.txt").exists():
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    return folder


def encode(tok, prompts: Sequence[str]):
    """Token ids exactly as ``StableDiffusionPipeline.encode_prompt`` makes them.

    Returns:
        ``(B, 77)`` long tensor: ``<|startoftext|>``, the prompt, ``<|endoftext|>``, then
        ``<|endoftext|>`` padding (cut at 77).
    """
    return tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
               truncation=True, return_tensors="pt").input_ids
