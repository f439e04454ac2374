"""`uniqa score`: score image files, folders, globs or path lists with a UniQA model.

    uniqa score photos/ --model uniqa-koniq --output scores.csv
    uniqa score "shots/**/*.png" list.txt --model uniqa-base --prompts sharpness,noise --output s.jsonl
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m modeling_uniqa.cli score ...

How it runs:

- Inputs: INPUT arguments become one list of absolute image paths, each once, in a deterministic
  order (see `expand_inputs`). An INPUT that matches nothing is a usage error (exit code 2)
  raised before any work.
- Decoding: a `DataLoader` whose worker processes (`--workers`) decode each image and cut its
  views (uint8) while the main process normalises them and runs the forward of the batch before.
  `--batch-size` counts views, so memory does not grow with the view policy.
- Output: one row per image (`path`, the chosen scores, `error`) in CSV or JSONL, written and
  flushed after every batch, so a crash loses at most the batch in flight. A file that cannot be
  decoded gets a row with empty scores and the reason in `error`; it never stops the run.
  At the end the file is rewritten once (temporary file + `os.replace`) with each input exactly
  once, in input order.
- `--resume` keeps the successful rows of an existing output and scores the rest; failed rows
  are retried.
- Distributed: under `accelerate launch` every process scores a strided share of the inputs and
  streams to its own file (process 0 to the output, process r to `<output>.part<r>`); the main
  process merges them into the single output. The result equals a one-process run.
- Exit code: 0 when at least one image was scored, 1 when none could be, 2 for usage errors.
"""

import argparse
import csv
import glob
import io
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .configuration_uniqa import parse_view_policy, view_count
from .modeling_uniqa import UniQAModel
from .processing_uniqa import UniQAImageError, UniQAImageProcessor, load_image

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
PATH_LIST_EXTENSIONS = frozenset({".txt", ".lst"})
OUTPUT_FORMATS = (".csv", ".jsonl")
OUTPUT_KINDS = ("score", "mos", "groups")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class UsageError(Exception):
    """A problem with the command line, its inputs or an output to resume: exit code 2."""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _view_policy(value: str) -> str:
    try:
        parse_view_policy(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def _output_kinds(value: str) -> list:
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(OUTPUT_KINDS)} (comma-separated), got {value!r}")
    return kinds


def _at_least(minimum: int):
    def parse(value: str) -> int:
        if not value.lstrip("-").isdigit() or int(value) < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value!r}")
        return int(value)

    return parse


def _output_path(value: str) -> str:
    if os.path.splitext(value)[1].lower() not in OUTPUT_FORMATS:
        raise argparse.ArgumentTypeError(f"the output must end in {' or '.join(OUTPUT_FORMATS)}, got {value!r}")
    return os.path.abspath(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Rows are written as they come (one per image: path, scores, error) and the file is put in "
        "input order at the end. Unreadable images get an error row and do not stop the run. Exit code: "
        "0 if any image was scored, 1 if none could be, 2 for usage errors. Several processes: "
        "accelerate launch [--multi_gpu --num_processes N] -m modeling_uniqa.cli score ... (on CPUs "
        "with ACCELERATE_USE_CPU=1) writes the same single file."
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="Image files, folders (searched recursively), glob patterns (quote them; ** recurses) or "
        ".txt/.lst files listing one image path per line (relative to the list's folder; # comments).",
    )
    parser.add_argument("--model", required=True, help="A UniQA model folder (e.g. written by `uniqa convert`).")
    parser.add_argument("--output", required=True, type=_output_path, help="Result file: .csv or .jsonl.")
    parser.add_argument(
        "--outputs", type=_output_kinds, default=None,
        help="Comma-separated columns to write: score (normalised, 1 = best), mos (the training data's MOS "
        "scale; needs a model that knows it), groups (one score per prompt group). "
        "Default: score, plus mos when the model knows its MOS range.",
    )
    parser.add_argument("--resume", action="store_true", help="Keep the successful rows of an existing output and score the rest (failed rows are retried). Without it an existing output is replaced.")
    parser.add_argument(
        "--batch-size", type=_at_least(1), default=32,
        help="Views per forward (default 32): a batch holds as many images as fit, at least one, so memory "
        "does not depend on the view policy (random10: 3 images a batch).",
    )
    parser.add_argument("--workers", type=_at_least(0), default=2, help="Decoding worker processes; 0 decodes in the main process (default 2).")
    parser.add_argument("--view-policy", type=_view_policy, default=None, help="random<N>, center, five_crop, ten_crop or resize (default: the model's).")
    parser.add_argument("--view-seed", type=int, default=None, help="Seed of random<N> crop positions (default: the model's).")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="Weights and compute dtype (default float32).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: the GPU of this process if there is one, else the CPU.")
    parser.add_argument("--prompts", default=None, help="Replace the model's prompt groups, e.g. sharpness,noise or natural (zero-shot ranking). Needs a tokenizer.")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder for --prompts (default: the model folder).")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def _images_under(folder: str) -> list:
    """Image files below `folder` (any depth), by their sorted paths."""
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.join(root, name) for name in names if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def _read_path_list(list_file: str) -> list:
    """The image paths of a list file: one a line, `#` comments and blank lines skipped, relative
    paths taken from the list's folder. Missing files are kept: they become error rows."""
    folder = os.path.dirname(os.path.abspath(list_file))
    with open(list_file, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle]
    return [os.path.join(folder, os.path.expanduser(line)) for line in lines if line and not line.startswith("#")]


def _expand_input(item: str) -> list:
    if os.path.isdir(item):
        return _images_under(item)
    if os.path.isfile(item):
        return _read_path_list(item) if os.path.splitext(item)[1].lower() in PATH_LIST_EXTENSIONS else [item]
    matches = sorted(glob.glob(item, recursive=True))
    return [path for match in matches for path in (_images_under(match) if os.path.isdir(match) else [match])]


def expand_inputs(inputs) -> list:
    """INPUT arguments -> absolute image paths, each once, in a deterministic order.

    A folder gives its image files (by extension, any depth) sorted by path; a `.txt`/`.lst` file
    gives the paths it lists; another existing file is an image whatever its name; anything else is
    a glob pattern whose sorted matches are taken (folders among them searched like folders). The
    order is that of the INPUTs, and a path seen before is skipped. An INPUT that yields nothing
    raises `UsageError` naming it.
    """
    paths = {}  # insertion-ordered set
    for item in inputs:
        found = _expand_input(item)
        if not found:
            raise UsageError(f"{item!r} matches no image: it is no file, no folder holding images and no glob with matches.")
        for path in found:
            paths.setdefault(os.path.normpath(os.path.abspath(path)), None)
    return list(paths)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
class ImageViews(Dataset):
    """Image `index` -> `(index, uint8 views (views, crop, crop, 3), None)`, or
    `(index, None, error message)` when the file cannot be scored.

    Runs in the DataLoader workers. The views travel as uint8, 4x fewer bytes than float32 in the
    prefetch queue; `Normalizer` turns them into model inputs where the model is.
    """

    def __init__(self, paths: list, processor: UniQAImageProcessor, view_policy: str, view_seed: int):
        self.paths, self.processor = paths, processor
        self.view_policy, self.view_seed = view_policy, view_seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            views = self.processor.views(load_image(path), self.view_policy, self.view_seed)
        except Exception as error:  # any failure of one file is that file's error row, never the run's end
            message = str(error) if isinstance(error, UniQAImageError) else f"{path}: {type(error).__name__}: {error}"
            return index, None, " ".join(message.split())  # one line, for CSV readers and logs
        return index, torch.from_numpy(views), None


@dataclass
class Batch:
    """A collated batch: the decoded images and the failures, by dataset index."""

    indices: list
    views: torch.Tensor | None  # uint8 (len(indices), views, crop, crop, 3)
    errors: list  # [(index, message)]


def collate_views(items) -> Batch:
    decoded = [(index, views) for index, views, _ in items if views is not None]
    return Batch(
        indices=[index for index, _ in decoded],
        views=torch.stack([views for _, views in decoded]) if decoded else None,
        errors=[(index, error) for index, _, error in items if error is not None],
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
# Result files
# --------------------------------------------------------------------------------------------
def is_csv(path: str) -> bool:
    return path.lower().endswith(".csv")


def part_files(output: str) -> list:
    """The per-process files `<output>.part<rank>` present now (of this run or a crashed one)."""
    pattern = re.compile(re.escape(os.path.basename(output)) + r"\.part\d+$")
    return sorted(path for path in glob.glob(glob.escape(output) + ".part*") if pattern.match(os.path.basename(path)))


def format_rows(rows: list, columns: list, csv_format: bool, header: bool) -> str:
    if not csv_format:
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _parse_rows(path: str, text: str, columns: list) -> list:
    """Rows of a result file's complete lines. Raises `UsageError` if it was written with other columns."""
    numeric = columns[1:-1]
    if is_csv(path):
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is not None and reader.fieldnames != columns:
            raise UsageError(f"{path} has the columns {reader.fieldnames}, this run writes {columns}: use the same --outputs and --prompts, or drop --resume.")
        records = []
        for row in reader:
            if None in row or None in row.values():  # too many or too few fields
                continue
            try:
                row.update({key: float(row[key]) if row[key] else None for key in numeric})
            except ValueError:  # not a number: scored again
                continue
            records.append(row | {"error": row["error"] or None})
        return records
    records = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict):
            continue
        if set(row) != set(columns):
            raise UsageError(f"{path} has the keys {sorted(row)}, this run writes {columns}: use the same --outputs and --prompts, or drop --resume.")
        records.append(row)
    return records


def read_results(output: str, columns: list) -> dict:
    """`{path: row}` from the output and any part files. A later row of a path replaces an
    earlier one, but a failure never replaces a success. A line cut short by a crash (no newline
    at the end of the file) is ignored."""
    results = {}
    for path in [file for file in [output, *part_files(output)] if os.path.exists(file)]:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
        for row in _parse_rows(path, text[: text.rfind("\n") + 1], columns):
            previous = results.get(row["path"])
            if previous is None or previous["error"] or not row["error"]:
                results[row["path"]] = row
    return results


def merge_results(output: str, paths: list, columns: list) -> list:
    """Rewrite the output atomically with one row per scored input, in input order, from the
    output and the part files, then delete the part files. Returns the rows written."""
    results = read_results(output, columns)
    rows = [results[path] for path in paths if path in results]
    if len(rows) < len(results):
        logger.warning("Dropped %d rows of %s for images that are not among the inputs.", len(results) - len(rows), output)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by the `with` below, kept for its name)
        "w", dir=os.path.dirname(output), prefix=".tmp-", suffix=os.path.basename(output), delete=False, encoding="utf-8", newline=""
    )
    with handle:
        handle.write(format_rows(rows, columns, is_csv(output), header=True))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, output)
    for part in part_files(output):
        os.remove(part)
    return rows


class ResultStream:
    """Appends rows to one process's result file and flushes after every batch."""

    def __init__(self, path: str, columns: list):
        self.columns, self.csv_format = columns, is_csv(path)
        self.handle = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (a stream kept open across batches)
        self.needs_header = self.handle.tell() == 0

    def write(self, rows: list) -> None:
        self.handle.write(format_rows(rows, self.columns, self.csv_format, header=self.needs_header))
        self.handle.flush()
        self.needs_header = False

    def close(self) -> None:
        self.handle.close()


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def load_scorer(args, device: torch.device):
    """The model (eval mode, on `device`, prompts applied) and its image processor."""
    try:
        model = UniQAModel.from_pretrained(args.model, dtype=DTYPES[args.dtype])
    except (OSError, ValueError) as error:
        raise UsageError(f"--model {args.model}: cannot load a UniQA model ({error}).") from error
    if args.prompts:
        from .clip_tokenizer import resolve_prompt_tokenizer

        tokenizer_dir = args.tokenizer or args.model
        try:
            tokenizer = resolve_prompt_tokenizer(model, args.tokenizer)
        except (OSError, ValueError) as error:
            raise UsageError(f"--prompts needs a CLIP tokenizer and {tokenizer_dir} has none ({error}); pass --tokenizer DIR.") from error
        try:
            model.set_prompts(args.prompts, tokenizer)
        except ValueError as error:
            raise UsageError(f"--prompts {args.prompts}: {error}") from error
    if os.path.isfile(os.path.join(args.model, "preprocessor_config.json")):
        processor = UniQAImageProcessor.from_pretrained(args.model)
    else:
        processor = model.default_image_processor()
    return model.to(device).eval(), processor


def output_columns(model: UniQAModel, kinds: list | None) -> list:
    if kinds is None:
        kinds = ["score"] + (["mos"] if model.config.mos_range is not None else [])
    if "mos" in kinds and model.config.mos_range is None:
        raise UsageError("--outputs mos: this model does not know the MOS range of its training data (zero-shot?).")
    columns = ["path"] + [kind for kind in ("score", "mos") if kind in kinds]
    if "groups" in kinds:
        columns += [f"group_{name}" for name in model.config.prompt_group_names]
    return columns + ["error"]


def score_batch(model: UniQAModel, normalize: Normalizer, batch: Batch, paths: list, columns: list) -> list:
    """The result rows of a batch, scored and failed images alike, in dataset order."""
    rows = {index: dict.fromkeys(columns) | {"path": paths[index], "error": error} for index, error in batch.errors}
    if batch.views is not None:
        outputs = model(pixel_values=normalize(batch.views))
        scores = outputs.scores.float()
        table = {"score": scores}
        if model.config.mos_range is not None:
            table["mos"] = model.score_to_mos(scores)
        for group, name in enumerate(model.config.prompt_group_names):
            table[f"group_{name}"] = outputs.group_scores[:, group].float()
        values = {column: table[column].tolist() for column in columns[1:-1]}
        for position, index in enumerate(batch.indices):
            rows[index] = {"path": paths[index]} | {column: values[column][position] for column in values} | {"error": None}
    return [rows[index] for index in sorted(rows)]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def score_shard(model, processor, args, paths: list, columns: list, stream: ResultStream, device, show_progress: bool) -> None:
    """Score `paths`, streaming each batch's rows to `stream`."""
    view_policy = args.view_policy or model.config.view_policy
    view_seed = model.config.view_seed if args.view_seed is None else args.view_seed
    views_per_image = view_count(view_policy)
    loader = DataLoader(
        ImageViews(paths, processor, view_policy, view_seed),
        batch_size=max(1, args.batch_size // views_per_image),
        num_workers=args.workers,
        collate_fn=collate_views,
        pin_memory=device.type == "cuda",
    )
    normalize, failed = Normalizer(processor, device), 0
    with torch.inference_mode(), logging_redirect_tqdm(), tqdm(total=len(paths), unit="img", disable=not show_progress, desc="Scoring") as bar:
        for batch in loader:
            stream.write(score_batch(model, normalize, batch, paths, columns))
            for _, message in batch.errors:
                logger.warning("Not scored: %s", message)
            failed += len(batch.errors)
            bar.set_postfix(errors=failed, refresh=False)
            bar.update(len(batch.indices) + len(batch.errors))


def reset_output(output: str, paths: list, columns: list, resume: bool) -> None:
    """Before scoring, on the main process: with `resume`, fold the output and any part files into
    the output (canonical order) that process 0 then appends to; otherwise delete them."""
    os.makedirs(os.path.dirname(output), exist_ok=True)
    if resume:
        merge_results(output, paths, columns)
        return
    for stale in [output, *part_files(output)]:
        if os.path.exists(stale):
            os.remove(stale)


def run(args) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        logger.error("--device cuda: no CUDA device is available here.")
        return 2
    # `PartialState` sets up CPU processes (gloo) only when told to use the CPU: unlike
    # `Accelerator` it does not read ACCELERATE_USE_CPU itself.
    use_cpu = args.device == "cpu" or (args.device == "auto" and (not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")))
    state = PartialState(cpu=use_cpu)
    try:
        paths = expand_inputs(args.inputs)
        model, processor = load_scorer(args, state.device)
        columns = output_columns(model, args.outputs)
        done = read_results(args.output, columns) if args.resume else {}
    except UsageError as error:  # raised alike in every process: all of them stop here
        logger.error("%s", error)
        return 2
    todo = [path for path in paths if path not in done or done[path]["error"]]
    state.wait_for_everyone()  # every process has read the old results: they may change now
    if state.is_main_process:
        reset_output(args.output, paths, columns, args.resume)
        logger.info("%d images to score (%d already in %s), %d process(es).", len(todo), len(paths) - len(todo), args.output, state.num_processes)
    state.wait_for_everyone()

    start = time.perf_counter()
    stream = ResultStream(args.output if state.is_main_process else f"{args.output}.part{state.process_index}", columns)
    try:
        shard = todo[state.process_index :: state.num_processes]
        score_shard(model, processor, args, shard, columns, stream, state.device, show_progress=state.is_main_process)
    finally:
        stream.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return 0

    rows = merge_results(args.output, paths, columns)
    seconds = time.perf_counter() - start
    failed = sum(1 for row in rows if row["error"])
    logger.info(
        "Scored %d of %d images, %d failed (see the error column of %s). This run: %d images in %.1f s (%.2f images/s).",
        len(rows) - failed, len(paths), failed, args.output, len(todo), seconds, len(todo) / seconds if seconds > 0 else 0.0,
    )
    return 0 if len(rows) > failed else 1
