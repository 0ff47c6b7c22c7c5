"""A textual-inversion embedding in a pipeline: its tokens, its rows, its nearest words.

:func:`add_embedding_to_pipeline` does what diffusers' ``load_textual_inversion`` does (new
tokens, bigger embedding matrix, the vectors in the new rows), and also replaces the row of an
existing word on request (``overwrite=True``), for the bias experiments. :func:`expand_prompt`
writes a multi-vector token out for prompts tokenized by hand; :func:`warn_unknown_placeholders`
catches a placeholder whose embedding was never loaded. :func:`inspect_embedding` reports norms
and the nearest vocabulary words.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import torch

from nbhelpers.checks import shorten
from nbhelpers.ti.embeddings import Embedding, check_finite, check_width, guess_family


def expand_prompt(prompt: str, emb: Embedding) -> str:
    """Write a multi-vector token out as its ``n`` prompt tokens: ``"<t>"`` -> ``"<t> <t>_1"``.

    For prompts you tokenize yourself. diffusers pipelines expand prompts on their own
    (``maybe_convert_prompt``), so give them the short form. Already expanded text is left as
    it is; matching ignores case, as CLIP lower-cases prompts.
    """
    if emb.n_vectors == 1:
        return prompt
    full = " ".join(emb.token_strings)
    pattern = re.compile(re.escape(full) + "|" + re.escape(emb.token) + r"(?!_\d)",
                         re.IGNORECASE)
    return pattern.sub(lambda _: full, prompt)


#: What a placeholder token looks like in a prompt: ``<my-style>`` (not CLIP's ``<|...|>``).
_PLACEHOLDER = re.compile(r"<[^<>|\s]+>")


class UnknownTokenWarning(UserWarning):
    """A prompt uses a placeholder such as ``<my-style>`` that the model has not learned."""


def unknown_placeholders(tokenizer: Any, prompt: str) -> list[str]:
    """The placeholder-looking words of ``prompt`` (``<never-trained>``) that ``tokenizer``
    does not hold as a token, in order of appearance, each once.

    Such a word is split into ordinary pieces (``<``, ``never``, ...) and the prompt renders as
    if it were not there: the usual result of forgetting to load an embedding.
    """
    found = _PLACEHOLDER.findall(prompt)
    if not found:
        return []
    vocab = tokenizer.get_vocab()
    out: list[str] = []
    for word in found:
        if word in vocab or _normalized(tokenizer, word) in vocab or word in out:
            continue
        out.append(word)
    return out


def warn_unknown_placeholders(tokenizer: Any, prompts: Any, stacklevel: int = 3) -> list[str]:
    """Warn (:class:`UnknownTokenWarning`) about each :func:`unknown_placeholders` word of
    ``prompts``; returns the words."""
    import warnings

    words: list[str] = []
    for prompt in prompts:
        words += [w for w in unknown_placeholders(tokenizer, prompt) if w not in words]
    for word in words:
        warnings.warn(f"{word} is not a learned token of this model, so the prompt reads it as "
                      "ordinary text; load its embedding first (command line: --embedding "
                      "FILE; Python: add_embedding_to_pipeline(pipe, load_embedding(FILE)) "
                      "from nbhelpers.ti.pipeline and nbhelpers.ti.formats)", UnknownTokenWarning,
                      stacklevel=stacklevel)
    return words


def _components(pipe: Any) -> tuple[Any, Any]:
    tokenizer = getattr(pipe, "tokenizer", None)
    text_encoder = getattr(pipe, "text_encoder", None)
    if tokenizer is None or text_encoder is None:
        raise ValueError(f"{type(pipe).__name__} has no tokenizer/text_encoder; pass a "
                         "Stable Diffusion pipeline (nbhelpers.models.load_pipeline)")
    return tokenizer, text_encoder


def _normalized(tokenizer: Any, token: str) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    return normalizer.normalize_str(token) if normalizer is not None else token


def _existing_id(tokenizer: Any, token: str) -> int | None:
    """The id ``token`` already has: as an entry, or as a word that is one token (``red``)."""
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return int(vocab[token])
    ids = tokenizer(token, add_special_tokens=False).input_ids
    return int(ids[0]) if len(ids) == 1 else None


def _resize(text_encoder: Any, n: int) -> None:
    kwargs = {}
    if "mean_resizing" in inspect.signature(text_encoder.resize_token_embeddings).parameters:
        kwargs["mean_resizing"] = False  # the new rows are overwritten: skip sampling them
    text_encoder.resize_token_embeddings(n, **kwargs)


def add_embedding_to_pipeline(pipe: Any, emb: Embedding, *, overwrite: bool = False
                              ) -> list[int]:
    """Put ``emb`` into ``pipe``'s tokenizer and text encoder; returns the token ids written.

    1. Check: the widths match; the values are finite; the tokenizer keeps the token as it is.
    2. A new token: add ``<tok>``, ``<tok>_1``, ... to the tokenizer (as diffusers' loader
       does, so the pipeline expands prompts itself) and grow the embedding matrix.
    3. A token the tokenizer already knows is refused unless ``overwrite=True``:
       a token added before gets new vectors (more vectors add ``<tok>_k`` entries);
       a vocabulary word (``"red"``, one token) gets its one row replaced: every prompt that
       says the word now means the vector (the bias experiment). Nothing else changes.
    4. Write the vectors into the rows, in the text encoder's dtype and device.
    """
    if not isinstance(emb, Embedding):
        raise TypeError(f"add_embedding_to_pipeline needs an Embedding, got "
                        f"{type(emb).__name__}; read files with load_embedding first")
    tokenizer, text_encoder = _components(pipe)
    # 1. checks
    _check_addable(tokenizer, emb, text_encoder.get_input_embeddings().weight)
    # 3. a known token: the word's row, or refused; None: entries of its own
    ids = _word_row(tokenizer, emb, overwrite)
    if ids is None:
        # 2. new entries (or extra ones for a token added before)
        ids = _add_entries(tokenizer, text_encoder, emb)
    # 4. write the rows
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = emb.vectors.detach().to(device=weight.device, dtype=weight.dtype)
    return ids


#: how much larger than the model's largest token-row value a vector's may be: trained vectors
#: stay within a few times it; 1e38 (finite) saturates the text encoder into black pictures
MAX_VALUE_RATIO = 1000.0


def _check_addable(tokenizer: Any, emb: Embedding, table: torch.Tensor) -> None:
    """Step 1: the widths match, the values are finite and of the model's order, the vectors
    fit in a prompt, the tokenizer keeps the token as it is."""
    check_width(emb, int(table.shape[1]))
    check_finite(emb, "use")
    largest, model_largest = float(emb.vectors.abs().max()), float(table.detach().abs().max())
    name = shorten(repr(emb.token))
    if largest > MAX_VALUE_RATIO * model_largest:
        raise ValueError(f"refusing to use {name}: its values reach {largest:.3g}, "
                         f"while this model's token rows stay within {model_largest:.3g}; "
                         f"vectors that large saturate the text encoder (black or flat "
                         f"pictures). The file is damaged or not a textual-inversion embedding")
    room = int(getattr(tokenizer, "model_max_length", 77)) - 2   # less start and end tokens
    if emb.n_vectors > room:
        raise ValueError(f"refusing to use {name}: it has {emb.n_vectors} vectors, "
                         f"and a prompt holds {room} tokens, so the word alone would be cut; "
                         f"use an embedding of at most {room} vectors (a few are usual)")
    if _normalized(tokenizer, emb.token) != emb.token:
        low = _normalized(tokenizer, emb.token)
        raise ValueError(f"token {emb.token!r} changes under the tokenizer's normalisation "
                         f"(CLIP lower-cases prompts: {low!r}), so a multi-vector prompt "
                         f"would not expand; use token {low!r} (load_embedding(path, "
                         f"token={low!r}))")


def _word_row(tokenizer: Any, emb: Embedding, overwrite: bool) -> list[int] | None:
    """Step 3: ``[id]`` of the vocabulary word ``emb`` replaces (``overwrite=True``), or None
    when ``emb`` gets entries of its own (a new token, or one added before and overwritten).

    Refuses a special token, a known token without ``overwrite``, fewer vectors than a token
    added before, several vectors for a one-row word, and left-over ``<tok>_k`` entries.
    """
    added = tokenizer.added_tokens_encoder
    existing = _existing_id(tokenizer, emb.token)
    special = set(getattr(tokenizer, "all_special_tokens", []))
    if existing is not None and tokenizer.convert_ids_to_tokens(existing) in special:
        raise ValueError(f"token {emb.token!r} is the special token "
                         f"{tokenizer.convert_ids_to_tokens(existing)!r}; pick a new token "
                         "such as '<my-style>'")
    if emb.token in added:
        _check_readd(added, emb, overwrite)
        return None
    if existing is None:
        vocab = tokenizer.get_vocab()
        stale = [s for s in emb.token_strings[1:] if s in vocab]
        if stale:
            raise ValueError(f"entries {stale} are already in the tokenizer while {emb.token!r} "
                             "is not; load a fresh pipeline or pick another token")
        return None
    word = tokenizer.convert_ids_to_tokens(existing)
    if not overwrite:
        raise ValueError(
            f"token {emb.token!r} is already in the tokenizer's vocabulary (as {word!r}, "
            f"id {existing}); adding it would change what it means in every prompt. Pick "
            f"a new token such as '<{emb.token.strip('<>')}-ti>', or pass overwrite=True "
            "to replace that word's embedding row (the bias experiment)")
    if emb.n_vectors != 1:
        raise ValueError(
            f"token {emb.token!r} is the vocabulary word {word!r}, which has one row; a "
            f"{emb.n_vectors}-vector embedding cannot replace it. Use a 1-vector "
            "embedding, or a new token such as '<my-style>'")
    return [existing]


def _check_readd(added: dict[str, int], emb: Embedding, overwrite: bool) -> None:
    """A token added before takes new vectors only with ``overwrite``, and at least as many."""
    current = [emb.token]
    while f"{emb.token}_{len(current)}" in added:
        current.append(f"{emb.token}_{len(current)}")
    if not overwrite:
        raise ValueError(
            f"token {emb.token!r} is already in this pipeline ({len(current)} vector(s)); "
            "pass overwrite=True to replace its vectors, or load a fresh pipeline")
    if emb.n_vectors < len(current):
        raise ValueError(
            f"token {emb.token!r} has {len(current)} vectors in this pipeline and the new "
            f"embedding {emb.n_vectors}; extra entries cannot be removed, so prompts would "
            "still expand to the old length. Load a fresh pipeline")


def _add_entries(tokenizer: Any, text_encoder: Any, emb: Embedding) -> list[int]:
    """Step 2: add the entries of ``emb`` the tokenizer lacks, grow the matrix; all its ids."""
    strings = emb.token_strings
    new = [s for s in strings if s not in tokenizer.added_tokens_encoder]
    if new:
        tokenizer.add_tokens(new)
        _resize(text_encoder, len(tokenizer))
    return [int(i) for i in tokenizer.convert_tokens_to_ids(strings)]


def _readable(tokenizer: Any, token: str) -> str:
    try:
        text = tokenizer.convert_tokens_to_string([token]).strip()
    except Exception:
        return token
    # a byte-level fragment is not valid text on its own: show the raw token instead
    return token if not text or "\ufffd" in text else text


def inspect_embedding(emb: Embedding, pipe: Any = None, k: int = 5) -> dict[str, Any]:
    """Facts about ``emb``: token, shape, family, norms, and with ``pipe`` the nearest words.

    Returns a dict: ``token``, ``n_vectors``, ``width``, ``family`` (guessed from the width),
    ``step``, ``meta``, ``norms`` (L2 norm of each vector), ``nonfinite`` (count of NaN/inf);
    with a pipeline also ``vocab_norm_median`` (the median norm of the vocabulary rows, to
    compare against: learned vectors often grow far longer than any word's) and ``nearest``:
    for each vector, ``k`` dicts ``{"word", "token", "id", "cosine"}``, most similar first,
    over the tokenizer's own vocabulary (added and special tokens excluded).
    """
    if not isinstance(emb, Embedding):
        raise TypeError(f"inspect_embedding needs an Embedding, got {type(emb).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    vectors = emb.vectors.detach().to("cpu", torch.float32)
    info: dict[str, Any] = {
        "token": emb.token,
        "n_vectors": emb.n_vectors,
        "width": emb.width,
        "family": guess_family(emb.width),
        "step": emb.step,
        "meta": dict(emb.meta),
        "norms": [float(x) for x in vectors.norm(dim=1)],
        "nonfinite": int((~torch.isfinite(vectors)).sum()),
    }
    if pipe is None:
        return info
    tokenizer, text_encoder = _components(pipe)
    table = text_encoder.get_input_embeddings().weight.detach().to("cpu", torch.float32)
    check_width(emb, int(table.shape[1]))
    n_rows = min(len(tokenizer), table.shape[0])
    keep = torch.ones(n_rows, dtype=torch.bool)
    for i in tokenizer.added_tokens_decoder:
        if i < n_rows:
            keep[i] = False
    ids = torch.nonzero(keep).flatten()
    rows = table[ids]
    info["vocab_norm_median"] = float(rows.norm(dim=1).median())
    cos = torch.nn.functional.normalize(torch.nan_to_num(vectors), dim=1) @ \
        torch.nn.functional.normalize(rows, dim=1).T  # (n_vectors, V)
    top = cos.topk(min(k, rows.shape[0]), dim=1)
    nearest = []
    for values, idx in zip(top.values, top.indices, strict=True):
        found = []
        for value, j in zip(values.tolist(), idx.tolist(), strict=True):
            tid = int(ids[j])
            tok = tokenizer.convert_ids_to_tokens(tid)
            found.append({"word": _readable(tokenizer, tok), "token": tok, "id": tid,
                          "cosine": float(value)})
        nearest.append(found)
    info["nearest"] = nearest
    return info


def format_inspection(info: dict[str, Any]) -> str:
    """The dict of :func:`inspect_embedding` as a few lines of text, for the command line."""
    family = f" ({info['family']})" if info.get("family") else ""
    lines = [f"token {info['token']}: {info['n_vectors']} vector(s), "
             f"{info['width']} wide{family}, step {info['step']}"]
    if info.get("meta"):
        lines.append("meta: " + ", ".join(f"{k}={v}" for k, v in sorted(info["meta"].items())))
    if info.get("nonfinite"):
        lines.append(f"WARNING: {info['nonfinite']} NaN/inf values")
    if "vocab_norm_median" in info:
        lines.append(f"median norm of the vocabulary rows: {info['vocab_norm_median']:.3g}")
    for i, norm in enumerate(info["norms"]):
        name = info["token"] if i == 0 else f"{info['token']}_{i}"
        line = f"  {name}: norm {norm:.3g}" if math.isfinite(norm) else f"  {name}: norm {norm}"
        if "nearest" in info:
            line += "; nearest: " + ", ".join(f"{d['word']} ({d['cosine']:.2f})"
                                              for d in info["nearest"][i])
        lines.append(line)
    return "\n".join(lines)
