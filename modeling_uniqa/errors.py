"""The package's error types: one base, `UniQAError`, that every error of `modeling_uniqa` derives
from, so a caller (and `uniqa`'s `main`, in one place) catches `UniQAError` for "a user error:
report it as one line".

Each type keeps the builtin base it had before (`ValueError` mostly), so `except ValueError`
callers keep working, and stays importable from the module that raises it.

One exception: `UniQAImageError` (an image that cannot be decoded) is defined in the remote-code
file `processing_uniqa.py`, which is copied into every saved model folder and may import only its
sibling remote-code files, torch and transformers: it cannot import this module, so it derives
from `ValueError` only. `USER_ERRORS` is the tuple to catch for "any error of the package":
`UniQAError` plus `UniQAImageError`. (`except` tests the real class hierarchy, so an
`ABCMeta.register` could not make `UniQAImageError` a `UniQAError` for `except` clauses.)
"""

from .processing_uniqa import UniQAImageError


class UniQAError(Exception):
    """Base of every error type of this package: a user error, reported as one line."""


class UsageError(UniQAError):
    """A problem with the command line, its inputs or an output to resume: exit code 2."""


class ModelFolderError(UniQAError, ValueError):
    """A model folder that cannot be used; the message names the file and the problem."""


class AdapterMismatchError(UniQAError, ValueError):
    """An adapter directory does not belong to the base model it is loaded onto."""


class OutputError(UniQAError):
    """The output cannot be written or resumed as asked; the message names the file and what to do."""


class MixedScoresError(UniQAError, ValueError):
    """Score files made by different scorers (or by none we know): the message names the file and the fields."""


class EmbeddingIndexError(UniQAError, ValueError):
    """An index folder that cannot be used: unreadable, inconsistent, or built by another model."""


class UnsafeFileError(UniQAError, ValueError):
    """A weights or checkpoint file that is not what its name says (not valid safetensors, a pickle
    where tensors belong): never loaded; the message names the file."""


class PushError(UniQAError, ValueError):
    """A directory that must not be pushed as it is."""


# Everything a command reports as one line and exit code 2.
USER_ERRORS = (UniQAError, UniQAImageError)

__all__ = [
    "USER_ERRORS",
    "AdapterMismatchError",
    "EmbeddingIndexError",
    "MixedScoresError",
    "ModelFolderError",
    "OutputError",
    "PushError",
    "UniQAError",
    "UniQAImageError",
    "UnsafeFileError",
    "UsageError",
]
