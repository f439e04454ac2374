"""`uniqa score shards/{00000..00999}.tar --output DIR`: score WebDataset tar shards.

The layout is img2dataset's: each sample is consecutive tar members sharing a key, `<key>.jpg`
(or .jpeg/.png/.webp) and `<key>.json` (url, caption...; a `.txt` is ignored). The key is the
member's name up to the first dot of its file name, as in `webdataset`.

How it runs:

- Shard patterns are brace-expanded here (`{00000..00999}` ranges keep their zero padding,
  `{a,b}` lists), since a shell may or may not have done it; globs are expanded too. A shard
  that does not exist is a usage error (exit code 2), raised before any work.
- Each shard gives one `DIR/<shard name>.parquet` (the name without `.tar`): `key`, the json
  fields named by `--keep-columns` (e.g. url,caption), the score columns and `error`, in tar
  order. Its schema carries the scoring fingerprint (`score_parquet`), so `read_scores`
  refuses mixed results. The file is written atomically once the shard is read to its end: a
  killed run leaves whole files only, and a rerun skips the shards whose file exists (made by
  this very scorer: another model, adapter, heads, dtype, prompts or view policy is refused, exit code 2).
- Tars are streamed (`tarfile` mode "r|*", no extraction, no seeking) by the DataLoader's worker
  processes (`--workers`), which cut the views while the main process runs the forward. With at
  least 4 shards per worker each worker reads whole shards; with fewer, every worker streams
  every shard and decodes every W-th sample, so no worker idles. `--batch-size` counts views,
  as in `uniqa score`.
- A member that cannot be decoded becomes an error row (its key and json columns kept). A tar
  cut short becomes, after the rows read before the cut, one error row for the rest of the
  shard (key: the sample being read, empty if the cut fell in a header).
- Under `accelerate launch`, the shards left to do are dealt out to the processes (process i
  takes every N-th), each writing its own shard files.
"""

import glob
import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass

from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..core.cpu_runtime import decoding_worker_init
from ..errors import UsageError
from .score_images import collate_views, decode_views
from .score_parquet import read_fingerprint, rows_to_table, write_table_atomic
from .sharded_output import describe_difference

logger = logging.getLogger(__name__)

SHARD_EXTENSIONS = (".tar",)
IMAGE_MEMBER_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})
_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


# --------------------------------------------------------------------------------------------
# Shard names
# --------------------------------------------------------------------------------------------
def expand_braces(pattern: str) -> list:
    """`shards/{00000..00002}.tar` -> the three names, zero padding kept; `{a,b}` lists and several
    (or nested) groups expand left to right, as in bash. Braces without `..` or `,` stay as they are."""
    for match in _BRACES.finditer(pattern):
        body = match.group(1)
        numbers = _RANGE.match(body)
        if numbers:
            first, last = int(numbers.group(1)), int(numbers.group(2))
            padded = any(len(text.lstrip("-")) > 1 and text.lstrip("-").startswith("0") for text in numbers.groups())
            width = max(len(text) for text in numbers.groups()) if padded else 0
            step = 1 if last >= first else -1
            choices = [str(value).zfill(width) for value in range(first, last + step, step)]
        elif "," in body:
            choices = body.split(",")
        else:
            continue
        head, tail = pattern[: match.start()], pattern[match.end() :]
        return [name for choice in choices for name in expand_braces(head + choice + tail)]
    return [pattern]


def is_shard_name(path: str) -> bool:
    return os.fspath(path).lower().endswith(SHARD_EXTENSIONS)


def expand_shards(inputs: list) -> list:
    """INPUT arguments (brace patterns, globs, paths of .tar files) -> absolute shard paths, each
    once, in order. `UsageError` names an input that is no tar, or a shard that does not exist."""
    shards = {}
    for item in inputs:
        for name in expand_braces(item):
            if not is_shard_name(name):
                raise UsageError(f"{name!r}: tar shards and other inputs cannot be mixed in one run (use two runs).")
            matches = [name] if os.path.exists(name) else sorted(glob.glob(name))
            if not matches:
                raise UsageError(f"{name}: no such shard.")
            for match in matches:
                shards.setdefault(os.path.abspath(match), None)
    return list(shards)


def shard_output(output_dir: str, shard: str) -> str:
    return os.path.join(output_dir, os.path.basename(shard)[: -len(".tar")] + ".parquet")


# --------------------------------------------------------------------------------------------
# Reading a shard
# --------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One sample of a shard: its image bytes and json, or why it has none."""

    key: str | None
    image: bytes | None = None
    image_name: str = ""
    meta: dict | None = None
    error: str | None = None


def _split_member(name: str) -> tuple:
    """`dir/000123.jpg` -> (`dir/000123`, `jpg`): the key ends at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _finish(shard: str, sample: Sample) -> Sample:
    if sample.error is None and sample.image is None:
        sample.error = f"{shard}: sample {sample.key}: no image member ({', '.join(sorted(IMAGE_MEMBER_EXTENSIONS))})."
    return sample


def iter_samples(shard: str):
    """The samples of a tar shard, streamed in tar order (`Sample`s). A corrupt json is an error
    of its sample; a tar cut short ends with one `Sample` whose error says so."""
    current = None
    try:
        with tarfile.open(shard, mode="r|*") as archive:
            for member in archive:
                if member.isdir():
                    continue
                key, extension = _split_member(member.name)
                if current is not None and key != current.key:
                    yield _finish(shard, current)
                    current = None
                if current is None:
                    current = Sample(key)
                if not member.isfile():  # a link or device: never followed, so its sample is an error row
                    what = (f"a symbolic link (to {member.linkname})" if member.issym() else
                            f"a hard link (to {member.linkname})" if member.islnk() else "not a regular file")
                    if current.error is None:
                        current.error = f"{shard}: {member.name}: {what}, not read: skipped (only regular members are scored)."
                    continue
                if extension in IMAGE_MEMBER_EXTENSIONS or extension == "json":
                    data = archive.extractfile(member).read()  # streamed: now or never
                    if extension == "json":
                        try:
                            current.meta = json.loads(data)
                        except ValueError as error:
                            current.error = f"{shard}: {member.name}: not JSON ({error})."
                    else:
                        current.image, current.image_name = data, f"{shard}:{member.name}"
            # tarfile ends quietly when a cut falls in or before a header: only the missing
            # end-of-archive blocks tell (uncompressed tars; the size is the archive's own)
            if archive.fileobj.comptype == "tar" and os.path.getsize(shard) < archive.offset + 2 * tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"no end-of-archive marker after byte {archive.offset}")
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:  # a truncated or corrupt tar
        if current is not None and current.image is not None:  # its image was read whole: score it
            yield _finish(shard, current)
            current = None
        where = f"sample {current.key}" if current is not None else "a member header, after the last whole sample"
        cut = Sample(current.key if current is not None else None, meta=current.meta if current is not None else None)
        cut.error = f"{shard}: the tar is cut short or corrupt in {where} ({type(error).__name__}: {error}); the rest of the shard is not scored."
        yield cut
        return
    if current is not None:
        yield _finish(shard, current)


@dataclass
class Item:
    """What a decoding worker sends: a decoded sample, or the end of shard `shard` (`end`)."""

    shard: int
    position: int = 0  # of the sample in its shard: rows are written in tar order
    key: str | None = None
    views: object = None
    error: str | None = None
    meta: dict | None = None
    end: bool = False
    frames: int = 1  # of an animated or multi-page image, scored on its first


class ShardViews(IterableDataset):
    """The samples of `shards` as `Item`s (views cut, uint8), each shard followed by an end
    `Item` from every worker that read it. With `split_samples` false, DataLoader workers take
    whole shards (worker w: shards w, w + W, ...); with it, every worker streams every shard and
    decodes every W-th sample, which keeps the workers equally busy when there are few shards
    (reading a tar costs little next to decoding its JPEGs)."""

    def __init__(self, shards: list, processor, view_policy: str, view_seed: int, split_samples: bool):
        self.shards, self.processor, self.split_samples = shards, processor, split_samples
        self.view_policy, self.view_seed = view_policy, view_seed

    def __iter__(self):
        worker = get_worker_info()
        rank, count = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        mine = range(len(self.shards)) if self.split_samples else range(rank, len(self.shards), count)
        for index in mine:
            for position, sample in enumerate(iter_samples(self.shards[index])):
                if self.split_samples and position % count != rank:
                    continue
                views, error, frames = None, sample.error, 0
                if error is None:
                    views, error, frames = decode_views(sample.image, self.processor, self.view_policy, self.view_seed, sample.image_name)
                yield Item(index, position, sample.key, views, error, sample.meta, frames=frames)
            yield Item(index, end=True)


def collate_items(items: list) -> tuple:
    """In the worker: `(items, Batch)`, the batch's decoded views stacked into one tensor (one
    shared-memory block to the main process instead of one per sample, scored as it arrives and
    pinned there on GPUs), indexed by the position of each sample among the non-end `items`."""
    samples = [item for item in items if not item.end]
    batch = collate_views([(position, item.views, item.error, item.frames) for position, item in enumerate(samples)])
    for item in samples:
        item.views = None  # travel once, in the batch
    return items, batch


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def check_done(shards: list, output_dir: str, fingerprint: dict) -> list:
    """The shards whose output exists, made by this scorer. `UsageError` for an output made by
    another one (or by none we know): its scores would be mixed with ours."""
    done = []
    for shard in shards:
        output = shard_output(output_dir, shard)
        if not os.path.exists(output):
            continue
        try:
            recorded = read_fingerprint(output)
        except Exception as error:  # an unreadable footer: not one of our atomic writes
            raise UsageError(f"{output}: exists but is no readable Parquet file ({error}); remove it to score {shard}.") from error
        if recorded != fingerprint:
            difference = describe_difference(recorded, fingerprint) if recorded else "no UniQA fingerprint"
            raise UsageError(f"{output}: made by another scorer ({difference}); use another --output folder or remove it.")
        done.append(shard)
    return done


def score_shards(scorer, shards: list, output_dir: str, keep_columns: list = (), workers: int = 2, show_progress: bool = True) -> dict:
    """Score `shards` with `scorer` (an `ImageScorer` whose key column is `key`), writing
    `shard_output(output_dir, shard)` for each as soon as its last sample is scored. Returns
    counts: `shards`, `images`, `errors`, `multi_frame` (animated or multi-page images, scored on
    their first frame)."""
    columns = [scorer.columns[0], *keep_columns, *scorer.columns[1:]]
    split_samples = workers > 1 and len(shards) < 4 * workers  # else whole shards keep W workers busy to within a quarter
    loader = DataLoader(
        ShardViews(shards, scorer.processor, scorer.view_policy, scorer.view_seed, split_samples),
        batch_size=scorer.images_per_forward, num_workers=workers if shards else 0, collate_fn=collate_items,
        pin_memory=scorer.device.type == "cuda", worker_init_fn=decoding_worker_init(scorer.device),
    )
    ends_needed = workers if split_samples else 1
    pending, ends, counts = {}, {}, {"shards": 0, "images": 0, "errors": 0, "multi_frame": 0}
    with logging_redirect_tqdm(), tqdm(total=len(shards), unit="shard", disable=not show_progress, desc="Shards") as bar:
        for items, batch in loader:
            samples = [item for item in items if not item.end]
            rows = scorer.score_collated([item.key for item in samples], batch)
            for position, frames in batch.multi_frame:
                logger.info("Scored on its first frame of %d: %s", frames, samples[position].key)
            counts["multi_frame"] += len(batch.multi_frame)
            for item, row in zip(samples, rows):
                meta = item.meta if isinstance(item.meta, dict) else {}
                pending.setdefault(item.shard, []).append((item.position, row | {column: meta.get(column) for column in keep_columns}))
                if item.error:
                    logger.warning("Not scored: %s", item.error)
                    counts["errors"] += 1
            counts["images"] += len(samples)
            for item in items:
                ends[item.shard] = ends.get(item.shard, 0) + item.end
                if item.end and ends[item.shard] == ends_needed:  # every worker reading it is done with it
                    shard, rows = shards[item.shard], [row for _, row in sorted(pending.pop(item.shard, []), key=lambda pair: pair[0])]
                    table = rows_to_table(rows, columns, scorer.score_columns, scorer.fingerprint,
                                          {"shard": os.path.basename(shard), "keep_columns": list(keep_columns)})
                    write_table_atomic(table, shard_output(output_dir, shard))
                    counts["shards"] += 1
                    bar.update(1)
            bar.set_postfix(images=counts["images"], errors=counts["errors"], refresh=False)
    return counts
