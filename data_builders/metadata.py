"""Dataset metadata and the MOS <-> score maths.

``DatasetInfo`` has no free-form metadata field in datasets 5.2, so the builders put a
human-readable summary and one machine-readable line ``uniqa-metadata: {json}`` into
``DatasetInfo.description`` (:func:`describe`); it survives ``as_dataset()``,
``select``/``filter``/``map``, ``save_to_disk``/``load_from_disk``. :func:`get_metadata`
reads it back. For rating datasets it holds ``mos_range`` and ``higher_is_better``, which
:func:`mos_to_score` and :func:`score_to_mos` take.

This is the one data-side home of the MOS <-> score mapping: every module of
``data_builders`` imports it from here. (When ``modeling_uniqa.configuration_uniqa``
provides the same two functions, this module imports them from there instead.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import datasets

from modeling_uniqa.configuration_uniqa import mos_to_score, score_to_mos  # the one home of the MOS maths

__all__ = ["METADATA_PREFIX", "get_metadata", "mos_to_score", "score_to_mos"]

METADATA_PREFIX = "uniqa-metadata: "


def describe(summary: str, metadata: Mapping[str, Any]) -> str:
    """A ``DatasetInfo.description``: ``summary``, then the metadata line :func:`get_metadata` reads."""
    return f"{summary}\n{METADATA_PREFIX}{json.dumps(dict(metadata), sort_keys=True)}"


def get_metadata(obj: Any) -> dict[str, Any]:
    """The UniQA metadata of a dataset, dataset dict, ``DatasetInfo``, builder or description.

    Returns ``{}`` when there is none (for example a dataset from another source).
    """
    if isinstance(obj, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        obj = next(iter(obj.values()), None)  # the splits share one info
    info = getattr(obj, "info", obj)
    text = info if isinstance(info, str) else getattr(info, "description", "") or ""
    for line in text.splitlines():
        if line.startswith(METADATA_PREFIX):
            return json.loads(line[len(METADATA_PREFIX) :])
    return {}
