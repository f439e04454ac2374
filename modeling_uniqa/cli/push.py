"""`uniqa push`: the command line of `modeling_uniqa.hub.push`."""

import argparse
import logging

from ..errors import PushError
from ..hub.push import push_to_hub

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="A UniQA model or adapter directory (with README.md card).")
    parser.add_argument("--repo-id", required=True, help="Hub model repo, ORG/NAME (created if missing).")
    parser.add_argument("--private", action="store_true", help="Create the repo private.")
    parser.add_argument("--revision", help="Branch to push to (created if missing; default: main).")
    parser.add_argument("--commit-message", help="Commit message.")


def run(args, api=None) -> int:
    try:
        commit = push_to_hub(
            args.directory,
            args.repo_id,
            api=api,
            private=args.private or None,
            revision=args.revision,
            commit_message=args.commit_message,
        )
    except (PushError, FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 2
    except Exception as error:  # the checks passed: the Hub or the network failed (auth, offline, quota, ...)
        logger.error("Uploading %s to %s failed: %s: %s", args.directory, args.repo_id, type(error).__name__, error)
        return 1
    print(f"Pushed {args.directory} to {getattr(commit, 'commit_url', None) or args.repo_id}")
    return 0
