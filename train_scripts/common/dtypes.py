"""The compute dtype of an inference job from a command-line name (``auto`` picks per device): the
package's one table, `modeling_uniqa.core.runtime.DTYPES`."""

from __future__ import annotations

from modeling_uniqa.core.runtime import DTYPES, resolve_dtype

__all__ = ["DTYPES", "resolve_dtype"]
