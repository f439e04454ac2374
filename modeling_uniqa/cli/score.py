"""`uniqa score`: the command line of `modeling_uniqa.scoring.score_images`."""

import argparse
import logging
import os
import time

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from ..core.cpu_runtime import prepare_cpu_process
from ..core.default_model import DEFAULT_MODEL
from ..core.device_defaults import decoding_workers, local_process_count, scoring_batch_size
from ..core.inference_speed import QUANTIZE_CHOICES
from ..core.runtime import DTYPES
from ..errors import ModelFolderError, OutputError, UsageError
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
from ..scoring.score_shards import check_done, expand_shards, score_shards
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
        help="Views per forward (default 32 on the CPU, 256 on a GPU): a batch holds as many images as fit, at least "
        "one, so memory does not depend on the view policy (random10, batch 32: 3 images a batch).",
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


def run(args) -> int:
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
    args.workers = decoding_workers(args.workers, state.device, local_process_count())
    args.batch_size = scoring_batch_size(args.batch_size, state.device)
    if args.dataset is not None:
        from .score_datasets import run_dataset

        return run_dataset(args, state)
    if not args.inputs:
        logger.error("No INPUT: pass image files, folders, globs, lists or tar shards (or --dataset).")
        return 2
    from .score_shards import is_shard_name, run_shards

    if any(is_shard_name(item) for item in args.inputs):
        return run_shards(args, state)
    if args.keep_columns:
        logger.error("--keep-columns applies to tar shards and --dataset only.")
        return 2
    try:  # every check runs in every process alike, before any image is read: all stop here together
        inputs = expand_inputs(args.inputs)
        output_format(args.output)
        check_writable(args.output)
        model, processor = load_scorer(args.model, DTYPES[args.dtype], state.device, args.prompts, args.tokenizer, args.adapter,
                                       compile=bool(args.compile), quantize=args.quantize)
        view_policy = args.view_policy or model.config.view_policy
        view_seed = model.config.view_seed if args.view_seed is None else args.view_seed
        set_jpeg_draft(processor, args.jpeg_draft, view_policy)
        heads = select_heads(model, args.heads)
        columns = output_columns(model, args.outputs, heads)
        output = ShardedOutput(
            args.output, columns, ["path"],
            scoring_fingerprint(args.model, model, processor, args.dtype, view_policy, view_seed, columns, args.quantize),
            is_done=lambda row: not row["error"], parse_csv_row=parse_csv_row,
        )
        output.check(resume=args.resume, overwrite=args.overwrite)
    except (UsageError, ModelFolderError, OutputError) as error:
        logger.error("%s", error)
        return 2
    paths = inputs.paths
    state.wait_for_everyone()  # every process has checked the old results: they may change now
    if state.is_main_process:
        output.start(resume=args.resume)
    state.wait_for_everyone()
    done = output.done_keys()
    # No process writes before every process has read what is done: a part file growing while
    # another process reads it would make the processes disagree on the work left (lost rows).
    state.wait_for_everyone()
    todo = [path for path in paths if path not in done]
    if state.is_main_process:
        skipped = f"; passed over: {inputs.describe_skipped()}" if inputs.skipped else ""
        logger.info("%d images to score (%d already in %s), %d process(es)%s.", len(todo), len(paths) - len(todo), args.output, state.num_processes, skipped)

    start = time.perf_counter()
    with output.part_writer(state.process_index) as writer:
        multi_frame = score_shard(
            model, processor, todo[state.process_index :: state.num_processes], columns, writer, state.device,
            view_policy, view_seed, args.batch_size, args.workers, show_progress=state.is_main_process, heads=heads,
            auto_compile=args.compile is None and state.device.type == "cpu" and args.dtype == "float32" and not args.quantize,
        )
    multi_frame = _total(state, multi_frame)
    state.wait_for_everyone()
    if not state.is_main_process:
        return 0

    result = output.finish(paths)
    seconds = time.perf_counter() - start
    failed = sum(1 for row in result.rows if row["error"])
    scored = len(result.rows) - failed
    notes = [f"{inputs.describe_skipped()} passed over"] if inputs.skipped else []
    if multi_frame:
        notes.append(f"{multi_frame} animated or multi-page files scored on their first frame")
    if result.unlisted:
        notes.append(f"{len(result.unlisted)} earlier rows of images no longer listed kept at the end")
    logger.info(
        "Scored %d of %d images, %d failed (see the error column of %s)%s. This run: %d images in %.1f s (%.2f images/s).",
        scored, len(paths), failed, args.output, "".join(f"; {note}" for note in notes),
        len(todo), seconds, len(todo) / seconds if seconds > 0 else 0.0,
    )
    if state.device.type == "cuda":  # what a larger --batch-size would have room for
        logger.info("Peak GPU memory of the main process: %.2f GiB.", torch.cuda.max_memory_allocated(state.device) / 2**30)
    if result.kept_previous:
        logger.error("No image could be scored: %s keeps its earlier results; the errors are listed above.", args.output)
    return 0 if scored else 1


def run_shards(args, state) -> int:
    """`uniqa score` with tar inputs (see the module docstring); `args` from `score_images`'s parser."""
    from ..errors import ModelFolderError
    from .image_scorer import ImageScorer

    try:  # every process checks alike, before any shard is read: all stop here together
        shards = expand_shards(args.inputs)
        if os.path.splitext(args.output)[1].lower() in (".csv", ".jsonl", ".parquet"):
            raise UsageError(f"--output {args.output}: tar shards are scored into a folder (one .parquet per shard), not one file.")
        if len({os.path.basename(shard) for shard in shards}) < len(shards):
            raise UsageError("two shards share a file name: their outputs would collide in one --output folder.")
        os.makedirs(args.output, exist_ok=True)
        scorer = ImageScorer(
            args.model, key_column="key", outputs=args.outputs, view_policy=args.view_policy, view_seed=args.view_seed,
            dtype=args.dtype, device=str(state.device), prompts=args.prompts, tokenizer_dir=args.tokenizer, batch_size=args.batch_size,
            compile=bool(args.compile), quantize=args.quantize, jpeg_draft=args.jpeg_draft, heads=args.heads, adapter=args.adapter,
        )
        clash = [column for column in args.keep_columns or [] if column in scorer.columns]
        if clash:
            raise UsageError(f"--keep-columns {', '.join(clash)}: the output has such columns already ({', '.join(scorer.columns)}).")
        done = set(check_done(shards, args.output, scorer.fingerprint))
    except (UsageError, ModelFolderError, OSError) as error:
        logger.error("%s", error)
        return 2
    state.wait_for_everyone()  # all have listed the finished shards before any is written
    todo = [shard for shard in shards if shard not in done]
    if state.is_main_process:
        logger.info("%d shards to score (%d already in %s), %d process(es).", len(todo), len(done), args.output, state.num_processes)
    start = time.perf_counter()
    counts = score_shards(scorer, todo[state.process_index :: state.num_processes], args.output, args.keep_columns or [],
                          args.workers, show_progress=state.is_main_process)
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([counts])
        counts = {name: sum(part[name] for part in gathered) for name in counts}
    state.wait_for_everyone()
    if state.is_main_process:
        seconds = time.perf_counter() - start
        logger.info(
            "Scored %d shards into %s: %d images, %d failed (see the error column)%s. %.1f s (%.2f images/s).",
            counts["shards"], args.output, counts["images"], counts["errors"],
            f", {counts['multi_frame']} animated or multi-page images scored on their first frame" if counts["multi_frame"] else "",
            seconds, counts["images"] / seconds if seconds > 0 else 0.0,
        )
    return 1 if counts["images"] and counts["images"] == counts["errors"] else 0


def run_dataset(args, state) -> int:
    """`uniqa score --dataset ...`: a Parquet file of `index` (the row in the split), the
    `--keep-columns`, the scores and `error`, with the fingerprint in its schema."""
    from ..errors import ModelFolderError
    from .score_parquet import read_fingerprint, rows_to_table, write_table_atomic

    def _fingerprint_or_none(path):
        try:
            return read_fingerprint(path)
        except Exception:  # not Parquet at all: not ours either
            return None

    try:
        if state.num_processes > 1:
            raise UsageError("--dataset runs its own processes: pass --num-proc N (one per GPU) instead of accelerate launch.")
        if args.inputs:
            raise UsageError("--dataset takes no INPUT arguments.")
        if args.resume:
            raise UsageError("--resume: --dataset writes its output whole, in one go (datasets caches the map of a dataset on disk).")
        if not args.output.endswith(".parquet"):
            raise UsageError(f"--output {args.output}: --dataset writes a .parquet file.")
        if os.path.exists(args.output) and not args.overwrite and _fingerprint_or_none(args.output) is None:
            raise UsageError(f"{args.output}: exists and was not written by uniqa score; pass --overwrite to replace it.")
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        dataset = load_split(args.dataset, args.split)
        keep = list(args.keep_columns or [])
        missing = [column for column in [args.image_column, *keep] if column not in dataset.column_names]
        if missing:
            flag = "--image-column" if missing[0] == args.image_column else "--keep-columns"
            raise UsageError(f"{flag}: {', '.join(missing)} not in the dataset (columns: {', '.join(dataset.column_names)}).")
        function = DatasetScorer(
            args.model, args.image_column, outputs=args.outputs, view_policy=args.view_policy, view_seed=args.view_seed,
            dtype=args.dtype, device=args.device, prompts=args.prompts, tokenizer_dir=args.tokenizer, batch_size=args.batch_size,
            compile=bool(args.compile), quantize=args.quantize, jpeg_draft=args.jpeg_draft, heads=args.heads, adapter=args.adapter,
        )
        scorer = function.scorer()  # checks the model before any image is read
        clash = [column for column in keep if column in scorer.columns]
        if clash:
            raise UsageError(f"--keep-columns {', '.join(clash)}: the output has such columns already ({', '.join(scorer.columns)}).")
        # Only the columns the output needs go through the map: a rated dataset's own `mos` or
        # `score` column must not clash with the score columns the map adds.
        dataset = dataset.select_columns(list(dict.fromkeys([args.image_column, *keep])))
        if args.num_proc and args.num_proc > 1 and torch.cuda.is_available():
            import multiprocess

            multiprocess.set_start_method("spawn", force=True)  # one process per GPU; see score_dataset
    except (UsageError, ModelFolderError, OSError) as error:
        logger.error("%s", error)
        return 2
    start = time.perf_counter()
    try:
        scored = score_dataset(dataset, args.model, args.image_column, num_proc=args.num_proc, scorer=function)
    except UsageError as error:  # e.g. an --image-column named like a score column
        logger.error("%s", error)
        return 2
    columns = scorer.columns[1:]
    data = scored.select_columns(keep + columns).to_dict()
    rows = [{"index": index} | {column: data[column][index] for column in keep + columns} for index in range(len(scored))]
    table = rows_to_table(rows, ["index", *keep, *columns], scorer.score_columns, scorer.fingerprint,
                          {"dataset": args.dataset, "split": args.split, "image_column": args.image_column})
    write_table_atomic(table, args.output)
    failed = sum(1 for row in rows if row["error"])
    seconds = time.perf_counter() - start
    logger.info("Scored %d of %d images, %d failed (see the error column of %s). %.1f s (%.2f images/s).",
                len(rows) - failed, len(rows), failed, args.output, seconds, len(rows) / seconds if seconds > 0 else 0.0)
    for row in rows:
        if row["error"]:
            logger.warning("Not scored: %s", row["error"])
    return 0 if failed < len(rows) else 1
