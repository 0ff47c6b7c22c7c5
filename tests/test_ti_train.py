"""The textual-inversion loop on a tiny random SD-shaped pipeline."""

import socket

import pytest
import torch

from nbhelpers.models import load_pipeline
from nbhelpers.ti.checkpoints import checkpoint_steps, find_checkpoint
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.latents import LatentSet, encode_images
from nbhelpers.ti.lr_schedule import lr_at, parse_lr_schedule
from nbhelpers.ti.rows import TrainableRows
from nbhelpers.ti.train import NonFiniteLossError, train_textual_inversion

TEMPLATES = ["a painting of [filewords] in the style of [name]", "[name] style"]


def test_lr_schedule_in_a1111_syntax():
    sched = parse_lr_schedule("0.005:100, 1e-3:1000, 1e-5")
    assert [lr_at(sched, s) for s in (0, 99, 100, 999, 1000, 10**6)] == [
        0.005, 0.005, 1e-3, 1e-3, 1e-5, 1e-5]
    assert lr_at(parse_lr_schedule("2e-3"), 5000) == 2e-3
    assert lr_at(parse_lr_schedule("0.01:10"), 50) == 0.01
    for bad in ("", "fast", "0.01:100, 0.001:50", "-1", "0.01, 0.001:10", "0.01:0"):
        with pytest.raises(ValueError, match="learning-rate schedule"):
            parse_lr_schedule(bad)


def test_trainable_rows_touch_only_their_rows():
    base = torch.nn.Embedding(10, 4)
    before = base.weight.detach().clone()
    rows = TrainableRows(base, [7, 9], torch.zeros(2, 4))
    out = rows(torch.tensor([[1, 7, 9, 7]]))
    assert torch.equal(out[0, 0], before[1]) and torch.equal(out[0, 1], torch.zeros(4))
    out.sum().backward()
    assert base.weight.grad is None and rows.vectors.grad is not None
    assert torch.equal(rows.vectors.grad[0], torch.full((4,), 2.0))  # id 7 appears twice


@pytest.fixture()
def data(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) * 2 - 1 for _ in range(4)]
    cache = encode_images(pipe.vae, images, cache_dir=tmp_path / "cache")
    captions = ["a red circle", "a blue square", "a star", "a cross"]
    return pipe, images, cache, LatentSet([cache], [captions])


def _fresh(tiny_pipeline_dir):
    return load_pipeline(str(tiny_pipeline_dir), device="cpu")


def test_latents_are_cached_on_disk(data, tmp_path):
    pipe, images, cache, _ = data
    mixed = LatentSet.encode(pipe.vae, [images[0], torch.zeros(3, 64, 48)], ["a", "b"],
                             cache_dir=tmp_path / "cache")
    assert [len(c) for c in mixed.captions] == [1, 1] and mixed.hits == 1
    x0, caps = mixed.draw(3, torch.Generator().manual_seed(0))
    assert x0.shape[0] == 3 and len(set(caps)) == 1  # one shape per batch
    assert cache.encoded == 4 and cache.hits == 0 and cache.mean.shape == (4, 4, 8, 8)
    again = encode_images(pipe.vae, images, cache_dir=tmp_path / "cache")
    assert again.hits == 4 and again.encoded == 0 and torch.equal(again.mean, cache.mean)
    flipped = encode_images(pipe.vae, [images[0].flip(-1)], cache_dir=tmp_path / "cache")
    assert flipped.encoded == 1


def test_training_changes_only_the_new_rows(data, tmp_path):
    pipe, _, _, latent_set = data
    table_before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    unet_before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    seen = []
    cfg = TIConfig(token="<shape-style>", init_word="style", n_vectors=2, steps=5,
                   batch_size=2, lr="0.05", out_dir=str(tmp_path / "run"))
    result = train_textual_inversion(pipe, latent_set, TEMPLATES, cfg,
                                     callback=seen.append)
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    n_old = table_before.shape[0]
    assert torch.equal(table[:n_old], table_before), "old rows must not drift"
    assert table.shape[0] == n_old + 2
    assert torch.equal(table[n_old:], result.vectors)
    init = table_before[pipe.tokenizer.convert_tokens_to_ids("style</w>")]
    assert not torch.allclose(result.vectors[0], init), "the vectors trained"
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in unet_before.items())
    assert all(p.grad is None for p in pipe.unet.parameters())
    assert [s.step for s in seen] == [1, 2, 3, 4, 5] and len(result.losses) == 5
    assert result.token_strings == ["<shape-style>", "<shape-style>_1"]
    assert checkpoint_steps(tmp_path / "run" / "checkpoint") == [5]


def test_resume_gives_the_same_embedding(tiny_pipeline_dir, data, tmp_path):
    _, _, _, latent_set = data
    kw = dict(token="<s>", init_word="style", steps=6, batch_size=2, lr="0.05:3, 0.02")
    straight = train_textual_inversion(_fresh(tiny_pipeline_dir), latent_set, TEMPLATES,
                                       TIConfig(**kw, out_dir=str(tmp_path / "a")))

    def stop_at_3(state):
        if state.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_textual_inversion(_fresh(tiny_pipeline_dir), latent_set, TEMPLATES,
                                TIConfig(**kw, out_dir=str(tmp_path / "b"), checkpoint_every=2),
                                callback=stop_at_3)
    assert checkpoint_steps(tmp_path / "b" / "checkpoint") == [3, 2]  # the two newest kept
    resumed = train_textual_inversion(_fresh(tiny_pipeline_dir), latent_set, TEMPLATES,
                                      TIConfig(**kw, out_dir=str(tmp_path / "b"), resume=True))
    torch.testing.assert_close(resumed.vectors, straight.vectors, rtol=0, atol=1e-6)
    assert len(resumed.losses) == 6


def test_non_finite_loss_keeps_the_last_good_vectors(data, tmp_path):
    pipe, _, _, latent_set = data
    cfg = TIConfig(token="<s>", init_word="style", steps=20, batch_size=2, lr="1e30",
                   out_dir=str(tmp_path / "nan"))
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate"):
        train_textual_inversion(pipe, latent_set, TEMPLATES, cfg)
    _, state, _ = find_checkpoint(tmp_path / "nan" / "checkpoint")
    assert torch.isfinite(state["vectors"]).all()
    assert torch.isfinite(pipe.text_encoder.get_input_embeddings().weight).all()


def test_bad_tokens(data):
    pipe, _, _, latent_set = data
    with pytest.raises(ValueError, match="already in the tokenizer's vocabulary"):
        train_textual_inversion(pipe, latent_set, TEMPLATES,
                                TIConfig(token="red", steps=1))
    with pytest.raises(ValueError, match="init word 'zebraxq' is"):
        train_textual_inversion(pipe, latent_set, TEMPLATES,
                                TIConfig(token="<z>", init_word="zebraxq", steps=1))
    with pytest.raises(ValueError, match="one word"):
        TIConfig(token="my style").validate()


def _overwrite_red(pipe, latent_set, templates) -> tuple[list[int], int]:
    """Retrain the existing word "red" for 3 steps; return (changed rows of the table, its id)."""
    table_before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    train_textual_inversion(pipe, latent_set, templates,
                            TIConfig(token="red", overwrite=True, steps=3, batch_size=2,
                                     lr="0.05"))
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert table.shape == table_before.shape
    changed = (table != table_before).any(1).nonzero().flatten().tolist()
    return changed, pipe.tokenizer.convert_tokens_to_ids("red</w>")


def test_overwrite_mode_retrains_an_existing_word(data):
    pipe, _, _, latent_set = data
    changed, red = _overwrite_red(pipe, latent_set, ["a [name] thing, [filewords]"])
    assert changed == [red]


def _train_in_one_of_two_processes(pipeline_dir: str, out: str) -> None:
    """One process of the two below: Accelerate's state comes from the launcher's env."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    torch.set_num_threads(1)
    AcceleratorState._reset_state(True)      # the parent test process may have made one
    acc = Accelerator(cpu=True)
    pipe = load_pipeline(pipeline_dir, device="cpu")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) * 2 - 1 for _ in range(4)]
    data = LatentSet.encode(pipe.vae, images, ["a", "b", "c", "d"], cache_dir=f"{out}/cache")
    cfg = TIConfig(token="<s>", init_word="style", steps=4, batch_size=2, lr="0.05")
    res = train_textual_inversion(pipe, data, ["[name] style of [filewords]"], cfg,
                                  accelerator=acc)
    torch.save(res.vectors, f"{out}/vec-{acc.process_index}.pt")
    with open(f"{out}/world-{acc.process_index}.txt", "w") as f:
        f.write(str(acc.num_processes))


def test_two_processes_under_accelerate_end_with_the_same_embedding(tiny_pipeline_dir,
                                                                    tmp_path):
    """Two processes with gloo on the CPU (Accelerate's own CPU launch, forked from this
    process so nothing is imported twice): gradients are synced, so both end the same."""
    import tempfile

    from accelerate.launchers import PrepareForLaunch
    from accelerate.utils import patch_environment
    from torch.multiprocessing import start_processes

    with socket.socket() as sock:      # a free port rather than the fixed default 29500
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.NamedTemporaryFile() as rendezvous, patch_environment(
            world_size=2, master_addr="127.0.0.1", master_port=str(port),
            accelerate_mixed_precision="no", accelerate_debug_rdv_file=rendezvous.name,
            accelerate_use_cpu="yes", gloo_socket_ifname="lo"):
        start_processes(PrepareForLaunch(_train_in_one_of_two_processes, debug=True),
                        args=(str(tiny_pipeline_dir), str(tmp_path)), nprocs=2,
                        start_method="fork")
    assert [(tmp_path / f"world-{k}.txt").read_text() for k in (0, 1)] == ["2", "2"]
    v0 = torch.load(tmp_path / "vec-0.pt", weights_only=True)
    v1 = torch.load(tmp_path / "vec-1.pt", weights_only=True)
    assert torch.equal(v0, v1)


def test_overwrite_mode_trains_from_captions_that_use_the_word(tiny_pipeline_dir):
    from nbhelpers.ti.captions import load_templates

    pipe = _fresh(tiny_pipeline_dir)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) * 2 - 1 for _ in range(2)]
    latent_set = LatentSet([encode_images(pipe.vae, images)], [["a red circle", "a red star"]])
    changed, red = _overwrite_red(pipe, latent_set, ["[filewords]"])
    assert changed == [red]
    # without overwrite, a template with no [name] is refused, with the reason
    with pytest.raises(ValueError, match=r"no \[name\] slot"):
        train_textual_inversion(pipe, latent_set, ["[filewords]"],
                                TIConfig(token="<new>", steps=1))
    assert load_templates(["[filewords]"], require_name=False) == ["[filewords]"]
    with pytest.raises(ValueError, match=r"no \[name\] slot"):   # the one rule, one message
        load_templates(["[filewords]"])


def test_no_trainable_parameter_is_ever_half_precision(tiny_pipeline_dir, tmp_path):
    """A pipeline loaded in float16 and trained in bf16: the trainable rows stay float32 at
    every step, nothing else trains, and the models get their float16 back at the end."""
    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu", dtype="float16")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) * 2 - 1 for _ in range(2)]
    data = LatentSet.encode(pipe.vae, images, ["a red circle", "a star"],
                            cache_dir=tmp_path / "cache")
    seen = []

    def check(state):
        trainable = [p for m in (pipe.unet, pipe.text_encoder, pipe.vae)
                     for p in m.parameters() if p.requires_grad]
        rows = pipe.text_encoder.get_input_embeddings()
        assert trainable == [rows.vectors]
        assert rows.vectors.dtype == torch.float32 and state.vectors.dtype == torch.float32
        assert pipe.unet.dtype == torch.bfloat16 and rows.base.weight.dtype == torch.bfloat16
        seen.append(state.step)

    cfg = TIConfig(token="<s>", init_word="style", steps=3, batch_size=2, lr="0.05",
                   mixed_precision="bf16")
    result = train_textual_inversion(pipe, data, TEMPLATES, cfg, callback=check)
    assert seen == [1, 2, 3] and result.vectors.dtype == torch.float32
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder.dtype == torch.float16
    row = pipe.text_encoder.get_input_embeddings().weight[-1]
    assert torch.equal(row, result.vectors[0].half())   # rounded once, from the fp32 vector
