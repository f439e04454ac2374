"""A small CLIP with random weights and OpenAI's real tokenizer, saved like a Hub CLIP folder.

`train_pretrain.py --init DIR` then treats it as it would `openai/clip-vit-base-patch16`. The
demo (`make_demo_data.py`) and UniQA-Tiny (`make_small_clip.py`) start from one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TowerSizes:
    """One transformer tower of the small CLIP."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    mlp_ratio: int = 4

    def config(self) -> dict:
        return {
            "hidden_size": self.hidden_size,
            "intermediate_size": self.mlp_ratio * self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "hidden_act": "quick_gelu",
        }


def write_small_clip(
    folder: str,
    image_size: int,
    seed: int,
    patch_size: int = 8,
    vision: TowerSizes = TowerSizes(),
    text: TowerSizes = TowerSizes(),
    projection_dim: int = 64,
) -> None:
    """Write a randomly initialised CLIP (seeded), OpenAI's BPE tokenizer and a CLIP image
    processor for `image_size` into `folder`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from modeling_uniqa.clip_tokenizer import build_clip_tokenizer

    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            **text.config(),
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**vision.config(), "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)


__all__ = ["TowerSizes", "write_small_clip"]
