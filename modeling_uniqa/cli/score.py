"""`uniqa score`: the command line of `modeling_uniqa.scoring.score_images`."""

import argparse
import dataclasses
import logging
import os
import time

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from ..core.cpu_runtime import prepare_cpu_process
from ..core.default_model import DEFAULT_MODEL
from ..core.device_defaults import local_process_count
from ..core.inference_speed import QUANTIZE_CHOICES
from ..core.output_lock import output_lock
from ..core.runtime import DTYPES
from ..errors import ModelFolderError, OutputError, UsageError
from ..scoring.image_scorer import ImageScorer
from ..scoring.options import ScoreOptions
from ..scoring.score_datasets import DatasetScorer, load_split, score_dataset
from ..scoring.score_images import (
    expand_inputs,
    load_scorer,
    output_columns,
    parse_csv_row,
    score_shard,
    scoring_fingerprint,
    select_heads,
    set_jpeg_draft,
)
from ..scoring.score_parquet import read_fingerprint, rows_to_table, write_table_atomic
from ..scoring.score_shards import check_done, expand_shards, is_shard_name, score_shards
from ..scoring.sharded_output import ShardedOutput, check_writable, output_format
from .arguments import at_least, head_list_arg, output_kinds_arg, output_path_arg, view_policy_arg

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Rows are written as they come (one per image: path, scores, error) and the file is put in "
        "input order at the end; OUTPUT.meta.json records what produced it. Unreadable images get an error "
        "row and do not stop the run. File names that are not UTF-8 are written as their own bytes (read "
        "them with errors='surrogateescape'). Scores (0-1) are reproducible within 1e-6 across batch sizes and "
        "process counts (mos: within 1e-6 of its range). Exit code: 0 if any image was scored, 1 if none could be, 2 for usage errors "
        "(checked before any image is read). Several processes: "
        "accelerate launch [--multi_gpu --num_processes N] -m modeling_uniqa.cli score ... (on CPUs "
        "with ACCELERATE_USE_CPU=1) writes the same single file."
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="Image files (any name), folders (searched recursively, following symbolic links; image extensions "
        "only), glob patterns (quote them; ** recurses; image extensions only) or .txt/.lst files listing one "
        "image path per line (relative to the list's folder; # comments). Skipped files are counted in the log. "
        "WebDataset .tar shards (brace patterns such as 'shards/{00000..00999}.tar' are expanded) are scored into "
        "one OUTPUT/<shard>.parquet each; shards already there are skipped.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="A UniQA model folder (e.g. written by `uniqa convert`); default: UniQA-Tiny, shipped with the package.")
    parser.add_argument("--output", required=True, type=output_path_arg, help="Result file: .csv or .jsonl; .parquet with --dataset; a folder for tar shards.")
    parser.add_argument("--dataset", default=None, help="Score a `datasets` dataset instead of files: a save_to_disk folder, a data folder or a Hub id.")
    parser.add_argument("--split", default="train", help="The split of --dataset (default train).")
    parser.add_argument("--image-column", default="image", help="The image column of --dataset (default image).")
    parser.add_argument("--num-proc", type=at_least(1), default=None, help="--dataset: map processes, each with its model (one per GPU on GPUs).")
    parser.add_argument(
        "--keep-columns", type=lambda value: [name.strip() for name in value.split(",") if name.strip()], default=None,
        help="Copy these fields into the Parquet output: json fields of tar samples (e.g. url,caption) or --dataset columns.",
    )
    parser.add_argument(
        "--outputs", type=output_kinds_arg, default=None,
        help="Comma-separated columns to write: score (normalised, 1 = best), mos (the training data's MOS "
        "scale; needs a model that knows it), groups (one score per prompt group). "
        "Default: score, plus mos when the model knows its MOS range.",
    )
    parser.add_argument(
        "--heads", type=head_list_arg, default=None,
        help="Comma-separated named heads to score (`uniqa heads list MODEL`; `default` is the score/mos head). "
        "Default: every head. A head X writes columns X, X_mos, X_group_<g>.",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="Keep the successful rows of an existing output and score the rest (failed rows are retried; rows of "
        "images no longer listed are kept). Refused if the model, dtype, prompts, view policy or columns differ "
        "from those recorded in OUTPUT.meta.json. Without it an existing output is replaced at the end of the run.",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Allow replacing an existing OUTPUT that this tool did not write (no OUTPUT.meta.json beside it).",
    )
    parser.add_argument(
        "--batch-size", type=at_least(1), default=None,
        help="Views per forward (default on the CPU 32, or as many as hold 32 ViT-B/16 views' tokens for a smaller tower: "
        "96 for UniQA-Tiny; 256 on a GPU): a batch holds as many images as fit, at least one, so memory does not depend "
        "on the view policy (random10, batch 32: 3 images a batch).",
    )
    parser.add_argument(
        "--workers", type=at_least(0), default=None,
        help="Decoding worker processes; 0 decodes in the main process (default: 2 on the CPU; on a GPU the cores of "
        "this process less one, at most 16, since there decoding is the bottleneck).",
    )
    parser.add_argument("--view-policy", type=view_policy_arg, default=None, help="random<N>, center, five_crop, ten_crop or resize (default: the model's).")
    parser.add_argument("--view-seed", type=int, default=None, help="Seed of random<N> crop positions (default: the model's).")
    parser.add_argument(
        "--jpeg-draft", action=argparse.BooleanOptionalAction, default=None,
        help="Decode JPEGs at a reduced scale (PIL draft mode) where the views downsize anyway: the resize policy, "
        "or an image processor with shortest_edge. Faster decoding; scores move slightly (not bit-exact). "
        "Default: the image processor's jpeg_draft (off unless saved on).",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="Weights and compute dtype (default float32).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: the GPU of this process if there is one, else the CPU.")
    parser.add_argument("--prompts", default=None, help="Replace the model's prompt groups, e.g. sharpness,noise or natural (zero-shot ranking). Needs a tokenizer.")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder for --prompts (default: the model folder).")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the vision tower (scores within 1e-5; about 1.1x faster on the CPU). Compiling costs about "
        "40-60 s per process at ViT-B/16 on 2 CPU cores. Default: image files on the CPU in float32 are compiled when "
        "the first batch shows at least 10 minutes of work left; --compile: always; --no-compile: never. Tar shards "
        "and --dataset compile only with --compile.",
    )
    parser.add_argument(
        "--quantize", choices=QUANTIZE_CHOICES, default=None,
        help="int8: int8 dynamic quantisation of the vision tower's linear layers (CPU, float32). About 2x faster at "
        "ViT-B/16 on an AVX512-VNNI CPU; scores move by about 1e-3 (see README, Performance). Recorded for --resume.",
    )
    parser.add_argument(
        "--threads", type=at_least(1), default=None,
        help="Torch threads per process on the CPU. Default: one per core; under accelerate launch (which sets "
        "OMP_NUM_THREADS=1 for every process unless given --num_cpu_threads_per_process) the cores shared out among "
        "this machine's processes.",
    )
    parser.add_argument(
        "--no-malloc-tuning", action="store_true",
        help="On the CPU, leave glibc's malloc as it is. By default freed memory stays in the process for reuse, which "
        "avoids page faults (bit-identical, faster at ViT-B/16) but keeps the peak memory until the run ends. "
        "UNIQA_MALLOC_TUNING=0 does the same.",
    )
    parser.add_argument(
        "--adapter", default=None,
        help="An adapter folder (`save_adapter`, about 1 MB) to put on --model before scoring; refused when it was "
        "trained on another backbone.",
    )


def _total(state: PartialState, count: int) -> int:
    """The sum of `count` over all processes."""
    if state.num_processes == 1:
        return count
    from accelerate.utils import gather_object

    return sum(gather_object([count]))


def options_from_args(args: argparse.Namespace) -> ScoreOptions:
    """The `ScoreOptions` of `uniqa score`'s flags."""
    return ScoreOptions(
        model=args.model, outputs=args.outputs, heads=args.heads, view_policy=args.view_policy, view_seed=args.view_seed,
        dtype=args.dtype, device=args.device, prompts=args.prompts, tokenizer=args.tokenizer, adapter=args.adapter,
        batch_size=args.batch_size, workers=args.workers, compile=args.compile, quantize=args.quantize, jpeg_draft=args.jpeg_draft,
    )


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        logger.error("--device cuda: no CUDA device is available here.")
        return 2
    # `PartialState` sets up CPU processes (gloo) only when told to use the CPU: unlike
    # `Accelerator` it does not read ACCELERATE_USE_CPU itself.
    use_cpu = args.device == "cpu" or (args.device == "auto" and (not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")))
    state = PartialState(cpu=use_cpu)
    if state.device.type == "cpu":
        prepare_cpu_process(args.no_malloc_tuning, args.threads)  # before any model or image memory is allocated
    # The device's defaults (`device_defaults`), for every path below: files, tar shards, --dataset.
    options = options.resolved(state.device, local_process_count())
    with output_lock(args.output, "--output"):  # one run at a time into an output
        return _run_locked(args, options, state)


def _run_locked(args: argparse.Namespace, options: ScoreOptions, state: PartialState) -> int:
    if args.dataset is not None:
        return run_dataset(
            options, state, dataset=args.dataset, split=args.split, image_column=args.image_column, num_proc=args.num_proc,
            keep_columns=args.keep_columns, output=args.output, inputs=args.inputs, resume=args.resume, overwrite=args.overwrite,
        )
    if not args.inputs:
        logger.error("No INPUT: pass image files, folders, globs, lists or tar shards (or --dataset).")
        return 2
    if any(is_shard_name(item) for item in args.inputs):
        return run_shards(options, state, inputs=args.inputs, output=args.output, keep_columns=args.keep_columns)
    if args.keep_columns:
        logger.error("--keep-columns applies to tar shards and --dataset only.")
        return 2
    return run_files(options, state, inputs=args.inputs, output=args.output, resume=args.resume, overwrite=args.overwrite)


def _write_failure(output, error: OSError, kept: str) -> str:
    """One line for a write that failed: the file, the system's reason (no space, file too large, read-only)."""
    path = str(output)  # a ShardedOutput (its file) or a path
    where = error.filename or path
    return f"--output {path}: cannot write {where} ({error.strerror or error}); {kept}."


def run_files(options: ScoreOptions, state: PartialState, *, inputs: list, output: str, resume: bool = False,
              overwrite: bool = False) -> int:
    """`uniqa score` of image files, folders, globs and path lists into one CSV / JSON Lines file."""
    try:  # every check runs in every process alike, before any image is read: all stop here together
        listed = expand_inputs(inputs)
        output_format(output)
        check_writable(output)
        model, processor = load_scorer(options.model, DTYPES[options.dtype], state.device, options.prompts, options.tokenizer, options.adapter,
                                       compile=bool(options.compile), quantize=options.quantize)
        view_policy = options.view_policy or model.config.view_policy
        view_seed = model.config.view_seed if options.view_seed is None else options.view_seed
        set_jpeg_draft(processor, options.jpeg_draft, view_policy)
        heads = select_heads(model, options.heads)
        columns = output_columns(model, options.outputs, heads)
        output = ShardedOutput(
            output, columns, ["path"],
            scoring_fingerprint(options.model, model, processor, options.dtype, view_policy, view_seed, columns, options.quantize),
            is_done=lambda row: not row["error"], parse_csv_row=parse_csv_row,
        )
        output.check(resume=resume, overwrite=overwrite)
    except (UsageError, ModelFolderError, OutputError) as error:
        logger.error("%s", error)
        return 2
    paths = listed.paths
    state.wait_for_everyone()  # every process has checked the old results: they may change now
    if state.is_main_process:
        try:
            output.start(resume=resume)
        except OSError as error:  # the same in every process would need a collective: the main one says it and stops
            logger.error("%s", _write_failure(output, error, "an earlier file there is left as it was"))
            return 2
    state.wait_for_everyone()
    done = output.done_keys()
    # No process writes before every process has read what is done: a part file growing while
    # another process reads it would make the processes disagree on the work left (lost rows).
    state.wait_for_everyone()
    todo = [path for path in paths if path not in done]
    if state.is_main_process:
        skipped = f"; passed over: {listed.describe_skipped()}" if listed.skipped else ""
        logger.info("%d images to score (%d already in %s), %d process(es)%s.", len(todo), len(paths) - len(todo), output, state.num_processes, skipped)

    start = time.perf_counter()
    try:  # a full disk, a file-size limit, a folder made read-only mid-run: one line, exit 2
        with output.part_writer(state.process_index) as writer:
            multi_frame = score_shard(
                model, processor, todo[state.process_index :: state.num_processes], columns, writer, state.device,
                view_policy, view_seed, options.batch_size, options.workers, show_progress=state.is_main_process, heads=heads,
                auto_compile=options.compile is None and state.device.type == "cpu" and options.dtype == "float32" and not options.quantize,
            )
    except OSError as error:
        logger.error("%s", _write_failure(output, error, "the rows written so far are kept for --resume"))
        return 2
    multi_frame = _total(state, multi_frame)
    state.wait_for_everyone()
    if not state.is_main_process:
        return 0

    try:
        result = output.finish(paths)
    except OSError as error:
        logger.error("%s", _write_failure(output, error, "an earlier file there is left as it was"))
        return 2
    seconds = time.perf_counter() - start
    failed = sum(1 for row in result.rows if row["error"])
    scored = len(result.rows) - failed
    notes = [f"{listed.describe_skipped()} passed over"] if listed.skipped else []
    if multi_frame:
        notes.append(f"{multi_frame} animated or multi-page files scored on their first frame")
    if result.unlisted:
        notes.append(f"{len(result.unlisted)} earlier rows of images no longer listed kept at the end")
    logger.info(
        "Scored %d of %d images, %d failed (see the error column of %s)%s. This run: %d images in %.1f s (%.2f images/s).",
        scored, len(paths), failed, output, "".join(f"; {note}" for note in notes),
        len(todo), seconds, len(todo) / seconds if seconds > 0 else 0.0,
    )
    if state.device.type == "cuda":  # what a larger --batch-size would have room for
        logger.info("Peak GPU memory of the main process: %.2f GiB.", torch.cuda.max_memory_allocated(state.device) / 2**30)
    if result.kept_previous:
        logger.error("No image could be scored: %s keeps its earlier results; the errors are listed above.", output)
    return 0 if scored else 1


def run_shards(options: ScoreOptions, state: PartialState, *, inputs: list, output: str, keep_columns: list | None = None) -> int:
    """`uniqa score` with tar inputs (see the module docstring); one `OUTPUT/<shard>.parquet` per shard."""
    try:  # every process checks alike, before any shard is read: all stop here together
        shards = expand_shards(inputs)
        if os.path.splitext(output)[1].lower() in (".csv", ".jsonl", ".parquet"):
            raise UsageError(f"--output {output}: tar shards are scored into a folder (one .parquet per shard), not one file.")
        if len({os.path.basename(shard) for shard in shards}) < len(shards):
            raise UsageError("two shards share a file name: their outputs would collide in one --output folder.")
        os.makedirs(output, exist_ok=True)
        scorer = ImageScorer.from_options(dataclasses.replace(options, device=str(state.device)), key_column="key")
        clash = [column for column in keep_columns or [] if column in scorer.columns]
        if clash:
            raise UsageError(f"--keep-columns {', '.join(clash)}: the output has such columns already ({', '.join(scorer.columns)}).")
        done = set(check_done(shards, output, scorer.fingerprint))
    except (UsageError, ModelFolderError, OSError) as error:
        logger.error("%s", error)
        return 2
    state.wait_for_everyone()  # all have listed the finished shards before any is written
    todo = [shard for shard in shards if shard not in done]
    if state.is_main_process:
        logger.info("%d shards to score (%d already in %s), %d process(es).", len(todo), len(done), output, state.num_processes)
    start = time.perf_counter()
    counts = score_shards(scorer, todo[state.process_index :: state.num_processes], output, keep_columns or [],
                          options.workers, show_progress=state.is_main_process)
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([counts])
        counts = {name: sum(part[name] for part in gathered) for name in counts}
    state.wait_for_everyone()
    if state.is_main_process:
        seconds = time.perf_counter() - start
        logger.info(
            "Scored %d shards into %s: %d images, %d failed (see the error column)%s. %.1f s (%.2f images/s).",
            counts["shards"], output, counts["images"], counts["errors"],
            f", {counts['multi_frame']} animated or multi-page images scored on their first frame" if counts["multi_frame"] else "",
            seconds, counts["images"] / seconds if seconds > 0 else 0.0,
        )
    return 1 if counts["images"] and counts["images"] == counts["errors"] else 0


def run_dataset(options: ScoreOptions, state: PartialState, *, dataset: str, output: str, split: str = "train",
                image_column: str = "image", num_proc: int | None = None, keep_columns: list | None = None, inputs: list = (),
                resume: bool = False, overwrite: bool = False) -> int:
    """`uniqa score --dataset ...`: a Parquet file of `index` (the row in the split), the
    `--keep-columns`, the scores and `error`, with the fingerprint in its schema."""
    def _fingerprint_or_none(path):
        try:
            return read_fingerprint(path)
        except Exception:  # not Parquet at all: not ours either
            return None

    try:
        if state.num_processes > 1:
            raise UsageError("--dataset runs its own processes: pass --num-proc N (one per GPU) instead of accelerate launch.")
        if inputs:
            raise UsageError("--dataset takes no INPUT arguments.")
        if resume:
            raise UsageError("--resume: --dataset writes its output whole, in one go (datasets caches the map of a dataset on disk).")
        if not output.endswith(".parquet"):
            raise UsageError(f"--output {output}: --dataset writes a .parquet file.")
        if os.path.exists(output) and not overwrite and _fingerprint_or_none(output) is None:
            raise UsageError(f"{output}: exists and was not written by uniqa score; pass --overwrite to replace it.")
        os.makedirs(os.path.dirname(output), exist_ok=True)
        loaded = load_split(dataset, split)
        keep = list(keep_columns or [])
        missing = [column for column in [image_column, *keep] if column not in loaded.column_names]
        if missing:
            flag = "--image-column" if missing[0] == image_column else "--keep-columns"
            raise UsageError(f"{flag}: {', '.join(missing)} not in the dataset (columns: {', '.join(loaded.column_names)}).")
        function = DatasetScorer(options.model, image_column, **options.scorer_kwargs())
        scorer = function.scorer()  # checks the model before any image is read
        clash = [column for column in keep if column in scorer.columns]
        if clash:
            raise UsageError(f"--keep-columns {', '.join(clash)}: the output has such columns already ({', '.join(scorer.columns)}).")
        # Only the columns the output needs go through the map: a rated dataset's own `mos` or
        # `score` column must not clash with the score columns the map adds.
        loaded = loaded.select_columns(list(dict.fromkeys([image_column, *keep])))
        if num_proc and num_proc > 1 and torch.cuda.is_available():
            import multiprocess

            multiprocess.set_start_method("spawn", force=True)  # one process per GPU; see score_dataset
    except (UsageError, ModelFolderError, OSError) as error:
        logger.error("%s", error)
        return 2
    start = time.perf_counter()
    try:
        scored = score_dataset(loaded, options.model, image_column, num_proc=num_proc, scorer=function)
    except UsageError as error:  # e.g. an --image-column named like a score column
        logger.error("%s", error)
        return 2
    columns = scorer.columns[1:]
    data = scored.select_columns(keep + columns).to_dict()
    rows = [{"index": index} | {column: data[column][index] for column in keep + columns} for index in range(len(scored))]
    table = rows_to_table(rows, ["index", *keep, *columns], scorer.score_columns, scorer.fingerprint,
                          {"dataset": dataset, "split": split, "image_column": image_column})
    write_table_atomic(table, output)
    failed = sum(1 for row in rows if row["error"])
    seconds = time.perf_counter() - start
    logger.info("Scored %d of %d images, %d failed (see the error column of %s). %.1f s (%.2f images/s).",
                len(rows) - failed, len(rows), failed, output, seconds, len(rows) / seconds if seconds > 0 else 0.0)
    for row in rows:
        if row["error"]:
            logger.warning("Not scored: %s", row["error"])
    return 0 if failed < len(rows) else 1
