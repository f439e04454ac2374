"""The demo's last stage: score the held-out images with `pipeline("image-quality")`.

    python train_scripts/demo_report.py --model demo-output/model --dataset kadid10k --data_dir demo-output/data/kadid

Loads the test split of a `kadid10k`-layout dataset (the references the adapter never saw),
scores every image through the same pipeline a user calls, prints the best and worst images
as a ranked table, the SRCC of the same architecture with untrained (random, seeded) weights for
comparison, and ends with one line: `demo: SRCC=<x> PLCC=<y> (held-out references)`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import data_builders
import modeling_uniqa  # noqa: F401  (registers the "image-quality" pipeline task)
from modeling_uniqa.errors import USER_ERRORS
from train_scripts.common.dataset_options import RatingDataArguments
from train_scripts.common.flags import ArgumentParser
from train_scripts.common.metrics import plcc, srcc
from train_scripts.common.script import run_script


@dataclass(kw_only=True)
class DemoReportArguments(RatingDataArguments):
    """The command line of `demo_report.py`."""

    model: str = field(metadata={"help": "A UniQA model folder."})
    split_index: int = field(default=0, metadata={"help": "Which reference-disjoint 80/20 split (as in training)."})
    batch_size: int = 16
    show: int = field(default=5, metadata={"help": "Rows of the ranked table shown at each end."})
    output: str | None = field(default=None, metadata={"help": "Also write the ranking and the metrics as JSON here."})
    baseline_seed: int = field(default=0, metadata={"help": "Seed of the untrained model's random weights."})


def parse_args(argv=None) -> DemoReportArguments:
    return ArgumentParser(DemoReportArguments, description=__doc__).parse(argv)


def untrained_srcc(model_dir: str, paths: list, mos: list, batch_size: int, seed: int) -> float:
    """SRCC of a model with `model_dir`'s architecture, prompts and views but random weights."""
    import torch
    from transformers import AutoConfig, pipeline

    torch.manual_seed(seed)
    model = modeling_uniqa.UniQAModel(AutoConfig.from_pretrained(model_dir)).eval()
    model.refresh_prompt_embeds()  # the config holds the prompts' token ids
    results = pipeline("image-quality", model=model)(paths, batch_size=batch_size)
    return srcc([result["score"] for result in results], mos)


def main(args: DemoReportArguments) -> dict:
    from transformers import pipeline

    test = data_builders.load(args.dataset, args.data_dir, cache_dir=args.cache_dir, split_index=args.split_index, seed=args.split_seed,
                              **args.dataset_options)["test"]
    paths, mos = list(test["image_path"]), list(test["mos"])
    scorer = pipeline("image-quality", model=args.model)
    results = scorer(paths, batch_size=args.batch_size)
    predicted = [result.get("mos", result["score"]) for result in results]
    ranking = sorted(zip(predicted, mos, paths), key=lambda row: -row[0])

    print(f"{'rank':>4}  {'predicted':>9}  {'MOS':>6}  image")
    shown = ranking if len(ranking) <= 2 * args.show else ranking[: args.show] + [None] + ranking[-args.show :]
    for row in shown:
        if row is None:
            print(f"{'...':>4}")
            continue
        rank = ranking.index(row) + 1
        print(f"{rank:>4}  {row[0]:>9.3f}  {row[1]:>6.3f}  {os.path.basename(row[2])}")
    summary = {"srcc": srcc(predicted, mos), "plcc": plcc(predicted, mos), "num_images": len(paths),
               "untrained_srcc": untrained_srcc(args.model, paths, mos, args.batch_size, args.baseline_seed)}
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump({**summary, "ranking": [{"image": p, "predicted": s, "mos": m} for s, m, p in ranking]}, handle, indent=1)
    print(f"untrained model (same architecture, random weights): SRCC={summary['untrained_srcc']:.3f}")
    print(f"demo: SRCC={summary['srcc']:.3f} PLCC={summary['plcc']:.3f} (held-out references)")
    return summary


if __name__ == "__main__":
    run_script(main, parse_args, USER_ERRORS)
