"""Benchmark comment embedding for AIR purification: length-sorted batches with dynamic padding
against the fixed 77-token padding a plain CLIP tokenizer call gives.

    python benchmarks/bench_comment_embedding.py                    # 256 comments, batch 64
    python benchmarks/bench_comment_embedding.py --comments 2000 --batch-size 256

A ViT-B/16-sized CLIP text tower (width 512, 12 layers, 8 heads, context 77) with random
weights and the real OpenAI CLIP tokenizer embeds a generated corpus with AVA-Captions-like
comment lengths (mostly 5-30 words, a tail of longer ones, a few very short). Both paths go
through `train_scripts.common.text_embedding.embed_texts`; the script also checks that they
give the same embeddings. Target: >= 2x comments/s for the dynamic path.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from modeling_uniqa.clip_tokenizer import build_clip_tokenizer  # noqa: E402
from train_scripts.common.text_embedding import embed_texts  # noqa: E402

WORDS = ["nice", "shot", "great", "colours", "light", "lighting", "composition", "focus", "sharp", "soft", "tones", "love", "the", "this", "is", "a", "really", "good", "image", "photo", "picture", "subject", "background", "would", "be", "better", "if", "you", "had", "cropped", "it", "more", "exposure", "too", "dark", "bright", "contrast", "mood", "depth", "field", "bokeh", "lovely", "well", "done", "framing", "lines", "eye", "detail", "texture", "portrait", "landscape", "sky", "water", "shadow", "highlight", "capture", "moment", "beautiful", "simple"]


def ava_like_corpus(count: int, seed: int = 0) -> list:
    """Comments whose word counts follow AVA-Captions' shape: 75% 5-30, 20% 31-60, 5% 1-4."""
    rng = np.random.default_rng(seed)
    kind = rng.random(count)
    lengths = np.where(kind < 0.75, rng.integers(5, 31, count), np.where(kind < 0.95, rng.integers(31, 61, count), rng.integers(1, 5, count)))
    return [" ".join(rng.choice(WORDS, size=int(n))) for n in lengths]


def text_tower(tokenizer) -> CLIPModel:
    """A random CLIP with ViT-B/16's text tower (the vision tower made tiny: it is not used)."""
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={"image_size": 32, "patch_size": 16, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1},
        projection_dim=512,
    )
    torch.manual_seed(0)
    return CLIPModel(config).eval()


def timed(function) -> tuple:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comments", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = build_clip_tokenizer()
    clip = text_tower(tokenizer)
    texts = ava_like_corpus(args.comments)
    tokens = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=77)["input_ids"]]
    print(f"{len(texts)} comments: words median {int(np.median([len(t.split()) for t in texts]))}, "
          f"tokens mean {np.mean(tokens):.1f} (with start/end), max {max(tokens)}; batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}")
    embed_texts(clip, tokenizer, texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    fixed, fixed_s = timed(lambda: embed_texts(clip, tokenizer, texts, args.batch_size, sort_by_length=False, pad_to=77))
    dynamic, dynamic_s = timed(lambda: embed_texts(clip, tokenizer, texts, args.batch_size))
    difference = (fixed - dynamic).abs().max().item()
    print(f"fixed 77-token padding:       {len(texts) / fixed_s:8.1f} comments/s ({fixed_s:.1f} s)")
    print(f"length-sorted, dynamic pad:   {len(texts) / dynamic_s:8.1f} comments/s ({dynamic_s:.1f} s)")
    print(f"speed-up {fixed_s / dynamic_s:.2f}x (target >= 2x); max |difference| of the embeddings {difference:.2e}")


if __name__ == "__main__":
    main()
