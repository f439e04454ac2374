"""Reading the small JSON files of model and adapter folders (`config.json`,
`uniqa_adapter.json`, `preprocessor_config.json`) with one error line that names the file.

The model-folder check, the adapter reader and the model card generator all read these files;
they share `read_json`, so a broken file reads the same whoever finds it."""

import json
import os


def read_json(path, error: type[Exception] = ValueError):
    """The JSON value stored in the file `path`.

    A file that cannot be read (missing, a folder, no permission), is not UTF-8 or is not JSON
    raises `error` (a `ValueError` by default; callers pass their own error class) with the
    message `"<path>: not a readable JSON file (<cause>)."`, chained to the cause. What the value
    must look like (an object, which keys) is the caller's to check.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as cause:
        raise error(f"{path}: not a readable JSON file ({cause}).") from cause


__all__ = ["read_json"]
