"""`uniqa app`'s two processes: the page process's `RemoteApp` against a real worker process gives
what the in-process `QualityApp` gives; errors come back as one line, never a hang; a broken model
ends the command with one line and exit code 2; a killed page process leaves no worker behind."""

import os
import signal
import subprocess
import sys
import time

import pytest

import modeling_uniqa
from modeling_uniqa.app.gradio_app import QualityApp, example_images
from tests.app_files import write_bad_files, write_jpegs
from tests.helpers import REPO_ROOT, free_port, kill_process_tree, process_tree
from uniqa_app.page import BackendError
from uniqa_app.remote import RemoteApp

pytestmark = pytest.mark.slow  # each test starts a worker process (it imports torch and transformers)

START_TIMEOUT = 300  # seconds, for loaded machines


def _environment() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}


def _uniqa_app(*arguments, entry="uniqa_app.command", **options) -> subprocess.Popen:
    """`uniqa app ARGUMENTS` as the console script starts it (or `python -m modeling_uniqa.cli app`)."""
    return subprocess.Popen([sys.executable, "-m", entry, "app", *arguments], cwd=REPO_ROOT, env=_environment(), text=True, **options)


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.fixture(scope="module")
def remote():
    app = RemoteApp(modeling_uniqa.DEFAULT_MODEL, batch_size=16)
    yield app
    app.close()


def test_the_worker_answers_as_the_in_process_app(remote, tmp_path):
    good = write_jpegs(tmp_path / "good", count=3)
    bad = write_bad_files(tmp_path / "bad")
    uploads = [good[0], bad["not-an-image"], good[1], bad["bomb"], good[2]]
    info = remote.wait_ready()
    assert info["model"] == modeling_uniqa.DEFAULT_MODEL and info["columns"] == ["MOS (1-5)", "score (0-1)"]
    local = QualityApp(modeling_uniqa.DEFAULT_MODEL, batch_size=16)
    ranking = remote.rank_files(uploads)
    assert ranking == local.rank_files(uploads)  # the same table (scores to 6 decimals, thumbnails), choices and counts
    assert (ranking["scored"], ranking["failed"]) == (3, 2) and 'class="uniqa-error"' in ranking["table"]

    picture, value = remote.explain(example_images()[0], "blurry image")
    want_picture, want_value = local.explain(example_images()[0], "blurry image")
    assert picture.size == want_picture.size and value == pytest.approx(want_value, abs=1e-5)
    sheet = remote.retrieve(example_images(), ["blurry image"])
    assert sheet.size == local.retrieve(example_images(), ["blurry image"]).size
    assert remote.retrieve(example_images(), [" "]) is None


def test_errors_come_back_as_one_line_and_the_worker_goes_on(remote, tmp_path):
    with pytest.raises(BackendError, match=r"notes\.jpg: cannot read image") as caught:  # a user error: its message alone
        remote.explain(str(write_bad_files(tmp_path)["not-an-image"]), "")
    assert "Error:" not in str(caught.value).split("(")[0] and "\n" not in str(caught.value)
    with pytest.raises(BackendError, match=r"^TypeError: "):  # a bug: its type too, not a hang
        remote.rank_files([None])
    with pytest.raises(BackendError, match="unknown request 'shutdown'"):
        remote._request("shutdown")
    assert remote.rank_files(write_jpegs(tmp_path / "after", count=1))["scored"] == 1  # still serving

    os.kill(remote._process.pid, signal.SIGKILL)  # the worker dies: every request says so
    for _ in range(2):
        with pytest.raises(BackendError, match=r"^the model worker stopped \(exit code -9\): restart uniqa app$"):
            remote.rank_files(example_images()[:1])


@pytest.mark.parametrize("entry", ["uniqa_app.command", "modeling_uniqa.cli"])
def test_a_broken_model_folder_ends_the_command_in_one_line(tmp_path, entry):
    (tmp_path / "config.json").write_text("{}")
    process = _uniqa_app("--model", str(tmp_path), "--port", str(free_port()), entry=entry, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=START_TIMEOUT)
    finally:
        kill_process_tree(process)
    assert process.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "config.json" in err and "not a UniQA model" in err, err
    assert "Closing server" not in out, out


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_stopped_page_process_leaves_no_worker(tmp_path, stop):
    """SIGTERM: the page process stops its worker on the way out; SIGKILL (no atexit, no handler):
    the closed connection tells the worker to exit."""
    log = tmp_path / "app.log"
    with open(log, "w") as output:
        process = _uniqa_app("--port", str(free_port()), stdout=output, stderr=subprocess.STDOUT)
    try:
        start = time.monotonic()
        while "ready" not in log.read_text():
            assert process.poll() is None and time.monotonic() - start < START_TIMEOUT, log.read_text()
            time.sleep(0.5)
        workers = process_tree(process.pid)[1:]
        assert len(workers) == 1
        with open(f"/proc/{process.pid}/maps") as handle:  # the page process never loaded torch (it would hold up the first page)
            assert "libtorch" not in handle.read()
        with open(f"/proc/{workers[0]}/maps") as handle:
            assert "libtorch" in handle.read()
        process.send_signal(getattr(signal, stop))
        assert process.wait(60) == (-signal.SIGKILL if stop == "SIGKILL" else 128 + signal.SIGTERM)
        deadline = time.monotonic() + (60 if stop == "SIGKILL" else 0)
        while _is_running(workers[0]):
            assert time.monotonic() < deadline, f"the worker outlived its page process ({stop})"
            time.sleep(0.2)
    finally:
        kill_process_tree(process)
