"""`uniqa score`: inputs, output formats, bad files, exit codes, resume, prompts, two processes."""

import csv
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_uniqa import UniQAImageProcessor, UniQAModel, load_image
from modeling_uniqa.cli import main
from modeling_uniqa.scoring import score_images
from tests.helpers import REPO_ROOT, file_size_limit, launch_two_processes, make_tiny_uniqa, random_rgb

GROUPS = ["default", "sharpness", "noise", "quality"]  # the `natural` ensemble of `saved_tiny_model`


def write_image(path, seed, size=(40, 52)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(random_rgb(*size, seed=seed)).save(path)
    return os.path.abspath(path)


@pytest.fixture
def photo_dir(tmp_path):
    """A folder of six images (JPEG and PNG, upper-case extension, a subfolder) and a non-image.
    Returns the folder and its images in canonical (sorted path) order."""
    folder = tmp_path / "photos"
    names = ["b.jpg", "a.png", "sub/c.JPG", "sub/deeper/d.jpeg", "e.jpg", "f.png"]
    paths = [write_image(str(folder / name), seed) for seed, name in enumerate(names)]
    (folder / "notes.txt").write_text("not an image\n")
    return str(folder), sorted(paths)


def direct_scores(model, processor, paths, view_policy=None):
    """Scores by the image processor and the model, without `uniqa score`."""
    policy = view_policy or model.config.view_policy
    views = np.stack([processor.views(load_image(path), policy, model.config.view_seed) for path in paths])
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(processor.normalize_views(views)))


def load_saved(model_dir):
    return UniQAModel.from_pretrained(model_dir).eval(), UniQAImageProcessor.from_pretrained(model_dir)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def score(*argv):
    return main(["score", *map(str, argv)])


@pytest.fixture(scope="module")
def zero_shot_model(tmp_path_factory, tiny_tokenizer):
    directory = tmp_path_factory.mktemp("zero_shot")
    model = make_tiny_uniqa(tiny_tokenizer, seed=1, use_adapter=False)
    model.save_pretrained(directory / "without_tokenizer")
    model.save_pretrained(directory / "model")
    tiny_tokenizer.save_pretrained(directory / "model")
    return directory


def test_folder_to_csv_matches_the_model(saved_tiny_model, photo_dir, tmp_path):
    folder, paths = photo_dir
    output = tmp_path / "out" / "scores.csv"
    assert score(folder, "--model", saved_tiny_model, "--output", output, "--outputs", "score,mos,groups", "--workers", 0, "--batch-size", 4) == 0
    rows = read_csv(output)
    assert list(rows[0]) == ["path", "score", "mos", *(f"group_{name}" for name in GROUPS), "error"]
    assert [row["path"] for row in rows] == paths  # the non-image is not picked from a folder
    expected = direct_scores(*load_saved(saved_tiny_model), paths)
    np.testing.assert_allclose([float(row["score"]) for row in rows], expected.scores, atol=1e-5)
    np.testing.assert_allclose([float(row["mos"]) for row in rows], 100 * expected.scores, atol=1e-3)
    groups = [[float(row[f"group_{name}"]) for name in GROUPS] for row in rows]
    np.testing.assert_allclose(groups, expected.group_scores, atol=1e-5)
    assert all(row["error"] == "" for row in rows)
    assert sorted(os.listdir(output.parent)) == ["scores.csv", "scores.csv.meta.json"]  # no parts, no temp files


def test_globs_and_path_lists_to_jsonl(saved_tiny_model, photo_dir, tmp_path):
    folder, paths = photo_dir
    listed = tmp_path / "lists" / "few.txt"
    listed.parent.mkdir()
    relative = os.path.relpath(paths[4], listed.parent)
    listed.write_text(f"# chosen images\n\n{relative}\n{paths[0]}\n")
    output = tmp_path / "scores.jsonl"
    pattern = os.path.join(folder, "**", "*.png")
    assert score(listed, pattern, "--model", saved_tiny_model, "--output", output, "--view-policy", "center", "--workers", 0) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    pngs = sorted(path for path in paths if path.endswith(".png"))
    assert [row["path"] for row in rows] == [paths[4], paths[0], *(p for p in pngs if p != paths[0])]  # each once
    assert set(rows[0]) == {"path", "score", "mos", "error"}
    expected = direct_scores(*load_saved(saved_tiny_model), [row["path"] for row in rows], view_policy="center")
    np.testing.assert_allclose([row["score"] for row in rows], expected.scores, atol=1e-5)


def test_expand_inputs_keeps_input_order_and_dedupes(photo_dir, tmp_path):
    folder, paths = photo_dir
    other = write_image(str(tmp_path / "other.bmp"), seed=9)
    expanded = score_images.expand_inputs([paths[3], folder, other])
    assert expanded.paths == [paths[3], *(p for p in paths if p != paths[3]), other]
    assert expanded.skipped == {"file(s) named .txt": 1, "path(s) listed twice": 1}
    with pytest.raises(score_images.UsageError, match="nothing_here"):
        score_images.expand_inputs([folder, str(tmp_path / "nothing_here*.jpg")])


def test_bad_files_are_reported_and_counted(saved_tiny_model, photo_dir, tmp_path, caplog):
    folder, paths = photo_dir
    bad = {name: os.path.join(folder, name) for name in ("empty.jpg", "text.png", "truncated.jpg")}
    open(bad["empty.jpg"], "wb").close()
    with open(bad["text.png"], "w") as handle:
        handle.write("this is no PNG")
    with open(paths[0], "rb") as handle:
        whole = handle.read()
    with open(bad["truncated.jpg"], "wb") as handle:
        handle.write(whole[: len(whole) // 2])
    output = tmp_path / "scores.csv"
    caplog.set_level(logging.INFO, logger="modeling_uniqa")
    assert score(folder, "--model", saved_tiny_model, "--output", output, "--workers", 2, "--batch-size", 3) == 0
    rows = {row["path"]: row for row in read_csv(output)}
    assert sorted(rows) == sorted(paths + list(bad.values()))
    for path in bad.values():
        assert rows[path]["score"] == "" and path in rows[path]["error"]
    assert "empty" in rows[bad["empty.jpg"]]["error"]
    assert all(rows[path]["error"] == "" and float(rows[path]["score"]) > 0 for path in paths)
    assert f"Scored 6 of 9 images, 3 failed (see the error column of {output})" in caplog.text
    assert f"9 images to score (0 already in {output})" in caplog.text and " object at 0x" not in caplog.text


def test_exit_codes(saved_tiny_model, tmp_path, caplog):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    output = tmp_path / "scores.csv"
    assert score(bad, "--model", saved_tiny_model, "--output", output, "--workers", 0) == 1  # nothing scored
    assert read_csv(output)[0]["error"]
    missing = tmp_path / "missing_*.jpg"
    assert score(bad, missing, "--model", saved_tiny_model, "--output", tmp_path / "other.csv") == 2
    assert "missing_*.jpg" in caplog.text and not (tmp_path / "other.csv").exists()
    with pytest.raises(SystemExit) as usage:
        score(bad, "--model", saved_tiny_model, "--output", tmp_path / "scores.txt")
    assert usage.value.code == 2


def test_crash_then_resume(saved_tiny_model, photo_dir, tmp_path, monkeypatch):
    folder, paths = photo_dir
    output = tmp_path / "scores.csv"
    part = tmp_path / "scores.csv.part0"
    real_score_batch, scored = score_images.score_batch, []

    def crash_on_second_batch(model, normalize, batch, *args):
        if scored:  # the first batch is on disk already, not in a buffer
            assert [row["path"] for row in read_csv(part)] == paths[:2]
            raise RuntimeError("simulated crash")
        scored.extend(batch.indices)
        return real_score_batch(model, normalize, batch, *args)

    monkeypatch.setattr(score_images, "score_batch", crash_on_second_batch)
    argv = [folder, "--model", saved_tiny_model, "--output", output, "--workers", 0, "--batch-size", 20]  # 2 images of 10 views
    with pytest.raises(RuntimeError, match="simulated crash"):
        score(*argv)
    assert not output.exists()  # the output is only ever written whole

    # Tamper with the partial results: a sentinel score that must survive, a failed row that must
    # be retried, and a line cut short by the crash.
    text = part.read_text().replace(read_csv(part)[0]["score"], "0.123456789", 1)
    part.write_text(text + f"{paths[2]},,,earlier failure\n{paths[3]},0.9")

    def counting(model, normalize, batch, *args):
        scored.extend(batch.indices)
        return real_score_batch(model, normalize, batch, *args)

    scored.clear()
    monkeypatch.setattr(score_images, "score_batch", counting)
    assert score(*argv, "--resume") == 0
    assert len(scored) == len(paths) - 2  # only the first batch was not scored again
    rows = read_csv(output)
    assert [row["path"] for row in rows] == paths
    assert rows[0]["score"] == "0.123456789" and not any(row["error"] for row in rows)
    expected = direct_scores(*load_saved(saved_tiny_model), paths[1:])
    np.testing.assert_allclose([float(row["score"]) for row in rows[1:]], expected.scores, atol=1e-5)
    assert not part.exists()


def test_resume_refuses_another_producer(saved_tiny_model, zero_shot_model, photo_dir, tmp_path, caplog):
    folder, _ = photo_dir
    output = tmp_path / "scores.csv"
    base = [folder, "--model", saved_tiny_model, "--output", output, "--workers", 0]
    assert score(*base) == 0
    before = output.read_text()
    for change, message in [
        (["--outputs", "score,groups"], "columns: was"),
        (["--view-policy", "center"], "view_policy: was 'random10', now 'center'"),
        (["--view-seed", "7"], "view_seed: was 123, now 7"),
        (["--prompts", "sharpness"], "prompt_groups: was ['default', 'sharpness', 'noise', 'quality'], now ['sharpness']"),
        (["--dtype", "bfloat16"], "dtype: was 'float32', now 'bfloat16'"),
    ]:
        caplog.clear()
        assert score(*base, *change, "--resume") == 2, change
        assert "cannot resume" in caplog.text and message in caplog.text, change
        assert "model_config_sha256" not in caplog.text and len(caplog.text) < 2000, change  # the fields that differ, briefly
    caplog.clear()
    other_model = zero_shot_model / "model"
    assert score(folder, "--model", other_model, "--output", output, "--outputs", "score", "--resume") == 2
    assert "model_weights_sha256: was" in caplog.text
    assert output.read_text() == before


def test_resume_with_another_input_list_keeps_earlier_rows(saved_tiny_model, photo_dir, tmp_path, monkeypatch, caplog):
    folder, paths = photo_dir
    output = tmp_path / "scores.jsonl"
    options = ["--model", saved_tiny_model, "--output", output, "--workers", 0, "--view-policy", "center"]
    assert score(*paths[:4], *options) == 0
    first = {row["path"]: row for row in map(json.loads, output.read_text().splitlines())}
    caplog.set_level(logging.INFO, logger="modeling_uniqa")
    assert score(paths[5], paths[1], paths[4], *options, "--resume") == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    # the listed images in input order, then the earlier rows of images no longer listed
    assert [row["path"] for row in rows] == [paths[5], paths[1], paths[4], paths[0], paths[2], paths[3]]
    assert all(row == first[row["path"]] for row in rows if row["path"] in first)
    assert "2 images to score (1 already" in caplog.text and "3 earlier rows of images no longer listed kept" in caplog.text


def test_outputs_not_ours_are_not_replaced(saved_tiny_model, photo_dir, tmp_path, caplog):
    folder, _ = photo_dir
    foreign = tmp_path / "results.csv"
    foreign.write_text("id,value\n1,2\n")
    argv = [folder, "--model", saved_tiny_model, "--output", foreign, "--workers", 0, "--view-policy", "center"]
    assert score(*argv) == 2
    assert "not written by this tool" in caplog.text and "--overwrite" in caplog.text
    assert score(*argv, "--resume") == 2
    assert foreign.read_text() == "id,value\n1,2\n"
    assert score(*argv, "--overwrite") == 0
    assert len(read_csv(foreign)) == 6


def test_a_run_where_every_image_fails_keeps_earlier_results(saved_tiny_model, photo_dir, tmp_path, caplog):
    folder, paths = photo_dir
    output = tmp_path / "scores.csv"
    assert score(folder, "--model", saved_tiny_model, "--output", output, "--workers", 0, "--view-policy", "center") == 0
    before = output.read_text()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"junk")
    assert score(broken, "--model", saved_tiny_model, "--output", output, "--workers", 0) == 1
    assert output.read_text() == before and "keeps its earlier results" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["broken.jpg", "photos", "scores.csv", "scores.csv.meta.json"]


def test_output_files_honour_the_umask(saved_tiny_model, photo_dir, tmp_path):
    import stat

    folder, _ = photo_dir
    previous = os.umask(0o022)
    try:
        assert score(folder, "--model", saved_tiny_model, "--output", tmp_path / "s.jsonl", "--workers", 0, "--view-policy", "center") == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "s.jsonl").st_mode) == 0o644


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_names_that_are_not_utf8(saved_tiny_model, tmp_path, suffix):
    folder = tmp_path / "photos"
    folder.mkdir()
    name = os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xe9.png"))  # the str Python gives this name
    write_image(name, seed=1)
    ok = write_image(str(folder / "ok.png"), seed=2)
    assert os.fsencode(name) in [os.path.join(os.fsencode(folder), entry) for entry in os.listdir(os.fsencode(folder))]
    output = tmp_path / f"scores{suffix}"
    argv = [folder, "--model", saved_tiny_model, "--output", output, "--workers", 0, "--view-policy", "center"]
    assert score(*argv) == 0
    assert os.fsencode(name) in output.read_bytes()  # the name's own bytes, losslessly
    with open(output, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        if suffix == ".csv":
            rows = list(csv.DictReader(handle))
        else:
            rows = [json.loads(line) for line in handle]
    assert [row["path"] for row in rows] == [name, ok] and not any(row["error"] for row in rows)
    assert score(*argv, "--resume") == 0  # nothing left to score: the names match
    assert [row["path"] for row in read_csv_or_jsonl(output)] == [name, ok]


def read_csv_or_jsonl(path):
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        if str(path).endswith(".csv"):
            return list(csv.DictReader(handle))
        return [json.loads(line) for line in handle]


def test_skips_and_special_files_are_reported(saved_tiny_model, photo_dir, tmp_path, caplog):
    folder, paths = photo_dir
    elsewhere = tmp_path / "elsewhere"
    linked = write_image(str(elsewhere / "linked.png"), seed=7)
    os.symlink(elsewhere, os.path.join(folder, "link_to_elsewhere"))  # followed, as a ** glob would
    os.symlink(folder, os.path.join(folder, "sub", "loop"))  # reached again: searched once
    frames = [Image.fromarray(random_rgb(40, 40, seed=s)) for s in range(3)]
    animated = os.path.join(folder, "moving.gif")
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=50)
    fifo = os.path.join(folder, "pipe.jpg")
    os.mkfifo(fifo)
    device = os.path.join(folder, "device.png")
    os.symlink("/dev/null", device)
    strip = os.path.join(folder, "strip.png")
    Image.new("RGB", (1, 10000)).save(strip)
    output = tmp_path / "scores.csv"
    caplog.set_level(logging.INFO, logger="modeling_uniqa")
    assert score(folder, "--model", saved_tiny_model, "--output", output, "--workers", 0, "--view-policy", "center", "--batch-size", 4) == 0
    rows = {row["path"]: row for row in read_csv(output)}
    assert sorted(rows) == sorted([*paths, os.path.join(folder, "link_to_elsewhere", "linked.png"), animated, fifo, device, strip])
    assert "named pipe (FIFO)" in rows[fifo]["error"] and rows[fifo]["score"] == ""
    assert "character device (through the symbolic link to /dev/null)" in rows[device]["error"]
    assert "aspect ratio of 10000:1" in rows[strip]["error"]
    assert rows[animated]["error"] == "" and float(rows[animated]["score"]) > 0
    assert np.isclose(float(rows[os.path.join(folder, "link_to_elsewhere", "linked.png")]["score"]), direct_scores(*load_saved(saved_tiny_model), [linked], "center").scores[0], atol=1e-6)
    summary = caplog.text
    assert "1 file(s) named .txt" in summary and "1 folder(s) reached again through a symbolic link" in summary
    assert "1 animated or multi-page files scored on their first frame" in summary
    assert "Scored 8 of 11 images, 3 failed" in summary


def test_unwritable_output_fails_before_the_model_loads(saved_tiny_model, photo_dir, tmp_path, monkeypatch, caplog, capsys):
    folder, _ = photo_dir
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr(score_images, "load_scorer", lambda *args: pytest.fail("the model was loaded"))
    assert score(folder, "--model", saved_tiny_model, "--output", blocker / "scores.csv") == 2
    assert "a_file/scores.csv: cannot write the output there" in caplog.text + capsys.readouterr().err


def test_scores_do_not_depend_on_batch_size_beyond_1e_6(saved_tiny_model, photo_dir, tmp_path):
    """The documented guarantee: batch size and process count change the 0-1 scores by at most
    1e-6, and `mos` by at most 1e-6 of its range."""
    folder, _ = photo_dir
    results = []
    for batch_size in (1, 7, 60):
        output = tmp_path / f"b{batch_size}.csv"
        assert score(folder, "--model", saved_tiny_model, "--output", output, "--outputs", "score,mos,groups", "--workers", 0, "--batch-size", batch_size) == 0
        results.append(np.array([[float(value) for key, value in row.items() if key not in ("path", "error")] for row in read_csv(output)]))
    for other in results[1:]:
        np.testing.assert_allclose(np.delete(other, 1, axis=1), np.delete(results[0], 1, axis=1), rtol=0, atol=1e-6)
        np.testing.assert_allclose(other[:, 1], results[0][:, 1], rtol=0, atol=1e-6 * 100)  # mos: range 0-100


def test_prompts_on_a_zero_shot_model(zero_shot_model, tiny_tokenizer, photo_dir, tmp_path):
    folder, paths = photo_dir
    model_dir = zero_shot_model / "model"
    output = tmp_path / "scores.csv"
    argv = [folder, "--model", model_dir, "--output", output, "--workers", 0, "--outputs", "score,groups", "--view-policy", "five_crop"]
    assert score(*argv, "--prompts", "sharpness,noise") == 0
    rows = read_csv(output)
    assert list(rows[0]) == ["path", "score", "group_sharpness", "group_noise", "error"]
    model = UniQAModel.from_pretrained(model_dir).eval()
    model.set_prompts(["sharpness", "noise"], tiny_tokenizer)
    expected = direct_scores(model, model.default_image_processor(), paths, view_policy="five_crop")
    np.testing.assert_allclose([[float(row["group_sharpness"]), float(row["group_noise"])] for row in rows], expected.group_scores, atol=1e-5)
    np.testing.assert_allclose([float(row["score"]) for row in rows], expected.scores, atol=1e-5)

    assert score(*argv) == 0  # without --prompts: the model's own single `default` group
    assert list(read_csv(output)[0]) == ["path", "score", "group_default", "error"]
    assert score(*argv, "--prompts", "sharpness", "--model", zero_shot_model / "without_tokenizer") == 2
    assert score(*argv, "--prompts", "no_such_group") == 2
    assert score(folder, "--model", model_dir, "--output", output, "--outputs", "mos") == 2  # MOS range unknown


def test_two_processes_equal_one(saved_tiny_model, photo_dir, tmp_path):
    """Two CPU processes under `accelerate launch`, resuming a partial output, give the file one
    process gives."""
    folder, paths = photo_dir
    open(os.path.join(folder, "broken.jpg"), "wb").close()
    options = ["--model", saved_tiny_model, "--outputs", "score,mos,groups", "--workers", "0", "--batch-size", "2"]
    single = tmp_path / "single.csv"
    assert score(folder, *options, "--output", single) == 0

    distributed = tmp_path / "distributed.csv"
    with open(single) as source:  # an earlier run that had scored the first image only
        distributed.write_text("".join(source.readlines()[:2]))
    (tmp_path / "distributed.csv.meta.json").write_text((tmp_path / "single.csv.meta.json").read_text())
    result = launch_two_processes(
        ["-m", "modeling_uniqa.cli", "score", folder, *options, "--output", str(distributed), "--resume"], timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 process(es)" in result.stderr and "6 images to score (1 already" in result.stderr
    assert "| 3/3 [" in result.stderr  # the main process's progress bar: its half of the work

    single_rows, distributed_rows = read_csv(single), read_csv(distributed)
    assert [row["path"] for row in distributed_rows] == [row["path"] for row in single_rows]
    for one, two in zip(single_rows, distributed_rows):
        assert one["error"] == two["error"]
        numbers = [key for key in one if key not in ("path", "error") and one[key]]
        # The documented bound: 1e-6 on the 0-1 scores, 1e-6 of the MOS range (0-100 here) on `mos`.
        bounds = [1e-6 * (100 if key == "mos" else 1) for key in numbers]
        differences = [abs(float(two[key]) - float(one[key])) for key in numbers]
        assert all(difference <= bound for difference, bound in zip(differences, bounds)), dict(zip(numbers, differences))
    assert sorted(os.listdir(tmp_path)) == ["distributed.csv", "distributed.csv.meta.json", "photos", "single.csv", "single.csv.meta.json"]


def test_a_write_that_fails_midway_is_one_line_and_keeps_the_earlier_file(saved_tiny_model, photo_dir, tmp_path):
    """A full disk or a file-size limit (`uniqa score` run under RLIMIT_FSIZE: writes fail with
    EFBIG): one line naming the output, exit 2, and the earlier results file as it was."""
    folder, _ = photo_dir
    output = tmp_path / "s.csv"
    options = ["--model", saved_tiny_model, "--output", output, "--workers", 0, "--view-policy", "center"]
    assert score(folder, *options) == 0
    before = output.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "modeling_uniqa.cli", "score", folder, *map(str, options), "--overwrite"],
        cwd=REPO_ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT), capture_output=True, text=True,
        timeout=300, preexec_fn=file_size_limit(64),  # fewer bytes than one row
    )
    assert result.returncode == 2, result.stderr[-4000:]
    assert [line for line in result.stderr.splitlines() if "s.csv" in line and "File too large" in line]
    assert "Traceback" not in result.stderr
    assert output.read_bytes() == before
