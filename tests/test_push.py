"""`uniqa push`: checks before upload, and the calls made on an (autospec) HfApi."""

import os
import shutil
from unittest.mock import create_autospec

import pytest
from huggingface_hub import HfApi, ModelCard

from model_cards import write_model_card
from modeling_uniqa.cli import main as uniqa_main
from modeling_uniqa.cli.push import update_card
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
    with open(os.path.join(model_dir, "README.md"), "rb") as handle:
        card_before = handle.read()
    push_to_hub(model_dir, "my-org/uniqa-koniq", api=api, private=True, revision="v1", commit_message="First")
    api.create_repo.assert_called_once_with(repo_id="my-org/uniqa-koniq", repo_type="model", private=True, exist_ok=True)
    api.create_branch.assert_called_once_with(repo_id="my-org/uniqa-koniq", repo_type="model", branch="v1", exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == model_dir and kwargs["repo_id"] == "my-org/uniqa-koniq"
    assert kwargs["revision"] == "v1" and kwargs["commit_message"] == "First" and kwargs["repo_type"] == "model"
    with open(os.path.join(model_dir, "README.md"), "rb") as handle:  # the library writes no card (issue #25)
        assert handle.read() == card_before


def test_cli_push_points_the_card_at_the_repo(model_dir, api, monkeypatch):
    assert _cli_push(model_dir, api, monkeypatch) == 0
    # The command rewrote the card: it tells users to load the repo, and kept its results.
    card = ModelCard.load(os.path.join(model_dir, "README.md"))
    assert 'pipeline(model="my-org/x", trust_remote_code=True)' in card.text
    assert len(card.data.eval_results) == 2
    api.upload_folder.assert_called_once()


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
    with pytest.raises(PushError, match="no model card"):  # save_adapter writes none
        push_to_hub(adapter_dir, "my-org/uniqa-adapter", api=api)
    write_model_card(adapter_dir)
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
    write_model_card(adapter_dir)
    push_to_hub(adapter_dir, "my-org/uniqa-adapter", api=api)
    assert "not a Hub repo id" in caplog.text
    api.upload_folder.assert_called_once()


def test_hub_failure_is_reported_not_raised(model_dir, api, monkeypatch, caplog):
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: api)
    api.create_repo.side_effect = ConnectionError("Cannot reach https://huggingface.co: offline mode is enabled")
    assert uniqa_main(["push", model_dir, "--repo-id", "my-org/x"]) == 1
    assert "Uploading" in caplog.text and "ConnectionError: Cannot reach" in caplog.text


# Issue 23: push reads and writes nothing outside the folder and checks what it sends.
def _cli_push(model_dir, api, monkeypatch, *extra):
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: api)
    return uniqa_main(["push", model_dir, "--repo-id", "my-org/x", *extra])


def test_symlink_out_of_the_folder_is_refused(model_dir, api, monkeypatch, tmp_path, capsys, caplog):
    """Finding 3: `notes.txt -> ../outside_secret.txt` was uploaded (rc 0)."""
    outside = tmp_path / "outside_secret.txt"
    outside.write_text("private\n")
    os.symlink(os.path.relpath(outside, model_dir), os.path.join(model_dir, "notes.txt"))
    assert _cli_push(model_dir, api, monkeypatch) == 2
    assert "notes.txt" in caplog.text and "outside" in caplog.text and "Traceback" not in capsys.readouterr().err
    api.upload_folder.assert_not_called()


def test_symlink_inside_the_folder_is_uploaded_once_checked(model_dir, api):
    with open(os.path.join(model_dir, "notes.txt"), "w") as handle:
        handle.write("about this model\n")
    os.symlink("notes.txt", os.path.join(model_dir, "NOTES"))
    push_to_hub(model_dir, "my-org/x", api=api)
    assert any(pattern == "NOTES" for pattern in api.upload_folder.call_args.kwargs["allow_patterns"])


def test_card_symlinked_out_of_the_folder_is_neither_read_nor_overwritten(model_dir, api, monkeypatch, tmp_path, caplog):
    """Finding 4: a README.md linked to an outside file was overwritten with the card, then uploaded."""
    outside = tmp_path / "my_notes.md"
    outside.write_text("my own notes\n")
    card = os.path.join(model_dir, "README.md")
    os.remove(card)
    os.symlink(outside, card)
    assert _cli_push(model_dir, api, monkeypatch) == 2
    assert outside.read_text() == "my own notes\n"
    assert "README.md" in caplog.text
    api.upload_folder.assert_not_called()


def test_push_replaces_the_card_and_handler_instead_of_writing_into_them(model_dir, api, tmp_path):
    """A card hard-linked to a file elsewhere: push writes a new file, the other stays as it was."""
    card, handler = os.path.join(model_dir, "README.md"), os.path.join(model_dir, "handler.py")
    other_card, other_handler = tmp_path / "card_copy.md", tmp_path / "handler_copy.py"
    os.link(card, other_card)
    os.link(handler, other_handler)
    before_card, before_handler = other_card.read_text(), other_handler.read_text()
    with open(handler, "a") as handle:  # the shared file changes (that is what a hard link is)
        handle.write("# local edit\n")
    before_handler = other_handler.read_text()
    push_to_hub(model_dir, "my-org/x", api=api, before_upload=update_card)  # as `uniqa push` does
    assert other_card.read_text() == before_card and other_handler.read_text() == before_handler
    with open(card) as handle:
        assert "my-org/x" in handle.read() and os.stat(card).st_nlink == 1


@pytest.mark.parametrize("damage", ["truncated", "missing_shard", "bad_clip_config"])
def test_broken_model_folder_is_refused_naming_the_file(model_dir, api, monkeypatch, caplog, capsys, damage):
    """Findings 5 and 7: truncated weights and an index naming a missing shard were published
    (rc 0); `"clip_config": 5` ended as `Uploading ... failed: AttributeError` (rc 1)."""
    import json

    weights = os.path.join(model_dir, "model.safetensors")
    if damage == "truncated":
        with open(weights, "r+b") as handle:
            handle.truncate(1000)
        named = "model.safetensors"
    elif damage == "missing_shard":
        os.remove(weights)
        with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as handle:
            json.dump({"metadata": {}, "weight_map": {"logit_scale": "model-00001-of-00002.safetensors"}}, handle)
        named = "model.safetensors.index.json"
    else:
        path = os.path.join(model_dir, "config.json")
        with open(path) as handle:
            config = json.load(handle)
        config["clip_config"] = 5
        with open(path, "w") as handle:
            json.dump(config, handle)
        named = "config.json"
    assert _cli_push(model_dir, api, monkeypatch) == 2
    assert named in caplog.text and "Uploading" not in caplog.text
    assert "Traceback" not in capsys.readouterr().err
    api.create_repo.assert_not_called()
    api.upload_folder.assert_not_called()


def test_truncated_adapter_weights_are_refused(tiny_model_factory, api, tmp_path):
    adapter_dir = save_adapter(tiny_model_factory(), tmp_path / "adapter", base_name="my-org/uniqa-base")
    write_model_card(adapter_dir)
    with open(os.path.join(adapter_dir, "uniqa_adapter.safetensors"), "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(PushError, match="uniqa_adapter.safetensors"):
        push_to_hub(adapter_dir, "my-org/uniqa-adapter", api=api)
    api.upload_folder.assert_not_called()


@pytest.mark.parametrize("name", ["secrets.env", "credentials.json", "id_rsa", "sub/SECRETS.yaml"])
def test_secret_looking_files_are_refused_unless_allowed(model_dir, api, monkeypatch, caplog, name):
    """Finding 6: `secrets.env` and `credentials.json` were uploaded without a word."""
    path = os.path.join(model_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("nothing secret really\n")
    assert _cli_push(model_dir, api, monkeypatch) == 2
    assert name in caplog.text and "--allow-secret-names" in caplog.text
    api.upload_folder.assert_not_called()
    assert _cli_push(model_dir, api, monkeypatch, "--allow-secret-names") == 0
    assert name in api.upload_folder.call_args.kwargs["allow_patterns"]


def test_file_holding_a_hub_token_is_always_refused(model_dir, api, monkeypatch, caplog):
    with open(os.path.join(model_dir, "training_log.txt"), "w") as handle:
        handle.write("HF_TOKEN=hf_" + "aBcD" * 8 + "xy\n")
    assert _cli_push(model_dir, api, monkeypatch, "--allow-secret-names") == 2
    assert "training_log.txt" in caplog.text and "token" in caplog.text
    assert "aBcD" not in caplog.text  # the token itself is not echoed
    api.upload_folder.assert_not_called()


def test_only_the_checked_files_are_uploaded(model_dir, api):
    push_to_hub(model_dir, "my-org/x", api=api)
    from huggingface_hub.utils import filter_repo_objects

    kwargs = api.upload_folder.call_args.kwargs
    every = [os.path.relpath(os.path.join(root, name), model_dir) for root, _, names in os.walk(model_dir) for name in names]
    sent = sorted(filter_repo_objects(every, allow_patterns=kwargs["allow_patterns"], ignore_patterns=kwargs["ignore_patterns"]))
    assert sent == sorted(every)
