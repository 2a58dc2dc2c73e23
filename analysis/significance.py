"""Is method A really better than B on the same test rows? Paired bootstrap and McNemar.

Per test example we know whether each method got it right. With several seeds, an
example's correctness for a method is the fraction of its seeds that got it right (the
bootstrap uses that fraction; McNemar, which needs right/wrong, uses the majority).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class Comparison:
    a: str
    b: str
    rows: int  # test rows both were evaluated on
    accuracy_a: float
    accuracy_b: float
    difference: float  # a - b
    ci_low: float
    ci_high: float
    mcnemar_p: float
    only_a_right: int
    only_b_right: int

    @property
    def verdict(self) -> str:
        if self.ci_low <= 0 <= self.ci_high:
            return "within noise: the 95% interval includes 0"
        better = self.a if self.difference > 0 else self.b
        return f"{better} is better (95% interval excludes 0)"

    def as_row(self) -> dict:
        return {"A": self.a, "B": self.b, "rows": self.rows, "accuracy A": round(self.accuracy_a, 4),
                "accuracy B": round(self.accuracy_b, 4), "A - B": round(self.difference, 4),
                "95% CI": f"[{self.ci_low:+.4f}, {self.ci_high:+.4f}]", "McNemar p": float(f"{self.mcnemar_p:.3g}"),
                "verdict": self.verdict}


def correctness(predictions: list[pd.DataFrame]) -> pd.Series:
    """Per row_id, the fraction of these prediction tables (seeds) that were right."""
    frames = [p.set_index("row_id") for p in predictions]
    right = pd.concat([(f["predicted"] == f["label"]).astype(float) for f in frames], axis=1, join="inner")
    return right.mean(axis=1)


def compare(name_a: str, right_a: pd.Series, name_b: str, right_b: pd.Series,
            resamples: int = 2000, seed: int = 0) -> Comparison:
    joined = pd.concat([right_a.rename("a"), right_b.rename("b")], axis=1, join="inner")
    if joined.empty:
        raise ValueError(f"{name_a} and {name_b} share no test rows: were they evaluated on the same split?")
    a, b = joined["a"].to_numpy(), joined["b"].to_numpy()
    # the paired bootstrap: the same test rows resampled for both methods
    interval = stats.bootstrap((a, b), lambda x, y, axis=-1: (x - y).mean(axis=axis), paired=True,
                               n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed),
                               vectorized=True).confidence_interval
    low, high = (0.0, 0.0) if np.isnan(interval.low) else (interval.low, interval.high)
    # With one seed each, a and b are 0/1 and this is McNemar's exact test on the discordant
    # rows. With several seeds, a row's value is the fraction of seeds that were right: the
    # same sign test on the rows where the two differ (thresholding fractions at 0.5 instead
    # counted a 1-of-2 tie as right, and gave p 0.2 where the interval excluded 0 widely).
    only_a = int((a > b).sum())
    only_b = int((a < b).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    return Comparison(name_a, name_b, len(a), float(a.mean()), float(b.mean()), float(a.mean() - b.mean()),
                      float(low), float(high), p, only_a, only_b)
