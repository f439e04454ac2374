"""`uniqa convert`: the command line of `modeling_uniqa.hub.convert`; it also writes the new
folder's model card (`model_cards`), which the library function leaves to its caller."""

import argparse
import logging

import torch

from ..hub.convert import card_source, convert

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="OpenAI-format CLIP file (UniQA_weight.pt) or HF CLIP folder.")
    parser.add_argument("--adapter", help="The authors' adapter weights (adapter.fc.*, score_level), e.g. net_best.pth.")
    parser.add_argument("--output", required=True, help="Folder to write the UniQA model to.")
    parser.add_argument(
        "--tokenizer",
        help="Tokenizer folder; it must match the CLIP vocabulary (default: the HF CLIP folder's own if it fits, "
        "else the OpenAI CLIP BPE shipped with this package for OpenAI's 49,408-token vocabulary).",
    )
    parser.add_argument("--prompts", default=None, help="Prompt groups: names (default,sharpness,noise,quality,content) or ensembles (natural, aigc).")
    parser.add_argument("--task", choices=["quality", "aesthetics"], default="quality")
    parser.add_argument("--mos-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="MOS scale of the adapter's training data.")
    parser.add_argument("--dmos", action="store_true", help="The training labels were DMOS (lower = better).")
    parser.add_argument("--training-dataset", help="Name of the adapter's training dataset (for cards and messages).")
    parser.add_argument("--view-policy", default="random10", help="Default test-time views (random10, center, five_crop, ten_crop, resize).")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="dtype of the saved weights.")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Replace an existing model folder at --output whole (default: an existing non-empty folder is refused).",
    )


def run(args) -> int:
    from model_cards import write_model_card  # imported when run: `uniqa --help` stays quick

    config_kwargs = {
        "task": args.task,
        "mos_range": args.mos_range,
        "mos_higher_is_better": not args.dmos,
        "training_dataset": args.training_dataset,
        "view_policy": args.view_policy,
    }
    if args.prompts:
        config_kwargs["prompt_groups"] = args.prompts
    try:
        model = convert(
            args.checkpoint,
            output_dir=args.output,
            adapter=args.adapter,
            tokenizer=args.tokenizer,
            dtype=getattr(torch, args.dtype),
            overwrite=args.overwrite,
            **config_kwargs,
        )
        write_model_card(args.output, source=card_source(args.checkpoint, args.adapter))
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    kind = "fine-tuned" if model.adapter is not None else "zero-shot"
    print(f"Wrote a {kind} UniQA model ({', '.join(model.config.prompt_group_names)} prompts) to {args.output}")
    return 0
