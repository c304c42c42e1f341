"""Telling a difference from noise: confidence intervals for "HEXA minus its baseline", and their verdict.

Two intervals, each answering a different question:

- `paired_t_interval(diffs)`: over seeds. Each seed trains both methods and evaluates them; `diffs` holds
  HEXA - baseline per seed. The interval is mean +- t_{n-1, 0.975} * s / sqrt(n) (s the sample std), the
  textbook paired t-interval; it says whether the difference would survive other pre-training seeds.
  With one seed it is undefined.
- `paired_bootstrap_interval(a, b)`: over evaluation samples (test images, few-shot episodes) of one
  evaluation, paired by sample: the percentile interval of the mean of (a - b) over resamples of the
  samples. It says whether the difference would survive another draw of evaluation data, not of seeds.

`verdict` turns an interval into words a reader can act on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float           # the mean difference
    low: float            # the interval's ends (nan when it cannot be computed)
    high: float
    n: int                # seeds (t) or evaluation samples (bootstrap)
    method: str           # how it was computed, for the record
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict:
        return asdict(self)


def paired_t_interval(diffs: Sequence[float], confidence: float = 0.95) -> Interval:
    """The paired t-interval of the mean of `diffs` (one difference per seed)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, "paired t over seeds (needs 2 or more)", confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, f"paired t over {n} seeds", confidence)


def paired_bootstrap_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                              resamples: int = 10000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of mean(a - b), resampling the evaluation samples (paired: a[i], b[i]
    are the two methods on the same sample i)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must match: {a.shape} vs {b.shape}")
    d = a - b
    n = len(d)
    if n < 2:
        return Interval(float(d.mean()) if n else math.nan, math.nan, math.nan, n,
                        "paired bootstrap over evaluation samples (needs 2 or more)", confidence)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(d.mean()), float(low), float(high), n,
                    f"paired percentile bootstrap over {n} evaluation samples, {resamples} resamples", confidence)


def verdict(interval: Interval, unit: str = "", name: str = "HEXA") -> str:
    """Plain words: cannot tell, no difference detectable, or ahead/behind by mean +- half-width."""
    n, what = interval.n, "seeds" if "seed" in interval.method else "samples"
    if math.isnan(interval.low):
        return f"one {what[:-1]} cannot tell the two apart" if n == 1 else f"too few {what} to tell"
    if interval.low <= 0 <= interval.high:
        return f"no difference detectable with {n} {what}"
    side = "ahead" if interval.mean > 0 else "behind"
    return f"{name} {side} by {abs(interval.mean):.2f} ± {interval.half_width:.2f}{unit}"
