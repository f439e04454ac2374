"""Digests of weights in memory: one rule for every "was this made by the same model?" check.

`state_digest` hashes tensors in sorted key order, each with its name, shape and bytes.
Callers choose what to hash (the vision tower for a feature bank or an embedding index, the
whole CLIP for an adapter's base) and whether to hash at a reduced precision. The files of a
saved model folder are hashed by `model_folder.model_fingerprint` instead (their bytes).
"""

import hashlib
from collections.abc import Mapping

import torch


def state_digest(state_dict: Mapping[str, torch.Tensor], precision: torch.dtype | None = None, digest=None) -> str:
    """SHA-256 (hex) of `state_dict`'s tensors, names and shapes, in sorted key order.

    `precision` (e.g. `torch.bfloat16`) casts floating-point tensors before hashing, so copies of
    one model loaded at different precisions share a digest; `None` hashes the stored bytes and
    dtypes exactly. `digest` continues an existing `hashlib` object (to mix in settings first).
    """
    digest = digest or hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach()
        if precision is not None and tensor.is_floating_point():
            tensor = tensor.to(precision)
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def prefixed_state(**modules: torch.nn.Module) -> dict:
    """One state dict of several modules, keys prefixed with the keyword names."""
    return {f"{prefix}.{name}": tensor for prefix, module in modules.items() for name, tensor in module.state_dict().items()}


__all__ = ["prefixed_state", "state_digest"]
