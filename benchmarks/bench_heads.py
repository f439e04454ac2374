"""Scoring with 6 named heads against 1, on one ViT-B/16-sized backbone with random weights.

    python benchmarks/bench_heads.py [--batch-size 8] [--repeats 5]

The model has the default head (4 prompt groups, `natural`), three more trained-style heads
(adapter + level scores, one prompt group each) and two zero-shot prompt heads (`sharpness`,
`noise`): 6 heads. Prints views/s of `model(pixel_values, heads=[])` (the default head only) and
of `model(pixel_values)` (all six, one image-tower pass), interleaved, medians, and checks
the scores each head gives equal those of the head scored alone.
Target: 6 heads cost at most 1.05x one head (a head is ~0.26M parameters against ~150M).
"""

import argparse
import os
import sys

import torch
from transformers import CLIPConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model import VIT_B16, time_interleaved  # noqa: E402

from modeling_uniqa import UniQAConfig, UniQAModel  # noqa: E402
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per measurement (median reported)")
    return parser.parse_args(argv)


def build_six_head_model() -> UniQAModel:
    torch.manual_seed(0)
    model = UniQAModel(UniQAConfig(clip_config=CLIPConfig(**VIT_B16).to_dict(), prompt_groups="natural")).eval()
    tokenizer = build_clip_tokenizer()
    model.set_prompts(None, tokenizer)
    for index, group in enumerate(("quality", "content", "default")):
        name = f"trained{index}"
        model.add_prompt_head(name, group, tokenizer)
        settings, _ = model.head_state(name)
        model.set_head(name, settings | {"use_adapter": True})  # a fresh adapter, as a trained head has
    model.add_prompt_head("sharpness", "sharpness", tokenizer)
    model.add_prompt_head("noise", "noise", tokenizer)
    return model


def main(args):
    model = build_six_head_model()
    assert len(model.head_names) == 6, model.head_names
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} views of 224x224, heads: {', '.join(model.head_names)}")
    pixels = torch.randn(args.batch_size, 3, 224, 224)
    rates = time_interleaved(
        {"1 head": lambda x: model(pixel_values=x, heads=[]), "6 heads": lambda x: model(pixel_values=x)},
        pixels,
        args.repeats,
    )
    for name, rate in rates.items():
        print(f"{name:8s} {rate:8.2f} views/s")
    cost = rates["1 head"] / rates["6 heads"]
    print(f"6 heads cost {cost:.3f}x one head (target <= 1.05x): {'OK' if cost <= 1.05 else 'MISSED'}")
    with torch.inference_mode():
        together = model(pixel_values=pixels[:2])
        for name in model.head_names[1:]:
            alone = model(pixel_values=pixels[:2], heads=[name]).head_outputs[name].scores
            torch.testing.assert_close(together.head_outputs[name].scores, alone, atol=1e-6, rtol=0)
    print("each head's scores equal that head scored alone")


if __name__ == "__main__":
    main(parse_args())
