"""`uniqa app`: a Gradio page to try a UniQA model in the browser (also the app of its Space).

    uniqa app                                   # UniQA-Tiny, shipped with the package
    uniqa app --model uniqa-koniq --port 7861   # a model folder, or a Hub repo id
    uniqa push uniqa-koniq --repo-id ORG/NAME --space ORG/NAME-demo   # the same page as a Space

The page:

- drop one or many images (or try the shipped examples): they are scored in batches by the
  model's `pipeline("image-quality")` (the scores are the pipeline's, every named head a column,
  the MOS on the model's scale) and shown as a table ranked best first, with thumbnails. A file
  that cannot be scored (not an image, a decompression bomb, a 1x10000 strip) gets a row saying
  why, and the others are scored;
- "Where does the model look?": a Grad-CAM overlay of a chosen image for a text prompt or for
  the model's own score (`explain.explain_image`);
- "Find images by text": text-query retrieval over the uploaded images as a contact sheet
  (`retrieve.search`, `contact_sheet.render_contact_sheet`);
- the model card's summary beside it.

`QualityApp` does the work and needs no gradio (tests call it directly); `build_demo` makes the
Gradio Blocks around it; `uniqa app` (`modeling_uniqa/cli/app.py`) serves them. The model is loaded once, at start: by `uniqa app` in
a thread while gradio starts and serves the page (the first scoring waits for it).
"""

import base64
import html
import io
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch
from PIL import Image, ImageOps

from ..analysis.contact_sheet import render_contact_sheet
from ..analysis.embedding_index import EmbeddingIndex, IndexEntry
from ..analysis.explain import explain_image, prompt_target, score_target
from ..analysis.retrieve import embed_image_files, search
from ..configuration_uniqa import DEFAULT_HEAD
from ..core.default_model import DEFAULT_MODEL
from ..core.model_folder import check_model_folder, load_model
from ..processing_uniqa import load_image

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
EXAMPLE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MAX_FILES = 200
MAX_FILE_SIZE = "50mb"
THUMB_SIZE = 64
TABLE_ID = "uniqa-ranking"
DEFAULT_QUERY = "blurry image\nnoisy image\nhigh quality photo"
INSTRUCTIONS = (
    "**1.** Drop one or many photos into the box below (or click it to choose files), or press **Try the example images**. "
    "**2.** The table ranks them, best first. "
    "**3.** Below it, see *where the model looks* in one image, or *find images by text*."
)


def example_images() -> list:
    """The example images shipped with the app (sorted paths)."""
    if not os.path.isdir(EXAMPLES_DIR):
        return []
    return sorted(os.path.join(EXAMPLES_DIR, name) for name in os.listdir(EXAMPLES_DIR) if name.lower().endswith(EXAMPLE_EXTENSIONS))


def resolve_model(model: str) -> str:
    """A model folder as given, or the local snapshot of a Hub repo id (`org/name`, as a Space runs it)."""
    if os.path.isdir(model):
        return model
    if model.count("/") == 1 and not model.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        return snapshot_download(model)
    raise FileNotFoundError(f"{model}: no such model folder, and not a Hub repo id (ORG/NAME).")


def card_summary(folder: str) -> tuple:
    """`(summary, full card)` of the folder's README.md, as Markdown: its title, first paragraph
    and "Scores" section, without front matter or HTML comments; `("", "")` without a card."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        return "", ""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4 :] if end >= 0 else text
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S).strip()
    sections = re.split(r"\n(?=## )", text)
    head = sections[0].strip().split("\n\n")
    summary = head[:2]  # the title and its first paragraph
    summary += [section.strip() for section in sections[1:] if section.startswith("## Scores")]
    # Headings two levels down: the card sits beside the page's own, smaller.
    summary = [re.sub(r"^(#+) ", lambda match: "#" * min(len(match.group(1)) + 2, 6) + " ", part, flags=re.M) for part in summary]
    return "\n\n".join(summary), text


def _thumbnail(path: str) -> str:
    """A small JPEG of the image as a data URL ("" when it cannot be read)."""
    try:
        image = ImageOps.contain(load_image(path, draft_size=2 * THUMB_SIZE), (THUMB_SIZE, THUMB_SIZE))
    except Exception:  # the row says why the image failed; no thumbnail is needed for that
        return ""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class LoadedApp(NamedTuple):
    model: object
    processor: object
    tokenizer: object
    pipeline: object
    columns: list


class QualityApp:
    """The app's work, without gradio: one model, loaded once.

    Args:
        model: a UniQA model folder or Hub repo id (default: UniQA-Tiny).
        batch_size: images per forward when scoring.
        load_in_background: check the folder now (a broken one raises here) but load the weights
            in a thread, so the page can be served meanwhile (`uniqa app`); the first use waits.
    """

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 16, device: str = "cpu", load_in_background: bool = False):
        self.model_dir = resolve_model(model)
        check_model_folder(self.model_dir)
        self.batch_size = batch_size
        self.summary, self.card = card_summary(self.model_dir)
        self.name = os.path.basename(os.path.normpath(self.model_dir))
        self._embeddings = {}  # path -> image embedding, for retrieval (computed on the first query)
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uniqa-app-load")
        self._loaded = loader.submit(self._load, device)
        loader.shutdown(wait=False)
        if not load_in_background:
            self._loaded.result()

    def _load(self, device: str) -> LoadedApp:
        from transformers import pipeline

        import modeling_uniqa  # noqa: F401  (registers the image-quality task)

        loaded = load_model(self.model_dir, device=device, need_tokenizer=True)
        scorer = pipeline("image-quality", model=loaded.model, image_processor=loaded.processor, device=loaded.model.device)
        return LoadedApp(loaded.model, loaded.processor, loaded.tokenizer, scorer, self._columns(loaded.model))

    # The loaded parts (the first use waits for a background load; its error is raised here).
    model = property(lambda self: self._loaded.result().model)
    processor = property(lambda self: self._loaded.result().processor)
    tokenizer = property(lambda self: self._loaded.result().tokenizer)
    pipeline = property(lambda self: self._loaded.result().pipeline)
    columns = property(lambda self: self._loaded.result().columns)

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
            return '<p class="uniqa-empty">No images yet: drop some into the box above, or try the examples.</p>'
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


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------
def _file_paths(files) -> list:
    """gradio File values (paths, or objects with `.name` / `path`) -> paths."""
    paths = []
    for item in files or []:
        if isinstance(item, dict):
            item = item.get("path") or item.get("name")
        paths.append(os.fspath(getattr(item, "name", item)))
    return paths


def build_demo(app: QualityApp):
    """The Gradio Blocks of the page around `app`."""
    import gradio as gr

    examples = example_images()

    def on_files(files):
        paths = _file_paths(files)[:MAX_FILES]
        start = time.perf_counter()
        rows = app.score(paths)
        seconds = time.perf_counter() - start
        failed = sum("error" in row["result"] for row in rows)
        ranked = [row for row in app.ranked(rows) if "error" not in row["result"]]
        choices = [(f"#{rank} {row['name']}", row["path"]) for rank, row in enumerate(ranked, start=1)]
        if rows:
            status = f"Scored {len(rows) - failed} of {len(rows)} images in {seconds:.1f} s."
            if failed:
                status += f" {failed} could not be scored: see the red rows."
            if len(_file_paths(files)) > MAX_FILES:
                status += f" Only the first {MAX_FILES} files were taken."
        else:
            status = ""
        dropdown = gr.update(choices=choices, value=choices[0][1] if choices else None)
        return app.table_html(rows), status, dropdown, [row["path"] for row in ranked]

    def on_explain(path, prompt):
        if not path:
            raise gr.Error("Drop some images first, then pick one.")
        picture, value = app.explain(path, prompt)
        what = f"similarity to “{prompt.strip()}”" if prompt and prompt.strip() else "the model's score"
        return picture, f"Red: the regions that raise {what} most ({value:.4f})."

    def on_retrieve(paths, text):
        if not paths:
            raise gr.Error("Drop some images first.")
        sheet = app.retrieve(paths, (text or "").splitlines())
        if sheet is None:
            raise gr.Error("Type a text query, e.g. 'blurry image'.")
        return sheet

    with gr.Blocks(title=f"UniQA image quality: {app.name}", analytics_enabled=False) as demo:
        scored_paths = gr.State([])
        gr.Markdown(f"# Image quality and aesthetics with UniQA\nModel: `{app.name}`. {INSTRUCTIONS}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                files = gr.File(label="Images to score (drop several at once)", file_count="multiple", height=170, elem_id="uniqa-upload")
                with gr.Row():
                    example_button = gr.Button("Try the example images", variant="secondary", visible=bool(examples))
                    gr.ClearButton(files, value="Clear")
                status = gr.Markdown(elem_id="uniqa-status")
                gr.Markdown("### Ranking (best first)")
                table = gr.HTML(app.table_html([]), elem_id="uniqa-table")
            with gr.Column(scale=2):
                gr.Markdown("### About this model")
                gr.Markdown(app.summary or "No model card.", elem_id="uniqa-card")
                if app.card:
                    with gr.Accordion("Full model card", open=False):
                        gr.Markdown(app.card)
        with gr.Tab("Where does the model look? (Grad-CAM)"):
            with gr.Row():
                choice = gr.Dropdown(label="Image", choices=[], interactive=True, elem_id="uniqa-cam-image")
                prompt = gr.Textbox(label="Prompt (leave empty to explain the model's score)", placeholder="e.g. blurry image")
                explain_button = gr.Button("Show heat map", variant="primary")
            cam_note = gr.Markdown()
            cam = gr.Image(label="Original | heat map", type="pil", interactive=False, height=380, elem_id="uniqa-cam")
        with gr.Tab("Find images by text"):
            with gr.Row():
                queries = gr.Textbox(label="Text queries (one per line)", value=DEFAULT_QUERY, lines=3)
                retrieve_button = gr.Button("Search the uploaded images", variant="primary")
            sheet = gr.Image(label="Best matches per query (rank and similarity under each)", type="pil", interactive=False, elem_id="uniqa-sheet")

        files.change(on_files, inputs=files, outputs=[table, status, choice, scored_paths])
        example_button.click(lambda: examples, outputs=files)
        explain_button.click(on_explain, inputs=[choice, prompt], outputs=[cam, cam_note])
        retrieve_button.click(on_retrieve, inputs=[scored_paths, queries], outputs=sheet)
    return demo


def launch(demo, host: str | None = None, port: int | None = None) -> None:
    """Serve the page (blocks); `None`: gradio's defaults and environment (as on a Space)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    options = {"server_name": host, "server_port": port}
    demo.queue(default_concurrency_limit=1).launch(
        **{key: value for key, value in options.items() if value is not None},
        max_file_size=MAX_FILE_SIZE, show_error=True, allowed_paths=[EXAMPLES_DIR],
    )


__all__ = ["QualityApp", "build_demo", "card_summary", "example_images", "launch", "resolve_model"]
