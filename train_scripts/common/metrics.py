"""Correlation metrics of IQA/IAA: SRCC, PLCC, KRCC and RMSE, in numpy/scipy.

Predictions and ground truth are 1-D sequences of the same length. Non-finite values are an
error, not something to drop silently: a NaN MOS or score means a bug upstream.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _pair(predictions, targets) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if predictions.shape != targets.shape:
        raise ValueError(f"{predictions.size} predictions for {targets.size} targets.")
    if predictions.size < 2:
        raise ValueError("Correlations need at least 2 items.")
    for name, values in (("predictions", predictions), ("targets", targets)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{bad.size} non-finite {name} (first at index {bad[0]}).")
    return predictions, targets


def srcc(predictions, targets) -> float:
    """Spearman rank-order correlation."""
    return float(stats.spearmanr(*_pair(predictions, targets)).statistic)


def plcc(predictions, targets) -> float:
    """Pearson linear correlation of the raw predictions (no logistic fit, as the release reports)."""
    return float(stats.pearsonr(*_pair(predictions, targets)).statistic)


def krcc(predictions, targets) -> float:
    """Kendall rank-order correlation (tau-b)."""
    return float(stats.kendalltau(*_pair(predictions, targets)).statistic)


def rmse(predictions, targets) -> float:
    """Root mean squared error, in the units of the inputs."""
    predictions, targets = _pair(predictions, targets)
    return float(np.sqrt(np.mean((predictions - targets) ** 2)))
