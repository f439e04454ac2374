"""Build OpenAI CLIP's BPE tokenizer offline, as a ``transformers.CLIPTokenizer``.

The merges file ``assets/bpe_simple_vocab_16e6.txt.gz`` (MIT, OpenAI; see ``assets/README.md``)
is all OpenAI CLIP needs: its vocabulary is derived from the merges exactly as OpenAI's
``simple_tokenizer.py`` does, so token ids match the released checkpoints
(``"bad image"`` -> ``[49406, 2103, 2867, 49407]``).

Text cleaning compared with OpenAI's ``SimpleTokenizer.encode``: both collapse runs of
whitespace, drop leading/trailing whitespace and lower-case the text. OpenAI additionally runs
``ftfy.fix_text`` and ``html.unescape`` (twice); ``CLIPTokenizer`` does neither (it applies
Unicode NFC instead), so mojibake or HTML entities such as ``"&amp;"`` tokenise differently.
Plain prompts such as UniQA's quality levels are unaffected.

Padding uses ``<|endoftext|>`` (id 49407) like Hugging Face's ``openai/clip-*`` tokenizers,
whereas OpenAI's ``clip.tokenize`` pads with id 0. Either is harmless for CLIP's text tower:
attention is causal, and pooling reads the *first* end-of-text token, which is the real one.

`resolve_prompt_tokenizer` picks the tokenizer that turns prompts into ids for a given text tower
and refuses one whose vocabulary does not match it (a wrong tokenizer gives wrong scores, not an
error). This file is shipped as remote code with saved models (imported by `modeling_uniqa.py`);
the merges asset is not, so there the shipped tokenizer is only available if this package is.
"""

import functools
import gzip
import logging
import os
from pathlib import Path

from transformers import CLIPConfig, CLIPTextConfig, CLIPTokenizer, PretrainedConfig

logger = logging.getLogger(__name__)

DEFAULT_MERGES_PATH = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

# OpenAI keeps the first 49152 - 256 - 2 merges: with 256 byte symbols, their 256 end-of-word
# forms and the 2 special tokens that makes a vocabulary of 49408 entries.
NUM_MERGES = 49152 - 256 - 2
OPENAI_VOCAB_SIZE = 49152 + 256  # 49408: merges + bytes + their end-of-word forms + 2 specials
OPENAI_BOS_ID, OPENAI_EOS_ID = OPENAI_VOCAB_SIZE - 2, OPENAI_VOCAB_SIZE - 1
# Before transformers PR #24773 CLIP configs said eos_token_id=2; the text model then pools at
# the largest id of each row, which is <|endoftext|> for OpenAI's vocabulary.
LEGACY_EOS_ID = 2
# Files whose presence means a folder holds a tokenizer worth trying.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, in OpenAI's (and GPT-2's) order.

    Printable Latin-1 bytes map to themselves; the remaining 68 bytes (controls, space, ...)
    map to ``chr(256 + n)`` in increasing byte order. The insertion order of the returned dict
    is the order of the first 256 vocabulary ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in mapping]
    mapping.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    return mapping


def read_clip_merges(merges_path: str | Path | None = None) -> list[tuple[str, str]]:
    """Read the merges OpenAI CLIP uses from its (optionally gzipped) BPE file.

    The first line is a version header; only the first ``NUM_MERGES`` merges after it are used.
    """
    path = Path(merges_path) if merges_path is not None else DEFAULT_MERGES_PATH
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    malformed = [merge for merge in merges if len(merge) != 2]
    if malformed:
        raise ValueError(f"{path}: expected merges of two symbols per line, got {malformed[:3]}")
    return merges


def build_clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id, built like OpenAI's ``SimpleTokenizer``.

    Order: the 256 byte symbols, the same with ``</w>`` appended, one entry per merge (the two
    symbols joined), then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    byte_symbols = list(bytes_to_unicode().values())
    tokens = [*byte_symbols, *(symbol + "</w>" for symbol in byte_symbols)]
    tokens += ["".join(merge) for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def build_clip_tokenizer(merges_path: str | Path | None = None, model_max_length: int = 77) -> CLIPTokenizer:
    """Build OpenAI CLIP's tokenizer from its merges file, without network access.

    Args:
        merges_path: BPE merges file (``.gz`` or plain text); defaults to the shipped copy.
        model_max_length: context length of the text tower (77 for OpenAI CLIP).

    Returns:
        A ``CLIPTokenizer`` with bos ``<|startoftext|>``, eos = pad = unk ``<|endoftext|>``.
        It saves with ``save_pretrained`` and reloads offline with ``from_pretrained``.
    """
    merges = read_clip_merges(merges_path)
    return CLIPTokenizer(
        vocab=build_clip_vocab(merges),
        merges=merges,
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=model_max_length,
    )


@functools.lru_cache(maxsize=4)
def openai_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """The shipped OpenAI CLIP tokenizer, built once per process (shared: do not modify it).

    Raises `FileNotFoundError` naming the merges file when it is absent (as in remote code run
    without this package installed).
    """
    if not DEFAULT_MERGES_PATH.is_file():
        raise FileNotFoundError(
            f"OpenAI CLIP's BPE merges file {DEFAULT_MERGES_PATH} is not available (it ships with the "
            "uniqa-hf package, not with a saved model's remote code): install the package or pass a tokenizer."
        )
    return build_clip_tokenizer(model_max_length=model_max_length)


def is_openai_vocab(text_config: CLIPTextConfig) -> bool:
    """Whether a CLIP text tower uses OpenAI's BPE vocabulary (49,408 ids, bos/eos the last two)."""
    if text_config.vocab_size != OPENAI_VOCAB_SIZE:
        return False
    if text_config.eos_token_id == LEGACY_EOS_ID:
        return True
    return (text_config.bos_token_id, text_config.eos_token_id) == (OPENAI_BOS_ID, OPENAI_EOS_ID)


def tokenizer_mismatch(tokenizer, text_config: CLIPTextConfig) -> str | None:
    """Why `tokenizer` cannot feed this text tower (a sentence), or `None` when it fits.

    The size of the vocabulary must equal the tower's embedding table, and the end-of-text id
    (where the tower pools) must agree; so must the start-of-text id, unless the config is a
    legacy one (`eos_token_id=2`, whose bos is meaningless).
    """
    size = len(tokenizer)
    if size != text_config.vocab_size:
        return f"the tokenizer has {size} tokens but the text tower's vocabulary has {text_config.vocab_size}"
    if text_config.eos_token_id == LEGACY_EOS_ID:
        if tokenizer.eos_token_id != size - 1:
            return (
                f"the text tower's legacy config (eos_token_id=2) pools at the largest id, but the tokenizer's "
                f"end-of-text id is {tokenizer.eos_token_id}, not {size - 1}"
            )
        return None
    for name in ("bos_token_id", "eos_token_id"):
        ours, theirs = getattr(tokenizer, name), getattr(text_config, name)
        if theirs is not None and ours != theirs:
            return f"the tokenizer's {name} is {ours} but the text tower's is {theirs}"
    return None


def _text_config_of(model_or_dir) -> tuple[CLIPTextConfig, str | None]:
    """The CLIP text config of a model, a config or a model folder, and the folder (if any)."""
    if isinstance(model_or_dir, (str, os.PathLike)):
        folder = os.fspath(model_or_dir)
        config_file = os.path.join(folder, "config.json")
        if not os.path.isfile(config_file):
            raise ValueError(f"{config_file}: no such file, so the text tower of {folder} is unknown.")
        config_dict, _ = PretrainedConfig.get_config_dict(folder)
        config_dict = config_dict.get("clip_config", config_dict)  # a UniQA config holds the CLIP one
        if "text_config" in config_dict:
            return CLIPConfig(**config_dict).text_config, folder
        if config_dict.get("model_type") == "clip_text_model":
            return CLIPTextConfig(**config_dict), folder
        raise ValueError(f"{config_file}: not a CLIP or UniQA config (no text_config).")
    config = getattr(model_or_dir, "config", model_or_dir)
    name_or_path = getattr(config, "_name_or_path", None) or getattr(model_or_dir, "name_or_path", None)
    folder = name_or_path if name_or_path and os.path.isdir(name_or_path) else None
    for attribute in ("clip_config", "text_config"):
        config = getattr(config, attribute, config)
    if not isinstance(config, CLIPTextConfig):
        raise TypeError(f"Expected a UniQA/CLIP model or config or a model folder, got {type(model_or_dir).__name__}.")
    return config, folder


def _load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: cannot load a tokenizer ({error}).") from error


def resolve_prompt_tokenizer(model_or_dir, tokenizer=None):
    """The tokenizer to turn prompts into ids for a CLIP text tower, checked against that tower.

    Args:
        model_or_dir: a `UniQAModel` or `CLIPModel`, their config (or the text config), or a
            model folder with a `config.json` (UniQA or CLIP).
        tokenizer: a tokenizer object or folder to use (it must match the text tower), or `None`
            to pick one: the tokenizer saved in the model's folder (the folder given, or the
            one the model was loaded from) if it matches, else the OpenAI BPE tokenizer shipped
            here when the tower's vocabulary is OpenAI's (49,408 ids).

    Returns:
        A tokenizer whose vocabulary size and bos/eos ids match the text tower.

    Raises:
        ValueError: the given tokenizer does not match the tower (or cannot be loaded), or none was
            given, none fits in the folder and the vocabulary is not OpenAI's. The message says why.
    """
    text_config, folder = _text_config_of(model_or_dir)
    if tokenizer is not None:
        source = "the given tokenizer"
        if isinstance(tokenizer, (str, os.PathLike)):
            source = f"the tokenizer in {os.fspath(tokenizer)}"
            tokenizer = _load_tokenizer(os.fspath(tokenizer))
        problem = tokenizer_mismatch(tokenizer, text_config)
        if problem:
            raise ValueError(f"Cannot tokenise prompts with {source}: {problem}.")
        return tokenizer

    reason, log = "no tokenizer was given", logger.info
    if folder is not None and any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES):
        try:
            found = _load_tokenizer(folder)
            problem = tokenizer_mismatch(found, text_config)
        except ValueError as error:
            problem = str(error)
        if not problem:
            return found
        reason, log = f"the tokenizer in {folder} does not fit ({problem})", logger.warning
    elif folder is not None:
        reason = f"{folder} holds no tokenizer"
    if not is_openai_vocab(text_config):
        raise ValueError(
            f"Cannot tokenise prompts: {reason}, and the text tower's vocabulary ({text_config.vocab_size} tokens, "
            f"bos id {text_config.bos_token_id}, eos id {text_config.eos_token_id}) is not OpenAI's, so the "
            "shipped CLIP tokenizer does not apply. Pass the tokenizer the CLIP model was trained with."
        )
    if folder is not None:
        log("%s; using the OpenAI CLIP tokenizer shipped with uniqa-hf, which matches the text tower.", reason)
    return openai_clip_tokenizer(text_config.max_position_embeddings)
