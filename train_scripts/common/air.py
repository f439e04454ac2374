"""AIR ranking of an image's comments (method.md section 1, step 2; paper eq. 3-5).

For one image with n comments:

* ``AR = rank(s_A)``: s_A is the aesthetics relevance of each comment (CLIP_aes image-text
  cosine similarity, computed elsewhere);
* ``IR = rank(s_I)``: s_I is an informativeness score, :func:`sentence_length` (the paper's
  default) or :func:`word_entropy`;
* ``AIR = rank(alpha * AR + beta * IR)``; the comments with the top K AIR are kept.

Ranks run from 1 to n and **a higher rank means more relevant / more informative** (the
best comment has rank n). Ranks are strict integers (the paper's "long integers"), so ties
are broken deterministically:

* AR and IR: among equal scores, the comment listed **earlier** (lower index) ranks higher;
* AIR: among equal ``alpha * AR + beta * IR``, the higher AR ranks higher (the more
  aesthetics-relevant comment wins), then the higher IR, then the earlier comment.

Pure numpy: no model, no I/O.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "INFORMATIVENESS_MEASURES",
    "AIRSelection",
    "air_ranks",
    "informativeness",
    "rank",
    "select_top_k",
    "sentence_length",
    "word_entropy",
    "words",
]

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters/digits, with inner apostrophes (don't, it's)


def words(text: str) -> list[str]:
    """The lower-cased words of a comment (punctuation and emoji are not words)."""
    return _WORD.findall(text.lower())


def sentence_length(text: str) -> float:
    """Informativeness as the number of words (the paper's default measure)."""
    return float(len(words(text)))


def word_entropy(text: str) -> float:
    """Informativeness as the Shannon entropy (bits) of the comment's word distribution.

    ``H = -sum_w p(w) log2 p(w)`` with ``p(w)`` the share of word ``w`` among the comment's
    words: 0 for an empty or one-word comment, ``log2(n)`` for n distinct words, lower when
    words repeat ("nice nice nice" has entropy 0).
    """
    counts = Counter(words(text))
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return float(-sum(c / total * math.log2(c / total) for c in counts.values()))


INFORMATIVENESS_MEASURES = {"length": sentence_length, "entropy": word_entropy}


def informativeness(texts: Sequence[str], measure: str = "length") -> np.ndarray:
    """s_I of each comment with ``measure`` (``"length"`` or ``"entropy"``)."""
    if measure not in INFORMATIVENESS_MEASURES:
        raise ValueError(f"informativeness must be one of {sorted(INFORMATIVENESS_MEASURES)}, got {measure!r}")
    function = INFORMATIVENESS_MEASURES[measure]
    return np.asarray([function(text) for text in texts], dtype=np.float64)


def _check_scores(scores, name: str) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} holds NaN or infinite values: {values.tolist()}")
    return values


def rank(scores: Sequence[float], *tie_breakers: Sequence[float]) -> np.ndarray:
    """Strict ranks 1..n of ``scores``, the highest score getting n.

    Equal scores are ordered by ``tie_breakers`` in turn (higher wins), then by position:
    the earlier item ranks higher.
    """
    values = _check_scores(scores, "scores")
    n = values.size
    keys = [_check_scores(t, "tie breaker") for t in tie_breakers]
    if any(k.size != n for k in keys):
        raise ValueError("tie breakers must have one value per score")
    # np.lexsort sorts ascending by the last key first: primary = score, then the tie
    # breakers, then the negated position (so the earlier item sorts last = ranks higher).
    order = np.lexsort((-np.arange(n), *reversed(keys), values))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(1, n + 1)
    return ranks


def air_ranks(relevance: Sequence[float], info: Sequence[float], alpha: float = 1.0, beta: float = 1.0):
    """``(AR, IR, AIR)`` integer ranks of one image's comments (see the module docstring).

    Args:
        relevance: s_A of each comment.
        info: s_I of each comment.
        alpha, beta: non-negative weights of AR and IR, not both zero.
    """
    s_a, s_i = _check_scores(relevance, "relevance"), _check_scores(info, "informativeness")
    if s_a.size != s_i.size:
        raise ValueError(f"relevance and informativeness differ in length: {s_a.size} != {s_i.size}")
    if alpha < 0 or beta < 0 or (alpha == 0 and beta == 0) or not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"alpha and beta must be finite, non-negative and not both zero, got {alpha}, {beta}")
    ar, ir = rank(s_a), rank(s_i)
    air = rank(alpha * ar + beta * ir, ar, ir)
    return ar, ir, air


@dataclass
class AIRSelection:
    """The comments kept for one image, best first.

    Attributes:
        indices: positions (in the input) of the kept comments, highest AIR first.
        ar, ir, air: the ranks of every comment, in input order.
    """

    indices: list[int]
    ar: np.ndarray
    ir: np.ndarray
    air: np.ndarray


def select_top_k(relevance, info, top_k: int = 4, alpha: float = 1.0, beta: float = 1.0) -> AIRSelection:
    """Keep the ``top_k`` comments of highest AIR (all of them when there are fewer)."""
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    ar, ir, air = air_ranks(relevance, info, alpha, beta)
    best_first = np.argsort(-air, kind="stable")
    return AIRSelection([int(i) for i in best_first[:top_k]], ar, ir, air)
