"""purify_captions.py and text_embedding.py: AIR selections against an independent computation,
dynamic padding equal to fixed 77-token padding, the summary, resume, 2 real CPU processes."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import data_builders
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
from modeling_uniqa.processing_uniqa import UniQAImageProcessor, load_image
from modeling_uniqa.scoring.sharded_output import OutputError
from tests.helpers import TINY_IMAGE_SIZE, launch_two_processes, make_tiny_uniqa, random_rgb, tiny_clip_config
from train_scripts import purify_captions
from train_scripts.common.air import informativeness, select_top_k
from train_scripts.common.text_embedding import embed_texts, length_sorted_batches

IDS = [953619, 953626, 953633, 953640, 953647, 953654]
WORDS = ["nice", "light", "colour", "sharp", "focus", "composition", "lovely", "mood", "great", "shot", "soft", "tones"]


@pytest.fixture(scope="module")
def clip_tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def clip_aes(tmp_path_factory, clip_tokenizer):
    """A tiny random UniQA folder whose text tower takes the real CLIP tokenizer's ids."""
    config = tiny_clip_config(vocab_size=len(clip_tokenizer))
    config["text_config"].update(
        bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id,
        pad_token_id=clip_tokenizer.pad_token_id, max_position_embeddings=77,
    )
    model = make_tiny_uniqa(clip_tokenizer, seed=3, clip_config=config)
    directory = tmp_path_factory.mktemp("clip_aes")
    model.save_pretrained(directory)
    clip_tokenizer.save_pretrained(directory)
    return str(directory)


def comment(rng, n_words):
    return " ".join(rng.choice(WORDS, size=n_words))


def write_ava_captions(root, per_image=(5, 2, 7, 3, 4, 6)):
    """AVA-Captions JSON as distributed, plus images/; image 1 has 2 comments (below min 3),
    image 3 repeats a comment, image 5 is a corrupt file."""
    rng = np.random.default_rng(0)
    images = []
    os.makedirs(root / "images")
    for i, (image_id, n) in enumerate(zip(IDS, per_image)):
        sentences = [comment(rng, int(rng.integers(2, 12))) for _ in range(n)]
        if i == 3:
            sentences[2] = "  " + sentences[0].replace(" ", "   ") + " "  # a duplicate up to whitespace
        images.append({"filename": f"{image_id}.jpg", "imgid": i, "split": "train",
                       "sentences": [{"raw": s, "clean": s.lower(), "tokens": s.split()} for s in sentences]})
        path = root / "images" / f"{image_id}.jpg"
        if i == 5:
            path.write_bytes(b"not a jpeg")
        else:
            Image.fromarray(random_rgb(40, 56, seed=i)).save(path)
    (root / "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json").write_text(json.dumps({"dataset": "AVA", "images": images}))
    return images


def purify(tmp_path, clip_aes, *extra, output="air.jsonl"):
    args = purify_captions.parse_args([
        "--data_dir", str(tmp_path / "ava"), "--clip_aes", clip_aes, "--output", str(tmp_path / output),
        "--cache_dir", str(tmp_path / "cache"), "--num_workers", "0", "--image_batch_size", "2", "--text_batch_size", "3", *extra,
    ])
    return purify_captions.main(args)


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def expected_selection(clip_aes, tokenizer, images, image_dir, top_k=4, measure="length", alpha=1.0, beta=1.0):
    """The AIR selection computed independently: fixed 77-token padding, one text at a time."""
    from modeling_uniqa import UniQAModel

    clip = UniQAModel.from_pretrained(clip_aes).clip.eval()
    processor = UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, shortest_edge=TINY_IMAGE_SIZE, view_policy="center")
    expected = {}
    for item in images:
        comments, _ = purify_captions.distinct_comments([s["raw"] for s in item["sentences"]])
        if len(comments) < 3 or item["filename"] == f"{IDS[5]}.jpg":  # too few comments, corrupt file
            continue
        pixels = processor(load_image(str(image_dir / item["filename"])))["pixel_values"][:, 0]
        with torch.no_grad():
            image = F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)[0]
            tokens = tokenizer(comments, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            texts = F.normalize(clip.get_text_features(**tokens).pooler_output, dim=-1)
        relevance = (texts @ image).double().numpy()
        kept = select_top_k(relevance, informativeness(comments, measure), top_k, alpha, beta).indices
        expected[item["filename"]] = ([comments[j] for j in kept], relevance)
    return expected


def test_length_sorted_batches():
    assert length_sorted_batches([5, 2, 9, 2, 7], 2) == [[1, 3], [0, 4], [2]]
    with pytest.raises(ValueError):
        length_sorted_batches([1], 0)


def test_dynamic_padding_equals_fixed_77_padding(clip_aes, clip_tokenizer):
    from modeling_uniqa import UniQAModel

    clip = UniQAModel.from_pretrained(clip_aes).clip.eval()
    rng = np.random.default_rng(1)
    texts = [comment(rng, int(n)) for n in rng.integers(1, 40, size=11)] + ["word " * 100]  # the last is truncated
    fast = embed_texts(clip, clip_tokenizer, texts, batch_size=4)
    fixed = embed_texts(clip, clip_tokenizer, texts, batch_size=5, sort_by_length=False, pad_to=77)
    one_by_one = torch.cat([embed_texts(clip, clip_tokenizer, [t], batch_size=1) for t in texts])
    torch.testing.assert_close(fast, fixed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, one_by_one, atol=1e-5, rtol=1e-5)
    assert torch.allclose(fast.norm(dim=-1), torch.ones(len(texts)))
    assert embed_texts(clip, clip_tokenizer, [], batch_size=4).shape == (0, clip.config.projection_dim)


def test_purify_selects_air_top_k_and_writes_a_summary(tmp_path, clip_aes, clip_tokenizer):
    images = write_ava_captions(tmp_path / "ava")
    assert purify(tmp_path, clip_aes) == 0  # one image cannot be decoded: counted in the summary
    rows = read_jsonl(tmp_path / "air.jsonl")
    expected = expected_selection(clip_aes, clip_tokenizer, images, tmp_path / "ava" / "images")
    got = {}
    for row in rows:
        got.setdefault(row["image_name"], []).append(row)
    corrupt = f"{IDS[5]}.jpg"
    assert set(got) == set(expected) and corrupt not in got
    for name, kept in got.items():
        assert [row["caption"] for row in kept] == expected[name][0]
        assert [row["caption_index"] for row in kept] == list(range(len(kept)))
        assert [row["air"] for row in kept] == sorted((row["air"] for row in kept), reverse=True)
        relevance = expected[name][1]
        for row in kept:
            assert row["relevance"] == pytest.approx(relevance[row["comment_index"]], abs=1e-5)
            assert row["task"] == "aesthetics" and row["captioner"] == "human"
    assert len(got[f"{IDS[2]}.jpg"]) == 4 and got[f"{IDS[2]}.jpg"][0]["num_comments"] == 7
    assert f"{IDS[3]}.jpg" not in got  # 3 comments, one a duplicate: below --min_captions 3

    summary = json.loads((tmp_path / "air.jsonl.summary.json").read_text())
    assert summary["images_in"] == 6 and summary["comments_in"] == 27
    assert summary["images_out"] == 3 and summary["comments_out"] == len(rows) == 4 + 4 + 4
    assert summary["captions_per_image"] == {"4": 3}
    assert summary["dropped_images"] == {"fewer_than_min_captions": 2, "unreadable_image": 1, "missing_on_disk": 0}
    assert summary["dropped_comments"] == {
        "duplicates": 1, "of_images_with_fewer_than_min_captions": 2 + 2, "of_unreadable_images": 6, "below_top_k": 1 + 3 + 0,
    }
    # the purified corpus loads with the caption_jsonl builder, one row per image, best comment first
    corpus = data_builders.load("caption_jsonl", str(tmp_path / "air.jsonl"), check_images=False, cache_dir=str(tmp_path / "c2"))["train"]
    assert corpus.num_rows == 3 and set(corpus["task"]) == {"aesthetics"}
    assert corpus[0]["captions"] == expected[corpus[0]["image_name"].split("/")[-1]][0]


def test_options_change_the_selection_and_resume_checks_them(tmp_path, clip_aes, clip_tokenizer):
    images = write_ava_captions(tmp_path / "ava")
    assert purify(tmp_path, clip_aes, "--top_k", "2", "--informativeness", "entropy", "--alpha", "0", "--min_captions", "2") == 0
    rows = read_jsonl(tmp_path / "air.jsonl")
    expected = expected_selection(clip_aes, clip_tokenizer, [dict(i) for i in images], tmp_path / "ava" / "images", 2, "entropy", 0.0)
    by_image = {}
    for row in rows:
        by_image.setdefault(row["image_name"], []).append(row["caption"])
    for name, kept in by_image.items():
        if name in expected:
            assert kept == expected[name][0]
    assert f"{IDS[1]}.jpg" in by_image  # 2 comments are enough with --min_captions 2
    with pytest.raises(OutputError, match="top_k"):
        purify(tmp_path, clip_aes, "--resume")  # other settings than the output's
    clip_tokenizer.save_pretrained(tmp_path / "tokenizer")
    same = ["--top_k", "2", "--informativeness", "entropy", "--alpha", "0", "--min_captions", "2", "--resume"]
    with pytest.raises(OutputError, match="tokenizer: was None, now '.*tokenizer'"):
        purify(tmp_path, clip_aes, *same, "--tokenizer", str(tmp_path / "tokenizer"))
    assert purify(tmp_path, clip_aes, *same, "--tokenizer", clip_aes) == 0  # the default, named


def test_two_processes_and_resume(tmp_path, clip_aes):
    write_ava_captions(tmp_path / "ava")
    assert purify(tmp_path, clip_aes, output="single.jsonl") == 0
    result = launch_two_processes([
        "train_scripts/purify_captions.py", "--data_dir", tmp_path / "ava", "--clip_aes", clip_aes,
        "--output", tmp_path / "two.jsonl", "--cache_dir", tmp_path / "cache", "--num_workers", "0", "--image_batch_size", "1",
    ], timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 images could not be read" in result.stderr
    single, two = read_jsonl(tmp_path / "single.jsonl"), read_jsonl(tmp_path / "two.jsonl")
    assert [r["caption"] for r in two] == [r["caption"] for r in single]
    for a, b in zip(single, two):
        assert a["relevance"] == pytest.approx(b["relevance"], abs=1e-5)
    assert not [name for name in os.listdir(tmp_path) if ".part" in name]
    # a resume of a finished run has nothing left but the unreadable image, and keeps every row
    assert purify(tmp_path, clip_aes, "--resume", output="two.jsonl") == 0
    assert [r["caption"] for r in read_jsonl(tmp_path / "two.jsonl")] == [r["caption"] for r in single]


def test_resume_completes_an_image_whose_last_record_a_kill_cut(tmp_path, clip_aes, monkeypatch):
    """A kill can cut the last line of a part file (`sharded_output` drops it): the image then
    has some of its kept comments only, and a resume must write the rest, not call it done."""
    write_ava_captions(tmp_path / "ava")
    assert purify(tmp_path, clip_aes, output="whole.jsonl") == 0

    def killed(self, keys):
        raise KeyboardInterrupt

    monkeypatch.setattr(purify_captions.ShardedOutput, "finish", killed)
    with pytest.raises(KeyboardInterrupt):
        purify(tmp_path, clip_aes)
    monkeypatch.undo()
    part = tmp_path / "air.jsonl.part0"
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # the last record cut short
    assert purify(tmp_path, clip_aes, "--resume") == 0
    whole, resumed = read_jsonl(tmp_path / "whole.jsonl"), read_jsonl(tmp_path / "air.jsonl")
    assert [(r["image_name"], r["caption_index"], r["caption"]) for r in resumed] == [
        (r["image_name"], r["caption_index"], r["caption"]) for r in whole
    ]


def test_bad_inputs(tmp_path, clip_aes):
    with pytest.raises(SystemExit):
        purify_captions.parse_args(["--data_dir", "x", "--clip_aes", "y", "--output", "o.jsonl", "--alpha", "0", "--beta", "0"])
    with pytest.raises(SystemExit):
        purify_captions.parse_args(["--data_dir", "x", "--clip_aes", "y", "--output", "o.csv"])
    write_ava_captions(tmp_path / "ava")
    with pytest.raises(ValueError, match="cannot load a UniQA or CLIP model"):
        purify(tmp_path, str(tmp_path / "ava"))
