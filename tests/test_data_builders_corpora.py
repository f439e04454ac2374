"""Caption corpora builders and merge_corpora."""

import json
import logging
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import data_fixtures as fx  # noqa: E402

from data_builders import (  # noqa: E402
    DatasetFormatError,
    MissingLabelFileError,
    get_metadata,
    image_key,
    merge_corpora,
)

fx.quiet_datasets()

IDS = [953619, 953626, 953633, 953640]


@pytest.fixture()
def ava_images(tmp_path):
    folder = tmp_path / "AVA" / "images"
    for image_id in IDS:
        fx.make_image(str(folder / f"{image_id}.jpg"))
    return folder


def test_ava_captions_json(tmp_path, ava_images):
    path = fx.write_ava_captions(str(tmp_path / "cap" / "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json"), IDS)
    ds = fx.build("ava_captions", os.path.dirname(path), tmp_path, image_dir=str(ava_images))
    assert list(ds) == ["train"] and ds["train"].num_rows == 4
    row = ds["train"][0]
    assert row["image_name"] == "953619.jpg" and len(row["captions"]) == 3  # the blank one is dropped
    assert row["captions"][0] == "Comment 0 on 953619, nice light."
    assert (row["source"], row["task"]) == ("ava_captions", "aesthetics")
    assert row["image"].size == (8, 8)


def test_ava_comments_txt(tmp_path, ava_images):
    path = fx.write_ava_comments(str(tmp_path / "AVA_Comments_Full.txt"), IDS)
    ds = fx.build("ava_captions", path, tmp_path, image_dir=str(ava_images))
    assert ds["train"]["captions"][1] == ["Great shot!", "Love the colours"]
    assert ds["train"]["image_name"] == [f"{i}.jpg" for i in IDS]


def test_ava_comments_lines_without_an_integer_id_are_skipped_and_counted(tmp_path, ava_images, caplog):
    path = tmp_path / "AVA_Comments_Full.txt"
    fx.write_ava_comments(str(path), IDS)
    lines = path.read_text().splitlines()
    lines[1:1] = ["2#not-an-id#Nice", "no separators at all", "3#12ab#x", "4# #empty id"]
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("ava_captions", str(path), tmp_path, image_dir=str(ava_images))
    assert ds["train"]["image_name"] == [f"{i}.jpg" for i in IDS]
    assert get_metadata(ds)["skipped_lines"] == {str(path): 4}
    assert "4 lines of" in caplog.text and "lines 2, 3, 4, 5" in caplog.text


def test_uniqa_corpus_with_paths_from_another_machine(tmp_path, ava_images):
    fx.make_image(str(tmp_path / "AVA" / "images" / "blur_dataset" / "motion0044.jpg"))
    entries = [
        {"image_path": f"/data/AVA/images/{IDS[0]}.jpg", "prompt": "An image of good aesthetics, warm light."},
        {"image_path": f"/data/AVA/images/{IDS[1]}.jpg", "prompt": ["Poor aesthetics.", "Dull colours."]},
        {"image_path": "/home/x/FLIVE/blur_dataset/motion0044.jpg", "prompt": "A bad quality image, blurry."},
        {"image_path": "/data/AVA/images/404.jpg", "prompt": "missing image"},
    ]
    path = fx.write_uniqa_corpus(str(tmp_path / "corpus" / "uniqa.json"), entries)
    ds = fx.build("uniqa_corpus", os.path.dirname(path), tmp_path, image_dir=str(tmp_path / "AVA" / "images"))
    train = ds["train"]
    assert train.num_rows == 3  # 404.jpg is not on disk
    assert train["captions"][1] == ["Poor aesthetics.", "Dull colours."]
    assert train["task"] == ["aesthetics", "aesthetics", "quality"]
    assert train["image_path"][2].endswith(os.path.join("blur_dataset", "motion0044.jpg"))
    kept = fx.build("uniqa_corpus", path, tmp_path, check_images=False, task="quality")
    assert kept["train"].num_rows == 4 and set(kept["train"]["task"]) == {"quality"}


def test_caption_jsonl_groups_records_of_one_image(tmp_path, ava_images):
    records = [
        {"image": f"{IDS[0]}.jpg", "caption": "Sharp and clean.", "level": "good", "task": "quality",
         "captioner": "llava-1.5-7b", "prompt": "..."},
        {"image": f"{IDS[1]}.jpg", "caption": "Noisy.", "level": "bad", "task": "quality",
         "captioner": "llava-1.5-7b", "prompt": "..."},
        {"image": f"{IDS[0]}.jpg", "caption": "Well exposed.", "level": "good", "task": "quality",
         "captioner": "qwen-vl", "prompt": "..."},
        {"image": f"{IDS[0]}.jpg", "caption": "A good image, slight blur.", "level": "good", "task": "quality",
         "captioner": "template", "prompt": "...", "meaning": "quality|good|slight blur"},
    ]
    fx.write_caption_jsonl(str(tmp_path / "caps" / "a.jsonl"), records)
    ds = fx.build("caption_jsonl", tmp_path / "caps", tmp_path, image_dir=str(ava_images))["train"]
    assert ds.num_rows == 2
    assert ds[0]["captions"] == ["Sharp and clean.", "Well exposed.", "A good image, slight blur."]
    assert ds[0]["captioners"] == ["llava-1.5-7b", "qwen-vl", "template"] and ds[0]["levels"] == ["good"] * 3
    assert ds[0]["meanings"] == [None, None, "quality|good|slight blur"]
    # merged with a corpus that records no meanings, each caption keeps its own (or None)
    human = fx.build("uniqa_corpus", _uniqa_corpus(tmp_path / "corpus", [IDS[0]]), tmp_path, image_dir=str(ava_images))
    merged = merge_corpora([human, ds, ds])
    assert merged[0]["captions"] == ["Good aesthetics.", "Sharp and clean.", "Well exposed.", "A good image, slight blur."]
    assert merged[0]["caption_meanings"] == [None, None, None, "quality|good|slight blur"]


def _uniqa_corpus(folder, ids):
    fx.write_uniqa_corpus(str(folder / "uniqa.json"), [{"image_path": f"/data/AVA/images/{i}.jpg", "prompt": "Good aesthetics."} for i in ids])
    return folder


def test_llava_conversations_and_generation_outputs(tmp_path, ava_images):
    images = [f"{i}.jpg" for i in IDS]
    fx.write_llava(str(tmp_path / "llava"), images)
    ds = fx.build("llava_conversations", tmp_path / "llava", tmp_path, image_dir=str(ava_images))["train"]
    assert ds.num_rows == 4
    assert ds[0]["captions"] == [f"{images[0]} is noisy.", f"The composition of {images[0]} is balanced."]
    assert ds[0]["task"] == "aesthetics+quality" and ds[3]["task"] == "aesthetics"


def test_merge_corpora_pools_captions_and_excludes_test_images(tmp_path, ava_images):
    fx.write_ava_captions(str(tmp_path / "cap" / "CLEAN_AVA_FULL_COMMENTS.json"), IDS, per_image=1)
    human = fx.build("ava_captions", tmp_path / "cap", tmp_path, image_dir=str(ava_images))
    generated = fx.build("uniqa_corpus", _uniqa_corpus(tmp_path / "corpus", IDS[:2]), tmp_path, image_dir=str(ava_images))
    merged = merge_corpora([human, generated], exclude=[f"{IDS[3]}", f"/elsewhere/{IDS[2]}.JPG"])
    assert merged["image_key"] == [str(IDS[0]), str(IDS[1])]
    assert merged[0]["captions"] == [f"Comment 0 on {IDS[0]}, nice light.", "Good aesthetics."]
    assert merged[0]["sources"] == ["ava_captions", "uniqa_corpus"] and merged[0]["source"] == "ava_captions+uniqa_corpus"
    assert merged[0]["task"] == "aesthetics" and merged[0]["image"].size == (8, 8)
    twice = merge_corpora([human, human])
    assert twice.num_rows == 4 and len(twice[0]["captions"]) == 1  # duplicates dropped


def test_merge_excludes_ava_test_split(tmp_path):
    info = fx.write_ava(str(tmp_path / "ava"), missing=0, corrupt=0)
    ava = fx.build("ava", tmp_path / "ava", tmp_path)
    fx.write_ava_captions(str(tmp_path / "cap" / "CLEAN_AVA_FULL_COMMENTS.json"), info["ids"], per_image=1)
    corpus = fx.build("ava_captions", tmp_path / "cap", tmp_path, image_dir=str(tmp_path / "ava" / "images"))
    merged = merge_corpora([corpus], exclude=ava["test"])
    assert merged.num_rows == 30 - 6
    assert not {str(i) for i in info["test"]} & set(merged["image_key"])


def test_an_ava_image_has_one_key_in_every_corpus(tmp_path):
    """AVA, AVA-Captions, FLIVE (``AVA__<id>`` copies) and the authors' JSON agree on keys,
    so excluding AVA's test split drops FLIVE's copies of test images from pre-training."""
    info = fx.write_ava(str(tmp_path / "ava"), n=12, missing=0, corrupt=0, n_test=4)
    ids, test = info["ids"], info["test"]
    ava = fx.build("ava", tmp_path / "ava", tmp_path)
    flive_info = fx.write_flive(str(tmp_path / "flive"), ava_ids=ids[:7])  # AVA copies of test and train images
    flive = fx.build("flive", tmp_path / "flive", tmp_path, split_scheme="full")
    flive_ava = [n for n in flive_info["names"] if "AVA__" in n]
    fx.write_ava_captions(str(tmp_path / "cap" / "CLEAN_AVA_FULL_COMMENTS.json"), ids, per_image=1)
    captions = fx.build("ava_captions", tmp_path / "cap", tmp_path, image_dir=str(tmp_path / "ava" / "images"))
    entries = [{"image_path": f"/data/AVA/images/{i}.jpg", "prompt": "Good aesthetics."} for i in ids]
    entries += [{"image_path": f"/data/FLIVE/database/{n}", "prompt": "Good quality."} for n in flive_ava]
    fx.write_uniqa_corpus(str(tmp_path / "corpus" / "uniqa.json"), entries)
    corpus = fx.build("uniqa_corpus", tmp_path / "corpus", tmp_path, image_dir=str(tmp_path / "flive" / "database"),
                      check_images=False)

    keys = {
        "ava": {image_key(n) for n in ava["test"]["image_name"]},
        "ava_captions": {image_key(n) for n in captions["train"]["image_name"] if int(n[:-4]) in test},
        "flive": {image_key(n) for n in flive["full"]["image_name"] if "AVA__" in n and int(n.split("__")[1][:-4]) in test},
        "uniqa_corpus": {image_key(n) for n in corpus["train"]["image_name"] if any(str(i) in n for i in test)},
    }
    assert all(k == {str(i) for i in test} for k in keys.values()), keys
    assert {image_key(n) for n in flive["full"]["image_name"]} >= {str(i) for i in ids[:7]}

    merged = merge_corpora([captions, corpus], exclude=ava["test"])
    assert not {str(i) for i in test} & set(merged["image_key"])
    assert not any("AVA__" in n and int(n.split("__")[1][:-4]) in test for n in merged["image_name"])
    assert set(merged["image_key"]) == {str(i) for i in ids if i not in test}
    # FLIVE's copy and AVA's original of one image pool their captions
    both = merged[merged["image_key"].index(str(ids[4]))]
    assert both["captions"] == [f"Comment 0 on {ids[4]}, nice light.", "Good aesthetics.", "Good quality."]
    # a FLIVE split as the exclusion list works the same way
    assert set(merge_corpora([captions], exclude=flive)["image_key"]) == {str(i) for i in ids[7:]}


def test_image_key_rules():
    assert image_key("/data/AVA/images/953619.jpg") == image_key("953619.JPG") == image_key("953619") == "953619"
    assert image_key("voc_emotic_ava/AVA__953619.jpg") == image_key("AVA__953619") == "953619"
    assert image_key("/x/voc_emotic_ava/ava__953619.JPG", "name") == image_key("953619.jpg", "name") == "953619.jpg"
    assert image_key("voc_emotic_ava/AVA__953619.jpg", "path") == "voc_emotic_ava/AVA__953619.jpg"
    assert image_key("blur_dataset/motion0044.jpg") == "motion0044" and image_key("AVA__x1.jpg") == "ava__x1"
    assert image_key("a/B.jpg", "name") == "b.jpg"
    assert image_key("C:\\x\\a\\B.jpg", "path") == "C:/x/a/B.jpg"
    assert image_key("x/y.png", lambda n: n.upper()) == "X/Y.PNG"
    with pytest.raises(ValueError):
        image_key("x", "bogus")


def test_corpus_errors_name_file_and_line(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jsonl").write_text('{"image": "1.jpg", "caption": "ok"}\n{"image": "2.jpg", \n')
    with pytest.raises(DatasetFormatError, match=r"a\.jsonl, line 2: invalid JSON"):
        fx.build("caption_jsonl", tmp_path / "bad", tmp_path, check_images=False)
    (tmp_path / "bad" / "b.json").write_text('[{"image_path": "1.jpg"}]')
    with pytest.raises(DatasetFormatError, match=r"b\.json: item 0: expected a key 'prompt'"):
        fx.build("uniqa_corpus", tmp_path / "bad", tmp_path, check_images=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingLabelFileError, match="CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json"):
        fx.build("ava_captions", tmp_path / "empty", tmp_path)


def test_caption_files_with_bom_crlf_and_windows_1252_lines(tmp_path, ava_images, caplog):
    json_path = tmp_path / "cap" / "CLEAN_AVA_FULL_COMMENTS.json"
    fx.write_ava_captions(str(json_path), IDS[:2], per_image=1)
    jsonl_path = tmp_path / "jsonl" / "a.jsonl"
    fx.write_caption_jsonl(str(jsonl_path), [{"image": f"{i}.jpg", "caption": "Sharp."} for i in IDS[:2]])
    for path in (json_path, jsonl_path):  # as saved by a Windows editor
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert fx.build("ava_captions", json_path.parent, tmp_path, image_dir=str(ava_images))["train"].num_rows == 2
    assert fx.build("caption_jsonl", jsonl_path.parent, tmp_path, image_dir=str(ava_images))["train"]["captions"] == [
        ["Sharp."], ["Sharp."]]
    comments = tmp_path / "AVA_Comments_Full.txt"
    comments.write_bytes(f"1#{IDS[0]}#Tr\u00e8s jolie#nice\r2#{IDS[1]}#plain\n".encode("cp1252"))
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("ava_captions", str(comments), tmp_path, image_dir=str(ava_images))
    assert ds["train"]["captions"] == [["Tr\u00e8s jolie", "nice"], ["plain"]]  # lone CR ends a line too
    assert "1 lines are not UTF-8 and were read as Windows-1252 (lines 1)" in caplog.text


@pytest.mark.parametrize(
    "name, file_name, text, message",
    [
        ("caption_jsonl", "a.jsonl", "\n\n", r"a\.jsonl: no captions found"),
        ("uniqa_corpus", "a.json", "[]", r"a\.json: no captions found"),
        ("uniqa_corpus", "a.json", '[{"image_path": "1.jpg", "prompt": ["ok", 5]}]',
         r"a\.json: item 0: the prompt list must hold strings"),
        # imgid numbers the entries of Karpathy-style files: it is no AVA image id
        ("ava_captions", "CLEAN_AVA_FULL_COMMENTS.json", '{"images": [{"imgid": 3, "sentences": [{"raw": "x"}]}]}',
         r"images\[0\]: expected a key 'filename'"),
    ],
    ids=["empty-jsonl", "empty-json", "non-string-prompt", "no-filename"],
)
def test_empty_or_malformed_caption_files_are_errors(tmp_path, name, file_name, text, message):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / file_name).write_text(text)
    with pytest.raises(DatasetFormatError, match=message):
        fx.build(name, tmp_path / "c", tmp_path, check_images=False)


def test_records_without_a_caption_are_counted(tmp_path, caplog):
    path = tmp_path / "AVA_Comments_Full.txt"
    path.write_text(f"1#{IDS[0]}#Nice#\n2#{IDS[1]}#  #\n3#{IDS[2]}#\n")
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("ava_captions", str(path), tmp_path, check_images=False)
    assert ds["train"]["image_name"] == [f"{IDS[0]}.jpg"]
    assert get_metadata(ds)["captionless_records"] == {str(path): 2}
    assert "2 records of" in caplog.text


def test_text_only_llava_items_are_left_out_and_counted(tmp_path, caplog):
    """Instruction mixes hold text-only conversations: they pair no image with a caption."""
    items = [
        {"id": "a", "image": f"{IDS[0]}.jpg", "conversations": [{"from": "human", "value": "Rate the quality."},
                                                               {"from": "gpt", "value": "Sharp and clean."}]},
        {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ]
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(items))
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("llava_conversations", str(path), tmp_path, check_images=False)
    assert ds["train"]["image_name"] == [f"{IDS[0]}.jpg"] and ds["train"]["captions"] == [["Sharp and clean."]]
    assert get_metadata(ds)["imageless_records"] == {str(path): 1} and "1 records of" in caplog.text
