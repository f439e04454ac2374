"""Benchmark the MLLM captioning backend: captions per second at batch 1 and batch 16.

    python benchmarks/bench_captioning.py                       # tiny random LLaVA on the CPU
    python benchmarks/bench_captioning.py --captions 64 --max-new-tokens 48

Builds a tiny random LLaVA (tests/tiny_llava.py: CLIP vision tower + Llama, processor, chat
template) in a temporary folder and captions the same random images through
`train_scripts.common.hf_captioner.HFCaptioner` (the code path of generate_captions.py: chat
template, left padding, per-caption seeded sampling), at each batch size. Every caption runs to
`--max-new-tokens` (no end-of-text is allowed), so the batch sizes do the same work. The figures
measure the per-step overhead of generation more than model arithmetic (the model is tiny).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from tests.tiny_llava import build_tiny_llava  # noqa: E402
from train_scripts.common.captioning import PROMPT_TEMPLATES, caption_seed, format_prompt  # noqa: E402
from train_scripts.common.hf_captioner import HFCaptioner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(args.captions)]
    prompts = [format_prompt(PROMPT_TEMPLATES["quality"], "good")] * args.captions
    seeds = [caption_seed(0, str(i), 0) for i in range(args.captions)]
    with tempfile.TemporaryDirectory() as folder:
        captioner = HFCaptioner(build_tiny_llava(folder), torch.device(args.device), max_new_tokens=args.max_new_tokens)
        captioner.generation_config.update(min_new_tokens=args.max_new_tokens)  # equal work per caption
        captioner.caption(images[:2], prompts[:2], seeds[:2])  # warm-up
        print(f"tiny random LLaVA on {args.device} ({torch.get_num_threads()} threads), {args.captions} captions of "
              f"{args.max_new_tokens} new tokens, sampling {captioner.settings()['sampler']}")
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            start = time.perf_counter()
            for first in range(0, args.captions, batch_size):
                rows = slice(first, first + batch_size)
                captioner.caption(images[rows], prompts[rows], seeds[rows])
            seconds = time.perf_counter() - start
            print(f"batch {batch_size:3d}: {args.captions / seconds:8.2f} captions/s ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
