"""The symmetric CLIP loss (eq. 1 of the paper) with negatives from the whole global batch.

Every process gathers the image and text embeddings of all processes and computes the loss
over the global batch (B_global x B_global logits), as open_clip's ``ClipLoss`` does. The
gathered copies of other processes' embeddings are constants; gradients flow through this
process's own slice only. ``accelerator.gather`` cannot be used: it carries no gradient.

Exactness under DDP: each process computes the *same* global loss L, so the gradient it gets
for its own embeddings is the full dL/d(own embeddings). Its parameters' gradient is then
the part of dL/dtheta that passes through its own samples; DDP *averages* parameter gradients
over the W processes, so the local slice's gradient is multiplied by W on the way back, and
the average equals the one-process gradient of L exactly. ``logit_scale`` is used whole on
every process and needs no such factor.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class _GatherWithLocalGradient(torch.autograd.Function):
    """all_gather along dim 0; the backward returns this process's slice, times world size."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, world_size: int, rank: int) -> torch.Tensor:
        ctx.world_size, ctx.rank, ctx.rows = world_size, rank, local.shape[0]
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        start = ctx.rank * ctx.rows
        # x world size: DDP divides the summed parameter gradients by it (see module docstring).
        return grad[start : start + ctx.rows] * ctx.world_size, None, None


def gather_constants(values: torch.Tensor) -> torch.Tensor:
    """(local_batch, ...) -> (world_size * local_batch, ...), in process order, without gradient."""
    world_size, _ = _world()
    if world_size == 1:
        return values
    parts = [torch.empty_like(values) for _ in range(world_size)]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """(local_batch, dim) -> (world_size * local_batch, dim), in process order.

    Every process must pass the same ``local_batch``. Without torch.distributed (or with
    one process) the input is returned as is.
    """
    world_size, rank = _world()
    if world_size == 1:
        return features
    return _GatherWithLocalGradient.apply(features, world_size, rank)


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over image-text similarities of the global batch.

    ``forward(image_embeds, text_embeds, logit_scale, groups=None)`` takes this process's
    L2-normalised embeddings (local_batch, dim) and the *exponentiated* scale (a scalar tensor),
    and returns the mean of the image->text and text->image cross-entropies, computed in fp32.
    Row i of the global batch is the positive of column i. With ``groups`` (local_batch,) --
    say the corpus row of each view when several crops of one image share a batch -- every
    pair of one group is a positive: the target of row i is uniform over its group's columns
    (with distinct groups this is exactly the plain loss).
    """

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if image_embeds.shape != text_embeds.shape:
            raise ValueError(
                f"image and text embeddings differ in shape: {tuple(image_embeds.shape)} vs {tuple(text_embeds.shape)}."
            )
        all_images = gather_features(image_embeds.float())
        all_texts = gather_features(text_embeds.float())
        logits_per_image = logit_scale.float() * all_images @ all_texts.t()  # (B, B)
        if groups is not None:
            all_groups = gather_constants(groups.to(logits_per_image.device))
            same = (all_groups[:, None] == all_groups[None, :]).float()  # symmetric (B, B)
            targets = same / same.sum(1, keepdim=True)
            return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.t(), targets)) / 2
        labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels)) / 2


__all__ = ["ClipLoss", "gather_features"]
