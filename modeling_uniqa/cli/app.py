"""`uniqa app`: the command line of `modeling_uniqa.app.gradio_app` (the page to try a model in the browser)."""

import argparse
import importlib.util
import logging
import os

from ..core.default_model import DEFAULT_MODEL

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="A UniQA model folder or Hub repo id (default: UniQA-Tiny, shipped with the package).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Port to serve on (default {DEFAULT_PORT}).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1; 0.0.0.0 for every interface).")
    parser.add_argument("--batch-size", type=int, default=16, help="Images per forward when scoring (default 16).")


def run(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if importlib.util.find_spec("gradio") is None:  # found without importing it: that is the slow part of the start
        logger.error('`uniqa app` needs gradio: pip install "uniqa-hf[app]"')
        return 2
    from ..app.gradio_app import QualityApp, build_demo, launch

    try:  # the weights load while gradio is imported and the page is built
        app = QualityApp(args.model, batch_size=max(1, args.batch_size), load_in_background=True)
    except (OSError, ValueError) as error:
        logger.error("%s", error)
        return 2
    launch(build_demo(app), host=args.host, port=args.port)
    return 0
