"""`uniqa push --space`: the Space files (app.py, requirements.txt, README front matter) and the
calls on an (autospec) HfApi; pushed model folders get the endpoint handler."""

import os
import shutil
from pathlib import Path
from unittest.mock import create_autospec

import pytest
import yaml
from huggingface_hub import HfApi

import modeling_uniqa
from model_cards import write_model_card
from modeling_uniqa.app.space import write_space_files
from modeling_uniqa.cli import main as uniqa_main
from modeling_uniqa.core.adapter_io import save_adapter


@pytest.fixture
def api(monkeypatch):
    api = create_autospec(HfApi, instance=True)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: api)
    return api


@pytest.fixture
def model_dir(saved_tiny_model, tmp_path):
    directory = tmp_path / "uniqa-koniq"
    shutil.copytree(saved_tiny_model, directory)
    write_model_card(directory)
    return str(directory)


def test_push_with_space_uploads_the_model_then_the_space(model_dir, api, capsys):
    sent = {}

    def upload_folder(**kwargs):  # the Space's files live in a temporary folder: read them during the call
        folder = kwargs["folder_path"]
        sent[kwargs["repo_type"]] = {name: Path(folder, name).read_bytes().decode("utf-8", "replace") for name in sorted(os.listdir(folder))}
        return None

    api.upload_folder.side_effect = upload_folder
    os.remove(os.path.join(model_dir, "handler.py"))  # a folder saved before the handler existed gets it on push
    assert uniqa_main(["push", model_dir, "--repo-id", "my-org/uniqa-koniq", "--space", "my-org/uniqa-koniq-demo"]) == 0
    assert [call.kwargs["repo_type"] for call in api.create_repo.call_args_list] == ["model", "space"]
    api.create_repo.assert_called_with(repo_id="my-org/uniqa-koniq-demo", repo_type="space", space_sdk="gradio", private=None, exist_ok=True)
    assert "handler.py" in sent["model"] and "class EndpointHandler" in sent["model"]["handler.py"]
    space = sent["space"]
    assert sorted(space) == ["README.md", "app.py", "requirements.txt"]
    assert space["requirements.txt"].strip() == f"uniqa-hf[app]=={modeling_uniqa.__version__}"
    front_matter = yaml.safe_load(space["README.md"].split("---")[1])
    assert front_matter["sdk"] == "gradio" and front_matter["app_file"] == "app.py" and front_matter["models"] == ["my-org/uniqa-koniq"]
    assert "QualityApp('my-org/uniqa-koniq')" in space["app.py"]
    compile(space["app.py"], "app.py", "exec")
    assert "Pushed the Space of my-org/uniqa-koniq" in capsys.readouterr().out


def test_space_app_file_builds_the_page(tmp_path, monkeypatch):
    """The generated app.py runs: its model id resolves to a folder (here the shipped model)."""
    pytest.importorskip("gradio")
    from modeling_uniqa.app import gradio_app

    write_space_files(tmp_path, "my-org/uniqa-tiny")
    monkeypatch.setattr(gradio_app, "resolve_model", lambda model: modeling_uniqa.DEFAULT_MODEL)
    namespace = {"__name__": "space_app"}
    exec(compile((tmp_path / "app.py").read_text(encoding="utf-8"), "app.py", "exec"), namespace)
    assert namespace["demo"].title.startswith("UniQA image quality")


def test_bad_space_arguments_are_refused_before_any_upload(model_dir, api, tmp_path, tiny_model_factory, caplog):
    assert uniqa_main(["push", model_dir, "--repo-id", "my-org/x", "--space", "no-slash"]) == 2
    assert "--space must be ORG/NAME" in caplog.text
    adapter_dir = save_adapter(tiny_model_factory(), tmp_path / "adapter", base_name="my-org/uniqa-base")
    write_model_card(adapter_dir)
    assert uniqa_main(["push", str(adapter_dir), "--repo-id", "my-org/y", "--space", "my-org/y-demo"]) == 2
    assert "is an adapter" in caplog.text
    api.create_repo.assert_not_called()
    api.upload_folder.assert_not_called()
