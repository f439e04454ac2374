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
"""

import gzip
from pathlib import Path

from transformers import CLIPTokenizer

DEFAULT_MERGES_PATH = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

# OpenAI keeps the first 49152 - 256 - 2 merges: with 256 byte symbols, their 256 end-of-word
# forms and the 2 special tokens that makes a vocabulary of 49408 entries.
NUM_MERGES = 49152 - 256 - 2


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
