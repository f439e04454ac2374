"""`uniqa retrieve`: the command line of `modeling_uniqa.analysis.retrieve`."""

import argparse
import logging
import os

import torch

from ..analysis.contact_sheet import display_path, write_contact_sheet, write_html
from ..analysis.embedding_index import EmbeddingIndex
from ..analysis.retrieve import DEFAULT_INDEX_NAME, index_images, search
from ..core.cpu_runtime import prepare_cpu_process
from ..core.default_model import DEFAULT_MODEL
from ..core.device_defaults import decoding_workers, scoring_batch_size
from ..core.inference_speed import optimize_for_scoring
from ..core.model_folder import load_model, view_tokens
from ..core.runtime import DTYPES
from ..core.zero_shot import EMBEDDING_KINDS, embedding_fingerprint
from ..errors import EmbeddingIndexError, OutputError, UsageError
from ..scoring.score_images import expand_inputs
from ..scoring.sharded_output import check_writable
from .arguments import at_least, view_policy_arg

logger = logging.getLogger(__name__)


def _png_path(value: str) -> str:
    if not value.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"the contact sheet is a PNG: the output must end in .png, got {value!r}")
    return os.path.abspath(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Embeddings are kept in --index and updated incrementally (new, changed and removed files). "
        "Exit code: 0 on success, 1 when no image could be indexed, 2 for usage errors."
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="Image files, folders, glob patterns or .txt/.lst path lists (as for `uniqa score`). The index is "
        "brought in line with them; without INPUTs the existing --index is queried as it is.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="A UniQA model folder (e.g. written by `uniqa convert`); default: UniQA-Tiny, shipped with the package.")
    parser.add_argument("--query", action="append", required=True, help="A text query, e.g. \"blurry image\"; repeat for several (one row each).")
    parser.add_argument("--top", type=at_least(1), default=16, help="Images shown per query (default 16).")
    parser.add_argument("--output", required=True, type=_png_path, help="The contact sheet (.png).")
    parser.add_argument("--html", default=None, help="The HTML page (default: the output with .html).")
    parser.add_argument("--index", default=None, help=f"Index folder (default: {DEFAULT_INDEX_NAME}/ beside the output).")
    parser.add_argument("--embedding", choices=EMBEDDING_KINDS, default="adapted", help="Embedding to index: adapted (I', what the model scores with; default) or clip (before the adapter).")
    parser.add_argument("--view-policy", type=view_policy_arg, default=None, help="Views averaged per image (default: the model's); center is 1 view, the fastest to index.")
    parser.add_argument("--view-seed", type=int, default=None, help="Seed of random<N> crop positions (default: the model's).")
    parser.add_argument("--thumb-size", type=at_least(16), default=160, help="Thumbnail side in pixels (default 160).")
    parser.add_argument("--batch-size", type=at_least(1), default=None, help="Views per forward (default 32 on the CPU, more for a tower with fewer tokens a view: 96 for UniQA-Tiny; 256 on a GPU).")
    parser.add_argument("--workers", type=at_least(0), default=None,
                        help="Decoding worker processes; 0 decodes in the main process (default: as `uniqa score`).")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="Weights and compute dtype (default float32).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: a GPU if there is one, else the CPU.")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder for the queries (default: the model folder).")


def run(args) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        logger.error("--device cuda: no CUDA device is available here.")
        return 2
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    index_dir = os.path.abspath(args.index or os.path.join(os.path.dirname(args.output), DEFAULT_INDEX_NAME))
    html_path = os.path.abspath(args.html or os.path.splitext(args.output)[0] + ".html")
    try:
        empty = [position for position, query in enumerate(args.query, 1) if not query.strip()]
        if empty:  # before the model is loaded and the folder embedded
            raise UsageError(f"--query number {empty[0]} is empty: give a text to rank the images by, e.g. --query \"blurry photo\".")
        for output in (args.output, html_path):  # before the indexing, which may take hours
            check_writable(output)
        paths = expand_inputs(args.inputs).paths if args.inputs else None
        if paths is not None:  # a sheet written among the photos is no photo to rank
            paths = [path for path in paths if path != args.output]
        if device.type == "cpu":
            prepare_cpu_process()  # as `uniqa score`; UNIQA_MALLOC_TUNING=0 leaves malloc as it is
        model, processor, tokenizer = load_model(args.model, dtype=DTYPES[args.dtype], device=device, tokenizer_dir=args.tokenizer, need_tokenizer=True)
        optimize_for_scoring(model, device)  # the exact speed-ups only: the index must not depend on them
        if paths is None:
            view_policy = args.view_policy or model.config.view_policy
            view_seed = model.config.view_seed if args.view_seed is None else args.view_seed
            if not os.path.isdir(index_dir):
                raise UsageError(f"no INPUTs and no index at {index_dir}: give images to index, or --index DIR.")
            index = EmbeddingIndex.load(index_dir, embedding_fingerprint(model, processor, view_policy, view_seed, args.embedding))
        else:
            index, report = index_images(
                model, processor, paths, index_dir, embedding=args.embedding, view_policy=args.view_policy,
                view_seed=args.view_seed, batch_size=scoring_batch_size(args.batch_size, device, view_tokens(args.model)), workers=decoding_workers(args.workers, device), model_name=os.path.abspath(args.model),
            )
            for _, message in report.failed:
                logger.warning("Not indexed: %s", message)
            logger.info(
                "Index %s: %d images (%d kept, %d new, %d changed, %d removed, %d failed).",
                index_dir, len(index), report.kept, report.added, report.changed, report.removed, len(report.failed),
            )
        if len(index) == 0:
            logger.error("No image could be indexed: nothing to rank.")
            return 1
        results = search(index, model, tokenizer, args.query, args.top)
    except (UsageError, EmbeddingIndexError, OutputError, ValueError) as error:
        logger.error("%s", error)
        return 2
    for result in results:
        print(f"query: {result.query}")
        for rank_number, (path, similarity) in enumerate(result.hits, start=1):
            print(f"{rank_number:4d}  {similarity:.4f}  {display_path(path)}")
    write_contact_sheet(results, args.output, thumb_size=args.thumb_size)
    write_html(results, html_path, thumb_size=args.thumb_size)
    logger.info("Wrote %s and %s.", args.output, html_path)
    return 0
