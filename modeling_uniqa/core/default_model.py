"""UniQA-Tiny, the model shipped inside this package and used when no model is named.

    uniqa score photos/ --output scores.csv                 # no --model: UniQA-Tiny
    pipeline("image-quality")                               # no model=: UniQA-Tiny
    AutoModel.from_pretrained(modeling_uniqa.DEFAULT_MODEL)  # the folder itself

UniQA-Tiny is a small CLIP (64x64 native-resolution views, 4-layer towers) pre-trained from
scratch by this project's own recipe (`make uniqa-tiny`) on real photographs from Debian packages
with synthetic distortions, plus its Multi-Cue adapter: it ranks blur, noise, compression and
pixelation, offline, on a CPU. It is not the paper's model: for that, convert the authors'
weights with `uniqa convert` (README, "Which model").

`python -m modeling_uniqa.core.default_model ship FOLDER` copies a model folder made by the recipe
into the package (checked first: it must load, hold no checkpoints and stay under
:data:`MAX_SHIPPED_BYTES`). The shipped processor seeds its random views by `view_seed` alone
(:data:`SHIPPED_VIEW_SEEDING`): versions of one photo (an edit, a re-compression) are then looked
at in the same places, and no hash of every image's pixels is taken, which cost a third of the
scoring speed on 1024x768 JPEGs on 2 cores. The config keeps no path of the machine that made it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from .json_files import read_json

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "uniqa-tiny")
MAX_SHIPPED_BYTES = 20 * 1024 * 1024
# What a shipped folder holds: the model, its processor and tokenizer, and card. Not the remote-code
# copies: inside the package its own modules serve (a copy could only drift from them), and
# `save_pretrained` / `uniqa push` write them into any folder that leaves the package.
SHIPPED_SUFFIXES = (".json", ".safetensors", ".txt", ".md")
SHIPPED_VIEW_SEEDING = "shared"  # processing_uniqa.VIEW_SEEDINGS


def default_model_path() -> str:
    """The folder of the shipped model; a clear error when the package was installed without it."""
    if not os.path.isfile(os.path.join(DEFAULT_MODEL, "config.json")):
        raise FileNotFoundError(
            f"The default model is missing from this installation ({DEFAULT_MODEL}): reinstall uniqa-hf, or name "
            "a model folder (--model / model=)."
        )
    return DEFAULT_MODEL


def _shipped_files(folder: str) -> list[str]:
    return sorted(
        name for name in os.listdir(folder)
        if os.path.isfile(os.path.join(folder, name)) and not os.path.islink(os.path.join(folder, name))
        and name.endswith(SHIPPED_SUFFIXES) and not name.startswith(".")
        and name not in ("train_log.jsonl", "test_predictions.csv", "eval_results.json")
    )


def _rewrite_json(path: str, change) -> None:
    """Apply `change` to the JSON object in `path`, in place. (The processor's own save_pretrained
    would also write the remote-code copies a shipped folder leaves out.)"""
    if os.path.isfile(path):
        data = read_json(path)
        change(data)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")


def _drop_machine_paths(config: dict) -> None:
    """`_name_or_path` entries (where the recipe's folders were) -> their last component."""
    for section in (config, config.get("clip_config") or {}):
        if section.get("_name_or_path"):
            section["_name_or_path"] = os.path.basename(os.path.normpath(section["_name_or_path"]))


def ship(folder: str, target: str = DEFAULT_MODEL) -> list[str]:
    """Copy the model in `folder` into `target` (replacing what is there). Returns the files copied."""
    from ..modeling_uniqa import UniQAModel

    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder}: not a model folder (no config.json)")
    model = UniQAModel.from_pretrained(folder)  # refuses a broken folder before anything is replaced
    if model.adapter is None:
        raise ValueError(f"{folder}: has no adapter; ship the fine-tuned model (train_adapter.py's output)")
    files = _shipped_files(folder)
    size = sum(os.path.getsize(os.path.join(folder, name)) for name in files)
    if size > MAX_SHIPPED_BYTES:
        raise ValueError(f"{folder}: {size / 2**20:.1f} MiB to ship, over the {MAX_SHIPPED_BYTES / 2**20:.0f} MiB limit")
    staging = target.rstrip("/") + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for name in files:
        shutil.copyfile(os.path.join(folder, name), os.path.join(staging, name))
    _rewrite_json(os.path.join(staging, "preprocessor_config.json"), lambda data: data.update(view_seeding=SHIPPED_VIEW_SEEDING))
    _rewrite_json(os.path.join(staging, "config.json"), _drop_machine_paths)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return files


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "ship":
        print("usage: python -m modeling_uniqa.core.default_model ship MODEL_FOLDER", file=sys.stderr)
        return 2
    try:
        files = ship(argv[1])
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"shipped {len(files)} files of {argv[1]} -> {DEFAULT_MODEL}")
    return 0


__all__ = ["DEFAULT_MODEL", "MAX_SHIPPED_BYTES", "SHIPPED_VIEW_SEEDING", "default_model_path", "ship"]

if __name__ == "__main__":
    sys.exit(main())
