"""Shares over training runs: the interval covers run-to-run and image sampling, in words."""

from __future__ import annotations

import math

import pytest

from nbhelpers.toy.measure import wilson
from nbhelpers.toy.replicates import compare, over_runs, t975


def test_three_runs_use_their_spread_and_students_t():
    share = over_runs([(50, 100), (60, 100), (70, 100)])
    se = 0.1 / math.sqrt(3)                      # sd of 0.5, 0.6, 0.7 is 0.1
    assert share.p == pytest.approx(0.6)
    assert share.se == pytest.approx(se)
    assert share.lo == pytest.approx(0.6 - 4.303 * se)
    assert share.hi == pytest.approx(0.6 + 4.303 * se)
    assert share.runs == (0.5, 0.6, 0.7) and share.n_runs == 3 and share.images == 100


def test_runs_that_agree_by_chance_keep_the_binomial_floor():
    share = over_runs([(60, 100)] * 3)
    floor = math.sqrt(0.6 * 0.4 / 300)
    assert share.se == pytest.approx(floor) and share.hi - share.lo > 0


def test_one_run_is_wilsons_interval_and_the_sentence_says_so():
    one = over_runs([(90, 128)])
    w = wilson(90, 128)
    assert (one.p, one.lo, one.hi) == (w.p, w.lo, w.hi)
    assert "one training run" in compare([(90, 128)], [(60, 128)], "a", "b").sentence


def test_a_clear_difference_is_detected_and_named():
    c = compare([(120, 128), (118, 128), (121, 128)], [(60, 128), (70, 128), (65, 128)],
                "from 'checkered'", "from 'style'")
    assert c.detected and c.lo > 0
    assert "detected: from 'checkered' gives the larger share" in c.sentence
    assert not c.at_ceiling


def test_overlapping_runs_detect_nothing():
    c = compare([(60, 100), (80, 100), (70, 100)], [(65, 100), (75, 100), (55, 100)], "a", "b")
    assert not c.detected and "no difference is detected" in c.sentence


def test_two_shares_near_one_are_at_a_ceiling():
    c = compare([(126, 128), (127, 128), (125, 128)], [(124, 128), (128, 128), (126, 128)],
                "1 vector", "16 vectors")
    assert c.at_ceiling and "no test has the power" in c.sentence
    assert compare([(1, 100)] * 2, [(3, 100)] * 2, "a", "b").at_ceiling


def test_every_figure_of_the_sentence_comes_from_the_data():
    c = compare([(120, 128), (110, 128), (125, 128)], [(100, 128), (90, 128), (95, 128)],
                "a", "b")
    assert f"{c.a.p:.0%}" in c.sentence and f"{c.b.p:.0%}" in c.sentence
    assert f"{c.difference * 100:+.0f} points" in c.sentence


@pytest.mark.parametrize("bad, match", [([], "at least one run"), ([(5, 3)], "successes"),
                                        ([(1, 0)], "images > 0"), ([(0.5, 3)], "whole numbers")])
def test_bad_runs_are_refused_with_the_value(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        over_runs(bad)


def test_t_quantiles():
    assert t975(2) == 4.303 and t975(2.7) == 4.303 and t975(11) == 2.228 and t975(100) == 1.96
    with pytest.raises(ValueError):
        t975(0.5)


def test_the_difference_interval_stays_within_what_shares_allow():
    c = compare([(64, 64), (10, 64), (60, 64)], [(0, 64), (50, 64), (2, 64)], "a", "b")
    assert -1.0 <= c.lo <= c.difference <= c.hi <= 1.0
