"""The `uniqa` command line: `uniqa convert ...`, `uniqa score ...`.

Each subcommand lives in its own module of this package (`cli/score.py`, `cli/convert.py`...)
with `add_arguments(parser)` and `run(args) -> int`: it parses, builds the library's options and
calls the library with keywords. `main` is the one place where a package error (`UniQAError`,
see `modeling_uniqa.errors`) becomes one line on stderr and exit code 2.
Under `accelerate launch`, use the module form: `accelerate launch -m modeling_uniqa.cli score ...`.
"""

import argparse
import importlib
import logging
import sys

from uniqa_app.serve import DESCRIPTION as APP_DESCRIPTION

from ..core.runtime import close_process_group
from ..errors import USER_ERRORS

SUBCOMMANDS = {
    "convert": ("modeling_uniqa.cli.convert", "Turn an OpenAI-format checkpoint (e.g. UniQA_weight.pt) or HF CLIP into a UniQA model directory."),
    "score": ("modeling_uniqa.cli.score", "Score image files, folders, globs or path lists with a UniQA model."),
    "retrieve": ("modeling_uniqa.cli.retrieve", "Rank indexed images by text queries: a contact sheet PNG and an HTML page."),
    "explain": ("modeling_uniqa.cli.explain", "Grad-CAM heat maps of where the model looks for a prompt or its score."),
    "heads": ("modeling_uniqa.cli.heads", "Add, list or remove named heads (trained or zero-shot prompts) on one backbone."),
    "push": ("modeling_uniqa.cli.push", "Upload a UniQA model or adapter directory (weights, remote code, card) to the Hub."),
    "app": ("modeling_uniqa.cli.app", APP_DESCRIPTION),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that subcommand's module is imported (one broken or
    slow-to-import subcommand does not hold up the others)."""
    parser = argparse.ArgumentParser(prog="uniqa", description="UniQA image quality and aesthetics tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        if command in (None, name):
            module = importlib.import_module(module_name)
            module.add_arguments(subparser)
            subparser.set_defaults(run=module.run)
    return parser



def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as error:  # a user error, from any subcommand: one line, exit 2
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        close_process_group()


__all__ = ["SUBCOMMANDS", "build_parser", "close_process_group", "main"]
