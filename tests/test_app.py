"""`uniqa app` without a browser: scores equal the pipeline's, batched; bad uploads get error rows;
Grad-CAM, retrieval, the card summary, the page's construction, the shipped examples and the
command line (the worker process: tests/test_app_worker.py)."""

import os

import pytest
import torch
from PIL import Image
from transformers import pipeline

import modeling_uniqa
from modeling_uniqa.app.gradio_app import EXAMPLES_DIR, TABLE_ID, QualityApp, card_summary, example_images
from modeling_uniqa.cli import build_parser
from tests.app_files import write_bad_files, write_jpegs


@pytest.fixture(scope="module")
def app():
    return QualityApp(modeling_uniqa.DEFAULT_MODEL, batch_size=16)


@pytest.fixture(scope="module")
def reference():
    return pipeline("image-quality")  # the default model, as a visitor's code would score


def test_scores_equal_the_pipeline_and_bad_uploads_get_errors(app, reference, tmp_path):
    good = write_jpegs(tmp_path / "good", count=3)
    bad = write_bad_files(tmp_path / "bad")
    uploads = [good[0], bad["not-an-image"], good[1], bad["bomb"], bad["strip"], good[2]]
    rows = app.score(uploads)
    assert [row["path"] for row in rows] == uploads
    expected = reference(good)
    for row, want in zip([rows[0], rows[2], rows[5]], expected):
        assert set(row["result"]) == set(want) == {"score", "mos"}
        for key, value in want.items():
            assert row["result"][key] == pytest.approx(value, abs=1e-5)
    errors = {os.path.basename(path): rows[uploads.index(path)]["result"].get("error", "") for path in bad.values()}
    assert "cannot read image" in errors["notes.jpg"]
    assert "decompression bomb" in errors["bomb.png"]
    assert "aspect ratio" in errors["strip.png"]
    assert all(str(tmp_path) not in message for message in errors.values())  # the file name, not the upload's temp path

    ranked = app.ranked(rows)
    scores = [row["result"]["score"] for row in ranked[:3]]
    assert scores == sorted(scores, reverse=True) and all("error" in row["result"] for row in ranked[3:])
    page = app.table_html(rows)
    assert f'id="{TABLE_ID}"' in page and page.count('class="uniqa-row"') == 3 and page.count('class="uniqa-error"') == 3
    best = ranked[0]
    assert f'data-file="{best["name"]}" data-rank="1"' in page
    assert f'{best["result"]["mos"]:.6f}' in page and "MOS (1-5)" in page and "data:image/jpeg;base64," in page

    ranking = app.rank_files(uploads)  # what the page shows, in one answer (the worker's too)
    assert ranking == {"table": page, "choices": [(f"#{rank} {row['name']}", row["path"]) for rank, row in enumerate(ranked[:3], start=1)],
                       "scored": 3, "failed": 3}


def test_scoring_is_batched(app, tmp_path):
    paths = write_jpegs(tmp_path, count=6)
    calls = []
    handle = app.model.register_forward_hook(lambda module, args, kwargs, output: calls.append(1), with_kwargs=True)
    try:
        app.score(paths)
    finally:
        handle.remove()
    assert len(calls) == 1  # six images, one forward (batch_size 16)


def test_every_named_head_is_a_column(tmp_path, reference):
    """A model with a named head (`uniqa heads add`): its score and MOS are columns too, equal to the pipeline's."""
    from modeling_uniqa.core.model_folder import load_model

    model, processor, tokenizer = load_model(modeling_uniqa.DEFAULT_MODEL, need_tokenizer=True)
    model.add_prompt_head("sharpness", "sharpness", tokenizer)
    folder = tmp_path / "two-heads"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    two_heads = QualityApp(str(folder))
    keys = [key for key, _ in two_heads.columns]
    assert keys[:2] == ["mos", "score"] and "sharpness" in keys
    paths = write_jpegs(tmp_path / "images", count=2)
    expected = pipeline("image-quality", model=str(folder))(paths)
    for row, want in zip(two_heads.score(paths), expected):
        assert "sharpness" in want
        for key, value in want.items():
            assert row["result"][key] == pytest.approx(value, abs=1e-5)
    assert "sharpness score (0-1)" in two_heads.table_html(two_heads.score(paths))


def test_grad_cam_and_retrieval(app):
    examples = example_images()
    with Image.open(examples[0]) as image:
        width, height = image.size
    picture, value = app.explain(examples[0], "blurry image")  # the original and its overlay side by side
    assert picture.size == (2 * width, height) and isinstance(value, float)
    picture, _ = app.explain(examples[0], "")  # the model's score
    assert picture.size == (2 * width, height)
    sheet = app.retrieve(examples, ["blurry image", "noisy image"])
    assert sheet.size[0] > 120 * len(examples) and sheet.size[1] > 2 * 120
    assert app.retrieve(examples, ["  "]) is None


def test_card_summary(app, tmp_path):
    summary, card = card_summary(app.model_dir)
    assert summary.startswith("### UniQA") and "#### Scores" in summary and "Results" not in summary
    assert "---" not in summary.splitlines()[0] and "<!--" not in card
    assert card_summary(str(tmp_path)) == ("", "")


def test_examples_are_small_and_credited():
    examples = example_images()
    assert len(examples) >= 4
    assert sum(os.path.getsize(path) for path in examples) < 300_000
    with open(os.path.join(EXAMPLES_DIR, "SOURCES.txt"), encoding="utf-8") as handle:
        sources = handle.read()
    assert all(os.path.basename(path) in sources for path in examples) and "CC0" in sources


def test_the_page_builds(app):
    pytest.importorskip("gradio")
    from modeling_uniqa.app.gradio_app import build_demo

    demo = build_demo(app)
    config = demo.get_config_file()
    ids = {component.get("props", {}).get("elem_id") for component in config["components"]}
    assert {"uniqa-upload", "uniqa-table", "uniqa-card", "uniqa-cam", "uniqa-sheet"} <= ids
    assert demo.title == "UniQA image quality: uniqa-tiny"


def test_cli_registers_app():
    """`python -m modeling_uniqa.cli app` takes the console script's flags and starts the same way."""
    from uniqa_app.serve import serve

    args = build_parser("app").parse_args(["app", "--port", "7999", "--model", "some/repo"])
    assert args.port == 7999 and args.model == "some/repo" and args.run is serve
    args = build_parser("app").parse_args(["app"])
    assert (args.model, args.port, args.host, args.batch_size) == (modeling_uniqa.DEFAULT_MODEL, 7860, "127.0.0.1", 16)


def test_the_default_model_is_found_without_importing_the_package():
    from uniqa_app.serve import default_model

    assert os.path.samefile(default_model(), modeling_uniqa.DEFAULT_MODEL) and default_model() == modeling_uniqa.DEFAULT_MODEL


def test_the_console_script_hands_other_subcommands_to_the_library(monkeypatch):
    from uniqa_app import command

    seen = []
    monkeypatch.setattr("modeling_uniqa.cli.main", lambda argv: seen.append(argv) or 7)
    assert command.main(["score", "photos/", "--output", "scores.csv"]) == 7
    assert seen == [["score", "photos/", "--output", "scores.csv"]]


def test_the_console_script_refuses_a_missing_model_in_one_line(tmp_path, capsys):
    from uniqa_app import command

    assert command.main(["app", "--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "no such model folder" in err


def test_forward_hook_does_not_change_scores(app, tmp_path):
    """The app's pipeline is the model's own: no compiled or quantised copy that could drift."""
    assert app.pipeline.model is app.model and app.model.dtype == torch.float32


def test_a_broken_folder_is_refused_before_loading(tmp_path):
    # The worker of `uniqa app` reports this as its one line; nothing is loaded first.
    from modeling_uniqa.errors import ModelFolderError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="config.json"):
        QualityApp(str(tmp_path))
