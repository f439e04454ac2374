"""UniQA scoring speed against the bare CLIP vision tower, at ViT-B/16 size with random weights.

    python benchmarks/bench_model.py [--batch-size 8] [--repeats 5] [--count-batches 100]

Prints views/s for the bare vision tower (`clip.get_image_features`) and for `UniQAModel`
scoring (vision tower + adapter + multi-cue head with 4 prompt groups), in fp32 and bf16, and
how often the text tower ran during a `--count-batches`-batch scoring run (target: 0 — the
prompt embeddings are constants). Targets: UniQA >= 0.95x the bare tower; bf16 >= 1.6x fp32
where the CPU has bf16.
"""

import argparse
import statistics
import time

import torch
from transformers import CLIPConfig

from modeling_uniqa import UniQAConfig, UniQAModel
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer

VIT_B16 = {
    "vision_config": {"image_size": 224, "patch_size": 16, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "quick_gelu"},
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8, "hidden_act": "quick_gelu", "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
    "projection_dim": 512,
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per measurement (median reported)")
    parser.add_argument("--count-batches", type=int, default=100, help="scoring batches over which text-tower calls are counted")
    return parser.parse_args()


def time_interleaved(fns: dict, pixels, repeats, warmup=3) -> dict:
    """Median views/s of each `fn(pixels)`; runs alternate so drift hits all of them alike."""
    times = {name: [] for name in fns}
    with torch.inference_mode():
        for _ in range(warmup):  # oneDNN builds its kernels on the first calls
            for fn in fns.values():
                fn(pixels)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(pixels)
                times[name].append(time.perf_counter() - start)
    return {name: pixels.shape[0] / statistics.median(t) for name, t in times.items()}


def main():
    args = parse_args()
    torch.manual_seed(0)
    model = UniQAModel(UniQAConfig(clip_config=CLIPConfig(**VIT_B16).to_dict(), prompt_groups="natural")).eval()
    model.set_prompts(None, build_clip_tokenizer())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} views of 224x224")

    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        pixels = torch.randn(args.batch_size, 3, 224, 224, dtype=dtype)
        measured = time_interleaved(
            {"bare": lambda x: model.clip.get_image_features(pixel_values=x), "uniqa": lambda x: model(pixel_values=x)},
            pixels,
            args.repeats,
        )
        bare, uniqa = measured["bare"], measured["uniqa"]
        rates[dtype] = (bare, uniqa)
        name = str(dtype).removeprefix("torch.")
        print(f"{name:>9}: vision tower {bare:6.2f} views/s | UniQA scoring {uniqa:6.2f} views/s | ratio {uniqa / bare:.3f} (target >= 0.95)")
    speedup = rates[torch.bfloat16][1] / rates[torch.float32][1]
    print(f"bf16 / fp32 UniQA scoring speed-up: {speedup:.2f}x (target >= 1.6x where the CPU has bf16)")

    calls = []
    hook = model.clip.text_model.register_forward_hook(lambda *_: calls.append(1))
    pixels = torch.randn(1, 3, 224, 224, dtype=torch.bfloat16)
    with torch.inference_mode():
        for _ in range(args.count_batches):
            model(pixel_values=pixels)
    hook.remove()
    print(f"text tower calls across {args.count_batches} scoring batches: {len(calls)} (target 0)")


if __name__ == "__main__":
    main()
