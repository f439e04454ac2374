"""Shared fixtures: tiny random CLIP/UniQA models, an offline tokenizer and image files.

Everything is built here, offline: no weights or tokenizers come from the Hub.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPTokenizer

from modeling_uniqa import UniQAConfig, UniQAImageProcessor, UniQAModel

TINY_IMAGE_SIZE = 32


def tiny_clip_config(projection_dim: int = 16, vocab_size: int = 64) -> dict:
    """A CLIP with 2-layer, 32-wide towers on 32x32 images (patch 8)."""
    return {
        "text_config": {
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
            "hidden_act": "quick_gelu",
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        "vision_config": {
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "hidden_act": "quick_gelu",
        },
        "projection_dim": projection_dim,
    }


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (plus a few merges) covering the named prompts."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz-":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    merges = [("i", "m"), ("a", "g"), ("im", "ag"), ("imag", "e</w>")]
    for first, second in merges:
        vocab[first + second] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


@pytest.fixture(scope="session")
def tiny_tokenizer() -> CLIPTokenizer:
    return build_tiny_tokenizer()


def make_tiny_uniqa(tokenizer, seed: int = 0, **config_kwargs) -> UniQAModel:
    """A random tiny UniQA model with its prompts embedded, in eval mode."""
    torch.manual_seed(seed)
    config_kwargs.setdefault("clip_config", tiny_clip_config())
    model = UniQAModel(UniQAConfig(**config_kwargs)).eval()
    model.set_prompts(None, tokenizer)
    return model


@pytest.fixture
def tiny_model_factory(tiny_tokenizer):
    def factory(seed: int = 0, **config_kwargs) -> UniQAModel:
        return make_tiny_uniqa(tiny_tokenizer, seed=seed, **config_kwargs)

    return factory


@pytest.fixture
def tiny_processor() -> UniQAImageProcessor:
    return UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, view_policy="random10")


@pytest.fixture(scope="session")
def saved_tiny_model(tmp_path_factory, tiny_tokenizer) -> str:
    """A complete saved model directory: weights, config, remote code, processor, tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_uniqa")
    model = make_tiny_uniqa(tiny_tokenizer, prompt_groups="natural", mos_range=[0, 100])
    model.save_pretrained(directory)
    UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, view_policy="random10").save_pretrained(directory)
    tiny_tokenizer.save_pretrained(directory)
    return str(directory)


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (uint8), so crops at different places differ."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((width, height), Image.BILINEAR))


@pytest.fixture
def image_files(tmp_path):
    """Four JPEGs of different sizes on disk; returns their paths."""
    paths = []
    for index, (height, width) in enumerate([(48, 64), (40, 40), (64, 50), (33, 90)]):
        path = tmp_path / f"img_{index}.jpg"
        Image.fromarray(random_rgb(height, width, seed=index)).save(path, quality=95)
        paths.append(str(path))
    return paths
