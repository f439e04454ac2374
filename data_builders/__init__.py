"""``datasets`` builders for the IQA/IAA datasets and caption corpora used by UniQA.

Point a builder at the folder you downloaded and get a ``datasets.DatasetDict``::

    from data_builders import load
    koniq = load("koniq10k", "/data/koniq10k")                     # official sets
    koniq3 = load("koniq10k", "/data/koniq10k", split_scheme="random", split_index=3)  # 80/20 split 3
    live = load("live", "/data/databaserelease2", split_index=0)   # 80/20 by reference
    ava = load("ava", "/data/AVA")                                 # generic_test.jpgl split

See :mod:`data_builders.base` for the columns, caching and metadata,
:mod:`data_builders.splits` for the split rules, :mod:`data_builders.iqa`,
:mod:`data_builders.iaa` and :mod:`data_builders.corpora` for the files each builder reads.
"""

from . import base, corpora, errors, iaa, iqa, levels, registry, splits
from .base import *  # noqa: F401,F403
from .corpora import *  # noqa: F401,F403
from .errors import *  # noqa: F401,F403
from .iaa import *  # noqa: F401,F403
from .iqa import *  # noqa: F401,F403
from .levels import *  # noqa: F401,F403
from .registry import *  # noqa: F401,F403
from .splits import *  # noqa: F401,F403

__all__ = [
    name
    for module in (registry, base, iqa, iaa, corpora, splits, levels, errors)
    for name in module.__all__
]
