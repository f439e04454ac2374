"""The `if __name__ == "__main__"` of the training scripts: exit codes, one-line user errors, and
the process group closed before the interpreter shuts down."""

import logging
import sys
from collections.abc import Callable

from modeling_uniqa.core.runtime import close_process_group
from modeling_uniqa.errors import USER_ERRORS
from train_scripts.common.checkpointing import ResumeError
from train_scripts.common.numerics import DivergenceError

# User errors of the training scripts: a refused start or resume, a diverged run, and the package's
# own (a model folder that does not load, bad prompts...).
TRAINING_ERRORS = (ResumeError, DivergenceError, *USER_ERRORS)

# The scripts' log lines: time, level, logger, message.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_script(main: Callable, parse_args: Callable, user_errors: tuple = ()) -> None:
    """Exit with `main(parse_args())`'s code (an int; any other result, such as a results dict or
    an output folder, means success: 0). An exception in `user_errors` (a bad path, a malformed
    file, a refused resume) is logged as one line and exits with code 2. Whatever happens, the
    torch.distributed process group is closed first (`close_process_group`)."""
    arguments = parse_args()
    try:
        code = main(arguments)
    except user_errors as error:
        if not logging.getLogger().handlers:  # refused before the script set up its logging (an output in use)
            logging.basicConfig(format=LOG_FORMAT)
        logging.getLogger(main.__module__).error("%s", error)
        code = 2
    finally:
        close_process_group()
    sys.exit(code if isinstance(code, int) else 0)
