"""`uniqa app`: its flags and its start, in two processes on two cores.

The worker process (`modeling_uniqa.app.worker`, started first) imports torch and transformers and
loads the model while this process imports gradio and serves the page: the first page does not
wait for the model (issue #26), only the first scoring does. A model that cannot be loaded still
ends the command with one line on stderr and exit code 2.
"""

import argparse
import importlib.util
import logging
import os
import signal
import sys
import time

from .page import BackendError, build_demo, launch, resolve_model
from .remote import RemoteApp, one_line

DEFAULT_PORT = 7860
DESCRIPTION = "Serve a page to try a model in the browser: ranked scores, Grad-CAM, text search (needs gradio)."


def default_model() -> str:
    """UniQA-Tiny's folder inside the installed `modeling_uniqa` (found without importing it: that takes seconds)."""
    spec = importlib.util.find_spec("modeling_uniqa")
    return os.path.join(spec.submodule_search_locations[0], "assets", "uniqa-tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=default_model(), help="A UniQA model folder or Hub repo id (default: UniQA-Tiny, shipped with the package).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Port to serve on (default {DEFAULT_PORT}).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1; 0.0.0.0 for every interface).")
    parser.add_argument("--batch-size", type=int, default=16, help="Images per forward when scoring (default 16).")


def _fail(message) -> int:
    print(f"error: {one_line(message)}", file=sys.stderr)
    return 2


def serve(args) -> int:
    """Start the model worker, serve the page, and block until stopped (Ctrl-C, SIGTERM); exit code 2
    with one line on stderr when the model cannot be found or loaded."""
    start = time.monotonic()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if importlib.util.find_spec("gradio") is None:  # found without importing it: that is the slow part of the start
        return _fail('`uniqa app` needs gradio: pip install "uniqa-hf[app]"')
    try:
        folder = resolve_model(args.model)
    except (OSError, ValueError) as error:
        return _fail(error)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's requests to itself at start (`python -m modeling_uniqa.cli` logs INFO)
    # SIGTERM ends the process through `finally` and atexit (the worker is stopped), as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    app = RemoteApp(folder, batch_size=max(1, args.batch_size))
    try:
        demo = build_demo(app)
        try:
            launch(demo, host=args.host, port=args.port, block=False)
        except OSError as error:  # the port is taken
            return _fail(error)
        try:
            info = app.wait_ready()
        except BackendError as error:
            demo.close(verbose=False)  # the error is the command's one line: no "Closing server..." before it
            return _fail(error)
        print(f"Model {info['model']} ready, {time.monotonic() - start:.1f} s after start.", flush=True)
        demo.block_thread()
        return 0
    except KeyboardInterrupt:  # Ctrl-C before the page is up
        return 130
    finally:
        app.close()


__all__ = ["DEFAULT_PORT", "DESCRIPTION", "add_arguments", "default_model", "serve"]
