"""A ranking term beside the fine-tuning MSE: each distorted image scores below its own reference.

Why: with the MSE alone, a clean picture and its mildest distortions (labels a few hundredths of
the scale apart, less than the spread between contents) end up in any order: UniQA-Tiny scored
JPEG of quality 30 at or above the original on half of 21 photos, although its image embeddings
tell the two apart on every one. A pairwise term compares images of one content, so the
content's own level cancels out (as in RankIQA's and LIQE's pairwise losses).

The pairs: each distorted row of a batch with its reference's row (datasets whose references are
rows, `distortion` "00": KADID-10k with `include_references=true`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from data_builders.iqa import REFERENCE_DISTORTION
from train_scripts.common.errors import DataError, SettingsError

# Score units (the scale is 0..1): a pair 0.05 apart in the right order costs about a quarter of a
# pair in a tie, one 0.2 apart almost nothing.
RANK_TEMPERATURE = 0.05


def reference_rows(dataset) -> torch.Tensor:
    """`(rows,)` int64: the row index of each row's reference, -1 for the references themselves.

    Raises SettingsError when the dataset has no `reference`/`distortion` columns or no reference
    rows (naming the option that adds them), DataError when a distorted row's reference is not a
    row of the split (an unreadable reference dropped, say).
    """
    missing = {"reference", "distortion"} - set(dataset.column_names)
    if missing:
        raise SettingsError(f"reference_rank_weight pairs images with their reference: the dataset has no {sorted(missing)} column.")
    references, distortions = dataset["reference"], dataset["distortion"]
    row_of = {}
    for row, (reference, distortion) in enumerate(zip(references, distortions)):
        if distortion == REFERENCE_DISTORTION:
            row_of.setdefault(reference, row)
    if not row_of:
        raise SettingsError("reference_rank_weight pairs images with their reference, but the training rows hold no reference "
                         "(for KADID-10k layouts: --dataset_option include_references=true).")
    absent = sorted({reference for reference, distortion in zip(references, distortions)
                     if distortion != REFERENCE_DISTORTION and reference not in row_of})
    if absent:
        raise DataError(f"reference_rank_weight: {len(absent)} references are not rows of the training split, e.g. {absent[:3]}.")
    return torch.tensor([-1 if distortion == REFERENCE_DISTORTION else row_of[reference]
                         for reference, distortion in zip(references, distortions)], dtype=torch.int64)


def rank_pairs(indices: torch.Tensor, references: torch.Tensor, labels: torch.Tensor) -> tuple:
    """The batch positions and reference rows of the pairs in a batch of rows `indices`: the
    distorted rows whose reference's label is higher (a tie says nothing about the order)."""
    paired = references[indices]
    keep = (paired >= 0) & (labels[paired.clamp(min=0)] > labels[indices])
    return keep.nonzero().squeeze(1), paired[keep]


def reference_rank_loss(distorted_scores: torch.Tensor, reference_scores: torch.Tensor, temperature: float = RANK_TEMPERATURE) -> torch.Tensor:
    """Logistic (RankNet) loss that each reference scores above its distorted image: `(pairs,)`
    scores each -> a scalar; 0 for no pairs."""
    if distorted_scores.numel() == 0:
        return distorted_scores.sum()
    return F.softplus((distorted_scores - reference_scores) / temperature).mean()


__all__ = ["RANK_TEMPERATURE", "reference_rows", "rank_pairs", "reference_rank_loss"]
