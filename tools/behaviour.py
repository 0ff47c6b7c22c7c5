"""A fingerprint of what the package does, to show that a refactor changed none of it.

    python tools/behaviour.py OUT.json            # record
    python tools/behaviour.py OUT.json --against BEFORE.json   # record, then compare

Everything runs through the command line (the interface a refactor must keep), on one torch
thread so that every number is reproducible bit for bit: the toy model's training recipe (quick
settings), the pictures folders, textual-inversion runs on the toy model and on the SD 1.4
rehearsal model in every framing, format and option the CLI offers, conversions, inspection,
generation with and without a negative prompt and an embedding, a sweep, and the text of every
``--help``. Tensors are hashed by value (dtype, shape, bytes), so a file's container can change
only where the format says so. Exit status 1 when ``--against`` finds a difference.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TQDM_DISABLE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbhelpers import cli  # noqa: E402


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _by_key(kv: tuple) -> str:
    return str(kv[0])


def _payload_digest(obj) -> object:
    if isinstance(obj, torch.Tensor):
        return _tensor_digest(obj)
    if isinstance(obj, dict):
        return {str(k): _payload_digest(v) for k, v in sorted(obj.items(), key=_by_key)}
    if isinstance(obj, (list, tuple)):
        return [_payload_digest(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return type(obj).__name__


def file_digest(path: Path) -> object:
    """Tensors by value for weight files, pixels for images, bytes for the rest."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return {"tensors": _payload_digest(load_file(str(path))), "metadata": meta}
    if suffix in (".pt", ".bin"):
        return _payload_digest(torch.load(path, map_location="cpu", weights_only=True))
    if suffix in (".png", ".jpg", ".jpeg", ".webp", ".gif"):
        from PIL import Image, ImageSequence
        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
        h = hashlib.sha256()
        for a in frames:
            h.update(a.tobytes())
        return {"frames": len(frames), "size": list(frames[0].shape), "pixels": h.hexdigest()[:16]}
    if path.name == "toy_card.json":  # all but the run's times and machine
        card = json.loads(path.read_text())
        return {k: v for k, v in card.items() if k not in ("seconds", "machine")}
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def folder_digest(folder: Path, skip: tuple[str, ...] = ()) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not any(s in rel for s in skip):
            out[rel] = file_digest(p)
    return out


def run_cli(argv: list[str]) -> dict:
    """One command in this process: its exit status and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    return {"rc": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def _normalise(text: str, tmp: Path) -> str:
    """The text without what changes from run to run: the folder, times, progress bars."""
    text = text.replace(str(tmp), "TMP")
    text = "\n".join(line for line in text.split("\n") if "\r" not in line)
    text = re.sub(r"\bin \d+(?:\.\d+)? s\b", "in N s", text)
    return re.sub(r"(?m)^seconds: .*$", "seconds: N", text)


def help_texts() -> dict:
    texts = {}
    parser = cli.build_parser()
    stack = [((), parser)]
    while stack:
        path, p = stack.pop()
        texts[" ".join(path) or "(top)"] = p.format_help()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    stack.append((path + (name,), sub))
    return dict(sorted(texts.items()))


def sampling_digests() -> dict:
    """The samplers called from Python: every guidance option, and what a callback sees."""
    from nbhelpers.models import load_pipeline
    from nbhelpers.sampling import sample_cfg, sample_prompts
    pipe = load_pipeline("toy", device="cpu")
    out = {}
    for name, kw in {"plain": {}, "negative": {"negative_prompt": "a blue square"},
                     "rescale": {"rescale_phi": 0.7}, "interval": {"interval": (200, 800)},
                     "all": {"negative_prompt": "a square", "rescale_phi": 0.5,
                             "interval": (100, 600)}}.items():
        seen: list = []

        def look(st, seen=seen) -> None:
            seen.append([st.t, st.scales.tolist(), _tensor_digest(st.x0_guided)])
        lat = sample_cfg(pipe, "a red circle on a white background", [0.0, 1.0, 3.0, 7.5],
                         num_steps=6, seed=2, output="latents", callback=look, **kw)
        out[f"sample_cfg {name}"] = {"latents": _tensor_digest(lat), "steps": seen}
    imgs = sample_prompts(pipe, ["a red circle", "a blue square", "a toy"], 5.0, seed=4,
                          num_steps=5, batch=2, rescale_phi=0.3)
    out["sample_prompts"] = _tensor_digest(torch.from_numpy(np.ascontiguousarray(imgs)))
    return out


def record() -> dict:
    snap: dict = {"help": help_texts(), "python": sampling_digests()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)

        def cmd(key: str, argv: list[str], outputs: list[Path] = ()) -> None:
            r = run_cli(argv)
            entry = {"rc": r["rc"], "stdout": _normalise(r["stdout"], tmp),
                     "stderr": _normalise(r["stderr"], tmp)}
            for o in outputs:
                if o.is_dir():
                    entry[o.name] = folder_digest(o, skip=("model_card", "README"))
                elif o.exists():
                    entry[o.name] = file_digest(o)
                else:
                    entry[o.name] = None
            snap[key] = entry
            print(f"behaviour: {key}: rc {r['rc']}", file=sys.__stderr__)

        toy = tmp / "toy-sd"
        cmd("toy train --quick", ["toy", "train", "--quick", "--threads", "1", "--out", str(toy)],
            [toy])
        pics, bal = tmp / "pics", tmp / "balanced"
        cmd("toy pictures unnamed", ["toy", "pictures", "--out", str(pics), "--n", "6"], [pics])
        cmd("toy pictures balanced", ["toy", "pictures", "--out", str(bal), "--set", "balanced-toy",
                                      "--n", "6"], [bal])
        base = ["ti", "train", str(pics), "--steps", "6", "--batch-size", "2", "--seed", "0",
                "--device", "cpu", "--cache-dir", str(tmp / "cache")]
        variants = {
            "center": [],
            "focal": ["--framing", "focal"],
            "tiles+flip": ["--framing", "tiles", "--flip"],
            "buckets": ["--framing", "buckets"],
            "a1111": ["--format", "a1111"],
            "kohya": ["--format", "kohya"],
            "object+2vec+accum": ["--template", "object", "--vectors", "2", "--grad-accum", "2",
                                  "--init-word", "circle"],
            "schedule+preview+ckpt": ["--lr", "0.005:3, 1e-3", "--preview-every", "3",
                                      "--preview-prompt", "[name]", "--checkpoint-every", "2"],
            "size32+refuse": ["--size", "32"],
        }
        for name, extra in variants.items():
            ext = ".pt" if "a1111" in name else ".safetensors"
            out = tmp / f"emb-{name.replace('+', '-')}{ext}"
            cmd(f"ti train {name}", base + ["--token", "<s>", "--out", str(out)] + extra, [out])
        over = tmp / "toy-over.safetensors"
        cmd("ti train overwrite", ["ti", "train", str(bal), "--token", "toy", "--overwrite",
                                   "--steps", "6", "--batch-size", "2", "--out", str(over),
                                   "--device", "cpu"], [over])
        emb = tmp / "emb-center.safetensors"
        for fmt, ext in (("a1111", ".pt"), ("kohya", ".safetensors"), ("diffusers", ".bin")):
            dst = tmp / f"conv-{fmt}{ext}"
            cmd(f"ti convert {fmt}", ["ti", "convert", str(emb), str(dst), "--format", fmt], [dst])
        cmd("ti inspect", ["ti", "inspect", str(emb)])
        for name, extra in {
            "plain": [],
            "negative": ["--negative-prompt", "a blue square"],
            "embedding": ["--embedding", str(emb), "--prompt", "a red circle, <s> style"],
            "scale0+enlarge": ["--scale", "0", "--enlarge", "2"],
        }.items():
            png = tmp / f"gen-{name.replace('+', '-')}.png"
            argv = ["generate", "--model", "toy", "--prompt", "a red circle on a white background",
                    "--steps", "5", "--n", "2", "--seed", "3", "--out", str(png), "--device", "cpu"]
            cmd(f"generate {name}", argv + extra, [png])
        gif = tmp / "sweep.gif"
        cmd("sweep", ["sweep", "--model", "toy", "--prompt", "a red circle", "--scales", "0,1,7.5",
                      "--steps", "4", "--fps", "2", "--out", str(gif), "--device", "cpu",
                      "--negative-prompt", "a square"], [gif, tmp / "sweep.png"])
        reh = tmp / "sd14-mini"
        cmd("sd rehearsal-model", ["sd", "rehearsal-model", "--out", str(reh)], [reh])
        pics512 = tmp / "pics-sd"
        run_cli(["toy", "pictures", "--out", str(pics512), "--n", "2"])
        sd_emb = tmp / "sd-emb.safetensors"
        cmd("ti train rehearsal", ["ti", "train", str(pics512), "--model", str(reh), "--token",
                                   "<p>", "--steps", "2", "--batch-size", "1", "--size", "64",
                                   "--out", str(sd_emb), "--device", "cpu"], [sd_emb])
        sd_png = tmp / "sd-gen.png"
        cmd("generate rehearsal", ["generate", "--model", str(reh), "--prompt", "a <p> picture",
                                   "--embedding", str(sd_emb), "--steps", "3", "--out",
                                   str(sd_png), "--device", "cpu"], [sd_png])
    return snap


def differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only {'after' if k not in a else 'before'}")
            else:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    return [] if a == b else [f"{path}: {str(a)[:300]!r} -> {str(b)[:300]!r}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--against", help="an earlier snapshot to compare with")
    args = p.parse_args()
    snap = record()
    Path(args.out).write_text(json.dumps(snap, indent=1, sort_keys=True))
    if args.against:
        diffs = differences(json.loads(Path(args.against).read_text()), snap)
        for line in diffs:
            print(line)
        print(f"behaviour: {len(diffs)} difference(s) from {args.against}")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
