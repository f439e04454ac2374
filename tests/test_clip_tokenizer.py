"""The offline OpenAI CLIP tokenizer: ids, cleaning, padding, truncation, save/reload."""

import gzip
import hashlib
import shutil

import pytest
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

from modeling_uniqa.clip_tokenizer import (
    DEFAULT_MERGES_PATH,
    OPENAI_VOCAB_SIZE,
    build_clip_tokenizer,
    is_openai_vocab,
    openai_clip_tokenizer,
    read_clip_merges,
    resolve_prompt_tokenizer,
    tokenizer_mismatch,
)
from tests.helpers import build_tiny_tokenizer, tiny_clip_config
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


# --------------------------------------------------------------------------------------------
# resolve_prompt_tokenizer: which tokenizer may tokenise a text tower's prompts
# --------------------------------------------------------------------------------------------
def openai_vocab_text_config(**overrides) -> dict:
    config = tiny_clip_config(vocab_size=OPENAI_VOCAB_SIZE)
    config["text_config"].update({"bos_token_id": BOS, "eos_token_id": EOS, **overrides})
    return config


@pytest.fixture(scope="module")
def openai_vocab_clip_dir(tmp_path_factory):
    """A tiny HF CLIP folder with OpenAI's vocabulary size and no tokenizer."""
    directory = tmp_path_factory.mktemp("openai_vocab_clip")
    CLIPModel(CLIPConfig(**openai_vocab_text_config())).save_pretrained(directory)
    return directory


def test_folder_without_tokenizer_uses_the_shipped_one(openai_vocab_clip_dir):
    resolved = resolve_prompt_tokenizer(openai_vocab_clip_dir)
    assert resolved is openai_clip_tokenizer(32)  # built once, cut to the tower's 32 positions
    assert resolved("bad image")["input_ids"] == [BOS, 2103, 2867, EOS]


def test_broken_folder_tokenizer_is_replaced_for_openai_vocab(openai_vocab_clip_dir, tmp_path, caplog):
    """No tokenizer.json: transformers builds a 2-token tokenizer, which must never be used."""
    folder = tmp_path / "clip"
    shutil.copytree(openai_vocab_clip_dir, folder)
    build_clip_tokenizer().save_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    assert len(AutoTokenizer.from_pretrained(folder)) == 2  # the trap
    with caplog.at_level("WARNING"):
        resolved = resolve_prompt_tokenizer(str(folder))
    assert len(resolved) == OPENAI_VOCAB_SIZE and "2 tokens" in caplog.text
    with pytest.raises(ValueError, match="tokenizer in .*clip: the tokenizer has 2 tokens"):
        resolve_prompt_tokenizer(str(folder), tokenizer=str(folder))  # asked for explicitly: refused


def test_matching_folder_tokenizer_is_used(tmp_path):
    CLIPModel(CLIPConfig(**tiny_clip_config())).save_pretrained(tmp_path)
    build_tiny_tokenizer().save_pretrained(tmp_path)
    resolved = resolve_prompt_tokenizer(tmp_path)
    assert len(resolved) == 60 and resolved("bad image")["input_ids"][0] == 0


def test_other_vocabularies_without_tokenizer_are_refused(tmp_path):
    CLIPModel(CLIPConfig(**tiny_clip_config())).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds no tokenizer.*60 tokens.*not OpenAI's"):
        resolve_prompt_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="config.json: no such file"):
        resolve_prompt_tokenizer(tmp_path / "missing")


def test_legacy_eos_config():
    """Old HF CLIP configs say eos_token_id=2 and pool at the largest id: OpenAI's BPE fits."""
    text_config = CLIPConfig(**openai_vocab_text_config(bos_token_id=0, eos_token_id=2)).text_config
    assert is_openai_vocab(text_config)
    assert tokenizer_mismatch(build_clip_tokenizer(), text_config) is None
    tiny = tiny_clip_config()
    tiny["text_config"]["eos_token_id"] = 2
    assert "largest id" in tokenizer_mismatch(build_tiny_tokenizer(), CLIPConfig(**tiny).text_config)
