"""An exponential moving average of a model's weights (`train_pretrain.py --ema_decay`).

Kept beside the training weights with torch's `AveragedModel` and its EMA update
(`average = decay * average + (1 - decay) * weights` after each optimizer step; the first step
copies). The zero-shot checks score the average (`swapped_into`), and the saved model is the
average (`copy_into`): on a small corpus the last step's weights swing from step to step, the
average less so. It is part of the checkpoints, so a resumed run averages on as if never stopped.
"""

import contextlib

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """The EMA of `module`'s parameters (buffers are not averaged: CLIP's are constant ids)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"an EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.average = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay))

    def update(self, module: torch.nn.Module) -> None:
        """Fold `module`'s current parameters into the average (once per optimizer step)."""
        self.average.update_parameters(module)

    @torch.no_grad()
    def copy_into(self, module: torch.nn.Module) -> None:
        """Overwrite `module`'s parameters with the average."""
        for parameter, averaged in zip(module.parameters(), self.average.module.parameters(), strict=True):
            parameter.copy_(averaged)

    @contextlib.contextmanager
    def swapped_into(self, module: torch.nn.Module):
        """`module` holds the average inside the block, its own parameters again after it."""
        saved = [parameter.detach().clone() for parameter in module.parameters()]
        self.copy_into(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for parameter, own in zip(module.parameters(), saved, strict=True):
                    parameter.copy_(own)


__all__ = ["WeightAverage"]
