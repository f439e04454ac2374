"""`uniqa score`: score image files, folders, globs or path lists with a UniQA model.

    uniqa score photos/ --model uniqa-koniq --output scores.csv
    uniqa score "shots/**/*.png" list.txt --model uniqa-base --prompts sharpness,noise --output s.jsonl
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m modeling_uniqa.cli score ...

How it runs:

- Inputs: INPUT arguments become one list of absolute image paths, each once, in a deterministic
  order (see `expand_inputs`). Folders are searched recursively, following symbolic links to
  folders (as `**` globs do; a folder reached twice is searched once); files of folders and
  globs are taken by extension, and what is skipped is counted by reason in the summary. An
  INPUT that matches nothing is a usage error (exit code 2) raised before any work.
- Before any image is read: the output's folder must be writable, the model folder is checked
  (`model_folder.check_model_folder`: one line naming the file and the fault, exit code 2) and
  the output may be replaced or resumed (see below).
- Decoding: a `DataLoader` whose worker processes (`--workers`) decode each image and cut its
  views (uint8) while the main process normalises them and runs the forward of the batch before.
  `--batch-size` counts views, so memory does not grow with the view policy, nor with an image's
  shape (views are cut without upscaling whole thin images; see `UniQAImageProcessor.views`).
- Heads: a model with named heads (`uniqa heads`) gives every head's columns from one image-tower
  pass: the default head's `score`, `mos`, `group_<g>`, and a head X's `X`, `X_mos`,
  `X_group_<g>`; `--heads default,X` keeps some.
- Output: one row per image (`path`, the chosen scores, `error`) in CSV or JSONL, streamed
  through `sharded_output.ShardedOutput`: rows go to `<output>.part<rank>`, flushed after every
  batch, so a crash loses at most the batch in flight; at the end the output is rewritten once,
  atomically, with each input once, in input order, and `<output>.meta.json` records what
  produced it. A file that cannot be decoded gets a row with empty scores and the reason in
  `error`; it never stops the run. Animated or multi-page files are scored on their first frame
  (counted in the summary).
- File names that are not valid UTF-8 are written as their own bytes (the file is UTF-8
  otherwise; Python reads them back with `errors="surrogateescape"`), and resumes match them.
- An existing output is replaced only if this tool wrote it (its `.meta.json` is there) or with
  `--overwrite`; a run in which every image fails leaves an earlier output as it was.
- `--resume` keeps the successful rows of the output and scores the rest (failed rows are
  retried). It is refused when the model weights or config, dtype, prompts, view policy, view
  seed, image processor (`--jpeg-draft` included) or columns differ from those recorded. Rows of images no longer among
  the inputs are kept, after the listed ones: a resume never drops results.
- Distributed: under `accelerate launch` every process scores a strided share of the inputs and
  streams to its own part file; the main process merges them into the single output. Scores
  equal a one-process run's within 1e-6 (`mos`: 1e-6 of its range), as with another
  `--batch-size`: float32 sums run in another order.
- Exit code: 0 when at least one image was scored, 1 when none could be, 2 for usage errors.
"""

import glob
import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..configuration_uniqa import DEFAULT_HEAD, view_count
from ..core.cpu_runtime import decoding_worker_init
from ..core.fingerprints import state_digest
from ..core.inference_speed import (
    compile_pays_off,
    compile_vision_tower,
    optimize_for_scoring,
)
from ..core.model_folder import load_model, model_fingerprint
from ..errors import UsageError  # noqa: F401  (raised here; importable from here too)
from ..modeling_uniqa import UniQAModel
from ..processing_uniqa import UniQAImageError, UniQAImageProcessor, load_image, per_image_views

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
PATH_LIST_EXTENSIONS = frozenset({".txt", ".lst"})


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
@dataclass
class InputList:
    """The image paths of the INPUT arguments and what was passed over, `{reason: count}`."""

    paths: list
    skipped: Counter = field(default_factory=Counter)

    def describe_skipped(self) -> str:
        return ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items(), key=lambda item: (-item[1], item[0])))


def _is_image_name(path: str, skipped: Counter) -> bool:
    extension = os.path.splitext(path)[1].lower()
    if extension in IMAGE_EXTENSIONS:
        return True
    skipped[f"file(s) named {extension or '(no extension)'}"] += 1
    return False


def _images_under(folder: str, skipped: Counter) -> list:
    """Image files below `folder` (any depth, through symbolic links to folders), sorted by path.
    A folder reached again (a link loop, or two links to one folder) is searched once."""
    found, seen = [], set()
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            skipped["folder(s) reached again through a symbolic link"] += 1
            folders[:] = []
            continue
        seen.add(real)
        found += [os.path.join(root, name) for name in names if _is_image_name(name, skipped)]
    return sorted(found)


def _read_path_list(list_file: str) -> list:
    """The image paths of a list file: one a line, `#` comments and blank lines skipped, relative
    paths taken from the list's folder. Missing files are kept: they become error rows. Lines
    are UTF-8 except for names' own bytes (surrogateescape), as in the output."""
    folder = os.path.dirname(os.path.abspath(list_file))
    with open(list_file, encoding="utf-8", errors="surrogateescape") as handle:
        lines = [line.strip() for line in handle]
    return [os.path.join(folder, os.path.expanduser(line)) for line in lines if line and not line.startswith("#")]


def _expand_input(item: str, skipped: Counter) -> list:
    if os.path.isdir(item):
        return _images_under(item, skipped)
    if os.path.isfile(item) and os.path.splitext(item)[1].lower() in PATH_LIST_EXTENSIONS:
        return _read_path_list(item)
    if os.path.lexists(item):  # a file named on the command line, whatever it is: a FIFO gets an error row
        return [item]
    found = []
    for match in sorted(glob.glob(item, recursive=True)):
        if os.path.isdir(match):
            found += _images_under(match, skipped)
        elif _is_image_name(match, skipped):
            found.append(match)
    return found


def expand_inputs(inputs) -> InputList:
    """INPUT arguments -> absolute image paths, each once, in a deterministic order.

    A folder gives its image files (by extension, any depth, through symbolic links to folders)
    sorted by path; a `.txt`/`.lst` file gives the paths it lists; another existing path is an
    image whatever its name or kind (a FIFO or device gets an error row saying what it is);
    anything else is a glob pattern whose sorted matches are taken, image files by extension and
    folders searched like folders. The order is that of the INPUTs, and a path seen before is
    skipped. Files passed over are counted by reason in `skipped`. An INPUT that yields nothing
    raises `UsageError` naming it.
    """
    paths, skipped = {}, Counter()  # insertion-ordered set
    for item in inputs:
        found = _expand_input(item, skipped)
        if not found:
            raise UsageError(f"{item!r} matches no image: it is no file, no folder holding images and no glob with image matches.")
        for path in found:
            normal = os.path.normpath(os.path.abspath(path))
            if normal in paths:
                skipped["path(s) listed twice"] += 1
            paths.setdefault(normal, None)
    return InputList(list(paths), skipped)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
class ImageViews(Dataset):
    """Image `index` -> `(index, uint8 views (views, crop, crop, 3), None, frames in the file)`,
    or `(index, None, error message, 0)` when the file cannot be scored.

    Runs in the DataLoader workers. The views travel as uint8, 4x fewer bytes than float32 in the
    prefetch queue; `Normalizer` turns them into model inputs where the model is.
    """

    def __init__(self, paths: list, processor: UniQAImageProcessor, view_policy: str, view_seed: int):
        self.paths, self.processor = paths, processor
        self.view_policy, self.view_seed = view_policy, view_seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return index, *decode_views(self.paths[index], self.processor, self.view_policy, self.view_seed, self.paths[index])


def decode_views(source, processor: UniQAImageProcessor, view_policy: str, view_seed: int, name: str):
    """An image (path, encoded bytes, PIL image or array) -> `(uint8 views tensor, None, frames)`,
    or `(None, one-line error message, 0)` when it cannot be scored. Also used by the `datasets`,
    tar-shard and Ray paths, so every path cuts the same views; `name` names the image in errors."""
    try:
        image = load_image(source, draft_size=processor.draft_size(view_policy), name=name)
        views = processor.views(image, view_policy, view_seed, name=name)
    except Exception as error:  # any failure of one file is that file's error row, never the run's end
        message = str(error) if isinstance(error, UniQAImageError) else f"{name}: {type(error).__name__}: {error}"
        if not message.startswith(name):
            message = f"{name}: {message}"
        return None, " ".join(message.split()), 0  # one line, for CSV readers and logs
    return torch.from_numpy(views), None, image.info.get("n_frames", 1)


@dataclass
class Batch:
    """A collated batch: the decoded images and the failures, by dataset index."""

    indices: list
    views: torch.Tensor | None  # uint8 (len(indices), views, crop, crop, 3)
    errors: list  # [(index, message)]
    multi_frame: list = field(default_factory=list)  # [(index, frames)] scored on their first frame

    def pin_memory(self) -> "Batch":
        """Page-lock the views. The DataLoader's pinning thread (`pin_memory=True`, on GPUs) calls
        this: it pins tensors it can see, and a dataclass hides them, so without this method the
        views stayed pageable and each batch's copy to the GPU blocked the scoring loop."""
        if self.views is not None:
            self.views = self.views.pin_memory()
        return self


def collate_views(items) -> Batch:
    decoded = [(index, views) for index, views, _, _ in items if views is not None]
    return Batch(
        indices=[index for index, _ in decoded],
        views=torch.stack([views for _, views in decoded]) if decoded else None,
        errors=[(index, error) for index, _, error, _ in items if error is not None],
        multi_frame=[(index, frames) for index, _, _, frames in items if frames > 1],
    )


class Normalizer:
    """uint8 views (..., crop, crop, 3) -> CLIP-normalised float32 (..., 3, crop, crop) on `device`.

    The torch form of `UniQAImageProcessor.normalize_views` (same float32 operations, same
    values), run on the model's device: a GPU does the arithmetic, and on the CPU it costs under
    1% of the forward.
    """

    def __init__(self, processor: UniQAImageProcessor, device: torch.device):
        self.device = device
        self.mean = torch.tensor(processor.image_mean, dtype=torch.float32, device=device) * 255.0
        self.inv_std = 1.0 / (torch.tensor(processor.image_std, dtype=torch.float32, device=device) * 255.0)

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        pixels = (views.to(self.device, non_blocking=True).float() - self.mean) * self.inv_std
        return pixels.movedim(-1, -3).contiguous()


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def load_scorer(
    model_dir: str, dtype: torch.dtype, device: torch.device, prompts: str | None = None, tokenizer_dir: str | None = None,
    adapter: str | None = None, compile: bool = False, quantize: str | None = None,
):
    """The model (checked, eval mode, on `device`, `adapter` and `prompts` applied, sped up by
    `inference_speed.optimize_for_scoring` with `compile` and `quantize`) and its image processor.
    Raises `ModelFolderError` or `UsageError` with one line naming the problem."""
    model, processor, _ = load_model(model_dir, dtype=dtype, device=device, adapter=adapter, prompts=prompts, tokenizer_dir=tokenizer_dir)
    try:
        applied = optimize_for_scoring(model, device, compile=compile, quantize=quantize)
    except ValueError as error:
        raise UsageError(str(error)) from error
    logger.debug("Scoring speed-ups: %s", ", ".join(applied) or "none")
    return model, processor


def set_jpeg_draft(processor: UniQAImageProcessor, jpeg_draft: bool | None, view_policy: str) -> None:
    """`--jpeg-draft` / `--no-jpeg-draft` over the saved processor's setting (`None`: keep it);
    says so when it cannot apply to `view_policy` (crops of the native resolution)."""
    if jpeg_draft is not None:
        processor.jpeg_draft = bool(jpeg_draft)
    if jpeg_draft and processor.draft_size(view_policy) is None:
        logger.warning(
            "--jpeg-draft has no effect with the %s views and no shortest_edge: they crop the native resolution, "
            "so JPEGs are decoded whole (it applies to the resize policy and to processors with shortest_edge).", view_policy,
        )


def _column(head: str, kind: str) -> str:
    """Column of one head's output: `score`, `mos`, `group_<g>` for the default head; `X`,
    `X_mos`, `X_group_<g>` for a head X (the pipeline's keys)."""
    if head == DEFAULT_HEAD:
        return kind
    return head if kind == "score" else f"{head}_{kind}"


def select_heads(model: UniQAModel, heads: list | None) -> list:
    """The heads to score, in the model's order; `UsageError` naming unknown ones."""
    if heads is None:
        return list(model.head_names)
    unknown = [name for name in heads if name not in model.head_names]
    if unknown:
        raise UsageError(f"--heads: this model has no head {', '.join(map(repr, unknown))}; its heads: {', '.join(model.head_names)}.")
    return [name for name in model.head_names if name in heads]


def output_columns(model: UniQAModel, kinds: list | None, heads: list | None = None, key_column: str = "path") -> list:
    """`key_column`, each selected head's columns (see `_column`), `error`. Default kinds: score,
    plus mos for each head that knows its MOS range; an explicit `mos` needs every selected head
    to. `UsageError` for a head whose column has the key column's name (a head named `path`)."""
    heads = select_heads(model, heads)
    if kinds is not None and "mos" in kinds:
        unknown = [head for head in heads if model.config.head_config(head).mos_range is None]
        if unknown:
            raise UsageError(
                f"--outputs mos: head(s) {', '.join(unknown)} do not know the MOS range of their training data "
                "(zero-shot?); leave mos out or select other heads with --heads."
            )
    columns = [key_column]
    for head in heads:
        settings = model.config.head_config(head)
        head_kinds = kinds if kinds is not None else ["score"] + (["mos"] if settings.mos_range is not None else [])
        columns += [_column(head, kind) for kind in ("score", "mos") if kind in head_kinds]
        if "groups" in head_kinds:
            columns += [_column(head, f"group_{name}") for name in settings.prompt_group_names]
        if key_column in columns[1:]:  # the rows would lose their key to the scores
            raise UsageError(f"head {head!r} writes a column {key_column!r}, the name of the key column here; leave it out with "
                             "--heads, or add it again under another name (uniqa heads).")
    return columns + ["error"]


CONFIG_VOLATILE_KEYS = {"transformers_version", "dtype", "torch_dtype", "_name_or_path"}  # not about the numbers (dtype is its own field)


def _without(value, keys: set):
    """`value` with the dict entries named in `keys` removed at every depth."""
    if isinstance(value, dict):
        return {key: _without(item, keys) for key, item in value.items() if key not in keys}
    return value


def _sha256_of_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def scoring_fingerprint(model_dir: str, model: UniQAModel, processor: UniQAImageProcessor, dtype: str, view_policy: str, view_seed: int,
                        columns: list, quantize: str | None = None) -> dict:
    """What decides the numbers of an output: a resume must match it field by field. The
    prompts are their own fields (they change with --prompts), not part of the config's hash.
    `quantize`, `jpeg_draft` and per-image view seeding are recorded only when they change the numbers, so outputs written
    before they existed still resume."""
    config = _without(model.config.to_dict(), {"prompt_groups", "prompt_group_names", "prompt_input_ids"} | CONFIG_VOLATILE_KEYS)
    return {
        "model_weights_sha256": model_fingerprint(model_dir),
        # The default head's weights as scored (an --adapter replaces those of the folder).
        "head_sha256": state_digest({"level_scores": model.level_scores, **(model.adapter.state_dict() if model.adapter is not None else {})}),
        "model_config_sha256": _sha256_of_json(config),
        "dtype": dtype,
        "prompt_groups": model.config.prompt_group_names,
        "prompts": model.config.prompts,
        "prompt_token_ids_sha256": _sha256_of_json(model.config.prompt_input_ids),
        "view_policy": view_policy,
        "view_seed": view_seed,
        "image_processor": {key: getattr(processor, key) for key in ("crop_size", "shortest_edge", "image_mean", "image_std", "max_aspect_ratio")},
        "columns": columns,
    } | ({"quantize": quantize} if quantize else {}) | ({"jpeg_draft": True} if processor.draft_size(view_policy) else {}) \
      | ({"view_seeding": "per_image"} if per_image_views(processor, view_policy) else {})


def parse_csv_row(row: dict) -> dict:
    """A CSV row of strings -> numbers (empty: `None`) and `error` (empty: `None`); `ValueError`
    for a row with a value that is not a number (it is scored again)."""
    numbers = {key: float(value) if value else None for key, value in row.items() if key not in ("path", "error")}
    return row | numbers | {"error": row["error"] or None}


def view_loader(paths: list, processor: UniQAImageProcessor, view_policy: str, view_seed: int, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    """Batches of decoded views of `paths`, decoded in `workers` processes while the model runs;
    `batch_size` counts views (so memory does not depend on the view policy)."""
    return DataLoader(
        ImageViews(paths, processor, view_policy, view_seed),
        batch_size=max(1, batch_size // view_count(view_policy)),
        num_workers=workers,
        collate_fn=collate_views,
        pin_memory=device.type == "cuda",
        worker_init_fn=decoding_worker_init(device),
    )


def score_batch(model: UniQAModel, normalize: Normalizer, batch: Batch, paths: list, columns: list, heads: list | None = None) -> list:
    """The result rows of a batch, scored and failed images alike, in dataset order. The first
    column is the key (`path` here; the sample key of tar shards): `paths[index]`. `heads`:
    those to score (default: all); one image-tower pass feeds them all."""
    key = columns[0]
    rows = {index: dict.fromkeys(columns) | {key: paths[index], "error": error} for index, error in batch.errors}
    if batch.views is not None:
        heads = select_heads(model, heads)
        outputs = model(pixel_values=normalize(batch.views), heads=[head for head in heads if head != DEFAULT_HEAD])
        table = {}
        for head in heads:
            head_output = outputs if head == DEFAULT_HEAD else outputs.head_outputs[head]
            settings = model.config.head_config(head)
            scores = head_output.scores.float()
            table[_column(head, "score")] = scores
            if settings.mos_range is not None:
                table[_column(head, "mos")] = model.score_to_mos(scores, head)
            for group, name in enumerate(settings.prompt_group_names):
                table[_column(head, f"group_{name}")] = head_output.group_scores[:, group].float()
        values = {column: table[column].tolist() for column in columns[1:-1]}
        for position, index in enumerate(batch.indices):
            rows[index] = {key: paths[index]} | {column: values[column][position] for column in values} | {"error": None}
    return [rows[index] for index in sorted(rows)]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def score_shard(model, processor, paths: list, columns: list, writer, device, view_policy: str, view_seed: int,
                batch_size: int, workers: int, show_progress: bool, heads: list | None = None, auto_compile: bool = False) -> int:
    """Score `paths`, streaming each batch's rows to `writer`. Returns how many files held
    several frames (scored on their first). `auto_compile`: compile the vision tower after the
    first scored batch if the work left repays it (`--compile` not given)."""
    loader = view_loader(paths, processor, view_policy, view_seed, batch_size, workers, device)
    normalize, failed, multi_frame, done = Normalizer(processor, device), 0, 0, 0
    with torch.inference_mode(), logging_redirect_tqdm(), tqdm(total=len(paths), unit="img", disable=not show_progress, desc="Scoring") as bar:
        for batch in loader:
            start = time.perf_counter()
            writer.write(score_batch(model, normalize, batch, paths, columns, heads))
            done += len(batch.indices) + len(batch.errors)
            if auto_compile and batch.indices:  # decided once, on the first batch with images
                auto_compile = False
                if compile_pays_off((time.perf_counter() - start) / len(batch.indices), len(paths) - done):
                    logger.info("Compiling the vision tower (the work left repays it; --no-compile to skip).")
                    compile_vision_tower(model)
            for _, message in batch.errors:
                logger.warning("Not scored: %s", message)
            for index, frames in batch.multi_frame:
                logger.info("Scored on its first frame of %d: %s", frames, paths[index])
            failed += len(batch.errors)
            multi_frame += len(batch.multi_frame)
            bar.set_postfix(errors=failed, refresh=False)
            bar.update(len(batch.indices) + len(batch.errors))
    return multi_frame
