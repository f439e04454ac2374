"""The `if __name__ == "__main__"` of the training scripts: exit codes and one-line user errors."""

import logging
import sys
from collections.abc import Callable


def run_script(main: Callable, parse_args: Callable, user_errors: tuple) -> None:
    """Exit with `main(parse_args())`'s code; an exception in `user_errors` (a bad path, a
    malformed file, a refused resume) is logged as one line and exits with code 2."""
    arguments = parse_args()
    try:
        code = main(arguments)
    except user_errors as error:
        logging.getLogger(main.__module__).error("%s", error)
        code = 2
    sys.exit(code)
