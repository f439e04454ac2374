import errno
import json
import logging
import os
import shutil

import pytest
import torch
from accelerate import Accelerator

from modeling_uniqa.errors import OutputError
from train_scripts.common.checkpointing import (
    COMPLETE_FILE,
    LAYOUT_FILE,
    JsonState,
    ResumeError,
    RunLayout,
    checkpoint_folder,
    checkpoint_step,
    fingerprint,
    list_checkpoints,
    remove_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    write_model_folder,
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


def test_incomplete_checkpoint_folder_is_skipped_by_latest_and_refused_by_name(tmp_path, caplog):
    accelerator = Accelerator(cpu=True)
    _training_state(accelerator)
    save_checkpoint(accelerator, str(tmp_path), 5)
    assert os.path.isfile(os.path.join(checkpoint_folder(str(tmp_path)), "checkpoint-5", COMPLETE_FILE))
    (tmp_path / "checkpoint-9").mkdir()  # e.g. copied in part: files but no completion mark
    (tmp_path / "checkpoint-9" / "model.safetensors").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="train_scripts.common.checkpointing"):
        assert checkpoint_step(resolve_checkpoint(str(tmp_path), "latest")) == 5
    assert "checkpoint-9 is incomplete" in caplog.text
    assert [checkpoint_step(path) for path in list_checkpoints(str(tmp_path))] == [5]
    with pytest.raises(ResumeError, match="incomplete checkpoint"):
        resolve_checkpoint(str(tmp_path), str(tmp_path / "checkpoint-9"))


def test_pruning_never_removes_the_checkpoint_just_written(tmp_path):
    accelerator = Accelerator(cpu=True)
    _training_state(accelerator)
    save_checkpoint(accelerator, str(tmp_path), 100)  # left by another run, at a higher step
    save_checkpoint(accelerator, str(tmp_path), 2, total_limit=1)
    assert [checkpoint_step(path) for path in list_checkpoints(str(tmp_path))] == [2]
    save_checkpoint(accelerator, str(tmp_path), 4, total_limit=2)
    assert [checkpoint_step(path) for path in list_checkpoints(str(tmp_path))] == [2, 4]


def test_a_fresh_start_over_an_earlier_run_is_refused(tmp_path):
    accelerator = Accelerator(cpu=True)
    _training_state(accelerator)
    save_checkpoint(accelerator, str(tmp_path / "run"), 3)
    with pytest.raises(ResumeError, match=r"holds an earlier run \(\S+run\.checkpoints/checkpoint-3\): resume it"):
        resolve_checkpoint(str(tmp_path / "run"), None)
    (tmp_path / "finished").mkdir()
    (tmp_path / "finished" / "config.json").write_text("{}")  # a saved model, checkpoints pruned
    for resume in (None, "latest"):
        with pytest.raises(ResumeError, match=r"a saved model \(config.json\)\): it has no complete checkpoint"):
            resolve_checkpoint(str(tmp_path / "finished"), resume)
    (tmp_path / "killed" / "checkpoint-2").mkdir(parents=True)  # incomplete only
    for resume in (None, "latest"):
        with pytest.raises(ResumeError, match="no complete checkpoint to resume from: delete it, or choose an empty"):
            resolve_checkpoint(str(tmp_path / "killed"), resume)
    (tmp_path / "empty" / "checkpoint-2.partial").mkdir(parents=True)  # a killed save: ignored
    assert resolve_checkpoint(str(tmp_path / "empty"), "latest") is None


def test_checkpoints_lie_beside_the_output_folder_and_older_runs_inside_it_still_resume(tmp_path):
    """Issue #23: the folder that is the model holds no checkpoints (a finished demo model kept
    two, 96 MB for 32 MB of weights); runs started before keep resuming from theirs."""
    accelerator = Accelerator(cpu=True)
    _training_state(accelerator)
    output = str(tmp_path / "model")
    path = save_checkpoint(accelerator, output, 3)
    assert path == os.path.join(str(tmp_path / "model.checkpoints"), "checkpoint-3") == os.path.join(checkpoint_folder(output), "checkpoint-3")
    assert os.listdir(tmp_path) == ["model.checkpoints"]  # nothing in the output folder
    assert resolve_checkpoint(output, "latest") == path

    legacy = str(tmp_path / "legacy")
    os.makedirs(legacy)
    old = save_checkpoint(accelerator, legacy, 2)
    os.rename(old, os.path.join(legacy, "checkpoint-2"))  # where earlier versions saved it
    assert resolve_checkpoint(legacy, "latest") == os.path.join(legacy, "checkpoint-2")
    save_checkpoint(accelerator, legacy, 4, total_limit=1)  # the new one beside, the old one pruned
    assert list_checkpoints(legacy) == [os.path.join(checkpoint_folder(legacy), "checkpoint-4")]
    remove_checkpoints(legacy)
    assert not os.path.exists(checkpoint_folder(legacy)) and os.listdir(legacy) == []


def test_run_layout_refuses_a_resume_that_changed_the_run(tmp_path):
    first = Accelerator(cpu=True)
    model, _ = _training_state(first)
    RunLayout(batch_size=4, images=fingerprint(["a.png", "b.png"]), seed=1).attach(first)
    path = save_checkpoint(first, str(tmp_path), 2)
    with open(os.path.join(path, LAYOUT_FILE)) as handle:
        assert json.load(handle)["batch_size"] == 4  # JSON, no pickle

    same = Accelerator(cpu=True)
    _training_state(same)
    RunLayout(batch_size=4, images=fingerprint(["a.png", "b.png"]), seed=1).attach(same)
    same.load_state(path)
    changed = Accelerator(cpu=True)
    _training_state(changed)
    RunLayout(batch_size=8, images=fingerprint(["a.png", "c.png"]), seed=1).attach(changed)
    with pytest.raises(ResumeError, match=r"batch_size: 4 then, 8 now; images: '[0-9a-f]+' then, '[0-9a-f]+' now"):
        changed.load_state(path)


def test_write_model_folder_never_leaves_a_folder_that_loads_half_written(tmp_path, monkeypatch):
    output = tmp_path / "model"
    output.mkdir()

    def write(folder, version):
        with open(os.path.join(folder, "model.safetensors"), "w") as handle:
            handle.write(version)
        with open(os.path.join(folder, "config.json"), "w") as handle:
            handle.write(version)

    write_model_folder(str(output), lambda folder: write(folder, "v1"))
    assert (output / "config.json").read_text() == "v1" and sorted(os.listdir(output)) == ["config.json", "model.safetensors"]

    def failing_writer(folder):
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed"):
        write_model_folder(str(output), failing_writer)
    assert (output / "config.json").read_text() == "v1"  # the earlier model is untouched

    real_replace, moves = os.replace, []

    def crash_after_the_weights(source, target):
        moves.append(os.path.basename(target))
        if os.path.basename(target) == "config.json":
            raise OSError("killed before the config")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_after_the_weights)
    with pytest.raises(OutputError, match="killed before the config"):  # one line for the user, naming the folder
        write_model_folder(str(output), lambda folder: write(folder, "v2"))
    assert moves == ["model.safetensors", "config.json"]  # the config goes last
    assert not (output / "config.json").exists()  # no v1 config over v2 weights: the folder does not load


def test_json_state_round_trips_a_scheduler_without_pickles(tmp_path):
    def scheduled():
        accelerator = Accelerator(cpu=True)
        _, optimizer = _training_state(accelerator)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
        JsonState(scheduler, "lr_scheduler.json").attach(accelerator)
        return accelerator, optimizer, scheduler

    accelerator, optimizer, scheduler = scheduled()
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    path = save_checkpoint(accelerator, str(tmp_path), 3)
    assert not [name for name in os.listdir(path) if name.startswith("custom_checkpoint")]
    accelerator, _, restored = scheduled()
    accelerator.load_state(path)
    assert restored.last_epoch == 3 and restored.get_last_lr() == scheduler.get_last_lr() == [0.1 * 0.5**3]


# Issue 23, finding 9: pickles planted in a checkpoint end in one line naming the file.
class _Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


@pytest.mark.parametrize("planted", ["optimizer.bin", "model.safetensors", "random_states_0.pkl"])
def test_planted_pickle_in_a_checkpoint_is_refused_naming_the_file(tmp_path, capsys, planted):
    import pickle

    from train_scripts.common.checkpointing import check_checkpoint_files

    accelerator = Accelerator(cpu=True)
    model, optimizer = _training_state(accelerator)
    RunLayout(seed=1).attach(accelerator)
    checkpoint = save_checkpoint(accelerator, str(tmp_path), 2)
    check_checkpoint_files(checkpoint)  # a genuine checkpoint passes
    accelerator.load_state(checkpoint)
    assert planted in os.listdir(checkpoint)
    with open(os.path.join(checkpoint, planted), "wb") as handle:
        pickle.dump({"state": _Payload()}, handle)
    with pytest.raises(ResumeError, match=rf"{planted}: not a valid (checkpoint|safetensors) file") as caught:
        accelerator.load_state(resolve_checkpoint(str(tmp_path), "latest"))
    assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)
    assert "pickle code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("errno_", [errno.EFBIG, errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_model_folder_that_cannot_be_written_is_one_line_and_the_earlier_model_stays(tmp_path, errno_):
    """A full disk, a file-size limit, a read-only folder (root ignores mode bits: simulated): an
    `OutputError` naming the folder and the file, no staging folder left, the earlier model whole."""
    from train_scripts.common.checkpointing import write_model_folder

    def good(folder):
        with open(os.path.join(folder, "config.json"), "w") as handle:
            handle.write("{}")
        with open(os.path.join(folder, "model.safetensors"), "w") as handle:
            handle.write("old")

    def failing(folder):
        with open(os.path.join(folder, "model.safetensors"), "w") as handle:
            handle.write("new, half")
        raise OSError(errno_, os.strerror(errno_), os.path.join(folder, "model.safetensors"))

    write_model_folder(str(tmp_path), good)
    with pytest.raises(OutputError, match=rf"^{tmp_path}: cannot write the model \(\S*model.safetensors: {os.strerror(errno_)}\)") as caught:
        write_model_folder(str(tmp_path), failing)
    assert "\n" not in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    assert (tmp_path / "model.safetensors").read_text() == "old"


def _fail_at_call(monkeypatch, module, name: str, call: int, error: Exception) -> None:
    """Make `module.name` (a writer taking the object and the path) write half its file, then
    raise `error` at its `call`-th call (1-based); the calls before write as usual."""
    real, calls = getattr(module, name), []

    def writer(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) != call:
            return real(obj, path, *args, **kwargs)
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise error

    monkeypatch.setattr(module, name, writer)


def _one_checkpoint_written_then_a_failing_save(tmp_path, monkeypatch, error):
    """Checkpoint step 2, then the save of step 4 fails at its second `torch.save` (the random
    states, after the optimizer): the `OutputError`, the output folder's checkpoints, the weights
    saved at step 2."""
    accelerator = Accelerator(cpu=True)
    model, optimizer = _training_state(accelerator)
    RunLayout(seed=1).attach(accelerator)
    output = str(tmp_path / "run")
    first = save_checkpoint(accelerator, output, 2)
    saved = model.weight.detach().clone()
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    _fail_at_call(monkeypatch, torch, "save", 2, error)
    with pytest.raises(OutputError) as caught:
        save_checkpoint(accelerator, output, 4)
    monkeypatch.undo()
    assert os.listdir(checkpoint_folder(output)) == ["checkpoint-2"]  # no checkpoint-4.partial left
    assert resolve_checkpoint(output, "latest") == first
    accelerator.load_state(first)
    torch.testing.assert_close(model.weight.detach(), saved)
    return str(caught.value)


@pytest.mark.parametrize("errno_", [errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES])
def test_a_checkpoint_that_cannot_be_written_is_one_line_removed_and_the_earlier_one_resumes(tmp_path, monkeypatch, errno_):
    """Issue 23, finding 8: a full disk, a file-size limit, a read-only or unwritable folder while
    a checkpoint is saved: one line naming the checkpoint and the OS error, no `.partial` left,
    the earlier checkpoint whole and resumed by `latest`."""
    error = OSError(errno_, os.strerror(errno_), "random_states_0.pkl")
    message = _one_checkpoint_written_then_a_failing_save(tmp_path, monkeypatch, error)
    checkpoint = os.path.join(checkpoint_folder(str(tmp_path / "run")), "checkpoint-4")
    assert message.startswith(f"{checkpoint}: cannot write the checkpoint (random_states_0.pkl: {os.strerror(errno_)})")
    assert "resumes from " + os.path.join(checkpoint_folder(str(tmp_path / "run")), "checkpoint-2") in message
    assert "\n" not in message


def test_torch_s_write_error_without_an_errno_is_named_from_the_disk(tmp_path, monkeypatch):
    """torch.save's zip writer drops the errno of a failed write ("unexpected pos ..."): a full
    disk is named from the free space left."""
    from train_scripts.common import checkpointing

    monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 41536 vs 41424")
    message = _one_checkpoint_written_then_a_failing_save(tmp_path, monkeypatch, error)
    assert f"cannot write the checkpoint ({os.strerror(errno.ENOSPC)})" in message


def test_an_error_that_is_not_a_write_error_is_not_reported_as_one(tmp_path, monkeypatch):
    accelerator = Accelerator(cpu=True)
    _training_state(accelerator)
    _fail_at_call(monkeypatch, torch, "save", 1, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        save_checkpoint(accelerator, str(tmp_path), 2)


@pytest.mark.parametrize("fail_rank", [0, 1])
def test_a_checkpoint_write_failing_on_one_process_stops_every_process(tmp_path, fail_rank):
    """Two real DDP processes, the write failing on one: both raise `OutputError` (neither waits
    at a barrier for the other), the unfinished folder is removed, the earlier checkpoint kept."""
    from tests.helpers import launch_two_processes

    output = str(tmp_path / "run")
    result = launch_two_processes(["tests/checkpoint_ddp_worker.py", output, str(fail_rank)], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    messages = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(message and message.startswith(f"{checkpoint_folder(output)}/checkpoint-4: cannot write the checkpoint") for message in messages)
    assert os.strerror(errno.ENOSPC) in messages[fail_rank] and "another process" in messages[1 - fail_rank]
    assert os.listdir(checkpoint_folder(output)) == ["checkpoint-2"]
