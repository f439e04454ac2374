"""Caption corpora for UniQA pre-training, and :func:`merge_corpora`.

Every corpus builder gives one split ``train`` with one row per image:
``image`` (``datasets.Image``), ``image_path``, ``image_name`` (as written in the caption
file), ``captions`` (list of strings, in file order, empty ones dropped; a record left with
none is counted in the metadata's ``captionless_records`` and a warning), ``source`` (the
corpus, or the ``source=`` option) and ``task`` (``quality``, ``aesthetics``, or
``unknown``; several tasks for one image are joined with ``+``).

Files each builder reads (``data_dir`` may also be the caption file itself;
``caption_files=`` names them explicitly; images are looked up under ``image_dir``, by
default ``data_dir``, trying the path as written and then its shorter tails, so
``/data/AVA/images/953619.jpg`` written on another machine is found as ``953619.jpg``):

* ``ava_captions`` (:class:`AVACaptions`): ``CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json``
  or ``CLEAN_AVA_FULL_COMMENTS.json`` (``{"images": [{"filename", "sentences": [{"raw"}]}]}``;
  ``raw`` is used, other keys are optional) or the raw ``AVA_Comments_Full.txt`` (one
  image a line, ``#``-separated: field 2 the image id, the rest comments; as in the
  AVA-Captions authors' reader, lines whose id is not an integer are skipped, with a
  warning and their count in the metadata's ``skipped_lines``). Task ``aesthetics``.
* ``uniqa_corpus`` (:class:`UniQACorpus`): the authors' JSON list of
  ``{"image_path": str, "prompt": str | [str, ...]}`` (every ``*.json`` in ``data_dir``).
* ``caption_jsonl`` (:class:`CaptionJSONL`): what our captioner writes, one record a line
  with ``image, caption, level, task, captioner, prompt`` (every ``*.jsonl``); records of
  one image are grouped; extra columns ``levels`` and ``captioners`` run parallel to
  ``captions``.
* ``llava_conversations`` (:class:`LLaVAConversations`): LLaVA-style JSON lists of
  ``{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}`` (the ``gpt``
  turns are the captions; text-only items, with no ``image``, are left out and counted in
  the metadata's ``imageless_records`` and a warning) and JSONL generation outputs
  ``{"question_id", "prompt", "text", ...}`` (the image is ``image`` when present, else
  ``question_id``).

Where a record has no task, it is guessed from its text (the caption, or the question
for LLaVA data): ``aesthetic`` -> ``aesthetics``, else ``quality`` -> ``quality``, else
``unknown``; ``task=`` overrides it for the whole corpus.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import datasets

from .builders import ImageBuilder
from .configs import ImageConfig
from .errors import DatasetFormatError, MissingLabelFileError
from .paths import split_parts
from .readers import read_tokens, text_lines

logger = logging.getLogger(__name__)

__all__ = [
    "CorpusConfig",
    "CorpusBuilder",
    "AVACaptions",
    "UniQACorpus",
    "CaptionJSONL",
    "LLaVAConversations",
    "merge_corpora",
    "image_key",
    "infer_task",
]

_STRINGS = datasets.List(datasets.Value("string"))
_DIGITS = re.compile(r"[0-9]+")


def infer_task(text: str) -> str | None:
    """``aesthetics`` if ``text`` mentions aesthetics, else ``quality`` if it mentions quality."""
    lowered = (text or "").lower()
    if "aesthetic" in lowered:
        return "aesthetics"
    if "quality" in lowered:
        return "quality"
    return None


@dataclasses.dataclass
class CorpusConfig(ImageConfig):
    """Options of the caption-corpus builders (in addition to :class:`ImageConfig`).

    Attributes:
        caption_files: the caption files, absolute or relative to ``data_dir``; by default
            the builder's usual names (see the module docstring).
        task: the task of every row (``quality`` or ``aesthetics``), instead of the file's
            or the guess.
        source: the ``source`` value (default: the builder name).
    """

    caption_files: list[str] | None = None
    task: str | None = None
    source: str | None = None


@dataclasses.dataclass
class _Record:
    image: str | None  # None: a record with no image (text-only), counted and left out
    captions: list[str]
    task: str | None = None
    extras: dict[str, list[Any]] = dataclasses.field(default_factory=dict)


class CorpusBuilder(ImageBuilder):
    """Base of the caption corpora: groups caption records by image.

    Subclasses set ``NAME``, ``FILE_NAMES`` (usual caption files, first found is used) or
    ``FILE_SUFFIXES`` (every file with one of these endings in ``data_dir``), and
    implement :meth:`_records`.
    """

    BUILDER_CONFIG_CLASS = CorpusConfig
    TASK = "unknown"
    FILE_NAMES: tuple[str, ...] = ()
    FILE_SUFFIXES: tuple[str, ...] = ()
    EXTRA_FEATURES: dict[str, Any] = {}

    def _locate(self):
        config, base = self.config, self.data_dir
        if config.caption_files:
            folder = base if os.path.isdir(base) else os.path.dirname(base)
            return {f"captions{i}": self.locate(f, base=folder) for i, f in enumerate(config.caption_files)}
        if os.path.isfile(base):
            return {"captions0": base}
        if self.FILE_NAMES:
            return {"captions0": self.locate(*self.FILE_NAMES)}
        found = sorted(n for n in os.listdir(base) if n.lower().endswith(self.FILE_SUFFIXES))
        if not found:
            expected = [os.path.join(base, "*" + s) for s in self.FILE_SUFFIXES]
            raise MissingLabelFileError(self.NAME, expected, base)
        return {f"captions{i}": os.path.join(base, n) for i, n in enumerate(found)}

    def _features(self) -> dict[str, Any]:
        features = {
            "image": datasets.Image(),
            "image_path": datasets.Value("string"),
            "image_name": datasets.Value("string"),
            "captions": _STRINGS,
            "source": datasets.Value("string"),
            "task": datasets.Value("string"),
        }
        features.update(self.EXTRA_FEATURES)
        return features

    def _records(self, path: str) -> Iterator[_Record]:
        """Yield the caption records of one file, in file order."""
        raise NotImplementedError

    def _skip_lines(self, path: str, lines: list[int], reason: str) -> None:
        """Record (in the metadata's ``skipped_lines``) and log lines of ``path`` left out."""
        if not lines:
            return
        self._state.setdefault("skipped_lines", {})[path] = len(lines)
        shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
        logger.warning("%s: %d lines of %s were skipped: %s (lines %s)", self.NAME, len(lines), path, reason, shown)

    def _collect(self):
        rows: dict[str, dict[str, Any]] = {}
        tasks: dict[str, list[str]] = {}
        paths = [p for p in self.files.values() if p]  # in the order _locate found them
        source = self.config.source or self.NAME
        captionless: dict[str, int] = {}
        imageless: dict[str, int] = {}
        for path in paths:
            for record in self._records(path):
                if record.image is None:
                    imageless[path] = imageless.get(path, 0) + 1
                    continue
                captions = [c.strip() for c in record.captions if isinstance(c, str) and c.strip()]
                keep = [i for i, c in enumerate(record.captions) if isinstance(c, str) and c.strip()]
                if not captions:
                    captionless[path] = captionless.get(path, 0) + 1
                    continue
                row = rows.get(record.image)
                if row is None:
                    row = rows[record.image] = {"image_name": record.image, "captions": [], "source": source, "_split": "train"}
                    row.update({k: [] for k in self.EXTRA_FEATURES})
                    tasks[record.image] = []
                row["captions"].extend(captions)
                for key, values in record.extras.items():
                    row[key].extend(values[i] for i in keep)
                task = self.config.task or record.task or infer_task(" ".join(captions)) or self.TASK
                if task not in tasks[record.image]:
                    tasks[record.image].append(task)
        for path, count in captionless.items():
            logger.warning("%s: %d records of %s have no non-blank caption and were left out", self.NAME, count, path)
        for path, count in imageless.items():
            logger.warning("%s: %d records of %s have no image (text-only) and were left out", self.NAME, count, path)
        if not rows:
            raise DatasetFormatError("no captions found (is the caption file empty?)", ", ".join(paths))
        for image, row in rows.items():
            row["task"] = "+".join(sorted(tasks[image]))
        self._state["run_metadata"] = {
            "caption_files": paths,
            "num_captions": sum(len(r["captions"]) for r in rows.values()),
            "skipped_lines": dict(self._state.get("skipped_lines", {})),
            "captionless_records": captionless,
            "imageless_records": imageless,
        }
        return list(rows.values()), ["train"], ", ".join(paths)


def _load_json(path: str) -> Any:
    """A JSON file, decoded as :func:`~data_builders.readers.text_lines` decodes text."""
    try:
        return json.loads("".join(text_lines(path)))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"invalid JSON: {exc.msg} (column {exc.colno})", path, exc.lineno) from None


def _iter_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, text in enumerate(text_lines(path), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"invalid JSON line: {exc.msg} (column {exc.colno})", path, line) from None
        if not isinstance(record, dict):
            raise DatasetFormatError("expected a JSON object on each line", path, line)
        yield line, record


def _field(record: dict[str, Any], keys: tuple[str, ...], path: str, where: str, kind=str) -> Any:
    for key in keys:
        value = record.get(key)
        if value is not None:
            if not isinstance(value, kind):
                kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
                raise DatasetFormatError(f"{where}: {key!r} must be a {kinds}, got {value!r}", path)
            return value
    raise DatasetFormatError(f"{where}: expected a key {' or '.join(map(repr, keys))}, got {sorted(record)}", path)


def _json_list(path: str, key: str | None = None) -> list[dict[str, Any]]:
    data = _load_json(path)
    if key and isinstance(data, dict):
        data = data.get(key)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        expected = f'an object with a list "{key}" of objects' if key else "a list of objects"
        raise DatasetFormatError(f"expected {expected}", path)
    return data


class AVACaptions(CorpusBuilder):
    """AVA-Captions: human comments on AVA images (Karpathy-style JSON or raw comments).

    Keep AVA's official test images out of pre-training with
    ``merge_corpora([...], exclude=load("ava", ...)["test"])``; the JSON's own ``split``
    is a random one and is not used.
    """

    NAME = "ava_captions"
    TITLE = "AVA-Captions (human comments on AVA images)"
    TASK = "aesthetics"
    IMAGE_DIRS = ("images", "image")
    FILE_NAMES = (
        "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json",
        "CLEAN_AVA_FULL_COMMENTS.json",
        "AVA_Comments_Full.txt",
    )

    def _records(self, path):
        if path.lower().endswith(".txt"):
            yield from self._comment_records(path)
            return
        for i, item in enumerate(_json_list(path, "images"), start=1):
            where = f"images[{i - 1}]"
            # not imgid: in Karpathy-style files it numbers the entries, it is no image id
            name = str(_field(item, ("filename",), path, where, (str, int)))
            if "." not in name:
                name += ".jpg"
            sentences = _field(item, ("sentences",), path, where, list)
            captions = []
            for sentence in sentences:
                text = sentence.get("raw") if isinstance(sentence, dict) else sentence
                if text is None and isinstance(sentence, dict):
                    text = sentence.get("clean")
                if not isinstance(text, str):
                    raise DatasetFormatError(f"{where}: expected sentences with a 'raw' string, got {sentence!r}", path)
                captions.append(text)
            yield _Record(name, captions, "aesthetics")

    def _comment_records(self, path):
        skipped = []
        for line, fields in read_tokens(path, separator="#"):
            image_id = fields[1].strip() if len(fields) >= 2 else ""
            if not _DIGITS.fullmatch(image_id):
                skipped.append(line)  # the reference reader skips these too (int() fails)
                continue
            yield _Record(f"{image_id}.jpg", fields[2:], "aesthetics")
        self._skip_lines(path, skipped, "the image id (field 2 of the '#'-separated fields) is not an integer")


class UniQACorpus(CorpusBuilder):
    """The UniQA authors' released pre-training corpus (images from AVA and FLIVE)."""

    NAME = "uniqa_corpus"
    TITLE = "UniQA pre-training corpus (authors' release)"
    FILE_SUFFIXES = (".json",)

    def _records(self, path):
        for i, item in enumerate(_json_list(path)):
            where = f"item {i}"
            image = _field(item, ("image_path", "image"), path, where)
            prompt = _field(item, ("prompt", "caption", "captions"), path, where, (str, list))
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not all(isinstance(p, str) for p in prompts):
                raise DatasetFormatError(f"{where}: the prompt list must hold strings, got {prompt!r}", path)
            yield _Record(image, prompts, item.get("task"))


class CaptionJSONL(CorpusBuilder):
    """Captions written by this project's captioner (JSONL, one caption a line)."""

    NAME = "caption_jsonl"
    TITLE = "MLLM-generated quality/aesthetics captions (JSONL)"
    FILE_SUFFIXES = (".jsonl",)
    EXTRA_FEATURES = {"levels": _STRINGS, "captioners": _STRINGS, "meanings": _STRINGS}

    def _records(self, path):
        for line, record in _iter_jsonl(path):
            where = f"line {line}"
            image = _field(record, ("image", "image_path"), path, where)
            caption = _field(record, ("caption", "text"), path, where)
            extras = {"levels": [record.get("level")], "captioners": [record.get("captioner")], "meanings": [record.get("meaning")]}
            yield _Record(image, [caption], record.get("task"), extras)


class LLaVAConversations(CorpusBuilder):
    """LLaVA-style conversation JSON and generation-output JSONL files."""

    NAME = "llava_conversations"
    TITLE = "LLaVA-style conversations and generation outputs"
    FILE_SUFFIXES = (".json", ".jsonl")
    _ANSWER = ("gpt", "assistant")

    def _records(self, path):
        if path.lower().endswith(".jsonl"):
            for line, record in _iter_jsonl(path):
                where = f"line {line}"
                image = record.get("image") or record.get("image_path")
                image = str(image if image is not None else _field(record, ("question_id",), path, where, (str, int)))
                text = _field(record, ("text", "answer", "caption"), path, where)
                yield _Record(image, [text], infer_task(str(record.get("prompt", ""))))
            return
        for i, item in enumerate(_json_list(path)):
            where = f"item {i}"
            if item.get("image") is None:  # a text-only item of an instruction mix: nothing to pair
                yield _Record(None, [])
                continue
            image = _field(item, ("image",), path, where)
            turns = _field(item, ("conversations",), path, where, list)
            if not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns):
                raise DatasetFormatError(f"{where}: conversations must be objects with 'from' and 'value'", path)
            answers = [t["value"] for t in turns if str(t.get("from", "")).lower() in self._ANSWER]
            question = " ".join(t["value"] for t in turns if str(t.get("from", "")).lower() not in self._ANSWER)
            yield _Record(image, answers, infer_task(question))


# --------------------------------------------------------------------------- merging
KeyRule = str | Callable[[str], str]


# FLIVE (PaQ-2-PiQ) names its copies of AVA images AVA__<id>.jpg
_AVA_COPY = re.compile(r"ava__([0-9]+)(\.[^.]*)?", re.IGNORECASE)


def image_key(name: str, rule: KeyRule = "stem") -> str:
    """The key under which :func:`merge_corpora` matches images.

    Rules: ``"stem"`` (default): the lower-cased file name without extension, so
    ``953619.jpg``, ``/data/AVA/images/953619.jpg`` and ``953619`` match (AVA ids);
    ``"name"``: the lower-cased file name with extension; ``"path"``: the whole path with
    ``/`` separators, case kept (for corpora whose file names repeat across folders, as
    FLIVE's may); or a callable ``name -> key``.

    With ``"stem"`` and ``"name"`` an AVA image has one key whichever corpus lists it:
    FLIVE's copies ``voc_emotic_ava/AVA__953619.jpg`` (in FLIVE and in corpora built from
    it, such as the authors' pre-training JSON) get the key of AVA's ``953619.jpg``, so
    excluding AVA's test split also drops their FLIVE copies.
    """
    if callable(rule):
        return rule(name)
    parts = split_parts(str(name))
    if rule == "path":
        return "/".join(parts)
    base = parts[-1] if parts else ""
    copy = _AVA_COPY.fullmatch(base)
    if copy is not None:
        base = copy.group(1) + (copy.group(2) or "")
    if rule == "name":
        return base.lower()
    if rule == "stem":
        return os.path.splitext(base)[0].lower()
    raise ValueError(f"key must be 'stem', 'name', 'path' or a callable, got {rule!r}")


def _splits(obj: Any) -> list[Any]:
    return list(obj.values()) if isinstance(obj, datasets.DatasetDict) else [obj]


def _exclusion_keys(exclude: Any, rule: KeyRule) -> set:
    if exclude is None:
        return set()
    if isinstance(exclude, (datasets.Dataset, datasets.DatasetDict)):
        names = [n for part in _splits(exclude) for n in part["image_name"]]
    else:
        names = [str(n) for n in exclude]
    return {image_key(n, rule) for n in names}


def merge_corpora(
    corpora: Iterable[Any],
    exclude: Any = None,
    key: KeyRule = "stem",
) -> datasets.Dataset:
    """Merge caption corpora into one row per image, pooling the captions.

    Args:
        corpora: ``Dataset``/``DatasetDict`` objects with the corpus columns (``image``,
            ``image_path``, ``image_name``, ``captions``, ``source``, ``task``), such as
            ``load("ava_captions", ...)``.
        exclude: images to leave out: names, paths or ids, or a ``Dataset``/``DatasetDict``
            whose ``image_name`` column lists them (e.g. AVA's official test split).
        key: how images are matched, see :func:`image_key` (default: file-name stem).

    Returns:
        A ``Dataset`` with ``image`` (the first corpus's image: path or embedded bytes),
        ``image_path``, ``image_name``, ``image_key``, ``captions`` (all captions in corpus
        order, exact duplicates dropped), ``source`` (the sources joined with ``+``),
        ``sources`` (list), ``task`` (tasks joined with ``+``) and ``caption_meanings``
        (aligned with ``captions``: what each caption states where its corpus says so, as
        ``caption_jsonl``'s template captions do, else None). Rows are in order of first
        appearance. Other per-corpus columns are not carried over.
    """
    excluded = _exclusion_keys(exclude, key)
    merged: dict[str, dict[str, Any]] = {}
    dropped = 0
    for corpus in corpora:
        for part in _splits(corpus):
            wanted = ["image", "image_path", "image_name", "captions", "source", "task"]
            columns = part.select_columns(wanted).cast_column("image", datasets.Image(decode=False)).to_dict()
            meanings = part["meanings"] if "meanings" in part.column_names else [None] * len(part)
            for i, name in enumerate(columns["image_name"]):
                k = image_key(name, key)
                if k in excluded:
                    dropped += 1
                    continue
                item = merged.get(k)
                if item is None:
                    item = merged[k] = {
                        "image": columns["image"][i],
                        "image_path": columns["image_path"][i],
                        "image_name": name,
                        "image_key": k,
                        "captions": [],
                        "caption_meanings": [],
                        "sources": [],
                        "tasks": [],
                    }
                for caption, meaning in zip(columns["captions"][i], meanings[i] or [None] * len(columns["captions"][i])):
                    if caption not in item["captions"]:
                        item["captions"].append(caption)
                        item["caption_meanings"].append(meaning)
                for field, value in (("sources", columns["source"][i]), ("tasks", columns["task"][i])):
                    for piece in str(value).split("+"):
                        if piece and piece not in item[field]:
                            item[field].append(piece)
    logger.info("merge_corpora: %d images, %d rows excluded", len(merged), dropped)
    items = list(merged.values())
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "image_path": datasets.Value("string"),
            "image_name": datasets.Value("string"),
            "image_key": datasets.Value("string"),
            "captions": _STRINGS,
            "caption_meanings": _STRINGS,
            "source": datasets.Value("string"),
            "sources": _STRINGS,
            "task": datasets.Value("string"),
        }
    )
    data = {
        "image": [item["image"] for item in items],
        "image_path": [item["image_path"] for item in items],
        "image_name": [item["image_name"] for item in items],
        "image_key": [item["image_key"] for item in items],
        "captions": [item["captions"] for item in items],
        "caption_meanings": [item["caption_meanings"] for item in items],
        "source": ["+".join(item["sources"]) for item in items],
        "sources": [item["sources"] for item in items],
        "task": ["+".join(sorted(item["tasks"])) for item in items],
    }
    return datasets.Dataset.from_dict(data, features=features)
