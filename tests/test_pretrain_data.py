"""Pre-training data: corpus merging with exclusions, caption draws, global batches, collation."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import data_builders
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
from tests.helpers import random_rgb
from train_scripts.common.clip_loss import ClipLoss
from train_scripts.common.pretrain_data import (
    GlobalBatchSampler,
    PretrainCollator,
    PretrainDataset,
    load_pretrain_corpus,
    parse_named_dirs,
    positive_groups,
)
from train_scripts.common.transforms import PretrainTransform


def write_caption_corpus(folder, num_images=6, captions_per_image=3, size=(40, 48), offset=0, prefix="a", meanings=None):
    """Images ``img_<i>.jpg`` and a caption_jsonl file with several captions each (with
    ``meanings``, image i's captions record the meaning ``meanings[i % len(meanings)]``)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(offset, offset + num_images):
        Image.fromarray(random_rgb(*size, seed=i)).save(folder / f"img_{i}.jpg", quality=95)
        for j in range(captions_per_image):
            lines.append(
                {
                    "image": f"img_{i}.jpg",
                    "caption": f"{prefix} {['blurry', 'sharp', 'noisy'][j % 3]} photo number {i} take {j}",
                    "task": "quality",
                    **({"meaning": meanings[i % len(meanings)]} if meanings else {}),
                }
            )
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return folder


def test_parse_named_dirs():
    assert parse_named_dirs(["caption_jsonl=/a/b", " ava = ~/x"], "--corpus")[0] == ("caption_jsonl", "/a/b")
    with pytest.raises(ValueError, match="--corpus 'nodir': expected NAME=DIR"):
        parse_named_dirs(["nodir"], "--corpus")


def test_corpora_merge_by_image_and_exclusions_drop_images(tmp_path):
    first = write_caption_corpus(tmp_path / "a", num_images=4, captions_per_image=1)
    second = write_caption_corpus(
        tmp_path / "b", num_images=4, captions_per_image=2, offset=2, prefix="one"
    )  # img_2, img_3 shared
    names = tmp_path / "exclude.txt"
    names.write_text("img_0.jpg\n")
    merged = load_pretrain_corpus(
        [("caption_jsonl", str(first)), ("caption_jsonl", str(second))],
        exclude=[("file", str(names))],
        cache_dir=str(tmp_path / "cache"),
    )
    keys = merged["image_key"]
    assert sorted(keys) == ["img_1", "img_2", "img_3", "img_4", "img_5"]
    shared = merged[keys.index("img_2")]["captions"]
    assert len(shared) == 3  # one caption from the first corpus, two from the second, pooled
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_pretrain_corpus([("caption_jsonl", str(first))], exclude=[("file", str(tmp_path / "none.txt"))])


def test_a_rating_dataset_excludes_its_test_split(tmp_path):
    corpus = write_caption_corpus(tmp_path / "c", num_images=10)
    (tmp_path / "r").mkdir()
    rows = "".join(f"img_{i}.jpg,{i}\n" for i in range(10))
    (tmp_path / "r" / "labels.csv").write_text("image,mos\n" + rows)
    for i in range(10):
        (tmp_path / "r" / f"img_{i}.jpg").write_bytes((corpus / f"img_{i}.jpg").read_bytes())
    cache = str(tmp_path / "cache")
    test_names = set(data_builders.load("folder_csv", str(tmp_path / "r"), cache_dir=cache)["test"]["image_name"])
    merged = load_pretrain_corpus(
        [("caption_jsonl", str(corpus))], exclude=[("folder_csv", str(tmp_path / "r"))], cache_dir=cache
    )
    assert 0 < len(test_names) < 10 and len(merged) == 10 - len(test_names)
    assert not test_names & set(merged["image_name"])


def test_caption_draw_depends_only_on_seed_epoch_and_index(tmp_path):
    corpus = load_pretrain_corpus(
        [("caption_jsonl", str(write_caption_corpus(tmp_path / "c")))], cache_dir=str(tmp_path / "cache")
    )
    dataset = PretrainDataset(corpus, PretrainTransform(size=32), seed=7)
    again = PretrainDataset(corpus, PretrainTransform(size=32), seed=7)
    item = dataset[(3, 1)]
    assert item["captions"] == again[(3, 1)]["captions"] and item["index"] == 3
    assert item["pixel_values"].shape == (1, 3, 32, 32) and len(item["captions"]) == 1
    # over epochs every caption of an image comes up, chosen per epoch
    drawn = {dataset[(3, epoch)]["captions"][0] for epoch in range(30)}
    assert drawn == set(corpus[3]["captions"])
    assert dataset[3]["captions"] == dataset[(3, 0)]["captions"]


def test_several_crops_per_decoded_image_each_with_its_own_draws(tmp_path):
    corpus = load_pretrain_corpus(
        [("caption_jsonl", str(write_caption_corpus(tmp_path / "c")))], cache_dir=str(tmp_path / "cache")
    )
    transform = PretrainTransform(size=8, mode="native_crop")
    dataset = PretrainDataset(corpus, transform, seed=7, crops_per_image=4)
    item = dataset[(2, 0)]
    assert item["pixel_values"].shape == (4, 3, 8, 8) and len(item["captions"]) == 4
    assert set(item["captions"]) <= set(corpus[2]["captions"])
    assert len({view.tobytes() for view in item["pixel_values"]}) > 1  # different windows
    again = PretrainDataset(corpus, transform, seed=7, crops_per_image=4)[(2, 0)]
    assert np.array_equal(item["pixel_values"], again["pixel_values"]) and item["captions"] == again["captions"]
    batch = PretrainCollator(build_clip_tokenizer())([item, dataset[(5, 0)]])
    assert batch["pixel_values"].shape == (8, 3, 8, 8) and batch["indices"].tolist() == [2] * 4 + [5] * 4
    with pytest.raises(ValueError, match="crops_per_image"):
        PretrainDataset(corpus, transform, crops_per_image=0)


def test_global_batches_are_the_same_for_any_process_count_and_never_repeat_an_image():
    one = GlobalBatchSampler(10, 4, num_processes=1, seed=3)
    parts = [GlobalBatchSampler(10, 2, num_processes=2, process_index=p, seed=3) for p in range(2)]
    for epoch in (0, 1):
        for sampler in (one, *parts):
            sampler.set_epoch(epoch)
        whole = list(one)
        assert len(whole) == len(one) == 2  # 10 // 4, the incomplete last batch dropped
        split = [list(p) for p in parts]
        for step, batch in enumerate(whole):
            assert batch == split[0][step] + split[1][step]
            assert len({i for i, _ in batch}) == 4 and {e for _, e in batch} == {epoch}
    assert not np.array_equal(one.global_batches(0), one.global_batches(1))
    ordered = GlobalBatchSampler(6, 3, shuffle=False)
    assert ordered.global_batches(0).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_collator_pads_to_the_longest_caption_and_truncates():
    tokenizer = build_clip_tokenizer()
    items = [
        {"pixel_values": np.zeros((1, 3, 8, 8), np.float32), "captions": ["bad image"], "index": 4},
        {
            "pixel_values": np.ones((1, 3, 8, 8), np.float32),
            "captions": ["a very sharp and noise free photo of a dog"],
            "index": 1,
        },
    ]
    batch = PretrainCollator(tokenizer, max_length=77)(items)
    long_length = len(tokenizer(items[1]["captions"][0])["input_ids"])
    assert batch["input_ids"].shape == (2, long_length)
    assert batch["attention_mask"].sum(1).tolist() == [4, long_length]
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and batch["indices"].tolist() == [4, 1]
    short = PretrainCollator(tokenizer, max_length=6)(items)
    assert short["input_ids"].shape == (2, 6) and short["input_ids"][1, -1].item() == tokenizer.eos_token_id
    assert isinstance(short["input_ids"], torch.Tensor)


def test_an_image_that_does_not_decode_is_stood_in_for_by_the_next_row_and_reported(tmp_path):
    """A truncated JPEG passes the start's header check; in training the next row stands in with
    the item's own draws (the same in a worker and after a resume), and the failure is reported."""
    from torch.utils.data import DataLoader

    folder = write_caption_corpus(tmp_path / "c", num_images=6)
    whole = (folder / "img_2.jpg").read_bytes()
    (folder / "img_2.jpg").write_bytes(whole[: len(whole) // 2])
    corpus = load_pretrain_corpus([("caption_jsonl", str(folder))], cache_dir=str(tmp_path / "cache"))
    bad = list(corpus["image_name"]).index("img_2.jpg")
    dataset = PretrainDataset(corpus, PretrainTransform(size=16, mode="native_crop"), seed=7)
    item = dataset[(bad, 1)]
    assert item["index"] == (bad + 1) % len(corpus)
    assert [entry["image"] for entry in item["skipped"]] == ["img_2.jpg"] and "img_2.jpg" in item["skipped"][0]["error"]
    assert dataset[(bad + 1, 1)]["skipped"] == []
    from_worker = next(iter(DataLoader(dataset, sampler=[(bad, 1)], batch_size=1, num_workers=1,
                                       collate_fn=PretrainCollator(build_clip_tokenizer()))))
    assert from_worker["skipped"] == item["skipped"]  # a worker gives the same item
    assert torch.equal(from_worker["pixel_values"], torch.from_numpy(item["pixel_values"]))
    assert from_worker["indices"].tolist() == [item["index"]]


def test_views_carry_their_captions_meanings_and_same_meanings_are_positives(tmp_path):
    corpus = load_pretrain_corpus(
        [("caption_jsonl", str(write_caption_corpus(tmp_path / "m", num_images=4, meanings=["q|bad|blur", "q|good|noise"])))],
        cache_dir=str(tmp_path / "cache"),
    )
    dataset = PretrainDataset(corpus, PretrainTransform(size=8, mode="native_crop"), seed=1, crops_per_image=2)
    items = [dataset[(i, 0)] for i in range(4)]
    assert [item["meanings"] for item in items] == [["q|bad|blur"] * 2, ["q|good|noise"] * 2] * 2
    batch = PretrainCollator(build_clip_tokenizer())(items)
    assert batch["meanings"] == [m for item in items for m in item["meanings"]]
    # by image: the row indices; by meaning: images 0 and 2 (and 1 and 3) share a group
    assert torch.equal(positive_groups(batch["indices"], batch["meanings"], by_meaning=False), batch["indices"])
    groups = positive_groups(batch["indices"], batch["meanings"], by_meaning=True).tolist()
    assert groups[0] == groups[4] != groups[2] == groups[6] and all(g < 0 for g in groups)
    # a caption without a meaning keeps its image's group
    mixed = positive_groups(torch.tensor([0, 1, 2]), ["q|bad|blur", None, "q|bad|blur"], by_meaning=True).tolist()
    assert mixed[0] == mixed[2] < 0 and mixed[1] == 1
    # the loss: same meanings change it; all-distinct groups give the plain CLIP loss
    embeds = torch.nn.functional.normalize(torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    scale = torch.tensor(10.0)
    plain = ClipLoss()(embeds[0], embeds[1], scale)
    assert torch.allclose(ClipLoss()(embeds[0], embeds[1], scale, groups=positive_groups(torch.arange(8), [None] * 8, True)), plain)
    assert not torch.allclose(ClipLoss()(embeds[0], embeds[1], scale, groups=torch.tensor(groups)), plain)
