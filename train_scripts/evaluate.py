"""Evaluate UniQA with the paper's protocols and compare with the paper's numbers.

    python train_scripts/evaluate.py --model uniqa-koniq --dataset koniq10k --data_dir /data/koniq10k \
        --protocol single --output_dir eval/koniq

Protocols:

- `single`: score `--model` (a fine-tuned folder) on one split (`--split`, default test) of
  split `--split_index`.
- `cross`: score `--model` on the whole of another dataset (its `full` split).
- `zero_shot`: score `--model`'s pre-trained backbone without the adapter, with one prompt
  group (`--single_prompt`, default `default`) and with a prompt ensemble (`--prompts`, default
  `natural`, `aigc` for AGIQA-3K), on the whole dataset (Table VII), beside the headline: the
  prompts the model itself uses (`model_prompts`, what `uniqa score` and its pipeline give).
- `splits`: fine-tune `--model` (a pre-trained folder) on `--num_splits` random 80/20 splits
  (10 in the paper) with `train_adapter.py`'s code and the same training flags; per-split rows,
  median (the headline), mean and std.
- `few_label`: fine-tune on `--few_label_sizes` (50, 100, 200) training images drawn
  `--repetitions` times (10) from random split `--split_index`, same test set; median per size
  (Table IX), twice: with one prompt group (`--single_prompt`, Table IX's "Ours") and with the
  prompt ensemble (`--prompts`, default `natural`, `aigc` for AGIQA-3K: "Ours*"), each beside its
  own paper row. Headline: the ensemble's median at the first size (the paper's configuration).
  Both training protocols use random splits even where the dataset has an official one
  (`--dataset_option split_scheme=official` overrides).

Every protocol writes `results.json` (`srcc` and `plcc` at the top level, details below),
`results.md` (our numbers beside the paper's) and `scatter.png` (predicted vs. real MOS; needs
matplotlib, the `viz` extra). Training protocols keep each run in `runs/<name>/` and skip runs
that already finished, so an interrupted evaluation resumes where it stopped.

Under `accelerate launch` the training protocols train each run on all processes and the main
process writes the reports; the scoring protocols (single, cross, zero_shot) run in one process.

Scores are the model's forward averaged over its test-time views (`--view_policy`, default the
model's own, `random10`), of images decoded as `uniqa score` decodes them (JPEGs drafted when the
saved processor has `jpeg_draft` and the views downsize): the scores `uniqa score` gives. Correlations are computed between predicted and real MOS; PLCC is raw
(as the release reports) and `--logistic` adds the PLCC after a 4-parameter logistic fit.

From Python, call the `protocol_*` functions with a `DatasetSpec` and `ScoringOptions` (scoring
protocols) or a `train_adapter.FinetuneConfig` (training protocols); `run_protocol` is the one
place that maps the command line flags onto them. They return the results without writing
reports (`main` writes those).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import data_builders
from modeling_uniqa.configuration_uniqa import view_count
from modeling_uniqa.core.atomic_files import atomic_write_text
from modeling_uniqa.core.model_folder import load_model
from modeling_uniqa.core.output_lock import output_lock
from train_scripts.common import paper_results
from train_scripts.common.checkpointing import list_checkpoints, remove_checkpoints
from train_scripts.common.dataset_options import RatingDataArguments
from train_scripts.common.errors import DataError
from train_scripts.common.finetune import (
    RESULTS_FILE,
    FinetuneConfig,
    FinetuneOptions,
    describe_split,
    finetune,
    finetune_config,
    load_splits,
    paper_split_options,
)
from train_scripts.common.flags import ArgumentParser
from train_scripts.common.image_check import DEFAULT_MAX_BAD_FRACTION, SkippedImages, drop_unreadable
from train_scripts.common.image_views import EvalViews, ImageViewDataset, image_sources
from train_scripts.common.metrics import MIN_ITEMS, compute_metrics
from train_scripts.common.script import LOG_FORMAT, TRAINING_ERRORS, run_script

logger = logging.getLogger(__name__)

PROTOCOLS = ("single", "splits", "few_label", "zero_shot", "cross")


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, processor, data, view_policy: str | None = None, batch_size: int = 64, num_workers: int = 0, device: str | torch.device = "cpu") -> np.ndarray:
    """Normalised scores (1 = best) of every image of `data` (a `datasets.Dataset`): the model's
    forward averaged over the test-time views. `batch_size` counts views per forward."""
    view_policy = view_policy or model.config.view_policy
    dataset = ImageViewDataset(image_sources(data), processor, EvalViews(processor, view_policy, model.config.view_seed))
    loader = DataLoader(dataset, batch_size=max(1, batch_size // view_count(view_policy)), num_workers=num_workers)
    model.to(device)
    scores = np.empty(len(dataset), dtype=np.float64)
    for indices, views in tqdm(loader, desc="Scoring", unit="batch"):
        scores[indices.numpy()] = model(pixel_values=views.to(device)).scores.float().cpu().numpy()
    return scores


def score_metrics(scores, data, metadata: dict, logistic: bool = False) -> tuple:
    """`(metrics, predicted MOS, MOS)`: predictions mapped onto `data`'s MOS scale first."""
    mos = np.asarray(data["mos"], dtype=np.float64)
    predicted_mos = data_builders.score_to_mos(np.asarray(scores), metadata["mos_range"], metadata.get("higher_is_better", True))
    return compute_metrics(predicted_mos, mos, logistic=logistic), predicted_mos, mos


def summarise(rows: list) -> dict:
    """Median, mean and (sample) std of the SRCC and PLCC of several runs. A run whose metric is
    undefined (NaN: constant predictions) is left out of them, counted in `undefined_runs` and
    warned about: sorting NaN among numbers would make the median any of them."""
    summary = {}
    for metric in ("srcc", "plcc"):
        values = [row[metric] for row in rows if math.isfinite(row[metric])]
        undefined = len(rows) - len(values)
        if undefined:
            logger.warning("%d of %d runs have an undefined %s (constant predictions): left out of its median, mean and std.",
                           undefined, len(rows), metric.upper())
        summary[metric] = {
            "median": statistics.median(values) if values else math.nan,
            "mean": statistics.fmean(values) if values else math.nan,
            "std": statistics.stdev(values) if len(values) > 1 else (0.0 if values else math.nan),
            "undefined_runs": undefined,
        }
    return summary


# ------------------------------------------------------------------------------------------------
# Protocols
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """The rating dataset a protocol evaluates on, as `data_builders.load` takes it."""

    name: str
    data_dir: str
    options: dict = field(default_factory=dict)  # builder options (`--dataset_option`)
    cache_dir: str | None = None
    split_seed: int = 123  # seed of the random 80/20 splits and few-label draws


@dataclass(frozen=True)
class ScoringOptions:
    """How a model is scored: test-time views, batching, device, metrics and prompt tokenizer."""

    view_policy: str | None = None  # None: the model's own
    eval_batch_size: int = 64  # views per forward
    num_workers: int = 0
    device: str = "cpu"
    logistic: bool = False  # also the PLCC after a 4-parameter logistic fit
    tokenizer: str | None = None  # for `prompts`; None: the model folder's if it fits, else OpenAI's BPE
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION  # unreadable images skipped, up to this share of the data


def load_full(name: str, data_dir: str, cache_dir: str | None, options: dict):
    """The whole dataset (one `full` split) and its metadata."""
    dataset = data_builders.load(name, data_dir, cache_dir=cache_dir, **{**options, "split_scheme": "full"})
    return dataset["full"], data_builders.get_metadata(dataset)


def evaluate_model(model_path: str, data, metadata: dict, scoring: ScoringOptions, use_adapter: bool | None = None, prompts: str | None = None) -> dict:
    """Score the model in `model_path` on `data`: metrics plus predictions for the plot."""
    model, processor, _ = load_model(model_path, use_adapter=use_adapter, prompts=prompts, tokenizer_dir=scoring.tokenizer)
    skipped = SkippedImages()
    data = drop_unreadable(data, "evaluated", processor, skipped, scoring.max_bad_fraction, scoring.num_workers)
    if len(data) < MIN_ITEMS:  # before scoring: correlations of fewer are undefined
        raise DataError(
            f"{metadata.get('dataset') or 'The dataset'} ({', '.join(metadata.get('label_files') or []) or metadata.get('image_root')}): "
            f"{len(data)} readable image(s) to evaluate, its correlations need at least {MIN_ITEMS}."
        )
    scores = predict(model, processor, data, scoring.view_policy, scoring.eval_batch_size, scoring.num_workers, scoring.device)
    metrics, predicted_mos, mos = score_metrics(scores, data, metadata, scoring.logistic)
    return {**metrics, "num_images": len(data), "skipped_images": skipped.as_results(), "prompt_groups": model.config.prompt_group_names,
            "view_policy": scoring.view_policy or model.config.view_policy, "training_dataset": model.config.training_dataset,
            "_plot": (predicted_mos, mos)}


def protocol_single(model_path: str, dataset: DatasetSpec, scoring: ScoringOptions, split: str = "test", split_index: int = 0, prompts: str | None = None) -> dict:
    """Score a fine-tuned model on one split (`split`) of random split `split_index`."""
    options = paper_split_options(dataset.name, dataset.options, dataset.split_seed)
    loaded = data_builders.load(dataset.name, dataset.data_dir, cache_dir=dataset.cache_dir, split_index=split_index, **options)
    if split not in loaded:
        raise ValueError(f"--split {split}: {dataset.name} has the splits {list(loaded)}.")
    metadata = data_builders.get_metadata(loaded)
    result = evaluate_model(model_path, loaded[split], metadata, scoring, prompts=prompts)
    return {**result, "split": split, "split_index": split_index, "split_description": f"the {split} part of {describe_split(metadata.get('split'))}"}


def protocol_cross(model_path: str, dataset: DatasetSpec, scoring: ScoringOptions, prompts: str | None = None) -> dict:
    """Score a model fine-tuned elsewhere on the whole of `dataset`."""
    data, metadata = load_full(dataset.name, dataset.data_dir, dataset.cache_dir, dataset.options)
    result = evaluate_model(model_path, data, metadata, scoring, prompts=prompts)
    return {**result, "trained_on": result.pop("training_dataset"), "tested_on": dataset.name}


def paper_ensemble(dataset_name: str) -> str:
    """The prompt ensemble the paper uses on a dataset (Table II): `aigc` for AGIQA-3K, else `natural`."""
    return "aigc" if dataset_name == "agiqa3k" else "natural"


def protocol_zero_shot(model_path: str, dataset: DatasetSpec, scoring: ScoringOptions, single_prompt: str = "default", prompts: str | None = None) -> dict:
    """Score the backbone without its adapter, with one prompt group and with an ensemble
    (`prompts`, default `natural`, `aigc` for AGIQA-3K), on the whole dataset."""
    data, metadata = load_full(dataset.name, dataset.data_dir, dataset.cache_dir, dataset.options)
    ensemble = prompts or paper_ensemble(dataset.name)
    own = evaluate_model(model_path, data, metadata, scoring, use_adapter=False)  # the headline: what the model scores
    single = evaluate_model(model_path, data, metadata, scoring, use_adapter=False, prompts=single_prompt)
    combined = evaluate_model(model_path, data, metadata, scoring, use_adapter=False, prompts=ensemble)
    return {"srcc": own["srcc"], "plcc": own["plcc"], "headline": "model_prompts", "model_prompts": own,
            "single_prompt": single, "ensemble": combined, "_plot": own["_plot"]}


def run_training(
    model_path: str,
    dataset: DatasetSpec,
    config: FinetuneConfig,
    run_dir: str,
    split_index: int,
    few_label: int | None = None,
    repetition: int = 0,
    logistic: bool = False,
    keep_run_model: bool = False,
) -> dict:
    """One fine-tuning run of a training protocol, in `run_dir`; reused when finished.

    `config` is used as given except that the run resumes from its latest checkpoint (an
    interrupted run goes on from its last epoch). `keep_run_model`: keep the trained weights.
    """
    results_file = os.path.join(run_dir, RESULTS_FILE)
    predictions_file = os.path.join(run_dir, "predictions.json")
    if os.path.isfile(results_file) and os.path.isfile(predictions_file):
        logger.info("Run %s finished earlier: reusing %s.", os.path.basename(run_dir), results_file)
        with open(results_file, encoding="utf-8") as handle, open(predictions_file, encoding="utf-8") as plot:
            return json.load(handle) | json.load(plot)
    # Under `accelerate launch` every process runs this: the run folder is changed by the main
    # process alone, the others waiting (else one would delete what another has just written).
    # The same state as `finetune`'s Accelerator: CPU processes when ACCELERATE_USE_CPU says so.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if state.is_main_process and os.path.isdir(run_dir) and not list_checkpoints(run_dir):
        # Unfinished with nothing to resume: this protocol owns the folder, train it afresh
        # (finetune refuses a new run over an earlier run's files).
        logger.info("Run %s has no checkpoint to resume: training it from the start.", os.path.basename(run_dir))
        shutil.rmtree(run_dir)
    options = {"split_scheme": "random", **dataset.options}  # the paper's random splits, even where an official one exists
    splits = load_splits(dataset.name, dataset.data_dir, split_index, few_label, repetition, dataset.split_seed, dataset.cache_dir, options)
    if state.is_main_process:
        data_builders.write_split({"train": splits.train["image_name"], "test": splits.test["image_name"]}, os.path.join(run_dir, "split.json"),
                                  metadata={"split_index": split_index, "few_label": few_label, "repetition": repetition})
    state.wait_for_everyone()
    results = finetune(model_path, splits, run_dir, replace(config, resume_from_checkpoint="latest"))
    metadata = splits.metadata
    predicted_mos = data_builders.score_to_mos(np.asarray(results["predictions"]), metadata["mos_range"], metadata.get("higher_is_better", True))
    plot = {"predicted_mos": np.asarray(predicted_mos).tolist(), "mos": results["mos"]}
    if logistic:
        results["plcc_logistic"] = compute_metrics(predicted_mos, results["mos"], logistic=True)["plcc_logistic"]
    if state.is_main_process:
        atomic_write_text(predictions_file, json.dumps(plot))  # last: its presence marks the run finished
        remove_checkpoints(run_dir)  # the run is complete: its resume checkpoints are no longer needed
        if not keep_run_model:
            weights = os.path.join(run_dir, "model.safetensors")
            if os.path.isfile(weights):
                os.remove(weights)
            shutil.rmtree(os.path.join(run_dir, "lora"), ignore_errors=True)
    state.wait_for_everyone()
    return results | plot


def _row(run: dict, **keys) -> dict:
    row = {**keys, "srcc": run["srcc"], "plcc": run["plcc"], "krcc": run["krcc"], "rmse": run["rmse"],
           "num_train": run["num_train"], "num_test": run["num_test"], "selection": run["selection"]}
    if "plcc_logistic" in run:
        row["plcc_logistic"] = run["plcc_logistic"]
    return row


def _splits_used(runs: list) -> str:
    """Which splits a training protocol's runs used, in words (from their results)."""
    first = runs[0]
    described = first.get("split_description") or describe_split(first.get("split"), first.get("train_parts", ["train"]))
    return described if len(runs) == 1 else f"{len(runs)} runs, the first on {described}"


def _median_run(runs: list) -> dict:
    """The run whose SRCC is the median (lower median for an even count): the one to plot."""
    order = sorted((i for i in range(len(runs)) if math.isfinite(runs[i]["srcc"])), key=lambda i: runs[i]["srcc"])
    return runs[order[(len(order) - 1) // 2]] if order else runs[0]


def protocol_splits(
    model_path: str, dataset: DatasetSpec, config: FinetuneConfig, output_dir: str, num_splits: int = 10,
    logistic: bool = False, keep_run_models: bool = False,
) -> dict:
    """Fine-tune on `num_splits` random 80/20 splits (runs in `<output_dir>/runs/split_<k>`);
    headline: the median over the splits."""
    runs = [run_training(model_path, dataset, config, os.path.join(output_dir, "runs", f"split_{k}"), k, logistic=logistic, keep_run_model=keep_run_models)
            for k in range(num_splits)]
    rows = [_row(run, split_index=k) for k, run in enumerate(runs)]
    summary = summarise(rows)
    plotted = _median_run(runs)
    return {"srcc": summary["srcc"]["median"], "plcc": summary["plcc"]["median"], "summary": summary, "runs": rows,
            "mode": config.mode, "selection": runs[0]["selection"], "split_description": _splits_used(runs),
            "_plot": (plotted["predicted_mos"], plotted["mos"])}


# The two prompt configurations of Table IX: "Ours" (one prompt group) and "Ours*" (the ensemble).
FEW_LABEL_ROWS = ("single", "ensemble")


def protocol_few_label(
    model_path: str, dataset: DatasetSpec, config: FinetuneConfig, output_dir: str, sizes: list, repetitions: int = 10,
    split_index: int = 0, logistic: bool = False, keep_run_models: bool = False, single_prompt: str = "default",
) -> dict:
    """Fine-tune on `sizes` training images drawn `repetitions` times from random split
    `split_index`, once with one prompt group (`single_prompt`: Table IX's "Ours") and once with
    the prompt ensemble (`config.prompts`, default the paper's for the dataset: "Ours*"); runs in
    `<output_dir>/runs/<single|ensemble>/few<size>_rep<r>`. Median per size and configuration;
    headline: the ensemble's median at the first size (the paper's configuration)."""
    configs = {"single": replace(config, prompts=single_prompt), "ensemble": replace(config, prompts=config.prompts or paper_ensemble(dataset.name))}
    by_row, rows, all_runs, plotted = {}, [], [], None
    for label in FEW_LABEL_ROWS:
        by_size = {}
        for size in sizes:
            runs = [run_training(model_path, dataset, configs[label], os.path.join(output_dir, "runs", label, f"few{size}_rep{r}"), split_index,
                                 few_label=size, repetition=r, logistic=logistic, keep_run_model=keep_run_models) for r in range(repetitions)]
            size_rows = [_row(run, prompts=label, prompt_groups=configs[label].prompts, few_label=size, repetition=r) for r, run in enumerate(runs)]
            rows += size_rows
            all_runs += runs
            by_size[str(size)] = summarise(size_rows)
            if label == "ensemble" and plotted is None:
                plotted = _median_run(runs)
        by_row[label] = {"prompt_groups": configs[label].prompts, "by_size": by_size}
    first = by_row["ensemble"]["by_size"][str(sizes[0])]
    return {"srcc": first["srcc"]["median"], "plcc": first["plcc"]["median"],
            "headline": f"median of the {sizes[0]}-label runs with the prompt ensemble ({configs['ensemble'].prompts}; Table IX's Ours*)",
            "rows": by_row, "by_size": by_row["ensemble"]["by_size"], "runs": rows, "mode": config.mode, "selection": rows[0]["selection"],
            "split_description": _splits_used(all_runs),
            "_plot": (plotted["predicted_mos"], plotted["mos"])}


# ------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown_table(protocol: str, paper_key: str, results: dict) -> str:
    """Our numbers beside the paper's, laid out like the paper's table for this protocol."""
    table = paper_results.TABLE_OF.get(paper_key)
    lines = [f"# UniQA on {paper_key}: protocol `{protocol}`", ""]
    if table is None and protocol in ("single", "splits", "cross"):
        lines += [f"The paper reports no fine-tuning result for {paper_key!r} (choose a row with --paper_key).", ""]
        table = "—"
    if protocol in ("single", "splits", "cross"):
        adapter, full = paper_results.ADAPTER.get(paper_key), paper_results.FULL.get(paper_key)
        ours = f"median of {len(results['runs'])} splits" if protocol == "splits" else protocol
        lines += [f"Paper: {table} (median of 10 random splits).", "", "| method | SRCC | PLCC |", "|---|---|---|",
                  f"| UniQA, paper (adapter) | {_fmt(adapter and adapter[0])} | {_fmt(adapter and adapter[1])} |",
                  f"| UniQA, paper (backbone unfrozen) | {_fmt(full and full[0])} | {_fmt(full and full[1])} |",
                  f"| ours ({ours}) | {_fmt(results['srcc'])} | {_fmt(results['plcc'])} |"]
        if protocol == "splits":
            summary = results["summary"]
            lines += ["", f"Mean ± std over splits: SRCC {summary['srcc']['mean']:.3f} ± {summary['srcc']['std']:.3f}, "
                          f"PLCC {summary['plcc']['mean']:.3f} ± {summary['plcc']['std']:.3f}. Model selection: {results['selection']}."]
            undefined = summary["srcc"]["undefined_runs"]
            if undefined:
                lines.append(f"{undefined} of {len(results['runs'])} splits predicted a constant (undefined correlations): left out of these figures.")
        if protocol == "cross":
            lines += ["", f"Trained on {results.get('trained_on')}, tested on all of {results.get('tested_on')}; the paper rows are in-dataset results, for scale only."]
    elif protocol == "zero_shot":
        paper = paper_results.ZERO_SHOT_SRCC.get(paper_key, (None, None))
        lines += ["Paper: Table VII (zero-shot SRCC). Headline: the model's own prompts (what it scores with).", "",
                  "| prompts | paper SRCC | ours SRCC | ours PLCC |", "|---|---|---|---|",
                  f"| **the model's own ({', '.join(results['model_prompts']['prompt_groups'])})** | — | {_fmt(results['model_prompts']['srcc'])} | {_fmt(results['model_prompts']['plcc'])} |",
                  f"| single ({', '.join(results['single_prompt']['prompt_groups'])}) | {_fmt(paper[0])} | {_fmt(results['single_prompt']['srcc'])} | {_fmt(results['single_prompt']['plcc'])} |",
                  f"| ensemble ({', '.join(results['ensemble']['prompt_groups'])}) | {_fmt(paper[1])} | {_fmt(results['ensemble']['srcc'])} | {_fmt(results['ensemble']['plcc'])} |"]
    elif protocol == "few_label":
        papers = {"single": ("Ours", paper_results.FEW_LABEL_SINGLE_SRCC.get(paper_key, {})),
                  "ensemble": ("Ours*", paper_results.FEW_LABEL_SRCC.get(paper_key, {}))}
        lines += ["Paper: Table IX (few-label SRCC, median of 10 repetitions): Ours (one prompt group) and Ours* (prompt ensemble).",
                  f"Headline: {results['headline']}.", "",
                  "| prompts | paper row | training images | paper SRCC | ours SRCC (median) | ours PLCC (median) |", "|---|---|---|---|---|---|"]
        for label, row in results["rows"].items():
            name, paper = papers[label]
            for size, summary in row["by_size"].items():
                lines.append(f"| {label} ({row['prompt_groups']}) | {name} | {size} | {_fmt(paper.get(int(size)))} | "
                             f"{_fmt(summary['srcc']['median'])} | {_fmt(summary['plcc']['median'])} |")
    if results.get("split_description"):
        lines += ["", f"Split: {results['split_description']}."]
    if results.get("selection") and protocol != "splits":
        lines.append(f"Model selection: {results['selection']}.")
    return "\n".join(lines) + "\n"


def scatter_plot(predicted_mos, mos, title: str, path: str) -> str | None:
    """Predicted vs. real MOS as a PNG; `None` (with a warning) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install '.[viz]'): no scatter plot written.")
        return None
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(mos, predicted_mos, s=8, alpha=0.6)
    axes.set_xlabel("MOS")
    axes.set_ylabel("predicted MOS")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def _sizes(value: str) -> list:
    try:
        sizes = [int(item) for item in value.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from error
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {value!r}")
    return sizes


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(kw_only=True)
class EvaluateArguments(FinetuneOptions, RatingDataArguments):
    """The command line of `evaluate.py`: the model, the protocol and its settings, then the shared
    groups (dataset; fine-tuning, for the splits and few_label protocols)."""

    model: str = field(metadata={"help": "A fine-tuned UniQA folder (single, cross) or a pre-trained one (splits, few_label, zero_shot)."})
    protocol: str = field(default="single", metadata={"choices": PROTOCOLS, "help": "The evaluation protocol."})
    output_dir: str = field(metadata={"help": "Folder of the reports (results.json, results.md, scatter.png)."})
    split_index: int = field(default=0, metadata={"help": "single/few_label: which random split."})
    split: str = field(default="test", metadata={"help": "single: which split to score."})
    num_splits: int = field(default=10, metadata={"help": "splits: how many random splits."})
    few_label_sizes: list[int] = field(default_factory=lambda: [50, 100, 200], metadata={"type": _sizes, "help": "few_label: comma-separated sizes."})
    repetitions: int = field(default=10, metadata={"help": "few_label: draws per size."})
    single_prompt: str = field(default="default", metadata={"help": "zero_shot, few_label: the single prompt group (the paper's: default)."})
    logistic: bool = field(default=False, metadata={"help": "Also report PLCC after the 4-parameter logistic fit."})
    paper_key: str | None = field(default=None, metadata={"help": "Which paper row to compare with (default: --dataset; e.g. uwiqa for folder_csv data)."})
    device: str = field(default_factory=_default_device, metadata={"help": "Scoring device."})
    keep_run_models: bool = field(default=False, metadata={"help": "splits/few_label: keep each run's trained weights."})

    def __post_init__(self):
        if self.num_splits < 1 or self.repetitions < 1:
            raise ValueError("--num_splits and --repetitions must be >= 1")


def parse_args(argv=None) -> EvaluateArguments:
    return ArgumentParser(EvaluateArguments, description=__doc__.split("\n\n")[0]).parse(argv)


def run_protocol(args: EvaluateArguments) -> dict:
    """Script glue: the flags mapped once onto the protocol function's explicit parameters."""
    dataset = DatasetSpec(args.dataset, args.data_dir, args.dataset_options, args.cache_dir, args.split_seed)
    if args.protocol in ("splits", "few_label"):
        config = finetune_config(args, args.dataset)
        runs = {"logistic": args.logistic, "keep_run_models": args.keep_run_models}
        if args.protocol == "splits":
            return protocol_splits(args.model, dataset, config, args.output_dir, args.num_splits, **runs)
        return protocol_few_label(args.model, dataset, config, args.output_dir, args.few_label_sizes, args.repetitions, args.split_index,
                                  single_prompt=args.single_prompt, **runs)
    scoring = ScoringOptions(args.view_policy, args.eval_batch_size, args.num_workers, args.device, args.logistic, args.tokenizer, args.max_bad_fraction)
    if args.protocol == "single":
        return protocol_single(args.model, dataset, scoring, args.split, args.split_index, prompts=args.prompts)
    if args.protocol == "cross":
        return protocol_cross(args.model, dataset, scoring, prompts=args.prompts)
    return protocol_zero_shot(args.model, dataset, scoring, args.single_prompt, prompts=args.prompts)


def main(args: EvaluateArguments) -> dict:
    logging.basicConfig(format=LOG_FORMAT, level=logging.WARNING)
    logger.setLevel(logging.INFO)
    logging.getLogger("train_scripts").setLevel(logging.INFO)  # fine-tuning's and the shared pieces' notes (resume, pruning)
    with output_lock(args.output_dir, "--output_dir"):  # one run at a time into a folder
        return _evaluate(args)


def _evaluate(args: EvaluateArguments) -> dict:
    os.makedirs(args.output_dir, exist_ok=True)
    results = run_protocol(args)
    if int(os.environ.get("RANK", "0")) != 0:  # under `accelerate launch` the main process writes the reports
        return results
    plot = results.pop("_plot")
    for part in ("model_prompts", "single_prompt", "ensemble"):
        results.get(part, {}).pop("_plot", None)
    paper_key = args.paper_key or args.dataset
    title = f"{args.dataset} ({args.protocol}): SRCC {results['srcc']:.3f}, PLCC {results['plcc']:.3f}"
    if args.protocol == "zero_shot":  # the headline's prompts, and the others beside it
        title = (f"{args.dataset} (zero-shot, model's prompts {'+'.join(results['model_prompts']['prompt_groups'])}): SRCC {results['srcc']:.3f}, "
                 f"PLCC {results['plcc']:.3f}; ensemble SRCC {results['ensemble']['srcc']:.3f}")
    scatter = scatter_plot(plot[0], plot[1], title, os.path.join(args.output_dir, "scatter.png"))
    results = {"srcc": results["srcc"], "plcc": results["plcc"], "protocol": args.protocol, "dataset": args.dataset,
               "model": os.path.abspath(args.model), "scatter": scatter and os.path.basename(scatter), **results}
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown_table(args.protocol, paper_key, results))
    logger.info("%s: SRCC %.4f, PLCC %.4f. Written to %s.", args.protocol, results["srcc"], results["plcc"], args.output_dir)
    return results


if __name__ == "__main__":
    run_script(main, parse_args, TRAINING_ERRORS)
