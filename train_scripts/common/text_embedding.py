"""Embed many short texts with a CLIP text tower: batches sorted by length, dynamic padding.

CLIP's text tower is causal and pools at the end-of-text token, so the padding after a text
changes nothing in its embedding: a batch needs only be as long as its longest text, not the
context length (77). Sorting the texts by token count before batching keeps lengths within a
batch close, so AVA-like comments (mostly 5-30 words) cost a fraction of the fixed-77 work
(`benchmarks/bench_comment_embedding.py`). Results come back in input order.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["embed_texts", "length_sorted_batches"]


def length_sorted_batches(lengths: list, batch_size: int) -> list:
    """Index lists of at most ``batch_size`` items, shortest texts first (stable for equal lengths)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def embed_texts(
    clip,
    tokenizer,
    texts: list,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    sort_by_length: bool = True,
    pad_to: int | None = None,
    normalize: bool = True,
    progress=None,
) -> torch.Tensor:
    """Projected text embeddings ``(len(texts), dim)`` (float32, on the CPU), in input order.

    Args:
        clip: an HF ``CLIPModel`` (its ``get_text_features``).
        tokenizer: its tokenizer; texts longer than the tower's context are truncated (the
            end-of-text token kept).
        batch_size: texts per forward.
        device: where the tower runs (default: where its weights are).
        sort_by_length: batch texts of similar token counts together (the fast path).
        pad_to: pad every batch to at least this many tokens (e.g. 77, the fixed-length
            baseline); default: the longest text of the batch.
        normalize: L2-normalise the embeddings (for cosine similarities).
        progress: optional callable ``progress(n_texts_done_in_batch)``.
    """
    if len(texts) == 0:
        return torch.empty((0, clip.config.projection_dim), dtype=torch.float32)
    context = clip.config.text_config.max_position_embeddings
    device = torch.device(device) if device is not None else clip.text_projection.weight.device
    encoded = tokenizer(list(texts), padding=False, truncation=True, max_length=context)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lengths = [len(ids) for ids in encoded]
    if sort_by_length:
        batches = length_sorted_batches(lengths, batch_size)
    else:
        batches = [list(range(start, min(start + batch_size, len(texts)))) for start in range(0, len(texts), batch_size)]
    output = None
    for indices in batches:
        width = max(pad_to or 0, max(lengths[i] for i in indices))
        input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            input_ids[row, : lengths[i]] = torch.tensor(encoded[i], dtype=torch.long)
            attention_mask[row, : lengths[i]] = 1
        features = clip.get_text_features(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
        ).pooler_output.float()
        if normalize:
            features = F.normalize(features, dim=-1)
        if output is None:
            output = torch.empty((len(texts), features.shape[-1]), dtype=torch.float32)
        output[torch.tensor(indices)] = features.cpu()
        if progress is not None:
            progress(len(indices))
    return output
