"""The study's statistics against independent computations: scipy's t-interval, and the bootstrap's coverage."""

import math

import numpy as np
import pytest
from scipy import stats

from hexa_zoo.stats import paired_bootstrap_interval, paired_t_interval, verdict


def test_paired_t_interval_equals_scipys_on_known_data():
    hexa = np.array([71.2, 70.4, 72.9, 69.8])
    base = np.array([70.1, 70.0, 71.5, 69.9])
    got = paired_t_interval(hexa - base)
    d = hexa - base
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (got.mean, got.low, got.high, got.n) == (pytest.approx(d.mean()), pytest.approx(low), pytest.approx(high), 4)
    # scipy's paired t-test agrees: p < 0.05 exactly when 0 is outside the interval
    assert (stats.ttest_rel(hexa, base).pvalue < 0.05) == (not got.low <= 0 <= got.high)


def test_one_seed_cannot_tell():
    one = paired_t_interval([1.5])
    assert math.isnan(one.low) and verdict(one) == "one seed cannot tell the two apart"


def test_verdicts_in_plain_words():
    assert verdict(paired_t_interval([0.5, -0.4, 0.1])) == "no difference detectable with 3 seeds"
    ahead = paired_t_interval([2.0, 2.2, 1.9])
    assert verdict(ahead).startswith("HEXA ahead by 2.03 ± ")
    assert verdict(paired_t_interval([-3.0, -3.1, -2.9])).startswith("HEXA behind by 3.00")


def test_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered, trials = 0, 300
    for t in range(trials):
        base = rng.normal(0.6, 0.2, 80)                 # e.g. per-episode accuracies
        hexa = base + rng.normal(0.05, 0.1, 80)          # paired: the same episodes, true difference 0.05
        iv = paired_bootstrap_interval(hexa, base, resamples=2000, seed=t)
        covered += iv.low <= 0.05 <= iv.high
    assert 0.90 <= covered / trials <= 0.99


def test_bootstrap_needs_paired_samples():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap_interval([1, 2, 3], [1, 2])
