"""`uniqa push DIR --repo-id ORG/NAME`: upload a UniQA model or adapter directory to the Hub.

    uniqa push uniqa-koniq --repo-id my-org/uniqa-koniq --private
    uniqa push koniq-adapter --repo-id my-org/uniqa-koniq-adapter      # about 1 MB

Before anything is sent the directory is checked: it must hold a model card (README.md, see
`model_cards`), its weights, and, for a full model, remote-code files identical to this
package's (a folder saved by an older version would publish code that no longer matches). The
card's usage snippet is pointed at the repo id. Authentication is huggingface_hub's (`hf auth
login` or `HF_TOKEN`).
"""

import logging
import os
import shutil

from ..core.adapter_io import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from ..errors import PushError  # noqa: F401  (raised here; importable from here too)
from ..modeling_uniqa import REMOTE_CODE_FILES

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
MODEL_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# Never uploaded: training leftovers and caches that can sit in a model folder, and hidden files
# and folders (a crashed training run's `.model.partial/` weights copy, `.env`, editor files).
# Patterns are fnmatch'ed on the relative path, where `*` also matches `/`.
IGNORE_PATTERNS = [
    "checkpoint-*/**", "checkpoints/**", ".cache/**", "__pycache__/**", "*/__pycache__/**", "*.pyc", "*.tmp", "*.lock",
    ".*", "*/.*",
]


def check_push_directory(directory) -> str:
    """Refuse a directory that would publish a broken or stale repo; returns its kind
    ("model" or "adapter"). Errors name the directory and every problem found."""
    directory = str(directory)
    if not os.path.isdir(directory):
        raise PushError(f"{directory}: not a directory.")
    problems = []
    if os.path.isfile(os.path.join(directory, ADAPTER_CONFIG_NAME)):
        kind = "adapter"
        if not os.path.isfile(os.path.join(directory, ADAPTER_WEIGHTS_NAME)):
            problems.append(f"{ADAPTER_WEIGHTS_NAME} is missing")
    elif os.path.isfile(os.path.join(directory, "config.json")):
        kind = "model"
        if not any(os.path.isfile(os.path.join(directory, name)) for name in MODEL_WEIGHT_FILES):
            problems.append(f"no weights ({' or '.join(MODEL_WEIGHT_FILES)})")
        problems.extend(stale_remote_code(directory))
    else:
        raise PushError(f"{directory}: neither a UniQA model (config.json) nor a UniQA adapter ({ADAPTER_CONFIG_NAME}).")
    if not os.path.isfile(os.path.join(directory, CARD_NAME)):
        problems.append(
            f"no model card ({CARD_NAME}); write one with `python -m model_cards {directory}`"
        )
    if problems:
        raise PushError(f"{directory}: refusing to push: " + "; ".join(problems) + ".")
    return kind


def stale_remote_code(directory) -> list:
    """Problems with the remote-code files of a model directory: missing, or differing (byte for
    byte) from this package's current files. Re-saving the model (`save_pretrained` into a fresh
    folder, or copying the files from `modeling_uniqa/`) fixes them."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the remote-code files sit in the package root
    missing, stale = [], []
    for name in REMOTE_CODE_FILES:
        target = os.path.join(directory, name)
        if not os.path.isfile(target):
            missing.append(name)
            continue
        with open(os.path.join(package_dir, name), "rb") as current, open(target, "rb") as saved:
            if current.read() != saved.read():
                stale.append(name)
    problems = []
    if missing:
        problems.append(f"remote-code files missing: {', '.join(missing)}")
    if stale:
        problems.append(
            f"remote-code files differ from this package's ({package_dir}): {', '.join(stale)}; copy the current "
            "ones over (or re-save the model) and check that it still loads"
        )
    return problems


def write_endpoint_handler(directory) -> str:
    """Write this package's Inference Endpoints handler (`hub_handler.py`) into a model folder as
    `handler.py`; returns its path."""
    from .. import modeling_uniqa as model_file
    from ..modeling_uniqa import ENDPOINT_HANDLER_NAME, ENDPOINT_HANDLER_SOURCE

    target = os.path.join(directory, ENDPOINT_HANDLER_NAME)
    source = os.path.join(os.path.dirname(os.path.abspath(model_file.__file__)), ENDPOINT_HANDLER_SOURCE)
    shutil.copyfile(source, target)
    return target


def uploaded_files(directory) -> list:
    """The paths (relative, `/`-separated) of `directory` that `push_to_hub` uploads."""
    from huggingface_hub.utils import filter_repo_objects

    paths = [
        os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
        for root, _, names in os.walk(directory)
        for name in names
    ]
    return sorted(filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS))


def push_to_hub(
    directory,
    repo_id: str,
    api=None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
):
    """Check `directory` and upload it to the model repo `repo_id`; returns the commit info.

    Args:
        directory: a UniQA model or adapter directory with its card.
        repo_id: `org/name` on the Hub; created if it does not exist.
        api: a `huggingface_hub.HfApi` (injected by tests); default: a new one.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to push to (created from main if missing); default: main.
        commit_message: default: "Upload UniQA <kind> with uniqa push".
    """
    kind = check_push_directory(directory)
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushError(f"--repo-id must be ORG/NAME, got {repo_id!r}.")
    if kind == "adapter":
        from ..core.adapter_io import read_adapter_config

        base_name = read_adapter_config(directory)["base_model"].get("name")
        if not base_name or base_name.count("/") != 1 or os.path.exists(base_name):
            logger.warning(
                "%s: the adapter's base is %r, not a Hub repo id: users of %s will have to find that base themselves "
                "(save_adapter(..., base_name='ORG/BASE') records a pushed one).", directory, base_name, repo_id
            )
    from model_cards import write_model_card

    write_model_card(directory, repo_id=repo_id)  # the card's usage snippet names the repo
    if kind == "model":  # the Inference Endpoints handler of this package version (issue #26)
        write_endpoint_handler(directory)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id=repo_id, repo_type="model", branch=revision, exist_ok=True)
    size = sum(os.path.getsize(os.path.join(directory, path)) for path in uploaded_files(directory))
    logger.info("Uploading %s (%s, %.1f MB) to %s", directory, kind, size / 1e6, repo_id)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(directory),
        revision=revision,
        commit_message=commit_message or f"Upload UniQA {kind} with uniqa push",
        ignore_patterns=IGNORE_PATTERNS,
    )
