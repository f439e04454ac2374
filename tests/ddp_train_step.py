"""Two DDP training steps of a tiny UniQA model with the whole backbone unfrozen.

Run by `tests/test_modeling.py` under `accelerate launch` with two CPU processes (gloo):
    python tests/ddp_train_step.py RESULT.json
DDP stops on a trainable parameter that gets no gradient (`clip.logit_scale` before it was
frozen); the error surfaces when the second step starts, hence two steps. The main process
writes what the test checks to RESULT.json.
"""

import faulthandler
import json
import sys

import torch
from accelerate import Accelerator

from tests.helpers import TINY_IMAGE_SIZE, build_tiny_tokenizer, make_tiny_uniqa


def main(result_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    model = make_tiny_uniqa(build_tiny_tokenizer(), seed=0).train()
    model.set_trainable(adapter=True, backbone=True)
    logit_scale = model.clip.logit_scale.item()
    before = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]).clone()
    text_before = model.clip.text_projection.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(accelerator.process_index)  # different data per process
    for _ in range(2):
        pixel_values = torch.randn(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=generator)
        labels = torch.rand(2, generator=generator)
        loss = model(pixel_values=pixel_values, labels=labels).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    unwrapped = accelerator.unwrap_model(model)
    after = torch.cat([p.detach().flatten() for p in unwrapped.parameters() if p.requires_grad])
    gathered = accelerator.gather(after[None])  # (processes, n): DDP keeps the replicas equal
    if accelerator.is_main_process:
        with open(result_path, "w") as handle:
            json.dump(
                {
                    "processes": accelerator.num_processes,
                    "replica_difference": (gathered - gathered[0]).abs().max().item(),
                    "parameters_moved": (after - before).abs().max().item(),
                    "text_tower_moved": not torch.equal(unwrapped.clip.text_projection.weight, text_before),
                    "logit_scale_unchanged": unwrapped.clip.logit_scale.item() == logit_scale,
                },
                handle,
            )
    # Release DDP (its reducer holds process-group work) on every process before the group goes.
    accelerator.wait_for_everyone()
    del model, unwrapped, optimizer
    accelerator.end_training()


if __name__ == "__main__":
    # A hung process prints where it is stuck and exits, before the test's timeout kills it silently.
    faulthandler.dump_traceback_later(150, exit=True)
    main(sys.argv[1])
