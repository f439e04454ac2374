"""Divergence checks of the training scripts: stop with an error naming the step rather than
train on, checkpoint and save NaN or infinite weights."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import nn

from modeling_uniqa.errors import UniQAError


class DivergenceError(UniQAError, FloatingPointError):
    """The loss or the weights of a run stopped being finite numbers."""


def check_finite_loss(accelerator: Accelerator, loss: torch.Tensor, step: int) -> None:
    """Raise `DivergenceError` on every process when any process's `loss` at `step` (1-based,
    the step being taken) is NaN or infinite. Call on every process, before the backward pass:
    the losses are gathered so that all processes stop together."""
    losses = accelerator.gather(loss.detach().float().reshape(1))
    if not bool(torch.isfinite(losses).all()):
        values = ", ".join(f"{value:g}" for value in losses.tolist())
        raise DivergenceError(
            f"The loss is not finite at step {step} (per process: {values}): training diverged or a label is bad. "
            "Lower the learning rate (or clip gradients) and resume from an earlier checkpoint, or start again."
        )


def check_finite_parameters(module: nn.Module, when: str) -> None:
    """Raise `DivergenceError` naming the first parameter of `module` holding NaN or infinity."""
    for name, parameter in module.named_parameters():
        if not bool(torch.isfinite(parameter.detach()).all()):
            raise DivergenceError(f"Parameter {name} is not finite {when}: training diverged; nothing was saved.")
