"""Issue #23's hostile-user cases, run again as a user runs them: the sweep of the issue's "done when".

    python benchmarks/hostile_sweep.py [--cases GLOB ...] [--jobs 1] [--timeout 1200] [--workdir DIR] [--keep] [--list]

Issue #23 ("Training and publishing fail safe") listed what a careless or hostile user did to the
training scripts and the `uniqa` command line that ended in a traceback, a folder holding the files
of two runs, or a read or write outside the folder. Each finding got a fix and a test; this script
runs every case once more through the real command line, each in a fresh Python process
(`python train_scripts/X.py ...`, `python -m modeling_uniqa.cli ...`), and judges what a user sees:

* a refusal holds when the exit code is 2, stderr holds no traceback (and no argparse usage error:
  that would be the sweep's own mistake), exactly one error line, and that line names the offending
  file, row, flag or output;
* a case that should go on holds when the exit code is 0 and what it skipped is counted (unreadable
  images under `--max_bad_fraction`, link members of a tar shard);
* plus each case's own checks: nothing outside the folder read, written or uploaded, a pickle never
  unpickled (its payload would create a marker file), the earlier folder left as it was, the first
  of two runs into one output finishing with a folder of its own files only.

Two runs into one output (finding 1): the first run starts; as soon as its lock file names it, its
whole process tree is paused (SIGSTOP), so it is mid-run however slow the machine; the second runs
to its end and must be refused; then the first is resumed and must finish (exit 0) with a complete
folder. `uniqa push` (findings 3-7) runs against an autospec `HfApi` that records every call, as
tests/test_push.py does (there is no network): a case looks at what would have been uploaded.

Everything is built once in a temporary folder, lazily (a case builds only what it needs): a random
CLIP with 2-layer 32-wide towers on 32x32 images and OpenAI's tokenizer
(`train_scripts/common/small_clip.py`), the UniQA folder `uniqa convert` makes of it (with a card),
32 rated images, a 20-image caption corpus, a 6-image AVA-Captions set, 4 photos. Each case copies
what it damages into a folder of its own. `--jobs N` runs N cases at a time (each case is
independent).

Prints a table (case, command, exit code, verdict, the one-line message), then "N of M cases held";
exits 1 when a case did not hold, after printing its reasons and the end of its stderr. About 50
Python processes, each importing torch: a few minutes on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import functools
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

PYTHON = sys.executable
RATED_IMAGES = 32  # the rated folder_csv set (MOS 1-10)
CORPUS_IMAGES = 20  # the caption corpus
LABEL_OPTIONS = ["--dataset_option", "split_scheme=random", "--dataset_option", "mos_range=[1,10]"]
HUB_TOKEN = "hf_" + "sWeEp" * 6 + "xyzw"  # looks like a Hub token; never echoed by a refusal

# `uniqa push` with the Hub replaced by a recorder (an autospec HfApi, as tests/test_push.py injects
# it): argv[1] is where the calls are written, the rest is `uniqa`'s command line.
FAKE_HUB = """\
import json, sys
from unittest.mock import create_autospec
import huggingface_hub
from modeling_uniqa.cli import main  # first: transformers annotates with the real HfApi on import
api = create_autospec(huggingface_hub.HfApi, instance=True)
api.upload_folder.return_value.commit_url = "(recorded by the sweep, not sent)"
huggingface_hub.HfApi = lambda *args, **kwargs: api  # what `uniqa push` calls (it imports it when run)
try:
    code = main(sys.argv[2:])
finally:
    calls = {name: [call.kwargs for call in getattr(api, name).call_args_list]
             for name in ("create_repo", "create_branch", "upload_folder", "upload_file", "create_commit")}
    with open(sys.argv[1], "w") as handle:
        json.dump(calls, handle, default=str)
sys.exit(code)
"""

# A line a user reads as the error: `uniqa`'s "error: ...", a logged ERROR (the scripts' format has
# a date in front, `uniqa`'s none).
ERROR_LINE = re.compile(r"^(?:error: |(?:\d{4}-\d\d-\d\d [\d:,.]+ )?(?:ERROR|CRITICAL) [\w.]+: )(?P<message>.*)$")


# ------------------------------------------------------------------------------------------------
# Running commands and judging what they did
# ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One finished command."""

    argv: list
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Outcome:
    """What a case reports: the command shown, its exit code, the one-line message, and the reasons
    it did not hold (none: held)."""

    command: str = ""
    returncode: int | None = None
    message: str = ""
    problems: list = field(default_factory=list)
    stderr_tail: str = ""
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Case:
    name: str
    finding: int  # the finding
    what: str
    run: Callable  # (Workspace, folder) -> Outcome


LOG_PREFIX = re.compile(r"^(?:\d{4}-\d\d-\d\d [\d:,.]+ )?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def log_message(line: str) -> str:
    """A logged line without its date, level and logger."""
    return LOG_PREFIX.sub("", line.strip())


def error_lines(stderr: str) -> list:
    """The error lines of `stderr`, their messages only."""
    return [match["message"] for match in map(ERROR_LINE.match, stderr.splitlines()) if match]


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def record(outcome: Outcome, run: Run, workspace: Workspace, prefix: str = "") -> Outcome:
    outcome.command = prefix + workspace.shorten(" ".join(_quote(argument) for argument in run.argv))
    outcome.returncode = run.returncode
    outcome.seconds += run.seconds
    outcome.stderr_tail = "\n".join(run.stderr.splitlines()[-15:])
    if run.returncode is None:
        outcome.problems.append(f"timed out after {run.seconds:.0f} s")
    if "Traceback (most recent call last)" in run.stderr + run.stdout:
        outcome.problems.append("a traceback")
    if re.search(r"^usage: ", run.stderr, re.MULTILINE):
        outcome.problems.append("argparse refused the command line (the sweep's command is wrong)")
    return outcome


def refused(outcome: Outcome, run: Run, workspace: Workspace, names=(), prefix: str = "") -> Outcome:
    """A refusal: exit code 2, one error line, naming each of `names` (a tuple: one of them). An
    error logged before the script configured logging is printed bare (Python's last-resort
    handler): then the message is stderr's last line."""
    record(outcome, run, workspace, prefix)
    lines = error_lines(run.stderr) or [last_line(run.stderr)]
    message = lines[0]
    outcome.message = workspace.shorten(message)
    if run.returncode not in (2, None):
        outcome.problems.append(f"exit code {run.returncode}, not 2")
    if len(lines) != 1:
        outcome.problems.append(f"{len(lines)} error lines, not one")
    for name in names:
        alternatives = name if isinstance(name, tuple) else (name,)
        if not any(alternative in message for alternative in alternatives):
            outcome.problems.append("the message does not name " + " or ".join(workspace.shorten(a) for a in alternatives))
    return outcome


def succeeded(outcome: Outcome, run: Run, workspace: Workspace, prefix: str = "") -> Outcome:
    """A run that should go on: exit code 0 (its count is checked by the case)."""
    record(outcome, run, workspace, prefix)
    if run.returncode not in (0, None):
        lines = error_lines(run.stderr)
        outcome.message = workspace.shorten(lines[0] if lines else last_line(run.stderr))
        outcome.problems.append(f"exit code {run.returncode}, not 0")
    return outcome


def _quote(argument: str) -> str:
    argument = str(argument)
    return argument if argument and re.fullmatch(r"[\w@%+=:,./\[\]-]+", argument) else "'" + argument.replace("'", "'\\''") + "'"


def file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def folder_digest(folder: str) -> dict:
    """{relative path: sha256} of every file under `folder` (links not followed)."""
    digests = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            digests[os.path.relpath(path, folder)] = "link:" + os.readlink(path) if os.path.islink(path) else file_digest(path)
    return digests


# ------------------------------------------------------------------------------------------------
# The workspace: shared inputs (built once, on first use) and the environment of every command
# ------------------------------------------------------------------------------------------------
class Workspace:
    def __init__(self, root: str, timeout: float):
        self.root = os.path.realpath(root)
        self.timeout = timeout
        self._lock = threading.RLock()
        self._built: dict = {}
        paths = [REPO_ROOT, *[path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]]
        self.env = dict(
            os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1",
            HF_HOME=os.path.join(self.root, "hf_home"),  # nothing written to the user's caches
        )

    def shorten(self, text: str) -> str:
        text = text.replace(self.root, "$SWEEP")
        text = text.replace(PYTHON + " ", "python ")
        return text.replace(REPO_ROOT + os.sep, "")

    def shared(self, name: str) -> str:
        """The shared input `name` (clip, model, adapter, rated, corpus, ava, photos), built on first use."""
        with self._lock:
            if name not in self._built:
                path = os.path.join(self.root, "shared", name)
                done = os.path.join(self.root, "shared", f".{name}.built")  # a kept --workdir is reused
                if not os.path.exists(done):
                    shutil.rmtree(path, ignore_errors=True)
                    started = time.monotonic()
                    getattr(self, f"_build_{name}")(path)
                    open(done, "w").close()
                    print(f"[setup] {name} built in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
                self._built[name] = path
            return self._built[name]

    def case_folder(self, name: str) -> str:
        folder = os.path.join(self.root, "cases", name.replace("/", "__"))
        shutil.rmtree(folder, ignore_errors=True)  # a kept --workdir: the case starts afresh
        os.makedirs(folder)
        return folder

    # -- the shared inputs ------------------------------------------------------------------------
    def _build_clip(self, path):
        """A plain HF CLIP folder (random, OpenAI's tokenizer), as `train_pretrain.py --init` takes."""
        from train_scripts.common.small_clip import TowerSizes, write_small_clip

        tower = TowerSizes(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2)
        write_small_clip(path, image_size=32, seed=0, patch_size=8, vision=tower, text=tower, projection_dim=16)

    def _build_model(self, path):
        """The zero-shot UniQA folder `uniqa convert` makes of the CLIP (MOS 1-10), with its card."""
        from model_cards import write_model_card
        from modeling_uniqa.hub.convert import card_source, convert

        clip = self.shared("clip")
        convert(clip, path, mos_range=[1.0, 10.0])
        write_model_card(path, source=card_source(clip))

    def _build_adapter(self, path):
        """An adapter (fresh Multi-Cue adapter) saved for the model's backbone."""
        from modeling_uniqa.core.adapter_io import save_adapter
        from modeling_uniqa.core.model_folder import load_model

        model = self.shared("model")
        save_adapter(load_model(model, use_adapter=True).model, path, base_name=model)

    def _build_rated(self, path):
        from tests.helpers import write_rated_folder

        write_rated_folder(path, n=RATED_IMAGES)

    def _build_corpus(self, path):
        """A caption_jsonl corpus: PNGs and three captions each."""
        from PIL import Image

        from tests.helpers import random_rgb

        os.makedirs(path)
        with open(os.path.join(path, "captions.jsonl"), "w", encoding="utf-8") as handle:
            for index in range(CORPUS_IMAGES):
                Image.fromarray(random_rgb(40, 48, seed=index)).save(os.path.join(path, f"img_{index}.png"))
                for take, word in enumerate(("blurry", "sharp", "noisy")):
                    caption = f"a {word} photo number {index} take {take}"
                    handle.write(json.dumps({"image": f"img_{index}.png", "caption": caption, "task": "quality"}) + "\n")

    def _build_ava(self, path):
        """AVA-Captions as distributed (the cleaned JSON, images/ beside it): 6 images, 4 comments each."""
        from PIL import Image

        from tests.data_fixtures import write_ava_captions
        from tests.helpers import random_rgb

        ids = [953619 + 7 * index for index in range(6)]
        write_ava_captions(os.path.join(path, "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json"), ids, per_image=4)
        os.makedirs(os.path.join(path, "images"))
        for index, image_id in enumerate(ids):
            Image.fromarray(random_rgb(40, 56, seed=index)).save(os.path.join(path, "images", f"{image_id}.jpg"))

    def _build_photos(self, path):
        from PIL import Image

        from tests.helpers import random_rgb

        os.makedirs(path)
        for index in range(4):
            Image.fromarray(random_rgb(40, 48 + 4 * index, seed=index)).save(os.path.join(path, f"photo{index}.png"))

    # -- commands -------------------------------------------------------------------------------
    def run(self, argv: list, cwd: str, preexec_fn=None) -> Run:
        """Run `argv` in `cwd` (a case's folder); its output is also kept in logs/<case>.<n>.log."""
        argv = [str(argument) for argument in argv]
        started = time.monotonic()
        try:
            result = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, errors="replace",
                                    timeout=self.timeout, preexec_fn=preexec_fn)
            run = Run(argv, result.returncode, result.stdout, result.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as expired:
            def text(value):
                return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")

            run = Run(argv, None, text(expired.stdout), text(expired.stderr), time.monotonic() - started)
        logs = os.path.join(self.root, "logs")
        os.makedirs(logs, exist_ok=True)
        with self._lock:
            self._logs = getattr(self, "_logs", 0) + 1
            path = os.path.join(logs, f"{os.path.basename(cwd)}.{self._logs}.log")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(map(_quote, argv))}\n# exit code {run.returncode}, {run.seconds:.1f} s\n"
                         f"# stdout\n{run.stdout}\n# stderr\n{run.stderr}")
        return run

    def copy(self, name: str, folder: str, as_name: str | None = None) -> str:
        """A copy of the shared input `name` in `folder`, to damage."""
        target = os.path.join(folder, as_name or name)
        shutil.copytree(self.shared(name), target, symlinks=True)
        return target


def script(name: str, *arguments) -> list:
    return [PYTHON, os.path.join(REPO_ROOT, "train_scripts", f"{name}.py"), *arguments]


def uniqa(*arguments) -> list:
    return [PYTHON, "-m", "modeling_uniqa.cli", *arguments]


def adapter_args(model: str, data: str, output: str, cache: str, *extra) -> list:
    """`train_adapter.py`'s arguments: 1 epoch, a 1-crop bank, random split, MOS 1-10."""
    return script("train_adapter", "--model", model, "--dataset", "folder_csv", "--data_dir", data, "--output_dir", output,
                  "--cache_dir", cache, "--num_train_epochs", "1", "--bank_crops", "1", *LABEL_OPTIONS, *extra)


def evaluate_args(model: str, data: str, output: str, cache: str, *extra) -> list:
    return script("evaluate", "--model", model, "--dataset", "folder_csv", "--data_dir", data, "--output_dir", output,
                  "--cache_dir", cache, "--dataset_option", "mos_range=[1,10]", "--protocol", "cross", *extra)


def pretrain_args(init: str, corpus: str, output: str, cache: str, *extra, corpus_name: str = "caption_jsonl") -> list:
    """`train_pretrain.py`'s arguments: batch 4, 2 steps, no workers."""
    return script("train_pretrain", "--init", init, "--corpus", f"{corpus_name}={corpus}", "--output_dir", output,
                  "--cache_dir", cache, "--dataloader_num_workers", "0", "--report_to", "none",
                  *(extra if "--train_batch_size" in extra else ("--per_device_train_batch_size", "4", *extra)),
                  *(() if "--max_steps" in extra else ("--max_steps", "2")))


# ------------------------------------------------------------------------------------------------
# The cases
# ------------------------------------------------------------------------------------------------
CASES: list = []


def case(name: str, finding: int, what: str, **bound):
    """Register the decorated function (workspace, folder, **bound) -> Outcome as case `name`."""

    def register(function):
        CASES.append(Case(name, finding, what, functools.partial(function, **bound) if bound else function))
        return function

    return register


# -- finding 1: two runs into one output ---------------------------------------------------------
def _process_tree(pid: int) -> list:
    from tests.helpers import process_tree

    return process_tree(pid)


def _pause_tree(pid: int) -> list:
    """SIGSTOP `pid` and its descendants (until no new one appears); the pids stopped."""
    stopped = []
    while True:
        new = [process for process in _process_tree(pid) if process not in stopped]
        if not new:
            return stopped
        for process in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGSTOP)
            stopped.append(process)


def _wait_for_lock(lock_file: str, process: subprocess.Popen, timeout: float) -> bool:
    """True once `lock_file` names `process` (it holds the lock), False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError, ValueError), open(lock_file, encoding="utf-8") as handle:
            if json.load(handle).get("pid") == process.pid:
                return True
        time.sleep(0.002)
    return False


def two_runs(workspace: Workspace, folder: str, output: str, first: list, second: list, check_first: Callable,
             names_first_pid: bool = True) -> Outcome:
    """Start `first`; once it holds the lock of `output`, pause it, run `second` (refused, naming
    `output` and the first's pid), resume the first: it must finish (exit 0) and pass `check_first`."""
    from modeling_uniqa.core.output_lock import lock_path

    outcome, lock_file = Outcome(), lock_path(output)
    log = os.path.join(folder, "first.log")
    with open(log, "wb") as handle:
        process = subprocess.Popen([str(a) for a in first], cwd=folder, env=workspace.env, stdout=handle, stderr=subprocess.STDOUT)
    started, paused = time.monotonic(), []
    try:
        if not _wait_for_lock(lock_file, process, workspace.timeout):
            process.kill()
            process.wait()
            outcome.command = workspace.shorten(" ".join(map(_quote, first)))
            outcome.returncode = process.returncode
            with open(log, errors="replace") as handle:
                outcome.stderr_tail = "\n".join(handle.read().splitlines()[-15:])
            outcome.message = workspace.shorten(last_line(outcome.stderr_tail))
            outcome.problems.append(f"the first run ended (exit code {process.returncode}) before its lock file named it")
            return outcome
        paused = _pause_tree(process.pid)
        run = workspace.run(second, cwd=folder)
    except BaseException:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        process.kill()
        process.wait()
        raise
    for pid in paused:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    refused(outcome, run, workspace, [output, *([f"pid {process.pid}"] if names_first_pid else [])], prefix="2nd, same output: ")
    try:
        code = process.wait(timeout=workspace.timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    outcome.seconds += time.monotonic() - started - run.seconds
    if code != 0:
        with open(log, errors="replace") as handle:
            outcome.problems.append(f"the first run ended with exit code {code}: {workspace.shorten(last_line(handle.read()))}")
    else:
        outcome.problems.extend(check_first())
    if os.path.exists(lock_file):
        outcome.problems.append(f"{workspace.shorten(lock_file)} left behind")
    return outcome


def model_folder_problems(output: str, required=("config.json", "model.safetensors", "README.md")) -> list:
    """A finished model folder: its files there, nothing half-written (hidden staging entries), and it loads."""
    from modeling_uniqa.core.model_folder import check_model_folder

    if not os.path.isdir(output):
        return [f"{output} was not written"]
    names = os.listdir(output)
    problems = [f"{name} missing from the output folder" for name in required if name not in names]
    problems += [f"a leftover {name} in the output folder" for name in names if name.startswith(".") or name.endswith(".partial")]
    if not problems:
        try:
            check_model_folder(output)
        except Exception as error:  # the folder is what is judged: any failure is a finding
            problems.append(f"the output folder does not load: {error}")
    return problems


def jsonl_problems(path: str, key: Callable) -> list:
    """A finished JSONL of the first run: every line whole, no record twice."""
    if not os.path.isfile(path):
        return [f"{path} was not written"]
    with open(path, encoding="utf-8") as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    try:
        keys = [key(json.loads(line)) for line in lines]
    except (ValueError, KeyError, TypeError) as error:
        return [f"{os.path.basename(path)} holds a broken record ({error})"]
    problems = [] if keys else [f"{os.path.basename(path)} is empty"]
    if len(set(keys)) != len(keys):
        problems.append(f"{os.path.basename(path)} holds a record twice")
    return problems


@case("lock/train_adapter", 1, "a second train_adapter.py into the output of a running one")
def lock_train_adapter(ws, folder):
    output, model, data = os.path.join(folder, "out"), ws.shared("model"), ws.shared("rated")
    return two_runs(ws, folder, output, adapter_args(model, data, output, os.path.join(folder, "cache1")),
                    adapter_args(model, data, output, os.path.join(folder, "cache2")),
                    lambda: model_folder_problems(output, ("config.json", "model.safetensors", "README.md", "eval_results.json", "test_predictions.csv")))


@case("lock/train_pretrain", 1, "a second train_pretrain.py into the output of a running one")
def lock_train_pretrain(ws, folder):
    output, clip, corpus = os.path.join(folder, "out"), ws.shared("clip"), ws.shared("corpus")
    return two_runs(ws, folder, output, pretrain_args(clip, corpus, output, os.path.join(folder, "cache1")),
                    pretrain_args(clip, corpus, output, os.path.join(folder, "cache2")),
                    lambda: model_folder_problems(output, ("config.json", "model.safetensors", "train_log.jsonl")))


@case("lock/evaluate", 1, "a second evaluate.py into the output of a running one")
def lock_evaluate(ws, folder):
    output, model, data = os.path.join(folder, "out"), ws.shared("model"), ws.shared("rated")

    def check():
        try:
            with open(os.path.join(output, "results.json"), encoding="utf-8") as handle:
                results = json.load(handle)
        except (OSError, ValueError) as error:
            return [f"results.json unreadable: {error}"]
        return [] if "srcc" in results and os.path.isfile(os.path.join(output, "results.md")) else ["results.json or results.md incomplete"]

    return two_runs(ws, folder, output, evaluate_args(model, data, output, os.path.join(folder, "cache1")),
                    evaluate_args(model, data, output, os.path.join(folder, "cache2")), check)


@case("lock/generate_captions", 1, "a second generate_captions.py into the output of a running one")
def lock_generate_captions(ws, folder):
    output, data = os.path.join(folder, "captions.jsonl"), ws.shared("rated")

    def command(cache):
        return script("generate_captions", "--dataset", "folder_csv", "--data_dir", data, *LABEL_OPTIONS, "--task", "quality",
                      "--captioner", "template", "--output", output, "--cache_dir", os.path.join(folder, cache))

    return two_runs(ws, folder, output, command("cache1"), command("cache2"),
                    lambda: jsonl_problems(output, lambda record: (record["image"], record["caption_index"])))


@case("lock/purify_captions", 1, "a second purify_captions.py into the output of a running one")
def lock_purify_captions(ws, folder):
    output, data, clip = os.path.join(folder, "air.jsonl"), ws.shared("ava"), ws.shared("clip")

    def command(cache):
        return script("purify_captions", "--data_dir", data, "--clip_aes", clip, "--output", output, "--cache_dir",
                      os.path.join(folder, cache), "--num_workers", "0", "--image_batch_size", "2", "--text_batch_size", "3")

    return two_runs(ws, folder, output, command("cache1"), command("cache2"),
                    lambda: jsonl_problems(output, lambda record: (record["image"], record["caption_index"])))


@case("lock/uniqa_score", 1, "a second `uniqa score` into the --output of a running one")
def lock_uniqa_score(ws, folder):
    output, photos, model = os.path.join(folder, "scores.csv"), ws.shared("photos"), ws.shared("model")
    command = uniqa("score", photos, "--model", model, "--output", output, "--workers", "0")

    def check():
        with open(output, newline="", encoding="utf-8") as handle:
            paths = [os.path.basename(row["path"]) for row in csv.DictReader(handle)]
        return [] if sorted(paths) == sorted(os.listdir(photos)) else [
            f"scores.csv holds {len(paths)} rows for {len(os.listdir(photos))} photos"]

    return two_runs(ws, folder, output, command, command, check)


@case("lock/uniqa_heads_add", 1, "a second `uniqa heads add` on a model folder a first one is rewriting")
def lock_uniqa_heads_add(ws, folder):
    model = ws.copy("model", folder, "mymodel")

    def check():
        from modeling_uniqa.hub.heads import list_heads

        names = [row["name"] for row in list_heads(model)]
        problems = [] if "sharp" in names and "noisy" not in names else [f"the folder's heads are {names}"]
        problems += [f"a leftover {name} beside the model" for name in os.listdir(folder) if name.startswith(".mymodel.new-")]
        return problems + model_folder_problems(model)

    return two_runs(ws, folder, model, uniqa("heads", "add", model, "--name", "sharp", "--prompts", "sharpness"),
                    uniqa("heads", "add", model, "--name", "noisy", "--prompts", "noise"), check)


# -- finding 2: cards name the final folder -------------------------------------------------------
def card_problems(folder: str, final_name: str, staging: str) -> tuple:
    """(problems, the card's title line) of `folder/README.md`."""
    try:
        with open(os.path.join(folder, "README.md"), encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        return [f"no card: {error}"], ""
    title = next((line for line in text.splitlines() if line.startswith("# ")), "")
    problems = [f"the card mentions {staging!r}"] if staging in text else []
    if final_name not in text:
        problems.append(f"the card does not name the folder {final_name!r}")
    return problems, title


@case("card/train_adapter", 2, "the card train_adapter.py writes names the output folder, not .model.partial")
def card_train_adapter(ws, folder):
    output = os.path.join(folder, "uniqa-sweep")
    outcome = succeeded(Outcome(), ws.run(adapter_args(ws.shared("model"), ws.shared("rated"), output, os.path.join(folder, "cache")),
                                          folder), ws)
    if outcome.returncode == 0:
        problems, outcome.message = card_problems(output, "uniqa-sweep", ".partial")
        outcome.problems.extend(problems)
    return outcome


@case("card/uniqa_heads_add", 2, "the card `uniqa heads add` rewrites names the model folder, not .NAME.new-*")
def card_heads_add(ws, folder):
    model = ws.copy("model", folder, "mymodel")
    outcome = succeeded(Outcome(), ws.run(uniqa("heads", "add", "mymodel", "--name", "sharp", "--prompts", "sharpness"), folder), ws)
    if outcome.returncode == 0:
        problems, outcome.message = card_problems(model, "mymodel", ".new-")
        outcome.problems.extend(problems)
    return outcome


# -- findings 3-7: uniqa push ---------------------------------------------------------------------
def sent_files(folder: str, upload: dict) -> list:
    """The files an `upload_folder` call with these arguments sends (huggingface_hub's own filter)."""
    from huggingface_hub.utils import filter_repo_objects

    every = [os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names]
    return sorted(filter_repo_objects(every, allow_patterns=upload.get("allow_patterns"), ignore_patterns=upload.get("ignore_patterns")))


def push(ws: Workspace, folder: str, model: str, *extra) -> tuple:
    """`uniqa push model --repo-id sweep/x` against the recording HfApi: (run, calls or None)."""
    calls_file = os.path.join(folder, "hub_calls.json")
    run = ws.run([PYTHON, "-c", FAKE_HUB, calls_file, "push", model, "--repo-id", "sweep/uniqa-x", *extra], folder)
    try:
        with open(calls_file, encoding="utf-8") as handle:
            return run, json.load(handle)
    except (OSError, ValueError):
        return run, None


def push_shown(run: Run, outcome: Outcome, ws: Workspace) -> None:
    """Show `uniqa push model ...` (the recorder's -c program left out)."""
    arguments = run.argv[run.argv.index("push"):]
    outcome.command = "uniqa " + ws.shorten(" ".join(map(_quote, arguments))) + "  (Hub: recording HfApi)"


def push_refused(ws: Workspace, folder: str, model: str, names: list, *extra, outside: str | None = None) -> Outcome:
    before = file_digest(outside) if outside else None
    run, calls = push(ws, folder, model, *extra)
    outcome = refused(Outcome(), run, ws, names)
    push_shown(run, outcome, ws)
    if calls is None:
        outcome.problems.append("the push ended without a record of its Hub calls")
    else:
        contacted = [name for name in ("create_repo", "upload_folder", "upload_file", "create_commit") if calls[name]]
        if contacted:
            outcome.problems.append(f"the Hub was called ({', '.join(contacted)})")
        for upload in calls["upload_folder"]:
            base = os.path.realpath(upload["folder_path"])
            outside_sent = [name for name in sent_files(upload["folder_path"], upload)
                            if not os.path.realpath(os.path.join(upload["folder_path"], name)).startswith(base + os.sep)]
            if outside_sent:
                outcome.problems.append(f"uploaded from outside the folder: {', '.join(outside_sent)}")
    if outside and (not os.path.isfile(outside) or file_digest(outside) != before):
        outcome.problems.append(f"{ws.shorten(outside)} (outside the folder) was changed")
    if HUB_TOKEN in run.stderr + run.stdout:
        outcome.problems.append("the token was echoed")
    return outcome


@case("push/clean_folder", 3, "control: a clean model folder is pushed, exactly its files")
def push_clean(ws, folder):
    model = ws.copy("model", folder, "uniqa-model")
    run, calls = push(ws, folder, model)
    outcome = succeeded(Outcome(), run, ws)
    push_shown(run, outcome, ws)
    outcome.message = ws.shorten(last_line(run.stdout))
    if outcome.returncode == 0:
        uploads = (calls or {}).get("upload_folder", [])
        every = sorted(os.path.relpath(os.path.join(root, name), model) for root, _, names in os.walk(model) for name in names)
        if len(uploads) != 1:
            outcome.problems.append(f"{len(uploads)} upload_folder calls, not one")
        elif sent_files(model, uploads[0]) != every:
            outcome.problems.append("the files uploaded are not the folder's files")
    return outcome


@case("push/symlink_out", 3, "a file in the folder is a symlink to a file outside it")
def push_symlink_out(ws, folder):
    model = ws.copy("model", folder, "uniqa-model")
    outside = os.path.join(folder, "outside_secret.txt")
    with open(outside, "w") as handle:
        handle.write("private\n")
    os.symlink(os.path.relpath(outside, model), os.path.join(model, "notes.txt"))
    return push_refused(ws, folder, model, ["notes.txt"], outside=outside)


@case("push/readme_symlink_out", 4, "README.md is a symlink to a file outside the folder (which must stay as it was)")
def push_readme_symlink(ws, folder):
    model = ws.copy("model", folder, "uniqa-model")
    outside = os.path.join(folder, "my_notes.md")
    with open(outside, "w") as handle:
        handle.write("my own notes\n")
    os.remove(os.path.join(model, "README.md"))
    os.symlink(outside, os.path.join(model, "README.md"))
    return push_refused(ws, folder, model, ["README.md"], outside=outside)


@case("push/truncated_weights", 5, "model.safetensors truncated to 1000 bytes")
def push_truncated(ws, folder):
    model = ws.copy("model", folder, "uniqa-model")
    with open(os.path.join(model, "model.safetensors"), "r+b") as handle:
        handle.truncate(1000)
    return push_refused(ws, folder, model, ["model.safetensors"])


@case("push/missing_shard", 5, "model.safetensors.index.json names a shard that is not there")
def push_missing_shard(ws, folder):
    model = ws.copy("model", folder, "uniqa-model")
    os.remove(os.path.join(model, "model.safetensors"))
    with open(os.path.join(model, "model.safetensors.index.json"), "w") as handle:
        json.dump({"metadata": {}, "weight_map": {"logit_scale": "model-00001-of-00002.safetensors"}}, handle)
    return push_refused(ws, folder, model, [("model.safetensors.index.json", "model-00001-of-00002.safetensors")])


@case("push/credentials_json", 6, "a file named credentials.json in the folder", secret="credentials.json")
@case("push/secrets_env", 6, "a file named secrets.env in the folder", secret="secrets.env")
def push_secret_name(ws, folder, secret):
    model = ws.copy("model", folder, "uniqa-model")
    with open(os.path.join(model, secret), "w") as handle:
        handle.write("nothing secret really\n")
    return push_refused(ws, folder, model, [secret, "--allow-secret-names"])


@case("push/hub_token", 6, "a file holding an hf_... token (refused even with --allow-secret-names)")
def push_token(ws, folder):
    model = ws.copy("model", folder, "uniqa-model")
    with open(os.path.join(model, "training_log.txt"), "w") as handle:
        handle.write(f"step 1 loss 0.3\nHF_TOKEN={HUB_TOKEN}\n")
    return push_refused(ws, folder, model, ["training_log.txt"], "--allow-secret-names")


@case("push/clip_config_5", 7, 'config.json with "clip_config": 5')
def push_clip_config(ws, folder):
    model = ws.copy("model", folder, "uniqa-model")
    path = os.path.join(model, "config.json")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["clip_config"] = 5
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    return push_refused(ws, folder, model, ["config.json"])


# -- finding 8: training and evaluation inputs ----------------------------------------------------
def bad_images() -> dict:
    """Suffix -> bytes of the four unreadable images: zero bytes, a PNG cut short, text, a 20000x20 strip."""
    from PIL import Image

    from tests.helpers import random_rgb

    whole, strip = io.BytesIO(), io.BytesIO()
    Image.fromarray(random_rgb(40, 48, seed=99)).save(whole, "PNG")
    Image.new("RGB", (20000, 20), (9, 9, 9)).save(strip, "PNG")
    return {"empty": b"", "truncated": whole.getvalue()[:200], "not an image": b"not an image, just text\n", "20000x20": strip.getvalue()}


def damaged_copy(ws: Workspace, name: str, folder: str, images: list) -> tuple:
    """A copy of the rated set (`images/`) or the corpus with `images` (file names) replaced by the
    four unreadable images, in order; returns (copy, {file name: kind})."""
    copy = ws.copy(name, folder)
    damage = dict(zip(images, bad_images().items()))
    for image, (_, payload) in damage.items():
        with open(os.path.join(copy, "images" if name == "rated" else "", image), "wb") as handle:
            handle.write(payload)
    return copy, {image: kind for image, (kind, _) in damage.items()}


RATED_BAD = ["im000.png", "im001.png", "im002.png", "im003.png"]
CORPUS_BAD = ["img_0.png", "img_1.png", "img_2.png", "img_3.png"]


def skipped_problems(skipped: dict | None, damaged: dict) -> list:
    if not isinstance(skipped, dict):
        return ["no skipped_images record"]
    names = {str(item.get("image", "")).rsplit("/", 1)[-1] for item in skipped.get("images", [])}
    if skipped.get("count") != len(damaged) or names != set(damaged):
        return [f"skipped_images counts {skipped.get('count')} ({', '.join(sorted(names))}), not the {len(damaged)} damaged images"]
    return []


def rated_skipped(ws, folder, make_args, results_file: str, read_skipped) -> Outcome:
    """Damaged rated images under --max_bad_fraction 0.5: the run succeeds, and `results_file` counts the skips."""
    data, damaged = damaged_copy(ws, "rated", folder, RATED_BAD)
    output = os.path.join(folder, "out")
    outcome = succeeded(Outcome(), ws.run(make_args(ws.shared("model"), data, output, os.path.join(folder, "cache"), "--max_bad_fraction", "0.5"), folder), ws)
    if outcome.returncode == 0:
        with open(os.path.join(output, results_file), encoding="utf-8") as handle:
            skipped = read_skipped(json.load(handle))
        outcome.problems.extend(skipped_problems(skipped, damaged))
        outcome.message = f"{results_file}: skipped_images count {skipped.get('count') if isinstance(skipped, dict) else None}"
    return outcome


def rated_refused(ws, folder, make_args, written_file: str, written: str) -> Outcome:
    """The same damaged rated images at the default --max_bad_fraction: refused, naming them, writing nothing."""
    data, damaged = damaged_copy(ws, "rated", folder, RATED_BAD)
    output = os.path.join(folder, "out")
    outcome = refused(Outcome(), ws.run(make_args(ws.shared("model"), data, output, os.path.join(folder, "cache")), folder), ws,
                      [tuple(damaged), "--max_bad_fraction"])
    if os.path.exists(os.path.join(output, written_file)):
        outcome.problems.append(f"{written} written")
    return outcome


@case("bad_images/train_adapter/skipped", 8, "4 unreadable images (empty, cut, text, 20000x20) under --max_bad_fraction 0.5: skipped and counted")
def bad_adapter_skipped(ws, folder):
    return rated_skipped(ws, folder, adapter_args, "eval_results.json", lambda results: results.get("skipped_images"))


@case("bad_images/train_adapter/refused", 8, "the same 4 unreadable images at the default --max_bad_fraction 0.01: refused")
def bad_adapter_refused(ws, folder):
    return rated_refused(ws, folder, adapter_args, "config.json", "a model was")


def find_key(value, key: str):
    """The first `key` in nested dicts and lists."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = find_key(item, key)
            if found is not None:
                return found
    return None


@case("bad_images/evaluate/skipped", 8, "4 unreadable images under --max_bad_fraction 0.5: skipped and counted")
def bad_evaluate_skipped(ws, folder):
    return rated_skipped(ws, folder, evaluate_args, "results.json", lambda results: find_key(results, "skipped_images"))


@case("bad_images/evaluate/refused", 8, "the same 4 unreadable images at the default --max_bad_fraction: refused")
def bad_evaluate_refused(ws, folder):
    return rated_refused(ws, folder, evaluate_args, "results.json", "results were")


@case("bad_images/train_pretrain/skipped", 8, "4 unreadable corpus images under --max_bad_fraction 0.5: skipped and counted")
def bad_pretrain_skipped(ws, folder):
    corpus, damaged = damaged_copy(ws, "corpus", folder, CORPUS_BAD)
    output = os.path.join(folder, "out")
    run = ws.run(pretrain_args(ws.shared("clip"), corpus, output, os.path.join(folder, "cache"), "--max_bad_fraction", "0.5"), folder)
    outcome = succeeded(Outcome(), run, ws)
    if outcome.returncode == 0:
        with open(os.path.join(output, "train_log.jsonl"), encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        skipped = next((record["skipped_images"] for record in records if "skipped_images" in record), None)
        outcome.problems.extend(skipped_problems(skipped, damaged))
        outcome.message = ws.shorten(next((log_message(line) for line in run.stderr.splitlines() if "unreadable images skipped" in line),
                                          "no line counts the skipped images"))
        if "unreadable images skipped" not in outcome.message:
            outcome.problems.append("no line counts the skipped images")
    return outcome


@case("bad_images/train_pretrain/refused", 8, "the same 4 unreadable corpus images at the default --max_bad_fraction: refused")
def bad_pretrain_refused(ws, folder):
    corpus, damaged = damaged_copy(ws, "corpus", folder, CORPUS_BAD)
    output = os.path.join(folder, "out")
    outcome = refused(Outcome(), ws.run(pretrain_args(ws.shared("clip"), corpus, output, os.path.join(folder, "cache")), folder), ws,
                      [tuple(damaged), "--max_bad_fraction"])
    if os.path.exists(os.path.join(output, "config.json")):
        outcome.problems.append("a model was written")
    return outcome


LABEL_DAMAGE = {"nan": "NaN MOS", "inf": "inf MOS", "empty": "empty MOS", "duplicate": "an image listed twice"}


def labelled_copy(ws: Workspace, folder: str, kind: str) -> str:
    """The rated set with line 6 of labels.csv damaged (`kind`)."""
    data = ws.copy("rated", folder)
    path = os.path.join(data, "labels.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if kind == "duplicate":
        rows[5][0] = rows[2][0]
    else:
        rows[5][1] = {"nan": "nan", "inf": "inf", "empty": ""}[kind]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return data


def _label_case(ws, folder, script_name, kind):
    data = labelled_copy(ws, folder, kind)
    arguments = adapter_args if script_name == "train_adapter" else evaluate_args
    run = ws.run(arguments(ws.shared("model"), data, os.path.join(folder, "out"), os.path.join(folder, "cache")), folder)
    return refused(Outcome(), run, ws, ["labels.csv", "line 6"])


for _script, _kinds in (("train_adapter", ("nan", "inf", "empty", "duplicate")), ("evaluate", ("nan", "duplicate"))):
    for _kind in _kinds:
        case(f"labels/{_script}/{_kind}", 8, f"labels.csv line 6: {LABEL_DAMAGE[_kind]}", script_name=_script, kind=_kind)(_label_case)


@case("one_image/train_adapter", 8, "a 1-image dataset cannot be split")
def one_image_adapter(ws, folder):
    from tests.helpers import write_rated_folder

    data = os.path.join(folder, "tiny")
    write_rated_folder(data, n=1)
    run = ws.run(adapter_args(ws.shared("model"), data, os.path.join(folder, "out"), os.path.join(folder, "cache")), folder)
    return refused(Outcome(), run, ws, [data])


@case("one_image/evaluate", 8, "a 1-image dataset cannot be correlated")
def one_image_evaluate(ws, folder):
    from tests.helpers import write_rated_folder

    data = os.path.join(folder, "tiny")
    write_rated_folder(data, n=1)
    run = ws.run(evaluate_args(ws.shared("model"), data, os.path.join(folder, "out"), os.path.join(folder, "cache")), folder)
    return refused(Outcome(), run, ws, [os.path.join(data, "labels.csv")])


@case("unknown/dataset", 8, "train_adapter.py --dataset kadid (no such dataset)")
def unknown_dataset(ws, folder):
    command = adapter_args(ws.shared("model"), ws.shared("rated"), os.path.join(folder, "out"), os.path.join(folder, "cache"))
    command[command.index("folder_csv")] = "kadid"
    return refused(Outcome(), ws.run(command, folder), ws, ["'kadid'"])


@case("unknown/corpus", 8, "train_pretrain.py --corpus captions=DIR (no such corpus)")
def unknown_corpus(ws, folder):
    run = ws.run(pretrain_args(ws.shared("clip"), ws.shared("corpus"), os.path.join(folder, "out"), os.path.join(folder, "cache"),
                               corpus_name="captions"), folder)
    return refused(Outcome(), run, ws, ["'captions'"])


@case("not_a_model/train_pretrain_init_data", 8, "train_pretrain.py --init at a data folder")
def init_data(ws, folder):
    data = ws.shared("rated")
    run = ws.run(pretrain_args(data, ws.shared("corpus"), os.path.join(folder, "out"), os.path.join(folder, "cache")), folder)
    return refused(Outcome(), run, ws, [data, "--init"])


@case("not_a_model/train_adapter_model_data", 8, "train_adapter.py --model at a data folder")
def adapter_model_data(ws, folder):
    data = ws.shared("rated")
    run = ws.run(adapter_args(data, data, os.path.join(folder, "out"), os.path.join(folder, "cache")), folder)
    return refused(Outcome(), run, ws, [data])


@case("not_a_model/evaluate_model_data", 8, "evaluate.py --model at a data folder")
def evaluate_model_data(ws, folder):
    data = ws.shared("rated")
    run = ws.run(evaluate_args(data, data, os.path.join(folder, "out"), os.path.join(folder, "cache")), folder)
    return refused(Outcome(), run, ws, [data])


@case("not_a_model/train_adapter_model_clip", 8, "train_adapter.py --model at a plain HF CLIP folder")
def adapter_model_clip(ws, folder):
    clip = ws.shared("clip")
    run = ws.run(adapter_args(clip, ws.shared("rated"), os.path.join(folder, "out"), os.path.join(folder, "cache")), folder)
    return refused(Outcome(), run, ws, [clip])


def _unwritable(ws, folder, script_name):
    """The output below a regular file (we run as root: chmod stops no one; a file in the way does)."""
    blocker = os.path.join(folder, "not_a_folder")
    with open(blocker, "w") as handle:
        handle.write("x")
    output, cache = os.path.join(blocker, "out"), os.path.join(folder, "cache")
    if script_name == "train_adapter":
        command = adapter_args(ws.shared("model"), ws.shared("rated"), output, cache)
    else:
        command = pretrain_args(ws.shared("clip"), ws.shared("corpus"), output, cache)
    outcome = refused(Outcome(), ws.run(command, folder), ws, [blocker])
    with open(blocker) as handle:
        if handle.read() != "x":
            outcome.problems.append("the file in the way was changed")
    return outcome


case("unwritable_output/train_adapter", 8, "--output_dir below a regular file", script_name="train_adapter")(_unwritable)
case("unwritable_output/train_pretrain", 8, "--output_dir below a regular file", script_name="train_pretrain")(_unwritable)


@case("file_size_limit/train_adapter", 8, "train_adapter.py under a file-size limit (ulimit -f) below the model's weights")
def file_size_limit_adapter(ws, folder):
    from tests.helpers import file_size_limit

    limit = os.path.getsize(os.path.join(ws.shared("model"), "model.safetensors")) // 2
    output = os.path.join(folder, "out")
    run = ws.run(adapter_args(ws.shared("model"), ws.shared("rated"), output, os.path.join(folder, "cache")), folder,
                 preexec_fn=file_size_limit(limit))
    outcome = refused(Outcome(), run, ws, [output])
    outcome.command = f"(ulimit -f {limit // 1024}) " + outcome.command
    if os.path.exists(os.path.join(output, "config.json")):
        outcome.problems.append("a model folder that loads was left half written")
    return outcome


@case("batch_too_large/train_pretrain", 8, "train_pretrain.py's default global batch (960) on a 20-image corpus")
def batch_too_large(ws, folder):
    command = pretrain_args(ws.shared("clip"), ws.shared("corpus"), os.path.join(folder, "out"), os.path.join(folder, "cache"),
                            "--train_batch_size", "960")
    return refused(Outcome(), ws.run(command, folder), ws, ["960", ("--train_batch_size", "--per_device_train_batch_size")])


# -- finding 9: pickles where weights belong ------------------------------------------------------
class _OpenMarker:
    """Unpickling this creates the marker file (the code a planted pickle would run)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _Print:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def plant_pickle(path: str, marker: str) -> None:
    import pickle

    with open(path, "wb") as handle:
        pickle.dump({"weights": _OpenMarker(marker), "note": _Print()}, handle)


def pickle_problems(run: Run, marker: str, ws: Workspace) -> list:
    problems = [f"the pickle ran ({ws.shorten(marker)} created)"] if os.path.exists(marker) else []
    if "pickle code ran" in run.stdout + run.stderr:
        problems.append("the pickle ran (it printed)")
    if "weights_only" in run.stderr:
        problems.append("torch's weights_only advice instead of the file's name")
    return problems


def score_with_planted_pickle(ws, folder, planted: str, adapter_config: dict | None = None) -> Outcome:
    """`uniqa score --adapter` on a copy of the adapter whose `planted` file is a pickle (and whose
    adapter_config.json is `adapter_config`, when given): refused naming the file, nothing run or written."""
    adapter, marker = ws.copy("adapter", folder), os.path.join(folder, "PICKLE_RAN")
    if adapter_config is not None:
        with open(os.path.join(adapter, "adapter_config.json"), "w") as handle:
            json.dump(adapter_config, handle)
    plant_pickle(os.path.join(adapter, planted), marker)
    output = os.path.join(folder, "scores.csv")
    run = ws.run(uniqa("score", ws.shared("photos"), "--model", ws.shared("model"), "--adapter", adapter, "--output", output,
                       "--workers", "0"), folder)
    outcome = refused(Outcome(), run, ws, [planted])
    outcome.problems += pickle_problems(run, marker, ws) + (["scores were written"] if os.path.exists(output) else [])
    return outcome


@case("pickle/score_adapter_safetensors", 9, "a pickle saved as uniqa_adapter.safetensors: uniqa score --adapter")
def pickle_score_adapter(ws, folder):
    return score_with_planted_pickle(ws, folder, "uniqa_adapter.safetensors")


@case("pickle/heads_add_from", 9, "a pickle saved as uniqa_adapter.safetensors: uniqa heads add --from")
def pickle_heads_add(ws, folder):
    adapter, marker = ws.copy("adapter", folder), os.path.join(folder, "PICKLE_RAN")
    plant_pickle(os.path.join(adapter, "uniqa_adapter.safetensors"), marker)
    model = ws.copy("model", folder, "mymodel")
    before = folder_digest(model)
    run = ws.run(uniqa("heads", "add", model, "--from", adapter, "--name", "planted"), folder)
    outcome = refused(Outcome(), run, ws, ["uniqa_adapter.safetensors"])
    outcome.problems += pickle_problems(run, marker, ws) + ([] if folder_digest(model) == before else ["the model folder changed"])
    return outcome


@case("pickle/peft_adapter_bin", 9, "a pickle as a peft adapter_model.bin: uniqa score --adapter")
def pickle_peft_bin(ws, folder):
    return score_with_planted_pickle(ws, folder, "adapter_model.bin",
                                     {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]})


@case("pickle/checkpoint_resume", 9, "a pickle planted in a checkpoint, then --resume_from_checkpoint latest")
def pickle_checkpoint(ws, folder):
    output, marker = os.path.join(folder, "out"), os.path.join(folder, "PICKLE_RAN")
    clip, corpus, cache = ws.shared("clip"), ws.shared("corpus"), os.path.join(folder, "cache")
    first = ws.run(pretrain_args(clip, corpus, output, cache, "--checkpointing_steps", "1"), folder)
    outcome = succeeded(Outcome(), first, ws, prefix="1st run: ")
    if not outcome.held:
        return outcome
    checkpoint = os.path.join(output + ".checkpoints", "checkpoint-2")
    present = os.listdir(checkpoint) if os.path.isdir(checkpoint) else []
    planted = next((name for name in ("optimizer.bin", "random_states_0.pkl", "model.safetensors") if name in present), None)
    if planted is None:
        outcome.problems.append(f"no checkpoint-2 to plant a pickle in ({', '.join(present) or 'none'})")
        return outcome
    plant_pickle(os.path.join(checkpoint, planted), marker)
    run = ws.run(pretrain_args(clip, corpus, output, cache, "--checkpointing_steps", "1", "--max_steps", "3",
                               "--resume_from_checkpoint", "latest"), folder)
    outcome = refused(Outcome(seconds=outcome.seconds), run, ws, [planted])
    outcome.problems += pickle_problems(run, marker, ws)
    return outcome


# -- finding 10: link members of tar shards -------------------------------------------------------
@case("tar_links/uniqa_score", 10, "a tar shard with a symlink (to a photo outside) and a hard-link member: error rows, counted")
def tar_links(ws, folder):
    import pyarrow.parquet as pq

    photos = ws.shared("photos")
    outside = os.path.join(folder, "outside.png")
    shutil.copy(os.path.join(photos, "photo1.png"), outside)
    shard = os.path.join(folder, "shards", "links.tar")
    os.makedirs(os.path.dirname(shard))
    with open(os.path.join(photos, "photo0.png"), "rb") as handle:
        image = handle.read()
    with tarfile.open(shard, "w") as archive:
        def add(name, data=b"", kind=tarfile.REGTYPE, target=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, target, len(data)
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("000.png", image)
        add("001.png", kind=tarfile.SYMTYPE, target=outside)
        add("001.json", b"{}")
        add("002.png", kind=tarfile.LNKTYPE, target="000.png")
    output = os.path.join(folder, "scores")
    run = ws.run(uniqa("score", shard, "--model", ws.shared("model"), "--output", output, "--workers", "0"), folder)
    outcome = succeeded(Outcome(), run, ws)
    counted = [line for line in run.stderr.splitlines() if re.search(r"Scored 1 shards into .*: 3 images, 2 failed", line)]
    outcome.message = ws.shorten(log_message(counted[0]) if counted else last_line(run.stderr))
    if outcome.returncode == 0:
        if not counted:
            outcome.problems.append("no line counts 3 images, 2 failed")
        rows = {row["key"]: row for row in pq.read_table(os.path.join(output, "links.parquet")).to_pylist()}
        expected = {"000": None, "001": "symbolic link", "002": "hard link"}
        for key, reason in expected.items():
            error = (rows.get(key) or {}).get("error")
            if key not in rows or (reason is None) != (error is None) or (reason and reason not in error):
                outcome.problems.append(f"row {key}: error {error!r}, expected {reason or 'a score'}")
    return outcome


# -- finding 11: an empty retrieval query --------------------------------------------------------
@case("retrieve/empty_query", 11, 'uniqa retrieve --query "" is refused before the model is loaded or anything embedded')
def retrieve_empty_query(ws, folder):
    output = os.path.join(folder, "sheet.png")
    run = ws.run(uniqa("retrieve", ws.shared("photos"), "--model", ws.shared("model"), "--query", "sharp", "--query", "",
                       "--output", output), folder)
    outcome = refused(Outcome(), run, ws, ["--query number 2"])
    left = os.listdir(folder)  # the case's own folder: empty before the command
    if left:
        outcome.problems.append(f"written before refusing: {', '.join(left)}")
    return outcome


# ------------------------------------------------------------------------------------------------
# Running the sweep
# ------------------------------------------------------------------------------------------------
def select(patterns: list | None) -> list:
    """The cases whose name matches one of the glob `patterns` (a bare word matches as *word*)."""
    if not patterns:
        return list(CASES)
    globs = [pattern if any(c in pattern for c in "*?[") else f"*{pattern}*" for pattern in patterns]
    return [item for item in CASES if any(fnmatch.fnmatchcase(item.name, glob) for glob in globs)]


def run_case(workspace: Workspace, item: Case) -> Outcome:
    started = time.monotonic()
    try:
        outcome = item.run(workspace, workspace.case_folder(item.name))
    except Exception as error:  # the sweep's own failure, or a product one it did not expect: NOT HELD, shown
        import traceback

        outcome = Outcome(message=f"{type(error).__name__}: {error}", problems=[f"the case itself failed: {type(error).__name__}: {error}"],
                          stderr_tail=traceback.format_exc(limit=4))
    outcome.seconds = time.monotonic() - started
    verdict = "held" if outcome.held else "NOT HELD"
    print(f"[{verdict}] {item.name} ({outcome.seconds:.0f} s){'' if outcome.held else ': ' + '; '.join(outcome.problems)}",
          file=sys.stderr, flush=True)
    return outcome


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def print_table(results: list) -> None:
    print("| # | case | command | exit | verdict | message |")
    print("|---|---|---|---|---|---|")
    for number, (item, outcome) in enumerate(results, 1):
        print(f"| {number} | {item.name} | `{_cell(outcome.command)}` | {outcome.returncode} | "
              f"{'held' if outcome.held else '**NOT HELD**'} | {_cell(outcome.message)} |")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=None, metavar="GLOB", help="run only these cases (globs; a bare word matches as *word*)")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at a time (default 1)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds a command may run (default 1200)")
    parser.add_argument("--workdir", default=None, help="where to build the data and run the cases (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser.parse_args(argv)


def main(args) -> int:
    chosen = select(args.cases)
    if args.list:
        for item in chosen:
            print(f"{item.name:44s} finding {item.finding:2d}  {item.what}")
        return 0
    if not chosen:
        print(f"no case matches {args.cases}", file=sys.stderr)
        return 2
    root = args.workdir or tempfile.mkdtemp(prefix="hostile-sweep-")
    os.makedirs(root, exist_ok=True)
    workspace = Workspace(root, args.timeout)
    started = time.monotonic()
    print(f"Issue #23 hostile-user sweep: {len(chosen)} cases in {workspace.root}, {args.jobs} at a time", file=sys.stderr, flush=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(functools.partial(run_case, workspace), chosen))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    results = list(zip(chosen, outcomes))
    print_table(results)
    held = sum(outcome.held for outcome in outcomes)
    print()
    for item, outcome in results:
        if not outcome.held:
            print(f"NOT HELD: {item.name} ({item.what})\n  command: {outcome.command}\n  exit code: {outcome.returncode}\n"
                  f"  why: {'; '.join(outcome.problems)}\n  stderr (end):\n" + "\n".join("    " + line for line in outcome.stderr_tail.splitlines()))
    print(f"{held} of {len(outcomes)} cases held ({time.monotonic() - started:.0f} s{', work folder kept: ' + workspace.root if args.keep else ''})")
    return 0 if held == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
