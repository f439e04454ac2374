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

import logging
import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..core.zero_shot import embed_image_views, embed_texts, embedding_fingerprint
from ..modeling_uniqa import UniQAModel
from ..processing_uniqa import UniQAImageProcessor
from ..scoring.score_images import (
    Normalizer,
    view_loader,
)
from .embedding_index import EmbeddingIndex, update_index

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


__all__ = ["RetrievalResult", "embed_image_files", "index_images", "rank", "search"]
