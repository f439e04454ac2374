"""Worker of tests/test_checkpointing.py: a checkpoint whose write fails on one of two real DDP
processes only (a full disk while rank FAIL_RANK writes its part). Each process records what
`save_checkpoint` raised (`rank<N>.json`: the message, or null): none may wait for ever at a
barrier for the one that stopped.

    accelerate launch --multi_gpu --num_processes 2 tests/checkpoint_ddp_worker.py OUTPUT_DIR FAIL_RANK
"""

import errno
import json
import os
import sys

import torch
from accelerate import Accelerator

from modeling_uniqa.core.runtime import close_process_group
from modeling_uniqa.errors import OutputError
from train_scripts.common.checkpointing import save_checkpoint


def full_disk(obj, path, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def main(output_dir: str, fail_rank: int) -> None:
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    model, optimizer = accelerator.prepare(model, torch.optim.Adam(model.parameters(), lr=0.1))
    save_checkpoint(accelerator, output_dir, 2)
    if accelerator.process_index == fail_rank:
        torch.save = full_disk  # the optimizer (main process) or the random states (every process)
    try:
        save_checkpoint(accelerator, output_dir, 4)
        raised = None
    except OutputError as error:
        raised = str(error)
    with open(os.path.join(os.path.dirname(output_dir), f"rank{accelerator.process_index}.json"), "w") as handle:
        json.dump(raised, handle)


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]))
    finally:
        close_process_group()  # left to interpreter exit, gloo can abort a finished process
