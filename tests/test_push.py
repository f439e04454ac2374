"""`uniqa push`: checks before upload, and the calls made on an (autospec) HfApi."""

import os
import shutil
from unittest.mock import create_autospec

import pytest
from huggingface_hub import HfApi, ModelCard

from model_cards import write_model_card
from modeling_uniqa.cli import main as uniqa_main
from modeling_uniqa.core.adapter_io import save_adapter
from modeling_uniqa.hub.push import PushError, push_to_hub


@pytest.fixture
def api():
    return create_autospec(HfApi, instance=True)


@pytest.fixture
def model_dir(saved_tiny_model, tmp_path):
    directory = tmp_path / "uniqa-koniq"
    shutil.copytree(saved_tiny_model, directory)
    write_model_card(directory, results=[{"dataset": "koniq10k", "srcc": 0.9, "plcc": 0.91}])
    return str(directory)


def test_push_model_directory(model_dir, api):
    push_to_hub(model_dir, "my-org/uniqa-koniq", api=api, private=True, revision="v1", commit_message="First")
    api.create_repo.assert_called_once_with(repo_id="my-org/uniqa-koniq", repo_type="model", private=True, exist_ok=True)
    api.create_branch.assert_called_once_with(repo_id="my-org/uniqa-koniq", repo_type="model", branch="v1", exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == model_dir and kwargs["repo_id"] == "my-org/uniqa-koniq"
    assert kwargs["revision"] == "v1" and kwargs["commit_message"] == "First" and kwargs["repo_type"] == "model"
    # The card now tells users to load the repo, and kept its results.
    card = ModelCard.load(os.path.join(model_dir, "README.md"))
    assert 'pipeline(model="my-org/uniqa-koniq", trust_remote_code=True)' in card.text
    assert len(card.data.eval_results) == 2


def test_leftovers_and_hidden_files_are_not_uploaded(model_dir, api):
    """A crashed training run's `.model.partial/` (a full weights copy) and dotfiles such as
    `.env` were uploaded; what huggingface_hub would send is checked with its own filter."""
    from huggingface_hub.utils import filter_repo_objects

    before = sorted(os.listdir(model_dir))
    for leftover in ("checkpoint-3/model.safetensors", ".model.partial/model.safetensors", ".env", "__pycache__/x.pyc", "sub/__pycache__/y.pyc"):
        os.makedirs(os.path.dirname(os.path.join(model_dir, leftover)), exist_ok=True)
        with open(os.path.join(model_dir, leftover), "w") as handle:
            handle.write("x")
    push_to_hub(model_dir, "my-org/uniqa-koniq", api=api)
    every_file = [os.path.relpath(os.path.join(root, name), model_dir) for root, _, names in os.walk(model_dir) for name in names]
    sent = sorted(filter_repo_objects(every_file, ignore_patterns=api.upload_folder.call_args.kwargs["ignore_patterns"]))
    assert sent == before


def test_push_adapter_directory_is_small(tiny_model_factory, api, tmp_path, caplog):
    adapter_dir = save_adapter(tiny_model_factory(), tmp_path / "adapter", base_name="my-org/uniqa-base")
    push_to_hub(adapter_dir, "my-org/uniqa-adapter", api=api)
    assert "not a Hub repo id" not in caplog.text
    assert api.upload_folder.call_args.kwargs["folder_path"] == adapter_dir
    assert api.upload_folder.call_args.kwargs["commit_message"] == "Upload UniQA adapter with uniqa push"
    api.create_branch.assert_not_called()
    assert sorted(os.listdir(adapter_dir)) == ["README.md", "uniqa_adapter.json", "uniqa_adapter.safetensors"]


def test_cli_refuses_stale_remote_code(model_dir, api, monkeypatch, caplog):
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: api)
    with open(os.path.join(model_dir, "modeling_uniqa.py"), "a") as handle:
        handle.write("\n# edited by an older version\n")
    os.remove(os.path.join(model_dir, "pipeline_uniqa.py"))
    assert uniqa_main(["push", model_dir, "--repo-id", "my-org/x"]) == 2
    assert "remote-code files differ from this package's" in caplog.text and "modeling_uniqa.py" in caplog.text
    assert "remote-code files missing: pipeline_uniqa.py" in caplog.text
    api.create_repo.assert_not_called()
    api.upload_folder.assert_not_called()


def test_cli_refuses_missing_card_and_bad_input(model_dir, api, monkeypatch, caplog, tmp_path, capsys):
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: api)
    os.remove(os.path.join(model_dir, "README.md"))
    assert uniqa_main(["push", model_dir, "--repo-id", "my-org/x"]) == 2
    assert "no model card (README.md)" in caplog.text
    assert uniqa_main(["push", str(tmp_path / "nowhere"), "--repo-id", "my-org/x"]) == 2
    write_model_card(model_dir)
    assert uniqa_main(["push", model_dir, "--repo-id", "not-a-repo-id"]) == 2
    api.upload_folder.assert_not_called()
    assert uniqa_main(["push", model_dir, "--repo-id", "my-org/x", "--private"]) == 0
    api.create_repo.assert_called_once_with(repo_id="my-org/x", repo_type="model", private=True, exist_ok=True)
    assert "Pushed" in capsys.readouterr().out


def test_directory_without_weights_is_refused(model_dir):
    os.remove(os.path.join(model_dir, "model.safetensors"))
    with pytest.raises(PushError, match="no weights"):
        push_to_hub(model_dir, "my-org/x", api=create_autospec(HfApi, instance=True))


def test_adapter_on_a_local_base_is_pushed_with_a_warning(tiny_model_factory, api, tmp_path, caplog):
    adapter_dir = save_adapter(tiny_model_factory(), tmp_path / "adapter", base_name=str(tmp_path))
    push_to_hub(adapter_dir, "my-org/uniqa-adapter", api=api)
    assert "not a Hub repo id" in caplog.text
    api.upload_folder.assert_called_once()


def test_hub_failure_is_reported_not_raised(model_dir, api, monkeypatch, caplog):
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: api)
    api.create_repo.side_effect = ConnectionError("Cannot reach https://huggingface.co: offline mode is enabled")
    assert uniqa_main(["push", model_dir, "--repo-id", "my-org/x"]) == 1
    assert "Uploading" in caplog.text and "ConnectionError: Cannot reach" in caplog.text
