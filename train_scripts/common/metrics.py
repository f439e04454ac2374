"""Correlation metrics of IQA/IAA: SRCC, PLCC (raw or after a 4-parameter logistic fit), KRCC
and RMSE, in numpy/scipy. `iqa_metric/` wraps them as an `evaluate` metric module.

Predictions and ground truth are 1-D sequences of the same length, at least 3 items (with 2,
every correlation is +-1 whatever the model). Non-finite values are an error, not something to
drop silently: a NaN MOS or score means a bug upstream. Constant predictions (or targets) have
no correlation: SRCC/PLCC/KRCC are NaN, with a `ConstantInputWarning` saying which input.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

MIN_ITEMS = 3


def _pair(predictions, targets) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if predictions.shape != targets.shape:
        raise ValueError(f"{predictions.size} predictions for {targets.size} targets.")
    if predictions.size < MIN_ITEMS:
        # With 2 items every rank correlation is +-1 and PLCC is +-1: a number, but no evidence.
        raise ValueError(f"Correlations need at least {MIN_ITEMS} items, got {predictions.size}.")
    for name, values in (("predictions", predictions), ("targets", targets)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{bad.size} non-finite {name} (first at index {bad[0]}).")
    return predictions, targets


def _correlation(name: str, statistic, predictions, targets) -> float:
    """`statistic(predictions, targets)`, or NaN with a warning naming the constant input."""
    predictions, targets = _pair(predictions, targets)
    for what, values in (("predictions", predictions), ("targets", targets)):
        if np.all(values == values[0]):
            warnings.warn(f"{name}: the {what} are constant ({values[0]:g}): the correlation is undefined (NaN).", stats.ConstantInputWarning, stacklevel=3)
            return float("nan")
    return float(statistic(predictions, targets).statistic)


def srcc(predictions, targets) -> float:
    """Spearman rank-order correlation."""
    return _correlation("SRCC", stats.spearmanr, predictions, targets)


def plcc(predictions, targets) -> float:
    """Pearson linear correlation of the raw predictions (no logistic fit, as the release reports)."""
    return _correlation("PLCC", stats.pearsonr, predictions, targets)


def krcc(predictions, targets) -> float:
    """Kendall rank-order correlation (tau-b)."""
    return _correlation("KRCC", stats.kendalltau, predictions, targets)


def rmse(predictions, targets) -> float:
    """Root mean squared error, in the units of the inputs."""
    predictions, targets = _pair(predictions, targets)
    return float(np.sqrt(np.mean((predictions - targets) ** 2)))


def logistic_4(x, beta1, beta2, beta3, beta4):
    """The 4-parameter logistic of VQEG: `(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`."""
    return (beta1 - beta2) / (1.0 + np.exp(-(x - beta3) / np.abs(beta4))) + beta2


def fit_logistic(predictions, targets) -> np.ndarray:
    """Map predictions onto the targets' scale with the fitted 4-parameter logistic.

    The usual IQA practice before PLCC/RMSE (VQEG): it removes the non-linearity between a
    model's scale and the MOS. Raises `RuntimeError` when the fit does not converge.
    """
    from scipy.optimize import curve_fit

    predictions, targets = _pair(predictions, targets)
    spread = np.std(predictions)
    initial = [np.max(targets), np.min(targets), np.mean(predictions), spread if spread > 0 else 1.0]
    try:
        params, _ = curve_fit(logistic_4, predictions, targets, p0=initial, maxfev=20000)
    except (RuntimeError, ValueError) as error:
        raise RuntimeError(f"The 4-parameter logistic fit failed ({error}); report the raw PLCC instead.") from error
    return logistic_4(predictions, *params)


def plcc_logistic(predictions, targets) -> float:
    """Pearson correlation after the 4-parameter logistic fit of the predictions to the targets."""
    return plcc(fit_logistic(predictions, targets), targets)


def compute_metrics(predictions, targets, logistic: bool = False) -> dict:
    """`{"srcc", "plcc", "krcc", "rmse"}` (+ `"plcc_logistic"` with `logistic=True`).

    RMSE is in the units of the inputs: give predictions and targets on the same scale.
    """
    result = {
        "srcc": srcc(predictions, targets),
        "plcc": plcc(predictions, targets),
        "krcc": krcc(predictions, targets),
        "rmse": rmse(predictions, targets),
    }
    if logistic:
        result["plcc_logistic"] = plcc_logistic(predictions, targets)
    return result
