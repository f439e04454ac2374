"""`uniqa push DIR --repo-id ORG/NAME`: upload a UniQA model or adapter directory to the Hub.

    uniqa push uniqa-koniq --repo-id my-org/uniqa-koniq --private
    uniqa push koniq-adapter --repo-id my-org/uniqa-koniq-adapter      # about 1 MB

Before anything is sent the directory is checked: it must hold a model card (README.md, see
`model_cards`), its weights, and, for a full model, remote-code files identical to this
package's (a folder saved by an older version would publish code that no longer matches). The
command then points the card's usage snippet at the repo id (`push_to_hub(before_upload=...)`;
this module writes no card). Authentication is huggingface_hub's (`hf auth
login` or `HF_TOKEN`).

What is sent is checked too: push reads and writes nothing outside the directory (a symlink that
leads out of it is refused, never followed), replaces the files it writes (README.md, handler.py)
instead of writing into them, runs the model-folder check (`check_model_folder`: truncated
weights, a shard index naming missing files, a config that does not describe the weights), and
refuses files that look like secrets: names such as `*.env`, `credentials*`, `secrets*`,
`id_rsa` (`--allow-secret-names` sends them anyway), and any file holding a Hub token (`hf_...`,
always refused). Only the files so checked are uploaded.
"""

import fnmatch
import logging
import os
import re
import shutil
from collections.abc import Callable

from ..core.adapter_io import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from ..core.atomic_files import atomic_write
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
# File names (matched case-insensitively on the name, not the path) that usually hold secrets.
SECRET_NAME_PATTERNS = (
    "*.env", "env", "credentials*", "*credentials.json", "secret", "secrets*", "*secret*.json", "*secret*.yaml",
    "*secret*.yml", "*secret*.txt", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx",
    "netrc", "_netrc", "*.netrc", "token", "hf_token*", "*.token", "service_account*.json", "*.kdbx",
)
# A Hugging Face access token: `hf_` and 30 or more letters and digits (34 in today's tokens).
HUB_TOKEN_PATTERN = re.compile(rb"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}")
_SCAN_CHUNK = 8 << 20


def _walk(directory: str) -> list:
    """Every path under `directory` (relative, `/`-separated), files and symlinks alike, without
    following symlinked folders."""
    paths = []
    for root, folders, names in os.walk(directory):
        for name in folders + names:
            path = os.path.join(root, name)
            if name in names or os.path.islink(path):
                paths.append(os.path.relpath(path, directory).replace(os.sep, "/"))
    return sorted(paths)


def _is_ignored(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in IGNORE_PATTERNS)


def check_links(directory) -> None:
    """Refuse a directory where a file push would read or write (every file it uploads, and
    README.md and handler.py, which it rewrites) is a symlink: one leading out of the directory
    would publish, or overwrite, a file that is not part of the model. A symlink to a file
    inside the directory is fine; a symlinked folder is refused (it is not uploaded as a folder)."""
    directory = str(directory)
    root = os.path.realpath(directory)
    for relative in _walk(directory):
        if _is_ignored(relative) and relative not in (CARD_NAME, "handler.py"):
            continue
        path = os.path.join(directory, relative)
        if not os.path.islink(path):
            continue
        target = os.path.realpath(path)
        if os.path.isdir(target):
            raise PushError(f"{path}: a symlink to a folder ({os.readlink(path)}); push uploads plain files only: copy it in or remove it.")
        if relative in (CARD_NAME, "handler.py") or os.path.commonpath([root, target]) != root:
            what = "a file push rewrites" if relative in (CARD_NAME, "handler.py") else "a file"
            raise PushError(
                f"{path}: {what} that is a symlink to {os.readlink(path)}, outside {directory}: refusing to follow it "
                "(replace it by a copy of the file, or remove it)."
            )


def _looks_like_secret(name: str) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in SECRET_NAME_PATTERNS)


def _holds_hub_token(path: str) -> bool:
    with open(path, "rb") as handle:
        tail = b""
        while chunk := handle.read(_SCAN_CHUNK):
            if HUB_TOKEN_PATTERN.search(tail + chunk):
                return True
            tail = chunk[-64:]
    return False


def check_secrets(directory, files: list, allow_secret_names: bool = False) -> None:
    """Refuse to upload files that look like secrets: a name like `secrets.env`, `credentials.json`,
    `id_rsa` (unless `allow_secret_names`), or any file holding a Hub access token (always)."""
    directory = str(directory)
    if not allow_secret_names:
        named = [relative for relative in files if _looks_like_secret(relative.rsplit("/", 1)[-1])]
        if named:
            raise PushError(
                f"{os.path.join(directory, named[0])}: its name looks like a secret (credentials, keys, .env); refusing to "
                "upload it: move it out of the folder, or pass --allow-secret-names if it is meant to be public"
                + (f" (also: {', '.join(named[1:])})" if len(named) > 1 else "") + "."
            )
    for relative in files:
        if _holds_hub_token(os.path.join(directory, relative)):
            raise PushError(
                f"{os.path.join(directory, relative)}: holds what looks like a Hugging Face access token (hf_...); refusing "
                "to upload it: remove the token (and revoke it if it was ever shared)."
            )


def check_contents(directory, kind: str) -> None:
    """The model-folder check of a model (`check_model_folder`: config, weights, shard index), or
    the adapter's description and weights: a folder that would not load is not published."""
    directory = str(directory)
    if kind == "model":
        from ..core.model_folder import check_model_folder

        check_model_folder(directory)
        return
    from safetensors import SafetensorError, safe_open

    from ..core.adapter_io import read_adapter_config

    try:
        read_adapter_config(directory)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise PushError(f"{os.path.join(directory, ADAPTER_CONFIG_NAME)}: {error}") from error
    weights = os.path.join(directory, ADAPTER_WEIGHTS_NAME)
    try:
        with safe_open(weights, framework="pt") as handle:
            names = list(handle.keys())
    except (SafetensorError, OSError, ValueError) as error:
        raise PushError(f"{weights}: not a valid safetensors file ({os.path.getsize(weights)} bytes; truncated or corrupt).") from error
    if "level_scores" not in names or "prompt_embeds" not in names:
        raise PushError(f"{weights}: not a UniQA adapter's weights (no level_scores or prompt_embeds).")


def check_push_directory(directory) -> str:
    """Refuse a directory that would publish a broken or stale repo; returns its kind
    ("model" or "adapter"). Errors name the directory and every problem found."""
    directory = str(directory)
    if not os.path.isdir(directory):
        raise PushError(f"{directory}: not a directory.")
    check_links(directory)  # before any file in it is read
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
    atomic_write(target, lambda temporary: shutil.copyfile(source, temporary))  # a new file, never written through a link
    return target


def uploaded_files(directory) -> list:
    """The paths (relative, `/`-separated) of `directory` that `push_to_hub` uploads."""
    from huggingface_hub.utils import filter_repo_objects

    paths = [relative for relative in _walk(str(directory)) if not os.path.isdir(os.path.join(directory, relative))]
    return sorted(filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS))


def _exact_pattern(relative: str) -> str:
    """An fnmatch pattern matching only `relative`."""
    return re.sub(r"([*?\[])", r"[\1]", relative)


def push_to_hub(
    directory,
    repo_id: str,
    api=None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    allow_secret_names: bool = False,
    before_upload: Callable[[str, str], None] | None = None,
):
    """Check `directory` and upload it to the model repo `repo_id`; returns the commit info.

    Args:
        directory: a UniQA model or adapter directory with its card.
        repo_id: `org/name` on the Hub; created if it does not exist.
        api: a `huggingface_hub.HfApi` (injected by tests); default: a new one.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to push to (created from main if missing); default: main.
        commit_message: default: "Upload UniQA <kind> with uniqa push".
        allow_secret_names: upload files whose names look like secrets (`secrets.env`, ...);
            files holding a Hub token are refused regardless.
        before_upload: called as `before_upload(directory, repo_id)` once every check has
            passed, before anything is written into the directory or sent; `uniqa push` updates
            the model card there (its usage snippet names the repo). This module writes no
            card: the directory's own README.md is uploaded, checked like every file.
    """
    kind = check_push_directory(directory)
    check_contents(directory, kind)
    check_secrets(directory, uploaded_files(directory), allow_secret_names)
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
    if before_upload is not None:
        before_upload(str(directory), repo_id)
    if kind == "model":  # the Inference Endpoints handler of this package version (issue #26)
        write_endpoint_handler(directory)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id=repo_id, repo_type="model", branch=revision, exist_ok=True)
    check_links(directory)  # the card and handler were replaced by plain files: nothing to follow
    files = uploaded_files(directory)
    check_secrets(directory, [name for name in files if name in (CARD_NAME, "handler.py")], allow_secret_names=True)
    size = sum(os.path.getsize(os.path.join(directory, path)) for path in files)
    logger.info("Uploading %s (%s, %.1f MB) to %s", directory, kind, size / 1e6, repo_id)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(directory),
        revision=revision,
        commit_message=commit_message or f"Upload UniQA {kind} with uniqa push",
        allow_patterns=[_exact_pattern(path) for path in files],  # exactly the files checked above
        ignore_patterns=IGNORE_PATTERNS,
    )
