"""Statistics of returns: hand-computed values, interval coverage on a simulated coin, rliable across seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.failure import FailureRule, relative_threshold
from train.stats import across_seeds_iqm, failure_interval, iqm, retention, return_stats


def test_point_estimates_and_failure_rate_by_hand():
    returns = [0, 1, 2, 3, 4, 5, 6, 100]
    rule = FailureRule(below=1.5)
    got = return_stats(returns, rule.failed(returns, [False] * 8), rule.describe())
    assert got.failure_ci is not None
    assert got.episodes == 8
    assert got.mean == pytest.approx(121 / 8)  # 0 + 1 + ... + 6 = 21, plus 100
    assert got.median == pytest.approx(3.5)  # (3 + 4) / 2
    assert got.iqm == pytest.approx(3.5)  # the middle half: (2 + 3 + 4 + 5) / 4
    assert got.failures == 2 and got.failure_rate == pytest.approx(0.25)  # 0 and 1 are below 1.5
    # Wilson at 95%, z = 1.959964, p = 2/8, n = 8:
    #   centre = (p + z^2 / 2n) / (1 + z^2 / n) = (0.25 + 0.240091) / 1.480182 = 0.331102
    #   half = z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n) = 1.959964 * 0.196070 / 1.480182 = 0.259624
    assert got.failure_ci.low == pytest.approx(0.071478, abs=1e-5)
    assert got.failure_ci.high == pytest.approx(0.590726, abs=1e-5)
    for point, ci in ((got.mean, got.mean_ci), (got.median, got.median_ci), (got.iqm, got.iqm_ci)):
        assert ci.low <= point <= ci.high
    assert got.to_dict()["failure_ci"] == {"low": got.failure_ci.low, "high": got.failure_ci.high}
    assert got.failure_criterion == "return below 1.5 (given)"


def test_constant_returns_have_a_point_interval_and_no_failure_figures_without_a_criterion():
    got = return_stats([1000.0] * 40)
    assert (got.mean, got.mean_ci.low, got.mean_ci.high) == (1000.0, 1000.0, 1000.0)
    assert got.failures is None and got.failure_rate is None and got.failure_criterion is None
    none_failed = return_stats([1000.0] * 40, [False] * 40, "the pole fell")
    # 0 of 40: the Wilson interval still says up to about 8.8% is possible (z^2 / (n + z^2) = 3.84 / 43.84).
    assert none_failed.failures == 0 and none_failed.failure_ci is not None
    assert none_failed.failure_ci.low == 0.0
    assert none_failed.failure_ci.high == pytest.approx(3.841459 / 43.841459, abs=1e-6)


def test_a_failure_rule_counts_terminations_and_low_returns():
    returns, terminated = [1000.0, 35.0, 990.0, 1000.0], [False, True, False, False]
    assert FailureRule().failed(returns, terminated) is None and FailureRule().describe() is None
    falls = FailureRule(termination="the pole fell")
    assert np.asarray(falls.failed(returns, terminated)).tolist() == [False, True, False, False]
    both = FailureRule(termination="the pole fell", below=995.0)
    assert np.asarray(both.failed(returns, terminated)).tolist() == [False, True, True, False]
    assert both.describe() == "the episode terminated early (the pole fell) or return below 995 (given)"
    # Half way from random (-40) to the teacher (-4) is -22; a teacher no better than random gives none.
    assert relative_threshold(-4.0, -40.0, 0.5) == pytest.approx(-22.0)
    assert relative_threshold(5.0, 5.0, 0.5) is None
    with pytest.raises(ValueError, match="finite"):
        FailureRule(below=float("nan"))
    with pytest.raises(ValueError, match="termination flags"):
        falls.failed(returns, [False])
    with pytest.raises(ValueError, match="failure flags"):
        return_stats(returns, [True], "x")


def test_retention_by_hand_and_its_paired_interval():
    teacher = np.array([1000.0] * 39 + [900.0])
    student = np.array([1000.0] * 38 + [35.0, 1000.0])
    floor = np.full(40, 10.0)
    # student mean = (38 * 1000 + 35 + 1000) / 40 = 975.875; teacher mean = (39 * 1000 + 900) / 40 = 997.5
    plain = retention(student, teacher)
    assert plain is not None and plain.value == pytest.approx(975.875 / 997.5)
    # normalized: (975.875 - 10) / (997.5 - 10) = 965.875 / 987.5
    normalized = retention(student, teacher, floor)
    assert normalized is not None and normalized.value == pytest.approx(965.875 / 987.5)
    for ratio in (plain, normalized):
        assert ratio.ci.low < ratio.value <= ratio.ci.high <= 1.01
    assert retention(student, teacher, floor, seed=1) == retention(student, teacher, floor, seed=1)
    assert retention([-5.0, -6.0], [-4.0, -4.0]) is None  # a cost: student / teacher means nothing
    assert retention([-5.0, -6.0], [-4.0, -4.0], [-40.0, -42.0]) is not None
    with pytest.raises(ValueError, match="same episodes"):
        retention([1.0, 2.0], [1.0])


def test_a_failure_interval_covers_the_truth_on_a_simulated_coin():
    rng = np.random.default_rng(0)
    truth, episodes, experiments = 0.02, 100, 400  # a 1-in-50 failure, seen in 100 episodes
    covered = 0
    for _ in range(experiments):
        failures = int((rng.random(episodes) < truth).sum())
        ci = failure_interval(failures, episodes)
        covered += ci.low <= truth <= ci.high
    # Nominal 95%; Wilson's coverage at p = 0.02, n = 100 is about 95-98%. A normal interval would
    # miss every experiment with 0 failures (13% of them), so this bound would catch it.
    assert covered / experiments >= 0.92


def test_bootstrap_intervals_repeat_with_the_seed_and_narrow_with_more_episodes():
    rng = np.random.default_rng(1)
    few, many = rng.normal(0, 1, 20), rng.normal(0, 1, 2000)
    assert return_stats(few, seed=3) == return_stats(few, seed=3)
    width = [s.mean_ci.high - s.mean_ci.low for s in (return_stats(few), return_stats(many))]
    assert width[1] < width[0] / 5  # about sqrt(100) = 10x narrower
    assert math.isclose(float(iqm(np.arange(8.0))), 3.5)


def test_bad_returns_are_refused_naming_the_problem():
    with pytest.raises(ValueError, match="one return per episode"):
        return_stats([])
    with pytest.raises(ValueError, match="must be finite"):
        return_stats([1.0, float("nan")])


def test_iqm_across_seeds_with_rliable():
    scores = np.array([10.0, 20.0, 30.0, 40.0, 1000.0])  # one task, five seeds, one outlier
    point, ci = across_seeds_iqm(scores, seed=0, resamples=500)
    assert point == pytest.approx(30.0)  # rliable's IQM trims 25% each side: (20*0.75 + 30 + 40*0.75)/2.5
    assert ci.low <= point <= ci.high and ci.high < 1000.0
    np.random.seed(123)
    untouched = np.random.random()
    np.random.seed(123)
    assert across_seeds_iqm(scores, seed=0, resamples=500) == (point, ci)  # repeats with the seed
    assert np.random.random() == untouched  # and leaves numpy's global random state as it was
