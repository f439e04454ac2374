"""One run at a time into an output (issue #23, finding 1): every command that writes a folder or a
result file refuses an output another run is writing, and a killed run leaves no stale lock."""

import os
import signal
import subprocess
import sys

import pytest

from modeling_uniqa.cli import main as uniqa_main
from modeling_uniqa.core.output_lock import OutputInUseError, OutputLock, lock_path, output_lock
from train_scripts import evaluate, generate_captions, purify_captions, train_adapter, train_pretrain

# Another run holding an output's lock, as `OutputLock` takes it (plain Python: starts in no time).
HOLDER = (
    "import fcntl, json, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'here', 'command': 'holder'}).encode())\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


def hold(output: str) -> subprocess.Popen:
    """Another process holding the lock of `output` (until killed)."""
    process = subprocess.Popen([sys.executable, "-S", "-c", HOLDER, lock_path(output)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


@pytest.fixture
def held(tmp_path):
    processes = []

    def start(output: str) -> subprocess.Popen:
        processes.append(hold(output))
        return processes[-1]

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()


def test_a_second_holder_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path, held):
    output = str(tmp_path / "out")
    holder = held(output)
    with pytest.raises(OutputInUseError, match=rf"{output}: in use by another run \(pid {holder.pid} on here: holder\)"):
        OutputLock(output).acquire()
    holder.send_signal(signal.SIGKILL)  # no clean-up at all
    holder.wait()
    with output_lock(output) as lock:  # the kernel dropped the lock with the process
        assert lock is not None and os.path.isfile(lock_path(output))
    assert not os.path.exists(lock_path(output))  # removed on release: nothing left beside the output


def test_spellings_of_one_output_share_a_lock_and_the_lock_lies_beside_it(tmp_path, held):
    os.makedirs(tmp_path / "a")
    assert lock_path(str(tmp_path / "a" / ".." / "out") + "/") == lock_path(str(tmp_path / "out")) == str(tmp_path / ".out.lock")
    held(str(tmp_path / "out"))
    with pytest.raises(OutputInUseError):
        OutputLock(str(tmp_path / "a" / ".." / "out/")).acquire()


def test_the_lock_nests_within_one_process_and_other_ranks_do_not_lock(tmp_path, monkeypatch):
    output = str(tmp_path / "out")
    with output_lock(output), output_lock(output):  # a library call under a command holding the lock
        assert os.path.isfile(lock_path(output))
    assert not os.path.exists(lock_path(output))
    monkeypatch.setenv("RANK", "1")
    with output_lock(output) as lock:
        assert lock is None


def _commands(tmp_path):
    """Each command, pointed at output `out` (the data and models need not exist: the lock is
    checked first)."""
    data, model = str(tmp_path / "data"), str(tmp_path / "model")
    folder = str(tmp_path / "out")
    jsonl = str(tmp_path / "out.jsonl")
    return {
        "train_adapter": (folder, lambda: train_adapter.main(train_adapter.parse_args(
            ["--model", model, "--dataset", "folder_csv", "--data_dir", data, "--output_dir", folder]))),
        "train_pretrain": (folder, lambda: train_pretrain.main(train_pretrain.parse_args(
            ["--init", model, "--corpus", f"caption_jsonl={data}", "--output_dir", folder]))),
        "evaluate": (folder, lambda: evaluate.main(evaluate.parse_args(
            ["--model", model, "--dataset", "folder_csv", "--data_dir", data, "--protocol", "single", "--output_dir", folder]))),
        "generate_captions": (jsonl, lambda: generate_captions.main(generate_captions.parse_args(
            ["--dataset", "folder_csv", "--data_dir", data, "--task", "quality", "--captioner", "template", "--output", jsonl]))),
        "purify_captions": (jsonl, lambda: purify_captions.main(purify_captions.parse_args(
            ["--data_dir", data, "--clip_aes", model, "--output", jsonl]))),
    }


@pytest.mark.parametrize("command", ["train_adapter", "train_pretrain", "evaluate", "generate_captions", "purify_captions"])
def test_training_scripts_refuse_an_output_in_use(tmp_path, held, command):
    output, run = _commands(tmp_path)[command]
    holder = held(output)
    with pytest.raises(OutputInUseError, match=f"pid {holder.pid}"):
        run()
    assert not os.path.exists(output)  # nothing written


def test_uniqa_score_and_heads_refuse_an_output_in_use(tmp_path, held, saved_tiny_model, image_files, capsys):
    output = str(tmp_path / "scores.csv")
    holder = held(output)
    assert uniqa_main(["score", *image_files, "--model", saved_tiny_model, "--output", output, "--device", "cpu"]) == 2
    assert f"{output}: in use by another run (pid {holder.pid}" in capsys.readouterr().err and not os.path.exists(output)
    holder = held(saved_tiny_model)
    assert uniqa_main(["heads", "add", saved_tiny_model, "--name", "sharp", "--prompts", "sharpness"]) == 2
    assert f"in use by another run (pid {holder.pid}" in capsys.readouterr().err
