"""`python -m model_cards DIR [--results results.json] ...`: write or update a card by hand.

`--results` is a JSON list of result dicts (see `model_cards.card.results_to_eval_results`),
`--training` a JSON object of recipe settings. Exit code 2 on bad input, with the problem named.
"""

import argparse
import sys

from modeling_uniqa.core.json_files import read_json

from .card import ModelCardError, write_model_card


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m model_cards", description="Write or update a UniQA model card (README.md).")
    parser.add_argument("directory", help="A UniQA model or adapter directory.")
    parser.add_argument("--results", help="JSON file: a list of {dataset, srcc, plcc, split, protocol, ...}; merged into the card.")
    parser.add_argument("--training", help="JSON file: the training recipe as {setting: value}.")
    parser.add_argument("--license", help="SPDX id of the weights' licence ('other': the authors' non-commercial one).")
    parser.add_argument("--base-model", help="Hub id of the base model.")
    parser.add_argument("--repo-id", help="Hub repo the directory is pushed to (for the usage snippet).")
    return parser.parse_args(argv)


def _json_of_type(path, expected_type, what):
    """The JSON value of `path` (the package's reader: its error names the file), checked to be an `expected_type`."""
    value = read_json(path, ModelCardError)
    if not isinstance(value, expected_type):
        raise ModelCardError(f"{path}: {what} must be a JSON {expected_type.__name__}, got {type(value).__name__}.")
    return value


def main(args) -> int:
    try:
        card = write_model_card(
            args.directory,
            results=_json_of_type(args.results, list, "results") if args.results else None,
            training=_json_of_type(args.training, dict, "the training recipe") if args.training else None,
            license=args.license,
            base_model=args.base_model,
            repo_id=args.repo_id,
        )
    except (ModelCardError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {args.directory}/README.md ({len(card.data.eval_results or [])} model-index entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
