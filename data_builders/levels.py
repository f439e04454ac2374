"""The five text levels of UniQA's MOS-guided captioning (method.md section 1).

``assign_levels(mos)`` turns opinion scores into ``bad, poor, fair, good, perfect``:

* ``method="rank"`` (default, the paper's "top 20% ... is perfect" read as equal-count
  quintiles): each score gets its *average rank* among all scores (ties share the mean of
  the positions they span, as ``scipy.stats.rankdata(method="average")``), the position
  ``p = (rank - 0.5) / n`` in (0, 1), and level ``floor(5 * p)``. Tied scores therefore
  always share a level, the result does not depend on the input order, a single score or
  an all-equal list is ``fair``, and with ``n`` divisible by 5 and no ties every level
  holds exactly ``n / 5`` scores.
* ``method="width"``: five equal-width bins over ``[low, high]`` (``mos_range``, or the
  minimum and maximum of the scores); a score on an inner edge goes to the better bin, the
  best edge is ``perfect``. Scores outside ``mos_range`` are put in the end bins.

For DMOS (``higher_is_better=False``) the scale is flipped first, so the lowest DMOS is
``perfect``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from modeling_uniqa import LEVEL_NAMES  # the one source, shared with the model

__all__ = ["LEVEL_NAMES", "assign_levels", "level_indices"]

def level_indices(
    mos: Iterable[float],
    higher_is_better: bool = True,
    method: str = "rank",
    mos_range: Sequence[float] | None = None,
) -> np.ndarray:
    """Level numbers 0 (bad) .. 4 (perfect); see :func:`assign_levels`."""
    values = np.asarray(list(mos), dtype=np.float64)
    if values.ndim != 1:
        raise ValueError("mos must be a flat sequence of numbers")
    if np.isnan(values).any():
        raise ValueError("mos contains NaN")
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    goodness = values if higher_is_better else -values
    if method == "rank":
        from scipy.stats import rankdata

        position = (rankdata(goodness, method="average") - 0.5) / values.size
    elif method == "width":
        if mos_range is None:
            low, high = float(values.min()), float(values.max())
        else:
            low, high = (float(v) for v in mos_range)
            if not high > low:
                raise ValueError(f"mos_range must be (low, high) with low < high, got {mos_range}")
        if high == low:
            return np.full(values.size, 2, dtype=np.int64)
        position = (values - low) / (high - low)
        if not higher_is_better:
            position = 1.0 - position
    else:
        raise ValueError(f"method must be 'rank' or 'width', got {method!r}")
    return np.clip(np.floor(position * 5.0), 0, 4).astype(np.int64)


def assign_levels(
    mos: Iterable[float],
    higher_is_better: bool = True,
    method: str = "rank",
    mos_range: Sequence[float] | None = None,
) -> list[str]:
    """Map opinion scores to the five text levels ``bad .. perfect``.

    Args:
        mos: the scores of all images of a dataset (levels are relative to this set).
        higher_is_better: ``False`` for DMOS (LIVE, CSIQ).
        method: ``"rank"`` (equal-count quintiles of the average rank, default) or
            ``"width"`` (equal-width bins over ``mos_range``).
        mos_range: ``(low, high)`` for ``"width"``; defaults to the scores' min and max.

    Returns:
        One level name per score, in input order.
    """
    return [LEVEL_NAMES[i] for i in level_indices(mos, higher_is_better, method, mos_range)]
