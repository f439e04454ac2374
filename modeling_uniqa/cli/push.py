"""`uniqa push`: the command line of `modeling_uniqa.hub.push`. Once the directory passed the
checks, the command points its model card's usage snippet at the repo id (`update_card`)."""

import argparse
import logging

from ..errors import USER_ERRORS, PushError
from ..hub.push import check_push_directory, push_to_hub

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="A UniQA model or adapter directory (with README.md card).")
    parser.add_argument("--repo-id", required=True, help="Hub model repo, ORG/NAME (created if missing).")
    parser.add_argument("--private", action="store_true", help="Create the repo private.")
    parser.add_argument("--revision", help="Branch to push to (created if missing; default: main).")
    parser.add_argument("--commit-message", help="Commit message.")
    parser.add_argument("--allow-secret-names", action="store_true", help="Upload files whose names look like secrets "
                        "(secrets.env, credentials.json, id_rsa, ...), refused by default; a file holding a Hub token is "
                        "always refused.")
    parser.add_argument("--space", metavar="ORG/NAME", help="Also create or update this Gradio Space serving the pushed "
                        "model (`uniqa app`: app.py, requirements.txt, README.md); a model directory only.")


def update_card(directory: str, repo_id: str) -> None:
    """`before_upload` of `push_to_hub`: the directory's card, rewritten so its usage snippet
    loads `repo_id` (results, notes and hand-added metadata kept)."""
    from model_cards import write_model_card  # imported when needed: `uniqa --help` stays quick

    write_model_card(directory, repo_id=repo_id)


def run(args, api=None) -> int:
    try:
        if getattr(args, "space", None):  # refused before the model is pushed
            _check_space_arguments(args)
        commit = push_to_hub(
            args.directory,
            args.repo_id,
            api=api,
            private=args.private or None,
            revision=args.revision,
            commit_message=args.commit_message,
            allow_secret_names=getattr(args, "allow_secret_names", False),
            before_upload=update_card,
        )
    except (*USER_ERRORS, FileNotFoundError, ValueError) as error:  # a local problem, found before anything is sent
        logger.error("%s", error)
        return 2
    except Exception as error:  # the checks passed: the Hub or the network failed (auth, offline, quota, ...)
        logger.error("Uploading %s to %s failed: %s: %s", args.directory, args.repo_id, type(error).__name__, error)
        return 1
    print(f"Pushed {args.directory} to {getattr(commit, 'commit_url', None) or args.repo_id}")
    if getattr(args, "space", None):  # `uniqa push --space`: the Space beside the model
        return _push_space(args, api)
    return 0


def _check_space_arguments(args) -> None:
    space = args.space
    if space.count("/") != 1 or not all(space.split("/")):
        raise PushError(f"--space must be ORG/NAME, got {space!r}.")
    if check_push_directory(args.directory) != "model":
        raise PushError(f"--space: {args.directory} is an adapter; a Space serves a full model directory.")


def _push_space(args, api=None) -> int:
    from ..app.space import push_space

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        commit = push_space(args.space, args.repo_id, api, private=args.private or None)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    except Exception as error:  # the Hub or the network
        logger.error("Uploading the Space %s failed: %s: %s", args.space, type(error).__name__, error)
        return 1
    print(f"Pushed the Space of {args.repo_id} to {getattr(commit, 'commit_url', None) or args.space}")
    return 0

