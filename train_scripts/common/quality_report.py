"""Per-distortion figures of a quality model beside BRISQUE's, on synthetically distorted images.

Used by `train_scripts/evaluate_distortions.py` (UniQA-Tiny's held-out report and card) and
`benchmarks/bench_default_model.py` (unseen photos and distortion settings).

* :class:`Brisque`: the `brisque` package's LIVE-trained BRISQUE (Mittal et al. 2012), with its
  feature scaling made to work on numpy 2 (its features are 1-element arrays that numpy 2 no longer
  converts with `float()`). Lower is better; :meth:`Brisque.quality` negates it.
* :func:`distortion_metrics`: SRCC / PLCC per distortion kind and overall against a reference
  score, and how often the score falls from each level to the next stronger one of the same photo
  and kind (the "adjacent-level pairs" figure).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from train_scripts.common.metrics import plcc, srcc


class Brisque:
    """BRISQUE scores of RGB uint8 arrays (0 best, ~100 worst); needs `brisque` and OpenCV."""

    def __init__(self):
        try:
            from brisque import BRISQUE
        except ImportError as error:  # the package raises ImportError without OpenCV too
            raise ImportError(
                "BRISQUE needs the `brisque` package and OpenCV: pip install brisque opencv-python-headless"
            ) from error

        class _Numpy2Brisque(BRISQUE):
            def scale_features(self, features):
                return super().scale_features([float(np.asarray(value).item()) for value in features])

        self._model = _Numpy2Brisque(url=False)

    def score(self, pixels: np.ndarray) -> float:
        return float(self._model.score(np.asarray(pixels)))

    def quality(self, pixels: np.ndarray) -> float:
        """Higher is better, to correlate in the same direction as a MOS."""
        return -self.score(pixels)


@dataclass(frozen=True)
class RatedImage:
    """One distorted image: its photo, distortion kind and level, reference score and predictions."""

    photo: str
    kind: str
    level: int
    reference_score: float  # e.g. a pseudo-MOS; higher is better
    predictions: dict  # {method: score}, higher is better


def _correlations(items: list, method: str) -> dict:
    predicted = np.asarray([item.predictions[method] for item in items], dtype=np.float64)
    truth = np.asarray([item.reference_score for item in items], dtype=np.float64)
    if len(items) < 3 or np.ptp(truth) == 0:
        return {"srcc": math.nan, "plcc": math.nan, "n": len(items)}
    return {"srcc": srcc(predicted, truth), "plcc": plcc(predicted, truth), "n": len(items)}


def falling_pairs(items: list, method: str) -> tuple[int, int]:
    """(pairs where the score falls, pairs) over adjacent levels of one photo and kind."""
    groups = defaultdict(dict)
    for item in items:
        groups[(item.photo, item.kind)][item.level] = item.predictions[method]
    falling = total = 0
    for levels in groups.values():
        ordered = [levels[level] for level in sorted(levels)]
        for milder, stronger in zip(ordered, ordered[1:]):
            total += 1
            falling += stronger < milder
    return falling, total


def distortion_metrics(items: list, methods: list) -> dict:
    """`{method: {"overall": {...}, "kinds": {kind: {...}}, "falling_pairs": share}}`: SRCC/PLCC
    against `reference_score` overall and per kind, with each kind's share of adjacent levels
    whose score falls."""
    kinds = sorted({item.kind for item in items})
    report = {}
    for method in methods:
        per_kind = {}
        for kind in kinds:
            subset = [item for item in items if item.kind == kind]
            falling, total = falling_pairs(subset, method)
            per_kind[kind] = {**_correlations(subset, method), "falling_pairs": falling / total if total else math.nan}
        falling, total = falling_pairs(items, method)
        report[method] = {
            "overall": {**_correlations(items, method), "falling_pairs": falling / total if total else math.nan},
            "kinds": per_kind,
        }
    return report


def markdown_table(report: dict, kind_names: dict | None = None) -> str:
    """The report as a Markdown table: one row per kind plus overall, SRCC / PLCC / falling
    share per method."""
    methods = list(report)
    header = "| distortion | " + " | ".join(f"{m} SRCC | {m} PLCC | {m} falls" for m in methods) + " | images |"
    lines = [header, "|---" * (2 + 3 * len(methods)) + "|"]

    def cells(entry):
        return " | ".join(
            "n/a" if isinstance(entry[key], float) and math.isnan(entry[key]) else f"{entry[key]:.3f}"
            for key in ("srcc", "plcc", "falling_pairs")
        )

    first = report[methods[0]]
    for kind in first["kinds"]:
        name = (kind_names or {}).get(kind, kind)
        row = " | ".join(cells(report[m]["kinds"][kind]) for m in methods)
        lines.append(f"| {name} | {row} | {first['kinds'][kind]['n']} |")
    row = " | ".join(cells(report[m]["overall"]) for m in methods)
    lines.append(f"| **overall** | {row} | {first['overall']['n']} |")
    return "\n".join(lines)


__all__ = ["Brisque", "RatedImage", "distortion_metrics", "falling_pairs", "markdown_table"]
