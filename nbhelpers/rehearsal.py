"""Stable Diffusion 1.4's structure without its weights: the rehearsal model.

SD 1.4's weights cannot be had on a machine without the model hub, but its *structure* can:
its configs are public facts, and its tokenizer is CLIP's byte-level BPE [CLIP], whose merges
file ships inside a package on PyPI (``open-clip-torch``:
``open_clip/bpe_simple_vocab_16e6.txt.gz``). :func:`write_rehearsal_model` writes a diffusers
pipeline folder with SD 1.4's tokenizer, configs and scheduler and **seeded random weights**,
so every line of the SD path runs: the 49,408-token vocabulary, the 77-token budget, 768-wide
embedding files, PNDM replaced by DDIM, dtypes, memory.

=========  ===================================================================================
size       what it is for
=========  ===================================================================================
``full``   SD 1.4's exact configs (UNet 860 M, VAE 84 M, text encoder 123 M parameters): GPU
           cost and memory, a dress rehearsal of every notebook on a GPU
``mini``   the same block types, tokenizer, 768-wide token embedding and 77 positions, with
           small widths and one layer per block: the SD cells run on a CPU in CI
=========  ===================================================================================

Random weights draw noise, so what runs on a rehearsal model checks mechanics (shapes, equality,
loading, precision, memory), never what an image shows.

The tokenizer is CLIP's own layout: ids 0..255 the 256 byte characters (in
``bytes_to_unicode`` order), 256..511 the same with the end-of-word marker ``</w>``, then one
token per merge for the first 48,894 merges of the file, then ``<|startoftext|>`` (49,406) and
``<|endoftext|>`` (49,407, also pad and unk). ``"a photo of a cat"`` becomes
``[49406, 320, 1125, 539, 320, 2368, 49407]``, as with SD 1.4's shipped tokenizer.

References:
    [CLIP] Radford et al. 2021, Learning Transferable Visual Models From Natural Language
           Supervision (section 2.4: lower-cased BPE with a 49,152-token vocabulary, 77 tokens).
    [LDM]  Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models
           (the SD 1.x UNet, VAE and text-conditioning layout).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from nbhelpers.quiet import quiet_loading
from nbhelpers.toy.tokenizer import BOS, END_OF_WORD, EOS, MODEL_MAX_LENGTH, bytes_to_unicode

RehearsalSize = Literal["mini", "full"]
SIZES: tuple[str, ...] = ("mini", "full")
MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
#: CLIP's vocabulary: 512 byte characters + 48,894 merges + 2 special tokens = 49,408.
N_MERGES = 49_408 - 512 - 2
VOCAB_SIZE = 49_408
#: Bumped when what a seed builds changes, so cached folders of an older build are not reused.
BUILD_VERSION = 2
CARD_FILE = "rehearsal_card.json"


# --------------------------------------------------------------------------------------------
# CLIP's tokenizer, built offline
# --------------------------------------------------------------------------------------------


def clip_merges_path() -> Path:
    """The BPE merges file inside the installed ``open-clip-torch`` package.

    Found without importing ``open_clip`` (which would need torchvision).

    Raises:
        FileNotFoundError: the package is not installed; the message says how to install it.
    """
    spec = importlib.util.find_spec("open_clip")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / MERGES_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"CLIP's BPE merges file ({MERGES_FILE}) was not found: it ships inside the "
        "open-clip-torch package. Install it without its dependencies (it would pull in "
        "torchvision): `pip install --no-deps open-clip-torch` (make install does this)")


@lru_cache(maxsize=2)
def clip_vocab_and_merges(path: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (token -> id) and its merges in rank order, from the merges file.

    Args:
        path: the ``.txt.gz`` merges file; :func:`clip_merges_path` if None.
    """
    text = gzip.decompress(Path(path or clip_merges_path()).read_bytes()).decode("utf-8")
    lines = text.split("\n")[1:N_MERGES + 1]  # the first line is a version header
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path or clip_merges_path()} does not hold {N_MERGES} merges of two "
                         "symbols each; reinstall open-clip-torch")
    # CLIP's order: the bytes that stand for themselves first, then the 68 moved to 256 + k;
    # sorting the characters by code point gives exactly that
    chars = sorted(bytes_to_unicode().values())
    tokens = chars + [c + END_OF_WORD for c in chars] + ["".join(m) for m in merges]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def sd14_tokenizer():
    """SD 1.4's tokenizer: a ``transformers.CLIPTokenizer`` with CLIP's 49,408 tokens, 77 long."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), unk_token=EOS, bos_token=BOS,
                         eos_token=EOS, pad_token=EOS, model_max_length=MODEL_MAX_LENGTH)


# --------------------------------------------------------------------------------------------
# Configs: SD 1.4's as shipped, and the mini model's
# --------------------------------------------------------------------------------------------


def configs(size: RehearsalSize = "full") -> dict[str, dict[str, Any]]:
    """Keyword configs of the four model components for ``size``.

    ``full`` is SD 1.4's ``unet``, ``vae``, ``text_encoder`` and ``scheduler`` configs as
    shipped; ``mini`` keeps every block type, the 768-wide token embedding, 77 positions and the
    scheduler, and shrinks widths and depths.

    Returns:
        ``{"unet": ..., "vae": ..., "text_encoder": ..., "scheduler": ...}`` keyword dicts for
        ``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextConfig`` and ``PNDMScheduler``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown rehearsal size {size!r}; choose 'mini' (CPU, CI) or 'full' "
                         "(SD 1.4's shapes, for a GPU)")
    unet = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                attention_head_dim=8, act_fn="silu", center_input_sample=False,
                downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
                mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
               block_out_channels=(128, 256, 512, 512), sample_size=512, act_fn="silu",
               norm_num_groups=32, scaling_factor=0.18215,
               down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4)
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=768, num_hidden_layers=12,
                num_attention_heads=12, intermediate_size=3072, max_position_embeddings=77,
                hidden_act="quick_gelu", projection_dim=768, layer_norm_eps=1e-5,
                attention_dropout=0.0, dropout=0.0, initializer_factor=1.0,
                initializer_range=0.02, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    scheduler = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                     beta_schedule="scaled_linear", skip_prk_steps=True, set_alpha_to_one=False,
                     steps_offset=1, prediction_type="epsilon")
    if size == "mini":
        # 64 px images (8x8 latents): the VAE keeps its four levels (a factor of 8)
        unet.update(sample_size=8, layers_per_block=1, block_out_channels=(32, 64, 64, 64))
        vae.update(sample_size=64, layers_per_block=1, block_out_channels=(32, 32, 64, 64))
        text.update(num_hidden_layers=1)
    return {"unet": unet, "vae": vae, "text_encoder": text, "scheduler": scheduler}


def build_components(size: RehearsalSize = "full", seed: int = 0, device: str = "cpu",
                     parts: tuple[str, ...] = ("unet", "vae", "text_encoder")
                     ) -> dict[str, Any]:
    """The models of a rehearsal pipeline with seeded random weights, in ``eval`` mode.

    Args:
        parts: which of ``"unet"``, ``"vae"``, ``"text_encoder"`` to build. They are built in
            that order from one seeded generator, so a part's weights depend on the seed and on
            the parts built before it.
        device: where to build them; ``"meta"`` builds shapes only (no memory).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unknown = set(parts) - {"unet", "vae", "text_encoder"}
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from unet, vae, text_encoder")
    cfg = configs(size)
    makers = {"unet": lambda: UNet2DConditionModel(**cfg["unet"]),
              "vae": lambda: AutoencoderKL(**cfg["vae"]),
              "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))}
    out = {}
    torch.manual_seed(seed)
    with torch.device(device):
        for name in ("unet", "vae", "text_encoder"):
            if name in parts:
                out[name] = makers[name]().eval()
    return out


def build_pipeline(size: RehearsalSize = "mini", seed: int = 0):
    """A ``StableDiffusionPipeline`` with SD 1.4's structure and seeded random weights (CPU).

    SD 1.4's folder also holds a safety checker and its image preprocessor; the rehearsal model
    has neither (the notebooks never use them; ``load_pipeline`` leaves them out for SD too).
    """
    from diffusers import PNDMScheduler

    with quiet_loading():  # the pipeline's module touches transformers' image processors
        from diffusers import StableDiffusionPipeline
    parts = build_components(size, seed)
    return StableDiffusionPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=sd14_tokenizer(),
        unet=parts["unet"], scheduler=PNDMScheduler(**configs(size)["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def write_rehearsal_model(out: str | os.PathLike, size: RehearsalSize = "mini", seed: int = 0,
                          dtype: Literal["float32", "float16"] = "float32") -> Path:
    """Write a rehearsal pipeline folder to ``out`` (whole, or not at all).

    The folder is what ``StableDiffusionPipeline.from_pretrained`` loads, plus
    ``rehearsal_card.json`` that says what it is. ``out`` must not exist yet.

    Args:
        size: ``"mini"`` (built and run on a CPU in CI, about 190 MB) or ``"full"`` (SD 1.4's
            shapes: about 4.3 GB in float32, 2.1 GB in float16).
        seed: the seed of the random weights; the same seed writes the same weights.
        dtype: the dtype the weights are saved in.

    Raises:
        FileExistsError: ``out`` exists (nothing is overwritten).
    """
    import torch

    from nbhelpers.files import atomic_folder

    out = Path(out).expanduser()
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder (nothing was overwritten)")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    with atomic_folder(out) as tmp:   # the whole folder or nothing
        with quiet_loading():
            pipe = build_pipeline(size, seed)
            if dtype != "float32":
                pipe.to(dtype=getattr(torch, dtype))
            pipe.save_pretrained(str(tmp))
        _write_sd14_scheduler_extras(tmp / "scheduler" / "scheduler_config.json")
        card = {"what": "nbhelpers rehearsal model: Stable Diffusion 1.4's tokenizer, configs "
                        "and scheduler with seeded random weights (it draws noise)",
                "size": size, "seed": seed, "dtype": dtype, "build_version": BUILD_VERSION,
                "parameters_millions": {k: round(sum(p.numel() for p in getattr(pipe, k)
                                                     .parameters()) / 1e6, 2)
                                        for k in ("unet", "vae", "text_encoder")}}
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return out


def _write_sd14_scheduler_extras(path: Path) -> None:
    """Add the two keys SD 1.4's ``scheduler_config.json`` carries that PNDM does not read:
    ``clip_sample: false`` (which ``DDIMScheduler.from_config`` then takes; DDIM's own default is
    true, which clamps x0 estimates to [-1, 1]) and ``trained_betas: null``."""
    config = json.loads(path.read_text())
    config.update(clip_sample=False, trained_betas=None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def cache_root() -> Path:
    """``$NBHELPERS_CACHE`` or ``~/.cache/nbhelpers``: where built models and latents live."""
    return Path(os.environ.get("NBHELPERS_CACHE") or Path.home() / ".cache" / "nbhelpers")


def rehearsal_model_dir(size: RehearsalSize = "mini", seed: int = 0) -> Path:
    """The cached rehearsal folder for ``size`` and ``seed``, written on first use.

    Two processes asking at once each build into a temporary folder; the first rename wins and
    the other's copy is discarded, so readers never see a half-written folder.
    """
    folder = cache_root() / "rehearsal" / f"{size}-seed{seed}-v{BUILD_VERSION}"
    if (folder / CARD_FILE).is_file():
        return folder
    try:
        write_rehearsal_model(folder, size=size, seed=seed)
    except (FileExistsError, OSError):
        if not (folder / CARD_FILE).is_file():  # not a race lost to another process
            raise
    return folder
