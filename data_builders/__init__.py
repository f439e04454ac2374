"""``datasets`` builders for the IQA/IAA datasets and caption corpora used by UniQA.

Point a builder at the folder you downloaded and get a ``datasets.DatasetDict``::

    from data_builders import load
    koniq = load("koniq10k", "/data/koniq10k")                     # official sets
    koniq3 = load("koniq10k", "/data/koniq10k", split_scheme="random", split_index=3)  # 80/20 split 3
    live = load("live", "/data/databaserelease2", split_index=0)   # 80/20 by reference
    ava = load("ava", "/data/AVA")                                 # generic_test.jpgl split

One job per module:

* :mod:`~data_builders.registry`: :func:`load`, :func:`available`, :func:`get_builder`;
* :mod:`~data_builders.iqa`, :mod:`~data_builders.iaa`, :mod:`~data_builders.corpora`:
  the builders and the files each reads (and :func:`merge_corpora`, :func:`image_key`);
* :mod:`~data_builders.builders`: the builder bases (columns, images, caching, metadata);
* :mod:`~data_builders.configs`: the options (:class:`ImageConfig`, :class:`RatingConfig`);
* :mod:`~data_builders.metadata`: :func:`get_metadata`, :func:`mos_to_score`,
  :func:`score_to_mos`;
* :mod:`~data_builders.splits`: the split rules and split files;
  :mod:`~data_builders.levels`: the five text levels;
* :mod:`~data_builders.readers`: parsing label files (CSV, xlsx, text, .mat);
  :mod:`~data_builders.paths`: finding label files and images;
  :mod:`~data_builders.errors`: the exceptions.
"""

from . import builders, configs, corpora, errors, iaa, iqa, levels, metadata, registry, splits
from .builders import *  # noqa: F401,F403
from .configs import *  # noqa: F401,F403
from .corpora import *  # noqa: F401,F403
from .errors import *  # noqa: F401,F403
from .iaa import *  # noqa: F401,F403
from .iqa import *  # noqa: F401,F403
from .levels import *  # noqa: F401,F403
from .metadata import *  # noqa: F401,F403
from .readers import table_rows  # noqa: F401  (for writing a builder of your own)
from .registry import *  # noqa: F401,F403
from .splits import *  # noqa: F401,F403

__all__ = [
    name
    for module in (registry, builders, configs, metadata, iqa, iaa, corpora, splits, levels, errors)
    for name in module.__all__
] + ["table_rows"]
