"""User errors of the training scripts (one line, exit 2: `script.run_script`), on the package's one
base, `UniQAError`."""

from modeling_uniqa.errors import UniQAError


class DataError(UniQAError, ValueError):
    """A dataset, corpus or image set a run cannot use as given: the message names the data (file,
    row or split) and what to do."""


class SettingsError(UniQAError, ValueError):
    """Settings that cannot work together or with the data (a batch larger than the data, say)."""


class MissingFileError(DataError, FileNotFoundError):
    """A file named on the command line does not exist."""


__all__ = ["DataError", "MissingFileError", "SettingsError"]
