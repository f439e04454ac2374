"""Adapter-mode fine-tuning epoch time at ViT-B/16 size on this machine, with and without the
feature bank (random weights, generated 512x384 JPEGs, the real `train_adapter.finetune`).

    python benchmarks/bench_adapter.py [--num-images 256] [--epochs 2] [--bank-crops 5]

Without the bank every epoch runs the frozen image tower on one fresh crop per image. With it
the bank (`--bank-crops` crops x flip per image) is embedded once, before the first epoch, and
every epoch after costs the adapter only. Prints the bank's cost, the epoch times, and the
speedup of an epoch after the first (target: >= 10x). The bank pays for itself after about
2 x bank-crops epochs. Evaluation is kept out of the timings (a 2-image test split, centre view).
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from bench_model import VIT_B16  # benchmarks/ is on sys.path when run as a script
from PIL import Image
from transformers import CLIPConfig

from modeling_uniqa import UniQAConfig, UniQAModel
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
from train_scripts.common.finetune import FinetuneConfig, RatingSplits, finetune


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (>= 2: the second is the one compared)")
    parser.add_argument("--bank-crops", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers decoding images")
    return parser.parse_args()


def make_data(root: str, count: int) -> RatingSplits:
    """`count` random 512x384 JPEGs with random MOS as a datasets split (+ a 3-image test split: correlations need 3)."""
    import datasets

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count + 3):
        path = os.path.join(root, f"{index}.jpg")
        base = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(base).resize((512, 384), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    mos = rng.uniform(0, 100, size=count + 3)

    def part(rows):
        return datasets.Dataset.from_dict(
            {"image": [paths[i] for i in rows], "image_name": [os.path.basename(paths[i]) for i in rows],
             "mos": [float(mos[i]) for i in rows], "score": [float(mos[i]) / 100 for i in rows]},
            features=datasets.Features({"image": datasets.Image(), "image_name": datasets.Value("string"), "mos": datasets.Value("float64"), "score": datasets.Value("float64")}),
        )

    metadata = {"dataset": "benchmark", "mos_range": [0.0, 100.0], "higher_is_better": True, "task": "quality"}
    return RatingSplits(part(range(count)), part(range(count, count + 3)), None, metadata)


def main():
    args = parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.num_images} images of 512x384, "
          f"batch {args.batch_size}, ViT-B/16 random weights, bank of {args.bank_crops} crops x flip")
    with tempfile.TemporaryDirectory() as root:
        torch.manual_seed(0)
        model = UniQAModel(UniQAConfig(clip_config=CLIPConfig(**VIT_B16).to_dict(), prompt_groups="natural"))
        model.set_prompts(None, build_clip_tokenizer())
        model.save_pretrained(os.path.join(root, "model"))
        os.makedirs(os.path.join(root, "images"))
        splits = make_data(os.path.join(root, "images"), args.num_images)

        runs = {}
        for bank in (False, True):
            config = FinetuneConfig(num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size, feature_bank=bank,
                                    bank_crops=args.bank_crops, view_policy="center", num_workers=args.workers, eval_batch_size=64)
            start = time.perf_counter()
            results = finetune(os.path.join(root, "model"), splits, os.path.join(root, f"out-{bank}"), config)
            runs[bank] = results | {"total": time.perf_counter() - start}

    plain, banked = runs[False], runs[True]
    plain_epoch = statistics.median(epoch["seconds"] for epoch in plain["epochs"])
    bank_epoch = statistics.median(epoch["seconds"] for epoch in banked["epochs"][1:])
    print(f"no bank : epoch {plain_epoch:8.2f} s ({args.num_images / plain_epoch:.1f} images/s), {args.epochs} epochs in the run")
    print(f"bank    : bank built in {banked['feature_bank_seconds']:.2f} s "
          f"({args.num_images * 2 * args.bank_crops / banked['feature_bank_seconds']:.1f} views/s), "
          f"first epoch {banked['epochs'][0]['seconds']:.3f} s, later epochs {bank_epoch:.4f} s")
    print(f"speedup of an epoch after the first: {plain_epoch / bank_epoch:.0f}x (target >= 10x); "
          f"break-even after {banked['feature_bank_seconds'] / max(plain_epoch - bank_epoch, 1e-9):.1f} epochs")


if __name__ == "__main__":
    main()
