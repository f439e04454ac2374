"""The work of `uniqa app`'s page, without gradio: `QualityApp` scores, ranks, explains and
searches images with one UniQA model, loaded once (tests call it directly).

It is the page's backend (`uniqa_app.page`): in-process in a Space's app (`build_demo(QualityApp(...))`,
re-exported here with the page's other names), and in the worker process of `uniqa app`
(`modeling_uniqa.app.worker`), which the page process reaches through `uniqa_app.remote.RemoteApp`.

- scoring: the model's `pipeline("image-quality")` in batches (every named head a column, the MOS
  on the model's scale); a file that cannot be scored (not an image, a decompression bomb, a
  1x10000 strip) gets a row saying why, and the others are scored;
- Grad-CAM: `explain.explain_image`, for a text prompt or the model's own score;
- retrieval: `retrieve.search` over the images, as a contact sheet (`contact_sheet.render_contact_sheet`).
"""

import base64
import html
import io
import os
import warnings

import torch
from PIL import Image, ImageOps

from uniqa_app.page import (
    EMPTY_TABLE,
    EXAMPLES_DIR,
    TABLE_ID,
    build_demo,
    card_summary,
    example_images,
    launch,
    resolve_model,
)

from ..analysis.contact_sheet import render_contact_sheet
from ..analysis.embedding_index import EmbeddingIndex, IndexEntry
from ..analysis.explain import explain_image, prompt_target, score_target
from ..analysis.retrieve import embed_image_files, search
from ..configuration_uniqa import DEFAULT_HEAD
from ..core.default_model import DEFAULT_MODEL
from ..core.model_folder import check_model_folder, load_model
from ..processing_uniqa import load_image

THUMB_SIZE = 64


def _thumbnail(path: str) -> str:
    """A small JPEG of the image as a data URL ("" when it cannot be read)."""
    try:
        image = ImageOps.contain(load_image(path, draft_size=2 * THUMB_SIZE), (THUMB_SIZE, THUMB_SIZE))
    except Exception:  # the row says why the image failed; no thumbnail is needed for that
        return ""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class QualityApp:
    """The app's work, without gradio: one model, loaded once.

    Args:
        model: a UniQA model folder or Hub repo id (default: UniQA-Tiny).
        batch_size: images per forward when scoring.
        device: where the model runs.

    The folder is checked before anything is loaded: a broken one raises `ModelFolderError` at once.
    """

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 16, device: str = "cpu"):
        from transformers import pipeline

        import modeling_uniqa  # noqa: F401  (registers the image-quality task)

        self.model_dir = resolve_model(model)
        check_model_folder(self.model_dir)
        self.batch_size = batch_size
        self._embeddings = {}  # path -> image embedding, for retrieval (computed on the first query)
        loaded = load_model(self.model_dir, device=device, need_tokenizer=True)
        self.model, self.processor, self.tokenizer = loaded.model, loaded.processor, loaded.tokenizer
        self.pipeline = pipeline("image-quality", model=self.model, image_processor=self.processor, device=self.model.device)
        self.columns = self._columns(self.model)

    @staticmethod
    def _columns(model) -> list:
        """`(result key, header)` of every head's MOS (when known) and score, the default head first."""
        columns = []
        for head in model.head_names:
            settings = model.config.head_config(head)
            prefix = "" if head == DEFAULT_HEAD else f"{head}_"
            label = "" if head == DEFAULT_HEAD else f"{head} "
            if settings.mos_range is not None:
                low, high = settings.mos_range
                columns.append((f"{prefix}mos", f"{label}MOS ({low:g}-{high:g})"))
            columns.append((head if head != DEFAULT_HEAD else "score", f"{label}score (0-1)"))
        return columns

    # ----------------------------------------------------------------------------------------
    # Scoring
    # ----------------------------------------------------------------------------------------
    def score(self, paths: list) -> list:
        """Score image files in batches: one row per path, in order, `{"path", "name", "result"}`
        where `result` is the pipeline's dict (`{"error": ...}` for a file it cannot read)."""
        paths = [os.fspath(path) for path in paths]
        if not paths:
            return []
        with warnings.catch_warnings():
            # 89M-178M pixels: PIL only warns and decodes; a public page refuses them like bigger bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            results = self.pipeline(paths, batch_size=self.batch_size, errors="return")
        rows = [{"path": path, "name": os.path.basename(path), "result": result} for path, result in zip(paths, results)]
        for row in rows:  # errors name the upload's temporary path: the file name says enough
            if "error" in row["result"]:
                message = row["result"]["error"].replace(row["path"], row["name"])
                row["result"] = {"error": message.removeprefix("UniQAImageError: ")}
        return rows

    @staticmethod
    def ranked(rows: list) -> list:
        """The scored rows best first (ties in upload order), then the failed ones."""
        scored = [row for row in rows if "error" not in row["result"]]
        failed = [row for row in rows if "error" in row["result"]]
        return sorted(scored, key=lambda row: -row["result"]["score"]) + failed

    def table_html(self, rows: list) -> str:
        """The ranking as an HTML table (thumbnails, every column, one row per failed file)."""
        if not rows:
            return EMPTY_TABLE
        cell = 'style="padding:4px 12px;border-bottom:1px solid #ddd;white-space:nowrap;text-align:{align}"'
        headers = ["Rank", "Image", "File", *[label for _, label in self.columns]]
        parts = [f'<table id="{TABLE_ID}" style="border-collapse:collapse;font-size:15px">', "<thead><tr>"]
        parts += [f'<th {cell.format(align="left")}>{html.escape(text)}</th>' for text in headers]
        parts.append("</tr></thead><tbody>")
        rank = 0
        for row in self.ranked(rows):
            result, name = row["result"], html.escape(row["name"])
            if "error" in result:
                parts.append(
                    f'<tr class="uniqa-error" data-file="{name}" style="background:#fff0f0"><td {cell.format(align="left")}>—</td>'
                    f'<td {cell.format(align="left")}></td><td {cell.format(align="left")}>{name}</td>'
                    f'<td colspan="{len(self.columns)}" class="uniqa-error-message" style="padding:4px 12px;color:#b00000;white-space:normal">'
                    f"Could not be scored: {html.escape(result['error'])}</td></tr>"
                )
                continue
            rank += 1
            thumb = _thumbnail(row["path"])
            image = f'<img src="{thumb}" alt="{name}" style="max-width:{THUMB_SIZE}px;max-height:{THUMB_SIZE}px">' if thumb else ""
            values = "".join(
                f'<td data-key="{key}" {cell.format(align="right")}>{result[key]:.6f}</td>' if key in result else f"<td {cell.format(align='right')}></td>"
                for key, _ in self.columns
            )
            parts.append(
                f'<tr class="uniqa-row" data-file="{name}" data-rank="{rank}"><td class="uniqa-rank" {cell.format(align="left")}><b>{rank}</b></td>'
                f'<td {cell.format(align="left")}>{image}</td><td class="uniqa-file" {cell.format(align="left")}>{name}</td>{values}</tr>'
            )
        parts.append("</tbody></table>")
        return "".join(parts)

    def rank_files(self, paths: list) -> dict:
        """What the page shows for uploaded files: the table, the scored files best first as
        `(label, path)` choices, and how many were scored and failed."""
        rows = self.score(paths)
        ranked = [row for row in self.ranked(rows) if "error" not in row["result"]]
        return {
            "table": self.table_html(rows),
            "choices": [(f"#{rank} {row['name']}", row["path"]) for rank, row in enumerate(ranked, start=1)],
            "scored": len(ranked),
            "failed": len(rows) - len(ranked),
        }

    # ----------------------------------------------------------------------------------------
    # Grad-CAM and retrieval
    # ----------------------------------------------------------------------------------------
    def explain(self, path: str, prompt: str = "") -> tuple:
        """`(picture, value)`: the image and its Grad-CAM overlay side by side for `prompt`, or for
        the model's score when the prompt is empty."""
        prompt = (prompt or "").strip()
        target = prompt_target(self.model, self.tokenizer, prompt) if prompt else score_target(self.model)
        (explanation,) = explain_image(self.model, self.processor, path, [target])
        return explanation.picture(side_by_side=True), explanation.value

    def _index(self, paths: list) -> EmbeddingIndex:
        """An in-memory embedding index of the images (each embedded once per app)."""
        todo = [path for path in dict.fromkeys(paths) if path not in self._embeddings]
        if todo:
            config = self.model.config
            for positions, embeddings, _errors in embed_image_files(
                self.model, self.processor, todo, config.view_policy, config.view_seed, batch_size=32, workers=0, show_progress=False
            ):
                for position, embedding in zip(positions, embeddings):
                    self._embeddings[todo[position]] = embedding
        present = [path for path in dict.fromkeys(paths) if path in self._embeddings]
        embeddings = torch.stack([self._embeddings[path] for path in present]) if present else torch.zeros((0, 1))
        return EmbeddingIndex("uniqa-app", [IndexEntry(path, 0, 0) for path in present], embeddings)

    def retrieve(self, paths: list, queries: list, top: int = 8):
        """A contact sheet (PIL image) ranking the images for each text query; `None` when no image could be embedded."""
        queries = [query.strip() for query in queries if query.strip()]
        index = self._index([os.fspath(path) for path in paths])
        if not queries or len(index) == 0:
            return None
        return render_contact_sheet(search(index, self.model, self.tokenizer, queries, top), thumb_size=120)


__all__ = ["EXAMPLES_DIR", "TABLE_ID", "QualityApp", "build_demo", "card_summary", "example_images", "launch", "resolve_model"]
