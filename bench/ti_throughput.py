"""Textual-inversion step throughput and memory: the engine against the usual recipe.

    python bench/ti_throughput.py --model toy                     # CPU, the embedded model
    python bench/ti_throughput.py --model sd14 --size 512 --device cuda --precision bf16

Both loops run in this process on the same model, batch size and number of steps:

* **engine**: ``nbhelpers.ti.train`` (latents cached once, only the token's rows train in fp32,
  frozen models without weight gradients, SDPA, optional gradient checkpointing);
* **reference**: a loop written to follow the diffusers example script's recipe: the VAE encodes
  and samples the posterior every step, the whole token-embedding matrix is trainable (AdamW
  with weight decay 1e-2) and all rows but the new one are restored after each step, the text
  encoder in fp32, the UNet and VAE in the mixed-precision dtype, no caching.

Reported: images per second (median over timed steps after warm-up), peak GPU memory, and the
FLOPs of one engine step counted with ``torch.utils.flop_counter`` divided by its time and by
the device's bf16 dense peak.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import make_pipeline  # noqa: E402
from report import emit, markdown_table  # noqa: E402

#: bf16 dense peak by device name (datasheet, TFLOP/s): the denominator of the utilisation.
PEAKS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40": 181.0, "A10": 125.0,
         "4090": 165.2, "3090": 71.0, "V100": 125.0}
TEMPLATES = ["a painting of [filewords] in the style of [name]", "[filewords], [name] style"]


def device_peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAKS.items() if k in name), None)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def images_and_captions(n: int, size: int) -> tuple[list[torch.Tensor], list[str]]:
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, size, size, generator=g) * 2 - 1 for _ in range(n)]
    return imgs, [f"image {k}" for k in range(n)]


def run_engine(kind, device, dtype, precision, batch, steps, warmup, size, ckpt, cache_dir):
    from nbhelpers.ti.config import TIConfig
    from nbhelpers.ti.latents import LatentSet
    from nbhelpers.ti.train import train_textual_inversion

    pipe = make_pipeline(kind, device, dtype)
    imgs, caps = images_and_captions(8, size)
    t0 = time.perf_counter()
    data = LatentSet.encode(pipe.vae, imgs, caps, cache_dir=cache_dir)
    encode_s = time.perf_counter() - t0
    stamps: list[float] = []

    def tick(_state):
        sync(device)
        stamps.append(time.perf_counter())

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cfg = TIConfig(token="<bench>", init_word="style", steps=warmup + steps, batch_size=batch,
                   lr="5e-3", mixed_precision=precision, gradient_checkpointing=ckpt)
    train_textual_inversion(pipe, data, TEMPLATES, cfg, callback=tick)
    per_step = sorted(b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:], strict=False))
    step_s = per_step[len(per_step) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"step_s": step_s, "img_s": batch / step_s, "peak_gib": peak, "encode_s": encode_s,
            "pipe": pipe}


def engine_step_flops(pipe, device, precision, batch, size) -> float:
    """FLOPs of one engine training step (forward and backward), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    from nbhelpers.ti.rows import Conditioner, TrainableRows

    tok, te, unet = pipe.tokenizer, pipe.text_encoder, pipe.unet
    ids = tok(["a painting in the style of <bench>"] * batch, padding="max_length",
              max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    rows = TrainableRows(te.get_input_embeddings(), [ids[0, 1].item()],
                         te.get_input_embeddings().weight[ids[0, 1:2]].detach()).to(device)
    te.set_input_embeddings(rows)
    cond = Conditioner(te, rows)
    lat = size // 8
    x = torch.randn(batch, 4, lat, lat, device=device, dtype=unet.dtype)
    t = torch.randint(0, 1000, (batch,), device=device)
    dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            hidden = cond(ids.to(device))
            pred = unet(x, t, encoder_hidden_states=hidden.to(unet.dtype)).sample
        loss = pred.float().pow(2).mean()
        loss.backward()
    te.set_input_embeddings(rows.base)
    return float(counter.get_total_flops())


def run_reference(kind, device, dtype, precision, batch, steps, warmup, size):
    """The diffusers example's recipe, step for step (see the module docstring)."""
    pipe = make_pipeline(kind, device, torch.float32)
    tok, te, unet, vae, sched = (pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae,
                                 pipe.scheduler)
    weight_dtype = {"no": torch.float32, "bf16": torch.bfloat16,
                    "fp16": torch.float16}[precision]
    unet.to(device, dtype=weight_dtype)
    vae.to(device, dtype=weight_dtype)
    tok.add_tokens(["<bench>"])
    te.resize_token_embeddings(len(tok))
    placeholder = tok.convert_tokens_to_ids("<bench>")
    unet.requires_grad_(False)
    vae.requires_grad_(False)
    te.requires_grad_(False)  # all but the token-embedding matrix, as the script freezes them
    emb = te.get_input_embeddings()
    emb.requires_grad_(True)
    te.to(device).train()
    opt = torch.optim.AdamW(emb.parameters(), lr=5e-3, weight_decay=1e-2)
    orig = emb.weight.detach().clone()
    keep = torch.ones(len(tok), dtype=torch.bool, device=device)
    keep[placeholder] = False
    imgs, caps = images_and_captions(8, size)
    g = torch.Generator().manual_seed(0)
    alphas = sched.alphas_cumprod.to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        idx = torch.randint(0, len(imgs), (batch,), generator=g)
        pixels = torch.stack([imgs[i] for i in idx]).to(device, weight_dtype)
        prompts = [TEMPLATES[0].replace("[name]", "<bench>").replace("[filewords]", caps[i])
                   for i in idx]
        latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, len(alphas), (batch,), device=device)
        ab = alphas[t].view(-1, 1, 1, 1).to(latents.dtype)
        noisy = ab.sqrt() * latents + (1 - ab).sqrt() * noise
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids.to(device)
        hidden = te(ids)[0].to(weight_dtype)
        pred = unet(noisy, t, encoder_hidden_states=hidden).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():  # restore every row but the new one
            emb.weight[keep] = orig[keep]
        sync(device)
        times.append(time.perf_counter() - t0)
    per_step = sorted(times[warmup:])
    step_s = per_step[len(per_step) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"step_s": step_s, "img_s": batch / step_s, "peak_gib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", choices=["toy", "sd14", "tiny"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--memory-batch1", action="store_true",
                   help="also measure the engine at batch 1 with gradient checkpointing")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    dtype = torch.float32
    eng = run_engine(args.model, args.device, dtype, args.precision, args.batch, args.steps,
                     args.warmup, args.size, False, args.cache_dir)
    flops = engine_step_flops(eng["pipe"], args.device, args.precision, args.batch, args.size)
    del eng["pipe"]
    ref = run_reference(args.model, args.device, dtype, args.precision, args.batch, args.steps,
                        args.warmup, args.size)
    peak = device_peak(args.device)
    mfu = flops / eng["step_s"] / 1e12 / peak if peak else None
    rows = [["engine", f"{eng['img_s']:.2f}", f"{eng['step_s'] * 1000:.1f}",
             f"{eng['peak_gib']:.2f}" if eng["peak_gib"] is not None else "n/a"],
            ["reference (diffusers recipe)", f"{ref['img_s']:.2f}",
             f"{ref['step_s'] * 1000:.1f}",
             f"{ref['peak_gib']:.2f}" if ref["peak_gib"] is not None else "n/a"]]
    if args.memory_batch1:
        b1 = run_engine(args.model, args.device, dtype, args.precision, 1, max(3, args.steps // 2),
                        2, args.size, True, args.cache_dir)
        rows.append(["engine, batch 1, gradient checkpointing", f"{b1['img_s']:.2f}",
                     f"{b1['step_s'] * 1000:.1f}",
                     f"{b1['peak_gib']:.2f}" if b1["peak_gib"] is not None else "n/a"])
    table = markdown_table(["loop", "images/s", "ms/step", "peak GiB"], rows)
    lines = [f"Model {args.model} at {args.size} px, batch {args.batch}, precision "
             f"{args.precision}, device {args.device}; median of {args.steps} steps after "
             f"{args.warmup} warm-up steps; same process.", "", table, "",
             f"Engine speed-up over the reference: **{eng['img_s'] / ref['img_s']:.2f}x**. "
             f"One-off latent encoding of the 8 images: {eng['encode_s']:.2f} s.",
             f"FLOPs of one engine step (torch.utils.flop_counter): {flops / 1e12:.3f} TFLOP"
             + (f"; {flops / eng['step_s'] / 1e12:.1f} TFLOP/s, **{100 * mfu:.1f}%** of the "
                f"{peak:g} TFLOP/s bf16 dense peak." if mfu else
                f"; {flops / eng['step_s'] / 1e9:.1f} GFLOP/s (no peak for this device).")]
    if args.model == "sd14":
        lines.append("The SD 1.4-shaped model has random weights: they cost exactly what trained "
                     "ones do.")
    emit("\n".join(lines), f"Textual-inversion throughput: {args.model}, {args.device}",
         args.out, doc=not args.no_doc)


if __name__ == "__main__":
    main()
