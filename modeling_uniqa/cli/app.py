"""`uniqa app`: the page to try a model in the browser, as `python -m modeling_uniqa.cli app`.

The `uniqa` console script serves it without importing this package (`uniqa_app.command`); both
take the same flags and start the same two processes (`uniqa_app.serve`).
"""

from uniqa_app.serve import add_arguments
from uniqa_app.serve import serve as run

__all__ = ["add_arguments", "run"]
