"""The offline OpenAI CLIP tokenizer: ids, cleaning, padding, truncation, save/reload."""

import gzip
import hashlib
import shutil

import pytest
from transformers import AutoTokenizer

from modeling_uniqa.clip_tokenizer import DEFAULT_MERGES_PATH, build_clip_tokenizer, read_clip_merges
from tests.openai_clip_reference import OpenAIBPEReference

BOS, EOS = 49406, 49407
TEXTS = [
    "bad image",
    "Bad IMAGE",
    "  an EXCELLENT   photo\tof the\nscene  ",
    "it's a low-quality, blurry image!!",
    "Image #42: 3.5/10 (noisy)...",
    "we'll've done it; they're sure",
    "café naïve résumé Ünïcödé",
    "sharp 😀 photo",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def reference():
    return OpenAIBPEReference(DEFAULT_MERGES_PATH)


def test_known_openai_ids(tokenizer):
    assert tokenizer("bad image").input_ids == [BOS, 2103, 2867, EOS]
    assert tokenizer("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]


def test_special_tokens(tokenizer):
    assert len(tokenizer) == 49408
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, EOS, EOS)
    assert tokenizer.model_max_length == 77


@pytest.mark.parametrize("text", TEXTS)
def test_matches_openai_encoding(tokenizer, reference, text):
    """Lower-casing, whitespace cleaning, punctuation, digits, contractions, non-ASCII bytes."""
    assert tokenizer(text).input_ids == reference.encode(text)


def test_html_entities_are_not_unescaped(tokenizer, reference):
    """Documented difference: OpenAI html-unescapes the text, CLIPTokenizer does not."""
    assert tokenizer("&amp;").input_ids != reference.encode("&amp;")
    assert tokenizer("&").input_ids == reference.encode("&amp;")


def test_decode_round_trip(tokenizer):
    ids = tokenizer("A Bad   Image").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a bad image"


def test_padding_to_max_length(tokenizer):
    batch = tokenizer(["bad image", "a photo of a cat"], padding="max_length", return_tensors="pt")
    assert batch.input_ids.shape == (2, 77)
    assert batch.attention_mask.sum(dim=1).tolist() == [4, 7]
    assert batch.input_ids[0, 3:].eq(EOS).all()  # eos, then eos as padding


def test_truncation_keeps_end_of_text(tokenizer, reference):
    text = "a very blurry and noisy picture " * 30
    ids = tokenizer(text, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == BOS and ids[-1] == EOS
    assert ids[1:76] == reference.encode(text)[1:76]


def test_save_and_reload_offline(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(TEXTS).input_ids == tokenizer(TEXTS).input_ids
    assert (reloaded.pad_token_id, reloaded.model_max_length) == (EOS, 77)


def test_plain_text_merges_file(tokenizer, tmp_path):
    plain = tmp_path / "merges.txt"
    with gzip.open(DEFAULT_MERGES_PATH, "rb") as source, open(plain, "wb") as target:
        shutil.copyfileobj(source, target)
    assert build_clip_tokenizer(plain)(TEXTS).input_ids == tokenizer(TEXTS).input_ids


def test_malformed_merges_rejected(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("#version: 0.2\ni n\nt h e\n")
    with pytest.raises(ValueError, match="two symbols per line"):
        read_clip_merges(path)


def test_shipped_asset_and_licence():
    digest = hashlib.sha256(DEFAULT_MERGES_PATH.read_bytes()).hexdigest()
    assert digest == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    licence = (DEFAULT_MERGES_PATH.parent / "CLIP_LICENSE").read_text()
    assert "MIT License" in licence and "Copyright (c) 2021 OpenAI" in licence
    assert digest in (DEFAULT_MERGES_PATH.parent / "README.md").read_text()
