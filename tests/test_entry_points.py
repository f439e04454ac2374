"""Entry points (`uniqa ...`, the training scripts' `run_script`): exit codes, user errors, and
the torch.distributed process group closed before interpreter shutdown (left open, gloo's
threads can abort a finished process with SIGABRT and fail the whole `accelerate launch`)."""

import logging

import pytest
import torch.distributed as dist

from modeling_uniqa.core.runtime import close_process_group
from train_scripts.common.script import run_script


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_close_process_group_destroys_an_open_group_and_is_a_no_op_without_one(process_group):
    assert dist.is_initialized()
    close_process_group()
    assert not dist.is_initialized()
    close_process_group()  # nothing left to close


@pytest.mark.parametrize(("result", "code"), [(0, 0), (1, 1), ({"srcc": 0.9}, 0), ("out/model", 0), (None, 0)])
def test_run_script_exit_codes_and_the_group_closed(process_group, result, code):
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda args: result, lambda: None)
    assert exit_info.value.code == code and not dist.is_initialized()


def test_run_script_user_errors_are_one_line_and_others_propagate(process_group, caplog):
    def broken(args):
        raise FileNotFoundError("labels.csv: no such file")

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        run_script(broken, lambda: None, (FileNotFoundError,))
    assert exit_info.value.code == 2 and "labels.csv: no such file" in caplog.text and not dist.is_initialized()
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    with pytest.raises(FileNotFoundError):
        run_script(broken, lambda: None)  # not a user error: the traceback, but the group is closed all the same
    assert not dist.is_initialized()


def test_a_refused_training_start_is_a_one_line_user_error(tmp_path):
    """A new pre-training run over a finished one: exit code 2 and the reason, no traceback."""
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    (tmp_path / "config.json").write_text("{}")
    script = f"{REPO_ROOT}/train_scripts/train_pretrain.py"
    arguments = ["--init", "unused", "--corpus", "caption_jsonl=unused", "--output_dir", str(tmp_path), "--report_to", "none"]
    environment = {"PYTHONPATH": REPO_ROOT, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "holds an earlier run (a saved model (config.json))" in result.stderr and "Traceback" not in result.stderr
