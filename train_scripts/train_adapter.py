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

import logging
from dataclasses import dataclass, field
from typing import Literal

from modeling_uniqa.core.output_lock import output_lock
from train_scripts.common.dataset_options import RatingDataArguments
from train_scripts.common.finetune import (  # noqa: F401  (the names tests and callers use from here)
    DEFAULT_EPOCHS,
    EPOCH_PRESETS,
    LORA_DIR,
    LORA_HEAD_FILE,
    MODES,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    FinetuneCheckpointing,
    FinetuneConfig,
    FinetuneOptions,
    RatingSplits,
    epoch_batches,
    finetune,
    finetune_config,
    load_lora,
    load_model,
    load_splits,
    write_trained_card,
)
from train_scripts.common.flags import ArgumentParser
from train_scripts.common.script import LOG_FORMAT, TRAINING_ERRORS, run_script

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainAdapterArguments(FinetuneCheckpointing, FinetuneOptions, RatingDataArguments):
    """The command line of `train_adapter.py`: the model, the split and the output folder, then the
    shared groups (dataset, fine-tuning, checkpoints)."""

    model: str = field(metadata={"help": "UniQA model folder to start from (pre-trained or zero-shot)."})
    output_dir: str = field(metadata={"help": "The trained model folder to write."})
    split_index: int = field(default=0, metadata={"help": "Which random split."})
    few_label: int | None = field(default=None, metadata={"help": "Train on this many labelled images only."})
    repeat: int = field(default=0, metadata={"help": "Which few-label draw."})
    split_scheme: Literal["official", "random"] | None = field(default=None, metadata={
        "help": "Default: the paper's (random 80/20 splits of all images for every IQA dataset, KonIQ-10k included; the official "
        "split for AVA, AADB and BAID). official: the dataset's own sets (KonIQ-10k: 7,058 train / 1,000 validation / 2,015 test)."})
    train_on_validation: bool | None = field(default=None, metadata={
        "help": "Train on the official train + validation parts (default: the paper's, BAID only).",
        "off_help": "Train on the official train part alone and select the epoch on its validation part."})

    def __post_init__(self):
        named = self.dataset_options.get("split_scheme")
        if self.split_scheme and named and named != self.split_scheme:
            raise ValueError(f"--split_scheme {self.split_scheme} and --dataset_option split_scheme={named} disagree: give one.")


def parse_args(argv=None) -> TrainAdapterArguments:
    return ArgumentParser(TrainAdapterArguments, description=__doc__.split("\n\n")[0]).parse(argv)


def main(args: TrainAdapterArguments) -> dict:
    logging.basicConfig(format=LOG_FORMAT, level=logging.WARNING)
    logger.setLevel(logging.INFO)
    logging.getLogger("train_scripts").setLevel(logging.INFO)  # fine-tuning's and the shared pieces' notes (resume, pruning)
    with output_lock(args.output_dir, "--output_dir"):  # refused before the data is built when in use
        return _train(args)


def _train(args: TrainAdapterArguments) -> dict:
    config = finetune_config(args, args.dataset, checkpointing=args)
    options = args.dataset_options | ({"split_scheme": args.split_scheme} if args.split_scheme else {})
    splits = load_splits(args.dataset, args.data_dir, args.split_index, args.few_label, args.repeat, args.split_seed, args.cache_dir, options,
                         train_on_validation=args.train_on_validation)
    results = finetune(args.model, splits, args.output_dir, config)
    logger.info("Test SRCC %.4f, PLCC %.4f (%s). Model written to %s.", results["srcc"], results["plcc"], results["selection"], args.output_dir)
    return results


if __name__ == "__main__":
    run_script(main, parse_args, TRAINING_ERRORS)
