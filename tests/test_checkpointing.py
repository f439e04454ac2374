import os

import pytest
import torch
from accelerate import Accelerator

from train_scripts.common.checkpointing import (
    checkpoint_step,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)


def _training_state(accelerator: Accelerator):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return accelerator.prepare(model, optimizer)


def test_save_prune_and_resume_latest(tmp_path):
    accelerator = Accelerator(cpu=True)
    model, optimizer = _training_state(accelerator)
    output = str(tmp_path)
    assert resolve_checkpoint(output, "latest") is None  # nothing yet: a fresh start
    assert resolve_checkpoint(output, None) is None

    saved_weights = {}
    for step in (2, 4, 10, 12):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        save_checkpoint(accelerator, output, step, total_limit=2)
        saved_weights[step] = model.weight.detach().clone()
    assert [checkpoint_step(path) for path in list_checkpoints(output)] == [10, 12]  # numeric, not string order
    assert not [name for name in os.listdir(output) if name.endswith(".partial")]

    latest = resolve_checkpoint(output, "latest")
    assert checkpoint_step(latest) == 12
    with torch.no_grad():
        model.weight.zero_()
    accelerator.load_state(latest)
    torch.testing.assert_close(model.weight.detach(), saved_weights[12])


def test_partial_checkpoint_is_never_resumed(tmp_path):
    accelerator = Accelerator(cpu=True)
    _training_state(accelerator)
    save_checkpoint(accelerator, str(tmp_path), 5)
    (tmp_path / "checkpoint-9.partial").mkdir()  # a save killed midway
    (tmp_path / "checkpoint-notes").mkdir()
    assert checkpoint_step(resolve_checkpoint(str(tmp_path), "latest")) == 5


def test_explicit_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_checkpoint(str(tmp_path), str(tmp_path / "checkpoint-3"))
    (tmp_path / "weights").mkdir()
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        resolve_checkpoint(str(tmp_path), str(tmp_path / "weights"))
