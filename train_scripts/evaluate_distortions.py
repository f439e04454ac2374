#!/usr/bin/env python
"""Per-distortion SRCC / PLCC of a quality model beside BRISQUE's, on a KADID-layout folder.

    python train_scripts/evaluate_distortions.py --model uniqa-tiny/model --data_dir uniqa-tiny/data/heldout \\
        --output_dir uniqa-tiny/eval-distortions [--card --card_license gpl-3.0 --card_sources uniqa-tiny/data/SOURCES.md]

Scores every distorted image of the folder (KADID-10k's layout: `dmos.csv`, `images/`) with
`pipeline("image-quality")` and with BRISQUE (`--no_brisque` to skip it), and reports against the
folder's MOS, overall and per distortion kind (the two digits of KADID's file names): SRCC,
PLCC, and the share of adjacent levels of one photo and kind whose score falls. Writes
`results.json` (the report, plus `card_results`: entries for `model_cards`) and `results.md`.

With `--card` it also writes the model folder's card (`model_cards.write_model_card`): the
overall and per-kind SRCC/PLCC as `model-index` results, and in the card's notes the table beside
BRISQUE, the training photos' licences (`--card_sources`, the recipe's SOURCES.md), the recipe
command and the training time (`--started_at`, seconds since the epoch when the recipe began).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

import data_builders
from data_builders.distortions import KADID_DISTORTIONS
from train_scripts.common.flags import ArgumentParser, check_positive
from train_scripts.common.quality_report import Brisque, RatedImage, distortion_metrics, markdown_table


@dataclass(kw_only=True)
class DistortionEvalArguments:
    """The command line of `evaluate_distortions.py`: the model and the folder scored, then the card."""

    model: str = field(metadata={"help": "A UniQA model folder."})
    data_dir: str = field(metadata={"help": "A KADID-layout folder (dmos.csv, images/)."})
    output_dir: str
    dataset_name: str = field(default="held-out sources", metadata={"help": "How the results name the data."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward."})
    brisque: bool = field(default=True, metadata={"help": "Also score with BRISQUE (the default).", "off_help": "Do not score with BRISQUE."})
    card: bool = field(default=False, metadata={"help": "Also write the model folder's card with these results."})
    card_license: str | None = field(default=None, metadata={"help": "SPDX id of the weights' licence for the card."})
    card_sources: str | None = field(default=None, metadata={"help": "The training photos' SOURCES.md, summarised on the card."})
    card_recipe: str = field(default="make uniqa-tiny", metadata={"help": "The command that made the model."})
    started_at: float | None = field(default=None, metadata={"help": "When the recipe began (seconds since the epoch)."})

    def __post_init__(self) -> None:
        check_positive(self, "batch_size")


def parse_args(argv=None) -> DistortionEvalArguments:
    return ArgumentParser(DistortionEvalArguments, description=__doc__).parse(argv)


def load_rated_images(data_dir: str) -> list[dict]:
    full = data_builders.load("kadid10k", data_dir, split_scheme="full")["full"]
    columns = full.select_columns(["image_path", "reference", "distortion", "level", "mos"]).to_dict()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def score_with_model(model_dir: str, paths: list, batch_size: int) -> np.ndarray:
    from transformers import pipeline

    import modeling_uniqa  # noqa: F401  registers the image-quality task

    scorer = pipeline("image-quality", model=model_dir)
    scores = []
    for start in tqdm(range(0, len(paths), batch_size), desc="model", unit="batch"):
        scores += [out["score"] for out in scorer(paths[start : start + batch_size], batch_size=batch_size)]
    return np.asarray(scores, dtype=np.float64)


def score_with_brisque(paths: list) -> np.ndarray:
    from PIL import Image

    brisque = Brisque()
    return np.asarray(
        [brisque.quality(np.asarray(Image.open(path).convert("RGB"))) for path in tqdm(paths, desc="BRISQUE", unit="image")]
    )


def card_results(report: dict, dataset_name: str) -> list:
    """`model_cards` result entries: overall, then one per distortion kind (as `config`)."""
    entries = [{"dataset": dataset_name, "srcc": report["overall"]["srcc"], "plcc": report["overall"]["plcc"], "split": "test",
                "protocol": "held-out sources, synthetic distortions x 5 levels, pseudo-MOS (GMSD)"}]
    for kind, figures in report["kinds"].items():
        entries.append({"dataset": dataset_name, "config": KADID_DISTORTIONS.get(kind, kind), "srcc": figures["srcc"],
                        "plcc": figures["plcc"], "split": "test", "protocol": "held-out sources, per distortion kind"})
    return entries


def sources_summary(path: str) -> str:
    """Photos per source and licence, from a SOURCES.md written by make_quality_corpus.py."""
    counts = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 8 and re.fullmatch(r"I\d+\.png", cells[1]):
                key = (cells[0], cells[3], cells[6])
                counts[key] = counts.get(key, 0) + 1
    lines = ["| split | source (Debian package or library) | licence | photos |", "|---|---|---|---|"]
    lines += [f"| {split} | {source} | {licence} | {n} |" for (split, source, licence), n in sorted(counts.items())]
    return "\n".join(lines)


def main(args: DistortionEvalArguments) -> int:
    rows = load_rated_images(args.data_dir)
    if len(rows) < 3:
        raise ValueError(f"{args.data_dir}: {len(rows)} rated images; the correlations need at least 3")
    paths = [row["image_path"] for row in rows]
    predictions = {"model": score_with_model(args.model, paths, args.batch_size)}
    if args.brisque:
        predictions["BRISQUE"] = score_with_brisque(paths)
    items = [
        RatedImage(row["reference"], row["distortion"], int(row["level"]), float(row["mos"]),
                   {method: float(scores[i]) for method, scores in predictions.items()})
        for i, row in enumerate(rows)
    ]
    report = distortion_metrics(items, list(predictions))
    table = markdown_table(report, KADID_DISTORTIONS)
    os.makedirs(args.output_dir, exist_ok=True)
    results = {"model": os.path.abspath(args.model), "data_dir": os.path.abspath(args.data_dir), "report": report,
               "card_results": card_results(report["model"], args.dataset_name)}
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(f"# {os.path.basename(os.path.abspath(args.model))} on {args.dataset_name}\n\n{table}\n")
    print(table)
    overall = report["model"]["overall"]
    print(f"held-out: SRCC={overall['srcc']:.4f} PLCC={overall['plcc']:.4f} falling adjacent levels={overall['falling_pairs']:.3f}"
          + (f" | BRISQUE SRCC={report['BRISQUE']['overall']['srcc']:.4f}" if "BRISQUE" in report else ""))
    if args.card:
        write_card(args, results, table)
    return 0


def write_card(args: DistortionEvalArguments, results: dict, table: str) -> None:
    from model_cards import write_model_card

    notes = [
        "### Held-out figures beside BRISQUE",
        f"Photos of sources never seen in training, each distorted at 5 levels; SRCC/PLCC against a full-reference "
        f"pseudo-MOS (GMSD), and the share of adjacent levels of one photo and distortion whose score falls. BRISQUE "
        f"is the `brisque` package's LIVE-trained model.\n\n{table}",
    ]
    if args.card_sources:
        notes.append(f"### Training photos and their licences\n\n{sources_summary(args.card_sources)}\n\n"
                     "Every file, its package version, path and copyright holder: the recipe's `SOURCES.md`.")
    recipe = f"`{args.card_recipe}`"
    if args.started_at:
        recipe += f", {(time.time() - args.started_at) / 60:.0f} minutes end to end on this machine"
    notes.append(f"### How it was made\n\n{recipe}.")
    notes.append(
        "### Limits\n\nTrained and measured on synthetic distortions only (blur, noise, compression, pixelation, "
        "exposure, contrast, quantization, sharpening); authentic camera distortions and aesthetics are not measured. "
        "The views are small native-resolution crops: the score reflects pixel-level quality, not composition."
    )
    write_model_card(args.model, results=results["card_results"], license=args.card_license,
                     source={"kind": "trained", "checkpoint": f"from scratch by {args.card_recipe}"}, notes="\n\n".join(notes))
    print(f"Wrote {os.path.join(args.model, 'README.md')}")


if __name__ == "__main__":
    try:
        sys.exit(main(parse_args()))
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
