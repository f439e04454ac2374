"""`uniqa retrieve`: rank image collections by text queries (zero-shot retrieval, Fig. 4 of the paper).

    uniqa retrieve photos/ --model uniqa-zero-shot --query "blurry image" --query "good image" \\
        --top 12 --output retrieval/sheet.png            # also writes retrieval/sheet.html
    uniqa retrieve --index retrieval/uniqa-index --model uniqa-zero-shot --query "noisy image" --output noisy.png

How it works:

- Each image gets one embedding, kept in an index folder (`--index`, default `uniqa-index` beside
  the output; format in `embedding_index.py`). A run embeds only files that are new or whose size,
  mtime or ctime changed (a file copied over another with its mtime kept counts as changed), and
  drops files that are no longer among the INPUTs; without INPUTs the index is queried as it is.
  The index is saved atomically, and every few minutes while embedding, so an interrupted run
  resumes where it stopped.
- An image's embedding is the mean over its views (`--view-policy`, default the model's) of the
  L2-normalised view embeddings: `--embedding adapted` (default) is `I'`, the embedding the model
  scores with (equal to plain CLIP for a zero-shot model); `clip` is the CLIP embedding before the
  adapter. The similarity to a query is then the mean over views of the cosine between view and
  query text, the quantity eq. 7 feeds to its softmax.
- A query is any text, tokenised with the model folder's tokenizer (or `--tokenizer`); ranking is
  a matrix-vector product over the index, ties broken by index order (the INPUT order).
- Output: a contact sheet PNG (one row per query: thumbnails with rank and similarity) and an
  HTML page with the same ranking (`--html`, default the PNG's name with `.html`), with image
  links relative to the page. The ranking is also printed.
- Exit code: 0 on success, 1 when no image could be indexed, 2 for usage errors.
"""

import argparse
import logging
import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .contact_sheet import display_path, write_contact_sheet, write_html
from .cpu_runtime import prepare_cpu_process
from .default_model import DEFAULT_MODEL
from .device_defaults import decoding_workers, scoring_batch_size
from .embedding_index import EmbeddingIndex, EmbeddingIndexError, update_index
from .inference_speed import optimize_for_scoring
from .modeling_uniqa import UniQAModel
from .processing_uniqa import UniQAImageProcessor
from .score_images import (
    DTYPES,
    Normalizer,
    UsageError,
    _at_least,
    _view_policy,
    expand_inputs,
    view_loader,
)
from .sharded_output import OutputError, check_writable
from .zero_shot import EMBEDDING_KINDS, embed_image_views, embed_texts, embedding_fingerprint, load_model_folder

logger = logging.getLogger(__name__)

DEFAULT_INDEX_NAME = "uniqa-index"


@dataclass
class RetrievalResult:
    """The ranking for one query: `hits` are `(path, similarity)`, best first."""

    query: str
    hits: list

    def __iter__(self):  # unpacks as (query, hits), the shape `contact_sheet` draws
        return iter((self.query, self.hits))


# --------------------------------------------------------------------------------------------
# Python API
# --------------------------------------------------------------------------------------------
def embed_image_files(
    model: UniQAModel,
    processor: UniQAImageProcessor,
    paths: list,
    view_policy: str,
    view_seed: int,
    embedding: str = "adapted",
    batch_size: int = 32,
    workers: int = 2,
    show_progress: bool = True,
):
    """Yield `(positions, embeddings, errors)` batch by batch for image files: `positions` index
    `paths`, `embeddings` (len(positions), dim) are the per-view means of normalised view
    embeddings, `errors` are `(position, message)` of files that could not be read.

    Decoding runs in `workers` DataLoader processes while the model embeds the batch before.
    `batch_size` counts views.
    """
    device = model.clip.visual_projection.weight.device
    loader = view_loader(paths, processor, view_policy, view_seed, batch_size, workers, device)
    normalize = Normalizer(processor, device)
    with tqdm(total=len(paths), unit="img", desc="Indexing", disable=not show_progress) as bar:
        for batch in loader:
            embeddings = torch.zeros((0, model.config.clip_config.projection_dim))
            if batch.views is not None:
                count, views = batch.views.shape[:2]
                with torch.inference_mode():
                    pixels = normalize(batch.views).flatten(0, 1)  # (count * views, 3, crop, crop)
                    embeddings = embed_image_views(model, pixels, embedding).view(count, views, -1).mean(1).cpu()
            yield batch.indices, embeddings.clone(), batch.errors  # a normal tensor, usable outside inference mode
            bar.update(len(batch.indices) + len(batch.errors))


def index_images(
    model: UniQAModel,
    processor: UniQAImageProcessor,
    paths: list,
    index_dir: str,
    embedding: str = "adapted",
    view_policy: str | None = None,
    view_seed: int | None = None,
    batch_size: int = 32,
    workers: int = 2,
    checkpoint_seconds: float = 300.0,
    show_progress: bool = True,
    model_name: str | None = None,
):
    """Bring the index in `index_dir` in line with `paths` (embedding only new or changed files)
    and return `(EmbeddingIndex, UpdateReport)`. See `embedding_index.update_index`."""
    view_policy = view_policy or model.config.view_policy
    view_seed = model.config.view_seed if view_seed is None else view_seed
    fingerprint = embedding_fingerprint(model, processor, view_policy, view_seed, embedding)
    info = {"model": model_name, "embedding": embedding, "view_policy": view_policy, "view_seed": view_seed}
    paths = list(dict.fromkeys(os.path.normpath(os.path.abspath(path)) for path in paths))  # each once, in order

    def embed(todo):
        return embed_image_files(model, processor, todo, view_policy, view_seed, embedding, batch_size, workers, show_progress)

    return update_index(index_dir, paths, fingerprint, embed, info=info, checkpoint_seconds=checkpoint_seconds)


def rank(index: EmbeddingIndex, query_embeds: torch.Tensor, labels: list, top_k: int) -> list:
    """`RetrievalResult`s of L2-normalised query embeddings `(queries, dim)` named by `labels`.

    The entry point for any query that is a direction in the embedding space (a text today; a
    named head's direction can come here too)."""
    return [
        RetrievalResult(label, [(index.entries[row].path, similarity) for row, similarity in hits])
        for label, hits in zip(labels, index.search(query_embeds, top_k))
    ]


def search(index: EmbeddingIndex, model: UniQAModel, tokenizer, queries: list, top_k: int = 16) -> list:
    """Rank the indexed images for each text query: a list of `RetrievalResult`, one per query."""
    return rank(index, embed_texts(model, tokenizer, queries), list(queries), top_k)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
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
    parser.add_argument("--top", type=_at_least(1), default=16, help="Images shown per query (default 16).")
    parser.add_argument("--output", required=True, type=_png_path, help="The contact sheet (.png).")
    parser.add_argument("--html", default=None, help="The HTML page (default: the output with .html).")
    parser.add_argument("--index", default=None, help=f"Index folder (default: {DEFAULT_INDEX_NAME}/ beside the output).")
    parser.add_argument("--embedding", choices=EMBEDDING_KINDS, default="adapted", help="Embedding to index: adapted (I', what the model scores with; default) or clip (before the adapter).")
    parser.add_argument("--view-policy", type=_view_policy, default=None, help="Views averaged per image (default: the model's); center is 1 view, the fastest to index.")
    parser.add_argument("--view-seed", type=int, default=None, help="Seed of random<N> crop positions (default: the model's).")
    parser.add_argument("--thumb-size", type=_at_least(16), default=160, help="Thumbnail side in pixels (default 160).")
    parser.add_argument("--batch-size", type=_at_least(1), default=None, help="Views per forward (default 32 on the CPU, 256 on a GPU).")
    parser.add_argument("--workers", type=_at_least(0), default=None,
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
        for output in (args.output, html_path):  # before the indexing, which may take hours
            check_writable(output)
        paths = expand_inputs(args.inputs).paths if args.inputs else None
        if paths is not None:  # a sheet written among the photos is no photo to rank
            paths = [path for path in paths if path != args.output]
        if device.type == "cpu":
            prepare_cpu_process()  # as `uniqa score`; UNIQA_MALLOC_TUNING=0 leaves malloc as it is
        model, processor, tokenizer = load_model_folder(args.model, args.tokenizer, DTYPES[args.dtype], device)
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
                view_seed=args.view_seed, batch_size=scoring_batch_size(args.batch_size, device), workers=decoding_workers(args.workers, device), model_name=os.path.abspath(args.model),
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


__all__ = ["RetrievalResult", "embed_image_files", "index_images", "rank", "search"]
