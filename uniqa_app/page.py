"""`uniqa app`'s page: Gradio Blocks around a *backend* that does the model's work.

    uniqa app                                   # UniQA-Tiny, shipped with the package
    uniqa app --model uniqa-koniq --port 7861   # a model folder, or a Hub repo id
    uniqa push uniqa-koniq --repo-id ORG/NAME --space ORG/NAME-demo   # the same page as a Space

The page:

- drop one or many images (or try the shipped examples): they are scored in batches by the
  model's `pipeline("image-quality")` and shown as a table ranked best first, with thumbnails; a
  file that cannot be scored gets a row saying why, and the others are scored;
- "Where does the model look?": a Grad-CAM overlay of a chosen image for a text prompt or for
  the model's own score;
- "Find images by text": text-query retrieval over the uploaded images as a contact sheet;
- the model card's summary beside it.

A backend has `model_dir` (the model folder, whose card the page shows) and three methods:

    rank_files(paths) -> {"table": HTML, "choices": [(label, path)] best first, "scored": int, "failed": int}
    explain(path, prompt) -> (PIL image, value)
    retrieve(paths, queries) -> PIL image | None

`modeling_uniqa.app.gradio_app.QualityApp` does the work in-process (a Space's app);
`uniqa_app.remote.RemoteApp` asks the worker process of `uniqa app` to. A backend raises
`BackendError` for what it cannot answer: the page shows its message.

This module imports only the standard library at import time (gradio when the page is built), so
the model's own modules and its worker can use it too.
"""

import os
import re
import time

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
EXAMPLE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MAX_FILES = 200
MAX_FILE_SIZE = "50mb"
TABLE_ID = "uniqa-ranking"
EMPTY_TABLE = '<p class="uniqa-empty">No images yet: drop some into the box above, or try the examples.</p>'
DEFAULT_QUERY = "blurry image\nnoisy image\nhigh quality photo"
INSTRUCTIONS = (
    "**1.** Drop one or many photos into the box below (or click it to choose files), or press **Try the example images**. "
    "**2.** The table ranks them, best first. "
    "**3.** Below it, see *where the model looks* in one image, or *find images by text*."
)


class BackendError(Exception):
    """A request the backend could not answer (a user error, or the model worker gone): the page shows the message."""


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


def _file_paths(files) -> list:
    """gradio File values (paths, or objects with `.name` / `path`) -> paths."""
    paths = []
    for item in files or []:
        if isinstance(item, dict):
            item = item.get("path") or item.get("name")
        paths.append(os.fspath(getattr(item, "name", item)))
    return paths


def build_demo(backend):
    """The Gradio Blocks of the page around `backend` (see the module's docstring)."""
    import gradio as gr

    examples = example_images()
    name = os.path.basename(os.path.normpath(backend.model_dir))
    summary, card = card_summary(backend.model_dir)  # read here: the page shows them before the model is loaded

    def answer(method, *args):
        try:
            return method(*args)
        except BackendError as error:
            raise gr.Error(str(error)) from error

    def on_files(files):
        paths = _file_paths(files)
        start = time.perf_counter()
        ranking = answer(backend.rank_files, paths[:MAX_FILES])
        seconds = time.perf_counter() - start
        scored, failed = ranking["scored"], ranking["failed"]
        status = ""
        if scored + failed:
            status = f"Scored {scored} of {scored + failed} images in {seconds:.1f} s."
            if failed:
                status += f" {failed} could not be scored: see the red rows."
            if len(paths) > MAX_FILES:
                status += f" Only the first {MAX_FILES} files were taken."
        choices = [tuple(choice) for choice in ranking["choices"]]
        dropdown = gr.update(choices=choices, value=choices[0][1] if choices else None)
        return ranking["table"], status, dropdown, [path for _, path in choices]

    def on_explain(path, prompt):
        if not path:
            raise gr.Error("Drop some images first, then pick one.")
        picture, value = answer(backend.explain, path, prompt)
        what = f"similarity to “{prompt.strip()}”" if prompt and prompt.strip() else "the model's score"
        return picture, f"Red: the regions that raise {what} most ({value:.4f})."

    def on_retrieve(paths, text):
        if not paths:
            raise gr.Error("Drop some images first.")
        sheet = answer(backend.retrieve, paths, (text or "").splitlines())
        if sheet is None:
            raise gr.Error("Type a text query, e.g. 'blurry image'.")
        return sheet

    with gr.Blocks(title=f"UniQA image quality: {name}", analytics_enabled=False) as demo:
        scored_paths = gr.State([])
        gr.Markdown(f"# Image quality and aesthetics with UniQA\nModel: `{name}`. {INSTRUCTIONS}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                files = gr.File(label="Images to score (drop several at once)", file_count="multiple", height=170, elem_id="uniqa-upload")
                with gr.Row():
                    example_button = gr.Button("Try the example images", variant="secondary", visible=bool(examples))
                    gr.ClearButton(files, value="Clear")
                status = gr.Markdown(elem_id="uniqa-status")
                gr.Markdown("### Ranking (best first)")
                table = gr.HTML(EMPTY_TABLE, elem_id="uniqa-table")
            with gr.Column(scale=2):
                gr.Markdown("### About this model")
                gr.Markdown(summary or "No model card.", elem_id="uniqa-card")
                if card:
                    with gr.Accordion("Full model card", open=False):
                        gr.Markdown(card)
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


def launch(demo, host: str | None = None, port: int | None = None, block: bool = True) -> None:
    """Serve the page; `None`: gradio's defaults and environment (as on a Space). With `block=False`
    it returns once the server is up (then `demo.block_thread()` or `demo.close()`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    options = {"server_name": host, "server_port": port}
    demo.queue(default_concurrency_limit=1).launch(
        **{key: value for key, value in options.items() if value is not None},
        max_file_size=MAX_FILE_SIZE, show_error=True, allowed_paths=[EXAMPLES_DIR], prevent_thread_lock=not block,
    )


__all__ = [
    "DEFAULT_QUERY", "EMPTY_TABLE", "EXAMPLES_DIR", "INSTRUCTIONS", "MAX_FILES", "MAX_FILE_SIZE", "TABLE_ID",
    "BackendError", "build_demo", "card_summary", "example_images", "launch", "resolve_model",
]
