"""`uniqa heads`: the command line of `modeling_uniqa.hub.heads`. A folder with a model card
(README.md) gets it updated in the rewritten copy, before the swap: the card lists the heads."""

import argparse
import logging
import os

from ..core.output_lock import output_lock
from ..hub.heads import add_head, list_heads, remove_head

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="heads_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="List a model folder's heads.")
    listing.add_argument("directory", help="A UniQA model folder.")
    adding = actions.add_parser("add", help="Add a trained head (--from) or a zero-shot prompt head (--prompts).")
    adding.add_argument("directory", help="The UniQA model folder to add the head to (rewritten in place).")
    adding.add_argument("--name", required=True, help="The head's name: its key in pipeline results and score columns.")
    source = adding.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source", help="A UniQA model or adapter folder trained on the same backbone.")
    source.add_argument("--prompts", help="Zero-shot: Table II prompt group names or ensembles, comma-separated (e.g. sharpness).")
    source.add_argument(
        "--custom-prompts", nargs=5, action="append", metavar="PROMPT",
        help="Zero-shot: your own five prompts, worst to best (repeat for several groups).",
    )
    adding.add_argument("--head", dest="source_head", help="With --from a multi-head model: which of its heads (default: its default head).")
    adding.add_argument("--tokenizer", help="Tokenizer folder for --prompts (default: the model folder's, else OpenAI's BPE).")
    adding.add_argument("--task", default="quality", choices=("quality", "aesthetics"), help="What a zero-shot head judges.")
    adding.add_argument("--replace", action="store_true", help="Replace a head of the same name.")
    removing = actions.add_parser("remove", help="Remove a named head.")
    removing.add_argument("directory", help="A UniQA model folder.")
    removing.add_argument("--name", required=True, help="The head to remove.")


def update_card(staging: str, model_dir: str) -> None:
    """`before_swap` of `add_head` / `remove_head`: rewrite the staged copy's model card, if the
    folder has one (a folder without a card is left without), naming the folder, not its copy."""
    from model_cards import write_model_card  # imported when needed: `uniqa --help` stays quick

    if os.path.isfile(os.path.join(staging, "README.md")):
        write_model_card(staging, final_dir=model_dir)


def run(args) -> int:
    try:
        if args.heads_command == "list":
            for row in list_heads(args.directory):
                mos = ""
                if row["mos_range"]:
                    mos = f"\tMOS {row['mos_range'][0]:g}-{row['mos_range'][1]:g} ({'higher' if row['mos_higher_is_better'] else 'lower'} is better)"
                dataset = f"\t{row['training_dataset']}" if row["training_dataset"] else ""
                print(f"{row['name']}\t{row['kind']}\t{row['task']}\t{','.join(row['prompt_groups'])}{dataset}{mos}")
        elif args.heads_command == "add":
            prompt_groups = args.prompts if args.prompts is not None else args.custom_prompts
            with output_lock(args.directory, "model folder"):  # one change at a time
                add_head(
                    args.directory, args.name, source=args.source, source_head=args.source_head,
                    prompt_groups=prompt_groups, tokenizer=args.tokenizer, task=args.task, replace=args.replace,
                    before_swap=update_card,
                )
            print(f"Added head {args.name!r} to {args.directory}")
        else:
            with output_lock(args.directory, "model folder"):
                remove_head(args.directory, args.name, before_swap=update_card)
            print(f"Removed head {args.name!r} from {args.directory}")
    except (ValueError, FileNotFoundError, OSError) as error:  # AdapterMismatchError is a ValueError
        logger.error("%s", error)
        return 2
    return 0
