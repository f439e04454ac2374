"""generate_captions.py and the captioning pieces: exact prompts and levels, the template and the
real transformers (tiny random LLaVA) backends, per-caption seeds, merging captioners, kill and
resume, 2 real CPU processes."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import data_builders
from modeling_uniqa.scoring.sharded_output import part_files
from tests.data_fixtures import write_folder_csv
from tests.helpers import REPO_ROOT, launch_two_processes
from tests.tiny_llava import build_tiny_llava
from train_scripts import generate_captions
from train_scripts.common.captioning import (
    PROMPT_TEMPLATES,
    TemplateCaptioner,
    caption_seed,
    format_prompt,
    load_prompt_templates,
)
from train_scripts.common.hf_captioner import PerRowGumbelSampler

FIG2_QUALITY = (
    "What you are given is a {level} quality image. Evaluate image quality based on factors such as sharpness, "
    "color balance, and noise level."
)
FIG2_AESTHETICS = (
    "What you get is an image of {level} aesthetics. Evaluate image aesthetics based on factors such as content, "
    "color, lighting, and composition."
)
LEVELS = ["bad", "poor", "fair", "good", "perfect"]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture
def dataset(tmp_path):
    info = write_folder_csv(str(tmp_path / "data"), n=10)
    return str(tmp_path / "data"), info


def run(tmp_path, data_dir, output, *extra):
    args = generate_captions.parse_args([
        "--dataset", "folder_csv", "--data_dir", data_dir, "--split", "full", "--output", str(output),
        "--cache_dir", str(tmp_path / "cache"), "--num_workers", "0", *extra,
    ])
    return generate_captions.main(args)


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# --------------------------------------------------------------------------------------------
# Prompts, seeds, template
# --------------------------------------------------------------------------------------------
def test_prompts_are_those_of_fig2(tmp_path):
    assert PROMPT_TEMPLATES == {"quality": FIG2_QUALITY, "aesthetics": FIG2_AESTHETICS}
    assert format_prompt(FIG2_QUALITY, "perfect").startswith("What you are given is a perfect quality image. Evaluate")
    with pytest.raises(ValueError, match="level must be one of"):
        format_prompt(FIG2_QUALITY, "excellent")
    (tmp_path / "p.txt").write_text("  Rate this {level} picture {not a field}.\n")
    assert load_prompt_templates(str(tmp_path / "p.txt"), "quality") == "Rate this {level} picture {not a field}."
    (tmp_path / "p.json").write_text(json.dumps({"aesthetics": "A {level} photo?"}))
    assert load_prompt_templates(str(tmp_path / "p.json"), "aesthetics") == "A {level} photo?"
    with pytest.raises(ValueError, match='string "quality"'):
        load_prompt_templates(str(tmp_path / "p.json"), "quality")
    (tmp_path / "bad.txt").write_text("no placeholder")
    with pytest.raises(ValueError, match=r"bad.txt: the quality prompt must contain \{level\}"):
        load_prompt_templates(str(tmp_path / "bad.txt"), "quality")


def test_caption_seeds_are_distinct_and_stable():
    seeds = {caption_seed(0, f"{i}.jpg", k) for i in range(200) for k in range(3)}
    assert len(seeds) == 600 and all(0 <= s < 2**31 for s in seeds)
    assert caption_seed(0, "a.jpg", 1) == caption_seed(0, "a.jpg", 1) != caption_seed(1, "a.jpg", 1)


def test_template_captioner_is_deterministic_and_varied():
    captioner = TemplateCaptioner()
    for task in ("quality", "aesthetics"):
        by_level = {level: {captioner.caption(level, task, seed) for seed in range(30)} for level in LEVELS}
        for level, captions in by_level.items():
            assert len(captions) >= 5  # varied wording per seed
            assert all(f" {level}" in caption for caption in captions)
        assert all(not (by_level[a] & by_level[b]) for a in LEVELS for b in LEVELS if a < b)
    assert captioner.caption("good", "quality", 7) == captioner.caption("good", "quality", 7)
    # every caption speaks of every factor of its prompt
    factors = {
        "quality": [("sharp", "blur", "focus"), ("color",), ("noise", "grain")],
        "aesthetics": [("subject", "content"), ("color", "palette"), ("light", "exposure"), ("composition", "framing", "placed")],
    }
    for task, groups in factors.items():
        for level in LEVELS:
            for seed in range(10):
                text = captioner.caption(level, task, seed).lower()
                assert all(any(word in text for word in group) for group in groups), text


def test_template_captions_name_a_known_distortion():
    captioner = TemplateCaptioner()
    texts = {captioner.caption("poor", "quality", seed, "strong JPEG compression") for seed in range(20)}
    assert len(texts) >= 3 and all("poor" in t and "strong JPEG compression" in t.replace("Strong", "strong") for t in texts)
    assert all("blur" not in t for t in texts)  # no generic factor phrase contradicts the distortion
    # aesthetics captions ignore it; without one, quality captions keep their factor phrases
    assert "JPEG" not in captioner.caption("poor", "aesthetics", 1, "strong JPEG compression")
    assert captioner.caption("poor", "quality", 1) == captioner.caption("poor", "quality", 1, None)
    # what they state, whatever the wording: one meaning for all of them, another per level or distortion
    assert captioner.meaning("poor", "quality", "strong JPEG compression") == "quality|poor|strong JPEG compression"
    assert len({captioner.meaning(level, "quality", d) for level in ("poor", "good") for d in ("strong JPEG compression", None)}) == 4
    assert captioner.meaning("poor", "aesthetics", "strong JPEG compression") == "aesthetics|poor"


def test_kadid_layout_captions_say_which_distortion_and_how_strong(tmp_path):
    from tests.data_fixtures import write_kadid

    data_dir = str(tmp_path / "kadid")
    write_kadid(data_dir)
    output = tmp_path / "captions.jsonl"
    args = generate_captions.parse_args([
        "--dataset", "kadid10k", "--data_dir", data_dir, "--split", "full", "--output", str(output),
        "--cache_dir", str(tmp_path / "cache"), "--task", "quality", "--captioner", "template", "--captions_per_image", "1",
    ])
    assert generate_captions.main(args) == 0
    from data_builders.distortions import distortion_phrase

    for record in read_jsonl(output):
        _, code, level = record["image_name"].split(".")[0].split("_")
        assert distortion_phrase(code, int(level)).lower() in record["caption"].lower()
        assert record["meaning"] == f"quality|{record['level']}|{distortion_phrase(code, int(level))}"


def test_per_row_gumbel_sampler_draws_from_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, float("-inf")]])
    sampler = PerRowGumbelSampler([123], torch.device("cpu"))
    draws = [int(sampler(None, logits).argmax()) for _ in range(3000)]
    frequencies = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(frequencies, torch.softmax(logits, -1)[0].numpy(), atol=0.03)
    assert frequencies[3] == 0
    again = PerRowGumbelSampler([123], torch.device("cpu"))
    assert [int(again(None, logits).argmax()) for _ in range(50)] == draws[:50]


# --------------------------------------------------------------------------------------------
# The script
# --------------------------------------------------------------------------------------------
def test_levels_are_rank_quintiles_or_equal_width_bins(tmp_path, dataset):
    data_dir, info = dataset
    mos = dict(zip(info["names"], info["mos"]))
    assert run(tmp_path, data_dir, tmp_path / "q.jsonl", "--task", "quality") == 0
    rows = read_jsonl(tmp_path / "q.jsonl")
    assert len(rows) == 30 and [r["caption_index"] for r in rows[:3]] == [0, 1, 2]
    # 10 images, no ties: the 2 lowest MOS are bad, the next 2 poor, ..., the 2 highest perfect
    order = sorted(mos, key=mos.get)
    expected = {name: LEVELS[position // 2] for position, name in enumerate(order)}
    assert {r["image_name"]: r["level"] for r in rows} == expected
    for r in rows:
        assert r["mos"] == pytest.approx(mos[r["image_name"]])
        assert r["prompt"] == FIG2_QUALITY.replace("{level}", r["level"])
        assert r["template"] is True and r["captioner"] == "template" and r["generation"]["template"] is True
        assert r["seed"] == caption_seed(0, r["image_name"], r["caption_index"])
        assert os.path.isfile(r["image"])

    assert run(tmp_path, data_dir, tmp_path / "w.jsonl", "--task", "aesthetics", "--levels", "equal_width") == 0
    rows = read_jsonl(tmp_path / "w.jsonl")
    assert len(rows) == 10  # 1 caption per image for aesthetics
    low, high = min(mos.values()), max(mos.values())  # folder_csv's MOS range is the data's
    for r in rows:
        assert r["level"] == LEVELS[min(4, math.floor(5 * (r["mos"] - low) / (high - low)))]
        assert r["prompt"] == FIG2_AESTHETICS.replace("{level}", r["level"])


def test_levels_of_a_dmos_dataset_are_flipped(tmp_path):
    from tests.data_fixtures import write_csiq

    write_csiq(str(tmp_path / "csiq"))
    common = ["--dataset", "csiq", "--data_dir", str(tmp_path / "csiq"), "--split", "full", "--task", "quality",
              "--captions_per_image", "1", "--cache_dir", str(tmp_path / "cache")]
    assert generate_captions.main(generate_captions.parse_args([*common, "--output", str(tmp_path / "q.jsonl")])) == 0
    rows = read_jsonl(tmp_path / "q.jsonl")
    assert len(rows) == 60
    by_dmos = sorted(rows, key=lambda r: r["mos"])  # 60 distinct DMOS: the 12 lowest are perfect
    assert [r["level"] for r in by_dmos] == [level for level in reversed(LEVELS) for _ in range(12)]
    assert generate_captions.main(generate_captions.parse_args(
        [*common, "--levels", "equal_width", "--output", str(tmp_path / "w.jsonl")]
    )) == 0
    for r in read_jsonl(tmp_path / "w.jsonl"):  # CSIQ's DMOS range is [0, 1], lower is better
        assert r["level"] == LEVELS[min(4, math.floor(5 * (1.0 - r["mos"])))]


def test_tiny_llava_end_to_end_merged_with_template_captions(tmp_path, dataset, tiny_llava):
    data_dir, _ = dataset
    corpus = tmp_path / "corpus"
    assert run(tmp_path, data_dir, corpus / "llava.jsonl", "--task", "quality", "--captioner", tiny_llava,
               "--max_new_tokens", "6", "--batch_size", "4", "--max_images", "4") == 0
    rows = read_jsonl(corpus / "llava.jsonl")
    assert len(rows) == 12 and len({r["seed"] for r in rows}) == 12
    generation = rows[0]["generation"]
    assert generation["backend"] == "transformers" and generation["model_class"] == "LlavaForConditionalGeneration"
    assert (generation["temperature"], generation["top_p"], generation["max_new_tokens"], generation["dtype"]) == (0.7, 0.9, 6, "float32")
    assert all(r["template"] is False and r["captioner"] == tiny_llava and isinstance(r["caption"], str) for r in rows)
    assert all(r["meaning"] is None for r in rows)  # free text: no known meaning
    assert len({r["caption"] for r in rows}) > 6  # sampled, not three copies of one caption

    # the same captions one at a time: a caption depends on its seed only, not on its batch
    assert run(tmp_path, data_dir, tmp_path / "one.jsonl", "--task", "quality", "--captioner", tiny_llava,
               "--max_new_tokens", "6", "--batch_size", "1", "--max_images", "2") == 0
    assert [r["caption"] for r in read_jsonl(tmp_path / "one.jsonl")] == [r["caption"] for r in rows[:6]]

    # two captioners in one folder load as one corpus (the captioner ensembles of Table X)
    assert run(tmp_path, data_dir, corpus / "template.jsonl", "--task", "quality", "--max_images", "4") == 0
    merged = data_builders.load("caption_jsonl", str(corpus), cache_dir=str(tmp_path / "c2"))["train"]
    assert merged.num_rows == 4
    assert all(len(c) == 6 for c in merged["captions"])
    assert sorted(set(merged[0]["captioners"])) == sorted({"template", tiny_llava})
    assert set(merged["task"]) == {"quality"}


def test_unreadable_images_are_skipped_then_retried_by_resume(tmp_path, dataset, tiny_llava):
    data_dir, info = dataset
    broken = os.path.join(data_dir, "images", info["names"][0])
    with open(broken, "rb") as handle:
        good = handle.read()
    with open(broken, "wb") as handle:
        handle.write(b"not an image")
    options = ["--task", "quality", "--captioner", tiny_llava, "--max_new_tokens", "4", "--max_images", "2"]
    assert run(tmp_path, data_dir, tmp_path / "none.jsonl", *options[:-1], "1") == 1  # nothing could be captioned
    assert run(tmp_path, data_dir, tmp_path / "c.jsonl", *options) == 0
    first = read_jsonl(tmp_path / "c.jsonl")
    assert [(r["image_name"], r["caption_index"]) for r in first] == [(info["names"][1], k) for k in range(3)]
    with open(broken, "wb") as handle:
        handle.write(good)
    assert run(tmp_path, data_dir, tmp_path / "c.jsonl", *options, "--resume") == 0
    rows = read_jsonl(tmp_path / "c.jsonl")
    assert [(r["image_name"], r["caption_index"]) for r in rows] == [(n, k) for n in info["names"][:2] for k in range(3)]
    assert rows[3:] == first


def test_bad_arguments(tmp_path, dataset):
    base = ["--dataset", "folder_csv", "--data_dir", "d", "--output", "o.jsonl"]
    with pytest.raises(SystemExit):
        generate_captions.parse_args([*base, "--task", "quality", "--captioner", "m", "--temperature", "0"])
    with pytest.raises(SystemExit):
        generate_captions.parse_args([*base, "--task", "colour"])
    with pytest.raises(SystemExit):
        generate_captions.parse_args([*base[:-1], "o.csv", "--task", "quality"])
    data_dir, _ = dataset
    with pytest.raises(ValueError, match="has the splits"):
        run(tmp_path, data_dir, tmp_path / "x.jsonl", "--task", "quality", "--split", "validation")
    with pytest.raises(ValueError, match="caption corpus, not a rating dataset"):
        generate_captions.main(generate_captions.parse_args(
            ["--dataset", "ava_captions", "--data_dir", data_dir, "--output", str(tmp_path / "y.jsonl"), "--task", "aesthetics"]
        ))


def test_kill_in_the_middle_then_resume(tmp_path, dataset, tiny_llava):
    """SIGKILL a real run in the middle of its shard; --resume completes it with no caption lost
    or duplicated, and the result equals an uninterrupted run (captions depend on their seeds only)."""
    data_dir, _ = dataset
    options = ["--task", "quality", "--captioner", tiny_llava, "--max_new_tokens", "8"]
    output = tmp_path / "killed.jsonl"
    command = [
        sys.executable, "train_scripts/generate_captions.py", "--dataset", "folder_csv", "--data_dir", data_dir,
        "--split", "full", "--output", str(output), "--cache_dir", str(tmp_path / "cache"), "--num_workers", "0",
        "--batch_size", "1", *options,
    ]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, HF_HUB_OFFLINE="1")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part = f"{output}.part0"
    written = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.exists(part):
            with open(part, encoding="utf-8") as handle:
                written = handle.read().count("\n")
            if written >= 3:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-3000:]
    with open(part, encoding="utf-8") as handle:
        text = handle.read()
    before = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]  # a line cut by the kill is not kept
    assert 3 <= len(before) < 30 and not output.exists()

    assert run(tmp_path, data_dir, output, *options, "--batch_size", "4", "--resume") == 0
    rows = read_jsonl(output)
    keys = [(r["image_name"], r["caption_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == 30
    assert part_files(str(output)) == []
    for old in before:  # what was written before the kill is kept as it was
        assert rows[keys.index((old["image_name"], old["caption_index"]))] == old

    assert run(tmp_path, data_dir, tmp_path / "clean.jsonl", *options, "--batch_size", "4") == 0
    assert read_jsonl(tmp_path / "clean.jsonl") == rows


def test_two_processes_write_one_file_equal_to_one_process(tmp_path, dataset):
    data_dir, _ = dataset
    assert run(tmp_path, data_dir, tmp_path / "one.jsonl", "--task", "quality", "--batch_size", "4") == 0
    result = launch_two_processes([
        "train_scripts/generate_captions.py", "--dataset", "folder_csv", "--data_dir", data_dir, "--split", "full",
        "--task", "quality", "--output", tmp_path / "two.jsonl", "--cache_dir", tmp_path / "cache", "--batch_size", "4",
    ], timeout=240)
    assert result.returncode == 0, result.stderr[:6000]
    assert "2 process(es)" in result.stderr
    assert read_jsonl(tmp_path / "two.jsonl") == read_jsonl(tmp_path / "one.jsonl")
    assert part_files(str(tmp_path / "two.jsonl")) == []


def test_dataset_option_reaches_the_builder(tmp_path, dataset):
    """Issue #23: `--dataset_option`, as train_adapter.py and evaluate.py take it (a label file
    under another name, say)."""
    data_dir, info = dataset
    os.rename(os.path.join(data_dir, "labels.csv"), os.path.join(data_dir, "scores.csv"))
    with open(os.path.join(data_dir, "notes.csv"), "w") as handle:  # two CSVs: the builder needs to be told which
        handle.write("a,b\n")
    output = tmp_path / "captions.jsonl"
    assert run(tmp_path, data_dir, output, "--task", "quality", "--captioner", "template", "--captions_per_image", "1",
               "--dataset_option", "label_file=scores.csv") == 0
    assert sorted(row["image_name"] for row in read_jsonl(output)) == sorted(info["names"])
