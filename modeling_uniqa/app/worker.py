"""The model worker of `uniqa app`: loads the model and answers the page process's requests.

    python -m modeling_uniqa.app.worker --address 127.0.0.1:PORT --model FOLDER [--batch-size 16]

Started by the page process (`uniqa_app.remote.RemoteApp`, which documents the protocol), with
the connection's key in the environment (`UNIQA_APP_AUTHKEY`). It connects, builds a `QualityApp`
(a broken folder is refused before anything loads), says `("ready", info)` or `("failed", message)`,
then answers requests until the connection closes: then it exits, so no worker outlives its page.
"""

import argparse
import contextlib
import os
import sys
import traceback
from multiprocessing.connection import Client

from uniqa_app.remote import AUTHKEY_ENV, METHODS, one_line

from ..errors import USER_ERRORS
from .gradio_app import QualityApp

# What a request may fail with that is the user's (an unreadable file, an empty query...): the message alone.
REQUEST_ERRORS = (*USER_ERRORS, ValueError, OSError)


def _message(error: Exception) -> str:
    """One line for the page: a user error's message; a bug's type too (its traceback goes to this process's stderr)."""
    if isinstance(error, REQUEST_ERRORS):
        return one_line(error)
    traceback.print_exception(error)
    return one_line(f"{type(error).__name__}: {error}")


def answer(app: QualityApp, request) -> tuple:
    """`("ok", result)` or `("error", one-line message)` for a `(method, args)` request; never raises."""
    try:
        method, args = request
        if method not in METHODS:
            return "error", f"unknown request {method!r}"
        return "ok", getattr(app, method)(*args)
    except Exception as error:
        return "error", _message(error)


def serve(app: QualityApp, connection) -> None:
    """Answer requests until the page process closes the connection."""
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        kind, payload = answer(app, request)
        try:
            connection.send((kind, payload))
        except OSError:
            return
        except Exception as error:  # a result that cannot be pickled: sent as an error instead
            connection.send(("error", _message(error)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeling_uniqa.app.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="HOST:PORT of the page process's listener.")
    parser.add_argument("--model", required=True, help="The model folder.")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    try:
        connection = Client((host, int(port)), authkey=os.environ.pop(AUTHKEY_ENV).encode("ascii"))
    except (KeyError, OSError) as error:  # no page process (any more) to serve
        print(f"error: the model worker cannot reach its page process: {error}", file=sys.stderr)
        return 2
    with connection:
        try:
            app = QualityApp(args.model, batch_size=args.batch_size)
        except Exception as error:
            with contextlib.suppress(OSError):
                connection.send(("failed", _message(error)))
            return 2
        try:
            connection.send(("ready", {"model": app.model_dir, "columns": [label for _, label in app.columns]}))
        except OSError:  # the page process is gone
            return 0
        serve(app, connection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
