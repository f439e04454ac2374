"""Worker of tests/test_clip_loss.py: the CLIP loss and its gradients on a tiny model, run on
each of two real DDP processes, each holding half of a fixed global batch.

    accelerate launch --multi_gpu --num_processes 2 tests/clip_loss_ddp_worker.py OUT_DIR
"""

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

from modeling_uniqa.core.runtime import close_process_group
from train_scripts.common.clip_loss import ClipLoss

GLOBAL_BATCH = 8


class TinyTowers(nn.Module):
    """Two linear 'towers' and a learnable temperature, like CLIP's."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(12, 6)
        self.text = nn.Linear(5, 6)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, images, texts):
        return F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1), self.logit_scale.exp()


def build():
    """The model and the global batch (fixed seeds: the same in every process)."""
    torch.manual_seed(0)
    model = TinyTowers()
    generator = torch.Generator().manual_seed(1)
    return model, torch.randn(GLOBAL_BATCH, 12, generator=generator), torch.randn(GLOBAL_BATCH, 5, generator=generator)


def main(out_dir):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model, images, texts = build()
    model = accelerator.prepare(model)
    rows = GLOBAL_BATCH // accelerator.num_processes
    part = slice(accelerator.process_index * rows, (accelerator.process_index + 1) * rows)
    loss = ClipLoss()(*model(images[part], texts[part]))
    accelerator.backward(loss)
    grads = {name: p.grad.clone() for name, p in accelerator.unwrap_model(model).named_parameters()}
    torch.save(
        {"loss": loss.detach(), "grads": grads, "world": accelerator.num_processes},
        os.path.join(out_dir, f"rank{accelerator.process_index}.pt"),
    )


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    finally:
        close_process_group()  # left to interpreter exit, gloo can abort a finished process
