"""Fine-tune UniQA on a rating dataset: the adapter alone, the whole model, or LoRA (step 4).

    accelerate launch train_scripts/train_adapter.py --model uniqa-base --dataset koniq10k \
        --data_dir /data/koniq10k --split_index 0 --output_dir uniqa-koniq

Modes (method.md sections 3-4):

- `adapter` (default): the CLIP backbone is frozen; the Multi-Cue adapter and the five level
  scores train (Adam, lr 2e-4). The frozen backbone's embeddings of a bank of augmented views
  (`--bank_crops` random crops x horizontal flip per image) are computed once and every epoch
  draws one view per image from the bank (`--no_feature_bank` crops afresh every epoch instead,
  as the release does, at a backbone forward per image and epoch).
- `full`: the backbone trains too, at `--backbone_learning_rate` (2e-6, the paper's dagger rows).
- `lora`: peft LoRA (rank `--lora_rank`) on the attention projections of the vision tower, plus
  the adapter and level scores. The LoRA weights are saved with peft in `<output_dir>/lora/` and
  merged into the plain UniQA model written to `<output_dir>`.

Recipe defaults (paper and release): MSE on the normalised score (1 = best), batch 8, cosine
annealing of the learning rate to 0 over the epochs (stepped per epoch), epochs per dataset
(`EPOCH_PRESETS`), a random 224 crop of the native-resolution image + horizontal flip, seed 123.
Test scores average the model's test-time views (`random10` by default).

Splits are the paper's by default: a random 80/20 split (`--split_index`, seed `--split_seed`) of
all images for every IQA dataset, KonIQ-10k included (`--split_scheme official` for its
7,058/1,000/2,015 sets), and the official split for AVA, AADB and BAID, where BAID trains on
train + validation (53,937 images) as in the paper (`--no_train_on_validation`: train alone, the
epoch picked on validation). `eval_results.json` and the card say which split was used.

Model selection is honest by default: the last epoch, or the best epoch on a validation part
(`--validation_fraction`, carved from the training split by reference image for synthetic sets;
an official validation split is used when the dataset has one). `--select_on_test` picks the
best epoch on the test split, the release's habit; with `--selection_steps N` it evaluates every
N steps instead (the release's `val_freq` cadence). The results say which rule was used.

The output directory is a UniQA model folder (`AutoModel`, `pipeline("image-quality")`) with the
training dataset's MOS range and direction in its config, a model card, `eval_results.json`
and `test_predictions.csv`; `checkpoint-<step>` folders allow `--resume_from_checkpoint latest`
(a resume with other data or settings, and a new run over an earlier run's output, are refused:
`common/checkpointing.py`); a NaN or infinite loss stops the run, naming the step.
"""

from __future__ import annotations

import argparse
import logging

import data_builders
from modeling_uniqa.core.output_lock import output_lock
from train_scripts.common.finetune import (  # noqa: F401  (the names tests and callers use from here)
    DEFAULT_EPOCHS,
    EPOCH_PRESETS,
    LORA_DIR,
    LORA_HEAD_FILE,
    MODES,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    FinetuneConfig,
    RatingSplits,
    add_training_arguments,
    config_from_args,
    epoch_batches,
    finetune,
    load_lora,
    load_model,
    load_splits,
    write_trained_card,
)
from train_scripts.common.flags import add_flag
from train_scripts.common.script import TRAINING_ERRORS, run_script

logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="UniQA model folder to start from (pre-trained or zero-shot).")
    parser.add_argument("--dataset", required=True, help=f"data_builders name: {', '.join(data_builders.available())}.")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--split_index", type=int, default=0)
    parser.add_argument("--few_label", type=int, default=None, help="Train on this many labelled images only.")
    parser.add_argument("--repeat", type=int, default=0, help="Which few-label draw.")
    parser.add_argument(
        "--split_scheme", choices=("official", "random"), default=None,
        help="Default: the paper's (random 80/20 splits of all images for every IQA dataset, KonIQ-10k included; the official "
        "split for AVA, AADB and BAID). official: the dataset's own sets (KonIQ-10k: 7,058 train / 1,000 validation / 2,015 test).",
    )
    add_flag(parser, "train_on_validation", default=None,
             help="Train on the official train + validation parts (default: the paper's, BAID only).",
             off_help="Train on the official train part alone and select the epoch on its validation part.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resume_from_checkpoint", default=None, help='"latest" or a checkpoint folder.')
    parser.add_argument("--checkpointing_steps", type=int, default=None, help="Also checkpoint every N steps (always at each epoch's end).")
    parser.add_argument("--checkpoints_total_limit", type=int, default=2, help="Keep this many checkpoints (default 2).")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    named = dict(args.dataset_option).get("split_scheme")
    if args.split_scheme and named and named != args.split_scheme:
        parser.error(f"--split_scheme {args.split_scheme} and --dataset_option split_scheme={named} disagree: give one.")
    return args


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO)
    logging.getLogger("train_scripts").setLevel(logging.INFO)  # fine-tuning's and the shared pieces' notes (resume, pruning)
    with output_lock(args.output_dir, "--output_dir"):  # refused before the data is built when in use
        return _train(args)


def _train(args: argparse.Namespace) -> dict:
    config = config_from_args(args, args.dataset)
    options = dict(args.dataset_option) | ({"split_scheme": args.split_scheme} if args.split_scheme else {})
    splits = load_splits(args.dataset, args.data_dir, args.split_index, args.few_label, args.repeat, args.split_seed, args.cache_dir, options,
                         train_on_validation=args.train_on_validation)
    results = finetune(args.model, splits, args.output_dir, config)
    logger.info("Test SRCC %.4f, PLCC %.4f (%s). Model written to %s.", results["srcc"], results["plcc"], results["selection"], args.output_dir)
    return results


if __name__ == "__main__":
    run_script(main, parse_args, TRAINING_ERRORS)
