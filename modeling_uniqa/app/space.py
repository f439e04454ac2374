"""What a Hugging Face Space needs to serve `uniqa app` for a pushed model (`uniqa push --space`).

    app.py            builds the page of `modeling_uniqa.app.gradio_app` for the model repo
    requirements.txt  this package, pinned to the version that wrote the files, with its `app` extra
    README.md         the Space card: front matter with `sdk: gradio`, the app file and the model id
"""

import json
import os
import tempfile

SPACE_FILES = ("app.py", "requirements.txt", "README.md")

APP_TEMPLATE = '''"""The Space of {model_id}: the page of `uniqa app` (written by `uniqa push --space`)."""

from modeling_uniqa.app.gradio_app import QualityApp, build_demo, launch

demo = build_demo(QualityApp({model_id!r}))

if __name__ == "__main__":
    launch(demo)
'''

README_TEMPLATE = """---
title: {title_yaml}
emoji: 📷
colorFrom: indigo
colorTo: green
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
license: apache-2.0
short_description: Image quality scores, Grad-CAM and text search with UniQA
models:
- {model_id}
---

# {title}

Try [{model_id}](https://huggingface.co/{model_id}) in the browser: drop images to rank them by
quality (every head of the model, the MOS on its scale), see where the model looks (Grad-CAM), and
find images by text. Written by `uniqa push --space` of uniqa-hf {version}; run the same page
locally with `pip install "uniqa-hf[app]=={version}"` and `uniqa app --model {model_id}`.
"""


def _gradio_version(default: str = "6.0.0") -> str:
    try:
        from importlib.metadata import version

        return version("gradio")
    except Exception:  # gradio is not installed where the files are written: any 6.x serves
        return default


def write_space_files(folder, model_id: str, title: str | None = None) -> list:
    """Write `app.py`, `requirements.txt` and `README.md` of the Space of `model_id` into `folder`;
    returns their paths."""
    from .. import __version__

    os.makedirs(folder, exist_ok=True)
    title = title or f"UniQA {model_id.split('/')[-1]}"
    contents = {
        "app.py": APP_TEMPLATE.format(model_id=model_id),
        "requirements.txt": f"uniqa-hf[app]=={__version__}\n",
        "README.md": README_TEMPLATE.format(title=title, title_yaml=json.dumps(title[:30]), model_id=model_id, version=__version__, gradio_version=_gradio_version()),
    }
    paths = []
    for name in SPACE_FILES:
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(contents[name])
        paths.append(path)
    return paths


def push_space(space_id: str, model_id: str, api, private: bool | None = None, commit_message: str | None = None):
    """Create (if missing) the Gradio Space `space_id` and upload the files serving `model_id`."""
    if not isinstance(space_id, str) or space_id.count("/") != 1 or not all(space_id.split("/")):
        raise ValueError(f"--space must be ORG/NAME, got {space_id!r}.")
    api.create_repo(repo_id=space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="uniqa-space-") as folder:
        write_space_files(folder, model_id)
        return api.upload_folder(
            repo_id=space_id, repo_type="space", folder_path=folder,
            commit_message=commit_message or f"Space for {model_id} with uniqa push --space",
        )


__all__ = ["SPACE_FILES", "push_space", "write_space_files"]
