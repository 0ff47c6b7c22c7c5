"""Textual-inversion embedding files, checked against diffusers' own loader on the tiny model."""

from __future__ import annotations

import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import get_args

import pytest
import torch

from nbhelpers.ti.embeddings import Embedding, EmbeddingFileError, check_width, guess_family
from nbhelpers.ti.formats import (
    FORMATS,
    EmbeddingFormat,
    convert_embedding,
    detect_format,
    dst_format_help,
    format_help,
    load_embedding,
    save_embedding,
)
from nbhelpers.ti.pipeline import (
    add_embedding_to_pipeline,
    expand_prompt,
    format_inspection,
    inspect_embedding,
)

TOKEN = "<my-style>"
WIDTH = 32  # the tiny pipeline's text encoder
# (format, suffix) pairs that save_embedding writes
TARGETS = [("diffusers", ".safetensors"), ("a1111", ".pt"), ("kohya", ".safetensors"),
           ("kohya", ".pt")]


def make_emb(n: int = 4, token: str = TOKEN, width: int = WIDTH, seed: int = 0) -> Embedding:
    g = torch.Generator().manual_seed(seed)
    return Embedding(token=token, vectors=torch.randn(n, width, generator=g), step=123,
                     meta={"init_word": "red", "model_name": "tiny-sd"})


@pytest.fixture
def fresh_pipe(tiny_pipeline_dir):
    """A factory of separately loaded tiny pipelines (each test mutates its own)."""
    from nbhelpers.models import load_pipeline

    return lambda: load_pipeline(str(tiny_pipeline_dir), device="cpu")


def token_rows(pipe, strings):
    ids = pipe.tokenizer.convert_tokens_to_ids(strings)
    return pipe.text_encoder.get_input_embeddings().weight.detach()[ids]


def generate(pipe, prompt):
    return pipe(prompt, num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


# --- the dataclass -------------------------------------------------------------------------


def test_embedding_shape_and_token_strings():
    emb = make_emb(4)
    assert (emb.n_vectors, emb.width) == (4, WIDTH)
    assert emb.token_strings == [TOKEN, f"{TOKEN}_1", f"{TOKEN}_2", f"{TOKEN}_3"]
    assert make_emb(1).token_strings == [TOKEN]


@pytest.mark.parametrize("kwargs, match", [
    ({"token": ""}, "token is empty"),
    ({"token": "my style"}, "whitespace.*'my-style'"),
    ({"vectors": torch.zeros(WIDTH)}, r"2-D.*unsqueeze\(0\)"),
    ({"vectors": torch.zeros(1, 2, WIDTH)}, "2-D"),
    ({"vectors": torch.zeros(0, WIDTH)}, "empty"),
    ({"vectors": torch.zeros(2, WIDTH, dtype=torch.long)}, "floating point"),
    ({"step": -1}, "step must be an int"),
])
def test_embedding_validation(kwargs, match):
    args = {"token": TOKEN, "vectors": torch.zeros(2, WIDTH), **kwargs}
    with pytest.raises(ValueError, match=match):
        Embedding(**args)


# --- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("format, suffix", TARGETS)
def test_round_trip(tmp_path, format, suffix, n):
    emb = make_emb(n)
    path = save_embedding(emb, tmp_path / f"emb{suffix}", format=format)
    token = TOKEN if format == "kohya" else None
    back = load_embedding(path, token=token)
    assert torch.equal(back.vectors, emb.vectors)
    assert back.token == TOKEN
    if (format, suffix) == ("kohya", ".pt"):  # the vectors alone: no place for step or meta
        assert back.step == 0 and back.meta == {}
    else:
        assert back.step == emb.step and back.meta == emb.meta
    assert detect_format(path) == format
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a1111_file_layout_loads_weights_only(tmp_path):
    path = save_embedding(make_emb(2), tmp_path / "a.pt", format="a1111")
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert data["string_to_token"] == {"*": 265}
    assert data["string_to_param"]["*"].shape == (2, WIDTH)
    assert data["name"] == TOKEN and data["step"] == 123
    assert data["sd_checkpoint"] is None and data["sd_checkpoint_name"] == "tiny-sd"


# What AUTOMATIC1111's safe unpickler (modules/safe.py) accepts: zip entry names, and the
# globals a pickle may name. A legacy-format file is read as five pickles.
A1111_ZIP_NAME = re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$")
A1111_GLOBALS = {
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    *(("torch", n) for n in ("FloatStorage", "HalfStorage", "IntStorage", "LongStorage",
                             "DoubleStorage", "ByteStorage", "float32", "BFloat16Storage")),
    ("torch.nn.modules.container", "ParameterDict"), ("numpy.core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy", "dtype"), ("numpy", "ndarray"),
    ("_codecs", "encode"), ("__builtin__", "set"),
}


class _A1111SafeCheck(pickle.Unpickler):
    """Names every global against A1111's list; builds nothing (the stubs return None)."""

    def find_class(self, module, name):
        if (module, name) not in A1111_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}/{name}' is forbidden")
        return lambda *args, **kwargs: None

    def persistent_load(self, pid):
        assert pid[0] == "storage"


def a1111_would_load(path) -> bool:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return all(A1111_ZIP_NAME.match(name) for name in z.namelist())
    with open(path, "rb") as f:
        unpickler = _A1111SafeCheck(f)
        for _ in range(5):  # magic number, protocol, sys info, the object, storage keys
            unpickler.load()
    return True


@pytest.mark.parametrize("format", ["a1111", "kohya"])
def test_pt_files_are_legacy_format_that_a1111_accepts(tmp_path, format):
    emb = make_emb(3)
    path = save_embedding(emb, tmp_path / "e.pt", format=format)
    assert not zipfile.is_zipfile(path)  # the legacy serialization
    assert a1111_would_load(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    stored = data["string_to_param"]["*"] if format == "a1111" else data["emb_params"]
    assert torch.equal(stored, emb.vectors) and stored.dtype == emb.vectors.dtype
    back = load_embedding(path, token=TOKEN if format == "kohya" else None)
    assert torch.equal(back.vectors, emb.vectors)
    # what current torch writes by default is refused there: the reason for the legacy format
    torch.save({"emb_params": emb.vectors}, tmp_path / "zip.pt")
    assert zipfile.is_zipfile(tmp_path / "zip.pt") and not a1111_would_load(tmp_path / "zip.pt")


def test_kohya_and_diffusers_layouts(tmp_path):
    from safetensors.torch import load_file

    emb = make_emb(3)
    save_embedding(emb, tmp_path / "d.safetensors")  # .safetensors defaults to diffusers
    assert list(load_file(tmp_path / "d.safetensors")) == [TOKEN]
    save_embedding(emb, tmp_path / "k.safetensors", format="kohya")
    assert list(load_file(tmp_path / "k.safetensors")) == ["emb_params"]
    save_embedding(emb, tmp_path / "k.pt", format="kohya")
    assert list(torch.load(tmp_path / "k.pt", weights_only=True)) == ["emb_params"]


def test_format_detected_from_content_not_name(tmp_path):
    emb = make_emb(2)
    save_embedding(emb, tmp_path / "d.safetensors")
    save_embedding(emb, tmp_path / "a.pt", format="a1111")
    save_embedding(emb, tmp_path / "k.pt", format="kohya")
    shutil.copy(tmp_path / "d.safetensors", tmp_path / "misnamed-d.pt")
    shutil.copy(tmp_path / "a.pt", tmp_path / "misnamed-a.safetensors")
    shutil.copy(tmp_path / "k.pt", tmp_path / "learned_embeds.bin")
    assert detect_format(tmp_path / "misnamed-d.pt") == "diffusers"
    assert detect_format(tmp_path / "misnamed-a.safetensors") == "a1111"
    assert detect_format(tmp_path / "learned_embeds.bin") == "kohya"
    assert torch.equal(load_embedding(tmp_path / "misnamed-a.safetensors").vectors, emb.vectors)
    # a diffusers-script .bin: a pickled one-key dict
    torch.save({TOKEN: emb.vectors}, tmp_path / "script.bin")
    assert detect_format(tmp_path / "script.bin") == "diffusers"
    assert load_embedding(tmp_path / "script.bin").token == TOKEN


@pytest.mark.parametrize("src", TARGETS)
@pytest.mark.parametrize("dst", TARGETS)
def test_convert_between_all_formats(tmp_path, src, dst):
    emb = make_emb(3)
    a = save_embedding(emb, tmp_path / f"src{src[1]}", format=src[0])
    token = TOKEN if src[0] == "kohya" else None
    out = convert_embedding(a, tmp_path / f"dst{dst[1]}", format=dst[0], token=token)
    assert out.token == TOKEN
    assert detect_format(tmp_path / f"dst{dst[1]}") == dst[0]
    back = load_embedding(tmp_path / f"dst{dst[1]}", token=TOKEN if dst[0] == "kohya" else None)
    assert back.token == TOKEN
    assert torch.equal(back.vectors, emb.vectors)


def test_token_argument_renames_and_kohya_needs_it(tmp_path):
    emb = make_emb(1)
    save_embedding(emb, tmp_path / "d.safetensors")
    assert load_embedding(tmp_path / "d.safetensors", token="<other>").token == "<other>"
    save_embedding(emb, tmp_path / "k.safetensors", format="kohya")
    with pytest.raises(EmbeddingFileError, match="kohya.*no token name.*saved for '<my-style>'"):
        load_embedding(tmp_path / "k.safetensors")
    save_embedding(emb, tmp_path / "k.pt", format="kohya")
    with pytest.raises(EmbeddingFileError, match="pass the token"):
        load_embedding(tmp_path / "k.pt")
    with pytest.raises(EmbeddingFileError, match="pass the token"):
        convert_embedding(tmp_path / "k.pt", tmp_path / "out.safetensors")


def test_save_validation(tmp_path):
    emb = make_emb(2)
    with pytest.raises(ValueError, match="unknown embedding format 'webui'"):
        save_embedding(emb, tmp_path / "e.pt", format="webui")
    with pytest.raises(ValueError, match="format='a1111'"):
        save_embedding(emb, tmp_path / "e.pt")
    with pytest.raises(ValueError, match="ending in one of"):
        save_embedding(emb, tmp_path / "e.txt")
    with pytest.raises(ValueError, match="'a1111' is not saved as .safetensors"):
        save_embedding(emb, tmp_path / "e.safetensors", format="a1111")
    with pytest.raises(ValueError, match="JSON"):
        save_embedding(Embedding(TOKEN, emb.vectors, meta={"x": object()}),
                       tmp_path / "e.safetensors")
    with pytest.raises(ValueError, match="'emb_params' is a key of another format"):
        save_embedding(Embedding("emb_params", emb.vectors), tmp_path / "e.safetensors")
    bad = emb.vectors.clone()
    bad[1, 3] = float("nan")
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="2 of its 64 values are NaN or inf"):
        save_embedding(Embedding(TOKEN, bad), tmp_path / "nan.safetensors")
    assert not list(tmp_path.iterdir())  # nothing written, no temp files


def test_load_validation(tmp_path):
    with pytest.raises(FileNotFoundError, match="no embedding file"):
        load_embedding(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("hello, not a tensor file")
    with pytest.raises(EmbeddingFileError, match="not an embedding file: its bytes read neither"):
        load_embedding(tmp_path / "junk.pt")
    torch.save({"weights": [1, 2], "lr": 0.1}, tmp_path / "other.pt")
    with pytest.raises(EmbeddingFileError, match="not an embedding file"):
        load_embedding(tmp_path / "other.pt")
    torch.save({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)},
               tmp_path / "sdxl.pt")
    with pytest.raises(EmbeddingFileError, match="SDXL"):
        load_embedding(tmp_path / "sdxl.pt")
    torch.save({"<a>": torch.zeros(1, 4), "<b>": torch.ones(1, 4)}, tmp_path / "two.bin")
    with pytest.raises(EmbeddingFileError, match="2 tokens.*pass token="):
        load_embedding(tmp_path / "two.bin")
    assert torch.equal(load_embedding(tmp_path / "two.bin", token="<b>").vectors,
                       torch.ones(1, 4))
    torch.save({"<a>": torch.zeros(2, 3, 4)}, tmp_path / "3d.bin")
    with pytest.raises(EmbeddingFileError, match=r"shape \(2, 3, 4\)"):
        load_embedding(tmp_path / "3d.bin")
    torch.save({"<a>": torch.arange(4.0)}, tmp_path / "1d.bin")  # (width,) is one vector
    assert load_embedding(tmp_path / "1d.bin").vectors.shape == (1, 4)


class _Payload:
    """Unpickling this object calls ``_touch(marker)``: the shape of a malicious .pt file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(marker):
    Path(marker).write_text("code ran")


def test_malicious_pt_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": _Payload(marker)},
                "name": TOKEN, "step": 1}, evil)
    with pytest.raises(EmbeddingFileError, match="needs full unpickling.*_touch"):
        load_embedding(evil)
    with pytest.raises(EmbeddingFileError, match="needs full unpickling"):
        detect_format(evil)
    with pytest.raises(EmbeddingFileError, match="needs full unpickling"):
        convert_embedding(evil, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    # the payload is live: full unpickling (never done by the module) would have run it
    live = tmp_path / "live"
    torch.save(_Payload(live), tmp_path / "live.pt")
    torch.load(tmp_path / "live.pt", weights_only=False)
    assert live.read_text() == "code ran"


# --- pipelines -----------------------------------------------------------------------------


@pytest.mark.parametrize("format, suffix", TARGETS)
def test_diffusers_loader_reads_our_files(tmp_path, fresh_pipe, format, suffix):
    emb = make_emb(4)
    path = save_embedding(emb, tmp_path / f"emb{suffix}", format=format)
    pipe = fresh_pipe()
    if format == "kohya":
        pipe.load_textual_inversion(str(path), token=TOKEN)
    else:
        pipe.load_textual_inversion(str(path))
    assert torch.equal(token_rows(pipe, emb.token_strings), emb.vectors)


@pytest.mark.parametrize("n", [1, 4])
def test_images_match_diffusers_loader(tmp_path, fresh_pipe, n):
    emb = make_emb(n)
    path = save_embedding(emb, tmp_path / "emb.safetensors")
    theirs, ours = fresh_pipe(), fresh_pipe()
    theirs.load_textual_inversion(str(path))
    ids = add_embedding_to_pipeline(ours, load_embedding(path))
    assert ids == theirs.tokenizer.convert_tokens_to_ids(emb.token_strings)
    assert torch.equal(token_rows(ours, emb.token_strings), emb.vectors)
    prompt = f"a {TOKEN} ball"
    a, b = generate(theirs, prompt), generate(ours, prompt)
    assert a.shape == b.shape
    assert abs(a - b).max() <= 1e-5
    # and the embedding matters: other vectors give another image
    other = fresh_pipe()
    add_embedding_to_pipeline(other, make_emb(n, seed=1))
    assert abs(generate(other, prompt) - b).max() > 1e-3


def test_expand_prompt():
    emb = make_emb(3)
    full = f"{TOKEN} {TOKEN}_1 {TOKEN}_2"
    assert expand_prompt(f"a {TOKEN} ball", emb) == f"a {full} ball"
    assert expand_prompt(f"a {full} ball", emb) == f"a {full} ball"  # idempotent
    assert expand_prompt("a <MY-STYLE>, twice: <my-style>", emb) == f"a {full}, twice: {full}"
    assert expand_prompt(f"a {TOKEN} ball", make_emb(1)) == f"a {TOKEN} ball"


def test_expanded_prompt_encodes_like_the_pipeline(fresh_pipe):
    emb = make_emb(3)
    pipe = fresh_pipe()
    add_embedding_to_pipeline(pipe, emb)
    ids = pipe.tokenizer(expand_prompt(f"a {TOKEN} ball", emb)).input_ids
    converted = pipe.maybe_convert_prompt(f"a {TOKEN} ball", pipe.tokenizer)
    assert ids == pipe.tokenizer(converted).input_ids
    assert pipe.tokenizer.convert_tokens_to_ids(emb.token_strings) == ids[2:5]


def test_width_mismatch_is_explained(fresh_pipe):
    msg = ("this embedding is 1024 wide (SD 2.x); the model's text encoder is 768 wide "
           "(SD 1.x); embeddings do not transfer between them")
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        check_width(make_emb(1, width=1024), 768)
    assert guess_family(768) == "SD 1.x" and guess_family(1024) == "SD 2.x"
    assert guess_family(WIDTH) is None
    with pytest.raises(ValueError, match=r"768 wide \(SD 1.x\).*is 32 wide;"):
        add_embedding_to_pipeline(fresh_pipe(), make_emb(1, width=768))
    with pytest.raises(ValueError, match="do not transfer"):
        inspect_embedding(make_emb(1, width=768), fresh_pipe())


def test_token_collisions_and_overwrite(fresh_pipe):
    pipe = fresh_pipe()
    tok = pipe.tokenizer
    before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    n_tok = len(tok)
    red_id = tok("red", add_special_tokens=False).input_ids[0]

    # a vocabulary word is refused, with the fix named
    with pytest.raises(ValueError, match=r"already in the tokenizer's vocabulary.*overwrite=True"):
        add_embedding_to_pipeline(pipe, make_emb(1, token="red"))
    with pytest.raises(ValueError, match="one row"):
        add_embedding_to_pipeline(pipe, make_emb(2, token="red"), overwrite=True)
    with pytest.raises(ValueError, match="special token"):
        add_embedding_to_pipeline(pipe, make_emb(1, token="<|endoftext|>"), overwrite=True)
    with pytest.raises(ValueError, match="lower-cases.*'<my-style>'"):
        add_embedding_to_pipeline(pipe, make_emb(1, token="<My-Style>"))
    assert len(tok) == n_tok
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, before)

    # overwrite: that one row changes, nothing else does
    vec = make_emb(1, token="red", seed=5)
    assert add_embedding_to_pipeline(pipe, vec, overwrite=True) == [red_id]
    after = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert len(tok) == n_tok and after.shape == before.shape
    assert torch.equal(after[red_id], vec.vectors[0])
    changed = (after != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [red_id]


def test_added_token_twice(fresh_pipe):
    pipe = fresh_pipe()
    add_embedding_to_pipeline(pipe, make_emb(2))
    n_tok = len(pipe.tokenizer)
    with pytest.raises(ValueError, match="already in this pipeline.*overwrite=True"):
        add_embedding_to_pipeline(pipe, make_emb(2, seed=3))
    with pytest.raises(ValueError, match="cannot be removed"):
        add_embedding_to_pipeline(pipe, make_emb(1, seed=3), overwrite=True)
    new = make_emb(2, seed=3)
    add_embedding_to_pipeline(pipe, new, overwrite=True)
    assert len(pipe.tokenizer) == n_tok
    assert torch.equal(token_rows(pipe, new.token_strings), new.vectors)
    more = make_emb(3, seed=4)  # a longer one adds the missing entry
    add_embedding_to_pipeline(pipe, more, overwrite=True)
    assert len(pipe.tokenizer) == n_tok + 1
    assert torch.equal(token_rows(pipe, more.token_strings), more.vectors)
    # NaN vectors never reach the model
    bad = make_emb(1, token="<bad>")
    bad.vectors[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        add_embedding_to_pipeline(pipe, bad)


def test_inspect(fresh_pipe):
    emb = make_emb(3)
    info = inspect_embedding(emb)
    assert info["token"] == TOKEN and info["n_vectors"] == 3 and info["width"] == WIDTH
    assert info["step"] == 123 and info["nonfinite"] == 0 and "nearest" not in info
    assert info["norms"] == pytest.approx(emb.vectors.norm(dim=1).tolist())

    pipe = fresh_pipe()
    added = add_embedding_to_pipeline(pipe, emb)
    info = inspect_embedding(emb, pipe, k=4)
    vocab = pipe.tokenizer.get_vocab()
    excluded = set(added) | set(pipe.tokenizer.added_tokens_decoder)
    assert len(info["nearest"]) == 3
    for row in info["nearest"]:
        assert len(row) == 4
        cosines = [d["cosine"] for d in row]
        assert cosines == sorted(cosines, reverse=True) and all(-1 <= c <= 1 for c in cosines)
        for d in row:
            assert vocab[d["token"]] == d["id"] and d["id"] not in excluded
            assert isinstance(d["word"], str) and d["word"]
    # the nearest word really is the most similar row of the vocabulary
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    first = info["nearest"][0][0]
    assert torch.nn.functional.cosine_similarity(emb.vectors[0], table[first["id"]], dim=0
                                                 ).item() == pytest.approx(first["cosine"],
                                                                           abs=1e-5)
    assert info["vocab_norm_median"] > 0
    text = format_inspection(info)
    assert TOKEN in text and f"{TOKEN}_2" in text and "nearest" in text
    with pytest.raises(ValueError, match="k must be"):
        inspect_embedding(emb, k=0)


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    emb = Embedding("<p>", torch.randn(1, 8))
    umask = os.umask(0)
    os.umask(umask)
    files = [("diffusers", "a.safetensors"), ("a1111", "b.pt"), ("kohya", "c.safetensors")]
    for fmt, name in files:
        path = save_embedding(emb, tmp_path / name, format=fmt)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, fmt


def test_concept_folder_is_read_as_diffusers_reads_it(tmp_path, fresh_pipe):
    emb = make_emb(2)
    folder = tmp_path / "cat-toy"
    folder.mkdir()
    save_embedding(emb, folder / "learned_embeds.safetensors")
    (folder / "token_identifier.txt").write_text(TOKEN)
    assert detect_format(folder) == "diffusers"
    back = load_embedding(folder)
    assert back.token == TOKEN and torch.equal(back.vectors, emb.vectors)
    pipe = fresh_pipe()
    pipe.load_textual_inversion(str(folder))  # what diffusers makes of the same folder
    assert torch.equal(token_rows(pipe, emb.token_strings), back.vectors)
    # the older layout, a pickled {token: tensor}; safetensors wins when both are there
    old = tmp_path / "old-concept"
    old.mkdir()
    torch.save({"<old>": emb.vectors[:1]}, old / "learned_embeds.bin")
    assert load_embedding(old).token == "<old>"
    shutil.copy(old / "learned_embeds.bin", folder / "learned_embeds.bin")
    assert load_embedding(folder).token == TOKEN
    out = convert_embedding(folder, tmp_path / "cat.pt", format="a1111")
    assert out.token == TOKEN
    # a folder without them says what it looked for, and what it found
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(FileNotFoundError, match="folder without learned_embeds.safetensors or "
                                                "learned_embeds.bin"):
        load_embedding(other)
    save_embedding(emb, other / "mine.pt", format="a1111")
    with pytest.raises(FileNotFoundError, match=r"\['mine.pt'\]: pass one of those files"):
        load_embedding(other)


LORA_LAYER = "lora_unet_down_blocks_0_attentions_0_proj_in"
PEFT_LAYER = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.mark.parametrize("keys, bundled", [
    ([f"{LORA_LAYER}.lora_down.weight", f"{LORA_LAYER}.lora_up.weight", f"{LORA_LAYER}.alpha"],
     None),  # kohya / A1111
    ([f"{PEFT_LAYER}.lora_A.weight", f"{PEFT_LAYER}.lora_B.weight"], None),  # PEFT
    ([f"{PEFT_LAYER}_lora.down.weight", f"{PEFT_LAYER}_lora.up.weight"], None),  # old diffusers
    ([f"{LORA_LAYER}.lora_down.weight", f"{LORA_LAYER}.lora_up.weight",
      "bundle_emb.mychar.string_to_param.*"], "mychar"),  # a LoRA with a bundled embedding
])
@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_lora_files_are_named_as_lora_files(tmp_path, keys, bundled, suffix):
    from safetensors.torch import save_file

    tensors = {k: torch.zeros(4, WIDTH) for k in keys}
    path = tmp_path / f"style_lora{suffix}"
    if suffix == ".safetensors":
        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    with pytest.raises(EmbeddingFileError) as err:
        load_embedding(path)
    text = str(err.value)
    assert "is a LoRA file, not a textual-inversion embedding" in text
    assert "load_lora_weights" in text and "pass token=" not in text
    if bundled:
        assert f"bundles the embedding(s) ['{bundled}']" in text


def test_tokens_that_mention_lora_are_still_embeddings(tmp_path):
    for token in ("lora_A", "<lora_up>", "flora_te"):
        save_embedding(make_emb(1, token=token), tmp_path / "e.safetensors")
        assert load_embedding(tmp_path / "e.safetensors").token == token


def test_the_format_table_gives_the_names_the_type_and_the_help(tmp_path):
    """One table: its names are the ``EmbeddingFormat`` type's and the CLI's choices, in order,
    and the help texts list what it holds."""
    assert list(FORMATS) == ["diffusers", "a1111", "kohya"]
    assert list(get_args(EmbeddingFormat)) == list(FORMATS)
    assert all(f.name == name for name, f in FORMATS.items())
    invokeai = ("; for InvokeAI, an embedding of several vectors must be a1111 or kohya (it "
                "reads diffusers files of one vector only)")
    assert format_help() == ("file format: diffusers (.safetensors), a1111 (.pt) or kohya"
                             + invokeai)
    assert format_help(default="diffusers") == ("file format: diffusers (.safetensors), a1111 "
                                                "(.pt) or kohya (default diffusers)" + invokeai)
    # what saving without a format does: .safetensors is diffusers, .pt is refused as ambiguous
    assert dst_format_help() == ("format of dst (default: diffusers for .safetensors; a .pt file "
                                 "needs --format a1111 or kohya)" + invokeai)
    with pytest.raises(ValueError, match="a .pt file may be 'a1111' or 'kohya'"):
        save_embedding(make_emb(1), tmp_path / "e.pt")


def test_a_fourth_format_is_one_entry_in_the_table(tmp_path, monkeypatch):
    """What the README's contributor section promises: a format written as one ``Format``
    subclass and put in ``FORMATS`` is saved, detected, loaded and offered by both ``--format``
    options, with nothing else changed."""
    import io

    from nbhelpers.cli import build_parser
    from nbhelpers.ti.formats import FORMATS, Format

    class Plain(Format):
        name = title = "plain"
        extensions = (".pt",)
        summary = "plain (.pt)"
        layout = "plain (plain_vectors, plain_token)"
        marker = "plain_vectors"

        def read(self, payload, header, path, token):
            return Embedding(token=token or payload["plain_token"],
                             vectors=payload["plain_vectors"])

        def write(self, emb, suffix, header):
            buf = io.BytesIO()
            torch.save({"plain_vectors": emb.vectors.clone(), "plain_token": emb.token}, buf)
            return buf.getvalue()

    monkeypatch.setitem(FORMATS, "plain", Plain())
    emb = make_emb(2)
    save_embedding(emb, tmp_path / "e.pt", format="plain")
    assert detect_format(tmp_path / "e.pt") == "plain"
    back = load_embedding(tmp_path / "e.pt")
    assert back.token == emb.token and torch.equal(back.vectors, emb.vectors)
    ti = next(a for a in build_parser()._actions if a.dest == "command").choices["ti"]
    subs = next(a for a in ti._actions if a.choices and "train" in a.choices).choices
    for sub in ("train", "convert"):
        option = next(a for a in subs[sub]._actions if a.dest == "format")
        assert option.choices[-1] == "plain"
    train_format = next(a for a in subs["train"]._actions if a.dest == "format")
    assert "plain (.pt)" in train_format.help
