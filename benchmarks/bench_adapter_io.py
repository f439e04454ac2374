"""Adapter artefacts at ViT-B/16 size (random weights): size on disk, digest and load times.

    python benchmarks/bench_adapter_io.py [--repeats 3]

Prints the adapter directory's size (target: about 1 MB against ~600 MB for the full model in
fp32), the time of `backbone_digest` over the CLIP weights (paid by every `save_adapter` /
`load_adapter`), and the time of `load_adapter` onto an in-memory base.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
from bench_model import VIT_B16  # benchmarks/ is on sys.path when run as a script

from modeling_uniqa import UniQAConfig, UniQAModel
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
from modeling_uniqa.core.adapter_io import backbone_digest, load_adapter, save_adapter


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = UniQAModel(UniQAConfig(clip_config=VIT_B16, prompt_groups="natural")).eval()
    model.set_prompts(None, build_clip_tokenizer())
    clip_bytes = sum(t.numel() * t.element_size() for t in model.clip.state_dict().values())
    with tempfile.TemporaryDirectory() as directory:
        save_adapter(model, directory, base_name="bench/uniqa-base")
        size = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
        print(f"adapter directory: {size / 1e6:.2f} MB ({', '.join(sorted(os.listdir(directory)))}); CLIP weights: {clip_bytes / 1e6:.0f} MB fp32")
        digest_s = median_seconds(lambda: backbone_digest(model.clip), args.repeats)
        print(f"backbone_digest: {digest_s:.2f} s ({clip_bytes / 1e6 / digest_s:.0f} MB/s of fp32 weights)")
        load_s = median_seconds(lambda: load_adapter(model, directory), args.repeats)
        print(f"load_adapter onto an in-memory base: {load_s:.2f} s")


if __name__ == "__main__":
    main()
