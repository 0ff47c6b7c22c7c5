"""Every option value is checked before any work (#34 item 3): the range types of
nbhelpers.cli.options refuse NaN, infinity and out-of-range values as argparse's usage errors
(exit 2, the option and the value named, no traceback), and the memory the pictures need is
estimated and refused with the figure before a model loads."""

from __future__ import annotations

import dataclasses

import pytest

from nbhelpers import checks, models
from nbhelpers.cli import main, options


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any pipeline load fails the test: bad input must be refused before one."""
    def refuse(*args, **kwargs):
        raise AssertionError("a pipeline was loaded before the input was checked")

    monkeypatch.setattr(models, "load_pipeline", refuse)


def _refused(argv, capsys, *says: str) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    for word in says:
        assert word in err, (argv, word, err)
    assert "Traceback" not in err and "pipeline was loaded" not in err, err
    return err


GENERATE = ["generate", "--prompt", "a red circle", "--out", "x.png"]
SWEEP = ["sweep", "--prompt", "a red circle", "--out", "s.gif"]


@pytest.mark.parametrize("argv, says", [
    (GENERATE + ["--scale", "nan"], ["argument --scale: nan", "finite"]),
    (GENERATE + ["--scale", "inf"], ["argument --scale: inf", "finite"]),
    (GENERATE + ["--scale=-1e30"], ["argument --scale: -1e30", "between -1,000 and 1,000"]),
    (GENERATE + ["--scale", "abc"], ["argument --scale: abc: must be a number"]),
    (GENERATE + ["--seed", str(2**64)], ["argument --seed: 18446744073709551616",
                                         "between 0 and 9,223,372,036,854,775,807"]),
    (GENERATE + ["--seed", "-1"], ["argument --seed: -1", "between 0 and"]),
    (GENERATE + ["--steps", "0"], ["argument --steps: 0", "between 1 and 1,000"]),
    (GENERATE + ["--steps", "2.5"], ["argument --steps: 2.5: must be a whole number"]),
    (GENERATE + ["--n", "0"], ["argument --n: 0: must be at least 1"]),
    (GENERATE + ["--enlarge", "0"], ["argument --enlarge: 0: must be at least 1"]),
    (SWEEP + ["--fps", "inf"], ["argument --fps: inf", "finite"]),
    (SWEEP + ["--fps", "nan"], ["argument --fps: nan", "finite"]),
    (SWEEP + ["--fps", "0"], ["argument --fps: 0", "between 0.1 and 1,000"]),
    (SWEEP + ["--per-call", "0"], ["argument --per-call: 0: must be at least 1"]),
    (SWEEP + ["--unet-batch", "0"], ["argument --unet-batch: 0: must be at least 1"]),
    (SWEEP + ["--seed", str(2**64)], ["argument --seed:", "between 0 and"]),
])
def test_option_types_refuse_nan_inf_and_out_of_range(no_model_loads, capsys, argv, says):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for word in says:
        assert word in err, (word, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("scales, says", [
    ("0:inf:1", ["scales '0:inf:1': inf: must be a finite number"]),
    ("1,nan", ["scales '1,nan': nan: must be a finite number"]),
    ("0:1e9:1", ["1000000000.0: must be between -1,000 and 1,000"]),
    ("0:1000:0.001", ["make 1,000,001 frames, more than the 100,000 a sweep renders",
                      "larger step"]),
    ("0:20", ["cannot read scales '0:20'", "e.g. 0:20:0.2, 101 frames"]),
])
def test_sweep_scales_are_checked_and_counted_before_any_is_made(no_model_loads, tmp_path,
                                                                 capsys, scales, says):
    _refused(SWEEP[:-1] + [str(tmp_path / "s.gif"), "--scales", scales], capsys, *says)


def test_device_cuda_without_cuda_is_a_message(no_model_loads, monkeypatch, tmp_path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (GENERATE, SWEEP):
        _refused([*argv[:-1], str(tmp_path / argv[-1]), "--device", "cuda"], capsys,
                 "--device cuda: torch sees no CUDA GPU", "use --device cpu or --device auto")
    _refused([*GENERATE, "--device", "gpu"], capsys, "--device gpu: unknown device")


def test_seeds_past_the_largest_are_refused_with_where_to_start(no_model_loads, capsys):
    _refused([*GENERATE, "--seed", str(checks.MAX_SEED - 1), "--n", "3"], capsys,
             "3 seeds from it pass the largest", f"start at {checks.MAX_SEED - 2:,}")


def test_memory_is_estimated_and_refused_with_the_figure(no_model_loads, monkeypatch,
                                                         tmp_path, capsys):
    monkeypatch.setattr(checks, "available_memory", lambda: 2**24)
    out = str(tmp_path / "x.png")
    # the toy model draws 64 px pictures: 1,000 of them side by side need 27 MiB
    _refused(["generate", "--prompt", "x", "--n", "1000", "--out", out], capsys,
             "1,000 pictures side by side, 64 px each", "needs 27 MiB",
             "16 MiB available", "--each")
    # a picture too wide for image viewers, whatever the memory
    monkeypatch.setattr(checks, "available_memory", lambda: 2**50)
    _refused(["generate", "--prompt", "x", "--n", "1000000", "--out", out], capsys,
             "make a picture 67,999,996 px wide, more than image viewers open", "--each")
    monkeypatch.setattr(checks, "available_memory", lambda: 2**30)
    _refused(["generate", "--prompt", "x", "--enlarge", "100000", "--out", out], capsys,
             "a 6400000 px picture (--enlarge 100000) needs 267,028.8 GiB",
             "smaller --enlarge")
    _refused(["generate", "--prompt", "x", "--enlarge", "100000", "--each", "--out", out],
             capsys, "each 6400000 px picture")
    _refused(["sweep", "--prompt", "x", "--scales", "0:2000:0.1", "--per-call", "100000",
              "--out", str(tmp_path / "s.gif")], capsys, "scales '0:2000:0.1'", "between")
    _refused(["sweep", "--prompt", "x", "--scales", "0:999:0.01", "--per-call", "100000",
              "--out", str(tmp_path / "s.gif")], capsys,
             "99901 frames of 64 px at once (--per-call 100000)", "smaller --per-call")
    assert not list(tmp_path.iterdir())
    # --each: one picture at a time, so many images pass the estimate (and reach the load)
    assert main(["generate", "--prompt", "x", "--n", "100000", "--each", "--out", out]) == 1
    assert "pipeline was loaded" in capsys.readouterr().err


def test_the_types_are_one_room_built_on_the_checks():
    assert options.positive_int("3") == 3 and options.finite_float("2.5") == 2.5
    assert options.seed(str(checks.MAX_SEED)) == checks.MAX_SEED
    assert options.float_range(0, 1)("1") == 1.0 and options.non_negative_int("0") == 0
    assert options.training_size("512") == 512
    for kind, text in ((options.positive_int, "0"), (options.non_negative_int, "-1"),
                       (options.finite_float, "nan"), (options.positive_float, "0"),
                       (options.int_range(1, 3), "4"), (options.scale, "1e4"),
                       (options.seed, "x"), (options.training_size, "0"),
                       (options.training_size, "12")):
        with pytest.raises(Exception) as err:
            kind(text)
        assert type(err.value).__name__ == "ArgumentTypeError" and text in str(err.value)


def test_a_configuration_dataclass_gets_the_same_types():
    import argparse

    @dataclasses.dataclass
    class Config:
        lr: float = dataclasses.field(default=0.1, metadata={"help": "rate"})
        steps: int = dataclasses.field(default=1, metadata={
            "help": "steps", "type": options.positive_int})
        seed: int = dataclasses.field(default=0, metadata={"help": "seed", "type": "seed"})

    parser = argparse.ArgumentParser(exit_on_error=False)
    options.add_config_arguments(parser, Config)
    assert options.config_from_args(Config, parser.parse_args(["--lr", "0.5"])).lr == 0.5
    for argv in (["--lr", "nan"], ["--lr", "inf"], ["--steps", "0"], ["--seed", "-1"]):
        with pytest.raises(argparse.ArgumentError, match="must be"):
            parser.parse_args(argv)
