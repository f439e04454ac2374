"""Faster scoring forwards of the CLIP vision tower: what `uniqa score` turns on, and its options.

- `class_token_last_layer` (always on; within 1e-6): the last layer computes the class token's
  row only, the one the pooled output reads (keys and values still of every token): a fifth
  less work for UniQA-Tiny's 4-layer tower, a fourteenth for ViT-B/16.
- `chunk_vision_mlps` (on by default on the CPU; exact: bit-identical in our runs, tested to
  1e-6): runs each MLP block on 1,024 token rows at a time, so the 4x-wide intermediate
  activation (200 MB per layer for 80 ViT-B/16 views) and the activation function's passes over
  it stay in the CPU caches instead of streaming through memory.
- `compile_vision_tower` (`--compile`; within 1e-5 in float32): `torch.compile` of the tower,
  with weight freezing and prepacking on the CPU. Each new batch shape compiles again (about
  40-60 s at ViT-B/16 on 2 cores), so batches are padded to the first batch's size. `uniqa
  score` compiles by default (no `--compile`/`--no-compile`) when scoring files on the CPU in float32 and the
  first batch shows that at least 10 minutes of work are left (`compile_pays_off`); a compile
  that fails (no C++ compiler...) is logged and scoring goes on uncompiled.
- `quantize_vision_int8` (opt-in, `--quantize int8`; not exact): int8 dynamic quantisation of
  the tower's linear layers, for CPUs (VNNI makes it about 2x faster at ViT-B/16; scores move by
  about 1e-3, see the README's Performance section).

The process-wide allocator setting that goes with these is `cpu_runtime.tune_malloc`.
"""

import logging
import sys
import warnings

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

logger = logging.getLogger(__name__)
MLP_CHUNK_ROWS = 1024  # tokens per MLP chunk: 12 MB of ViT-B/16 intermediate activation
QUANTIZE_CHOICES = ("int8",)
COMPILE_PAYBACK_SECONDS = 600.0  # `uniqa score` without --compile/--no-compile compiles when at least this much uncompiled work is left


class RowChunkedMLP(nn.Module):
    """A CLIP MLP (`fc1` -> activation -> `fc2`) run on `rows` tokens at a time.

    Holds the same `fc1` and `fc2` modules as the MLP it replaces, so the state dict is unchanged.
    Each token's output depends on that token only, so chunking changes no number.
    """

    def __init__(self, mlp: nn.Module, rows: int = MLP_CHUNK_ROWS):
        super().__init__()
        self.fc1, self.activation_fn, self.fc2 = mlp.fc1, mlp.activation_fn, mlp.fc2
        self.rows = rows

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: (..., hidden) -> (..., hidden)
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])  # (tokens, hidden)
        if flat.shape[0] <= self.rows:
            return self.fc2(self.activation_fn(self.fc1(hidden_states)))
        output = flat.new_empty(flat.shape[0], self.fc2.out_features)
        for start in range(0, flat.shape[0], self.rows):
            chunk = flat[start : start + self.rows]
            output[start : start + self.rows] = self.fc2(self.activation_fn(self.fc1(chunk)))
        return output.view(*hidden_states.shape[:-1], -1)


def chunk_vision_mlps(model, rows: int = MLP_CHUNK_ROWS) -> int:
    """Replace the vision tower's MLPs of a `UniQAModel` by `RowChunkedMLP`s (idempotent).
    Returns how many were replaced."""
    replaced = 0
    for layer in model.clip.vision_model.encoder.layers:
        if isinstance(layer.mlp, RowChunkedMLP):
            layer.mlp.rows = rows
        else:
            layer.mlp = RowChunkedMLP(layer.mlp, rows)
            replaced += 1
    return replaced


class ClassTokenLastLayer(nn.Module):
    """The vision tower's last `CLIPEncoderLayer`, computed for the class token only.

    Scoring reads the tower's `pooler_output`: the post-layernorm of the last layer's class-token
    row. That row needs the keys and values of every token but the query, attention output and MLP
    of the class token alone, so the last layer costs 2/12 of its matrix products instead of 12/12
    (a fifth of a 4-layer tower, a fourteenth of ViT-B/16's 12). Holds the same submodules as the
    layer it replaces (the state dict is unchanged); its `last_hidden_state` is `(n, 1, hidden)`,
    so it is for scoring and embedding only, not for Grad-CAM or anything reading patch tokens.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.self_attn, self.layer_norm1, self.mlp, self.layer_norm2 = layer.self_attn, layer.layer_norm1, layer.mlp, layer.layer_norm2  # the layer's order

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        # hidden_states: (n, tokens, hidden) -> (n, 1, hidden), the class token's row
        attention = self.self_attn
        normed = self.layer_norm1(hidden_states)
        heads = (hidden_states.shape[0], -1, attention.num_heads, attention.head_dim)
        query = attention.q_proj(normed[:, :1]).view(heads).transpose(1, 2)  # (n, heads, 1, head_dim)
        keys = attention.k_proj(normed).view(heads).transpose(1, 2)  # (n, heads, tokens, head_dim)
        values = attention.v_proj(normed).view(heads).transpose(1, 2)
        attended = nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=attention_mask, scale=attention.scale)
        hidden = hidden_states[:, :1] + attention.out_proj(attended.transpose(1, 2).reshape(hidden_states.shape[0], 1, -1))
        return hidden + self.mlp(self.layer_norm2(hidden))


def class_token_last_layer(model) -> bool:
    """Replace the last vision layer of a `UniQAModel` by a `ClassTokenLastLayer` (idempotent).
    Returns whether it was replaced."""
    layers = model.clip.vision_model.encoder.layers
    if isinstance(layers[-1], ClassTokenLastLayer):
        return False
    layers[-1] = ClassTokenLastLayer(layers[-1])
    return True


def quantize_vision_int8(model):
    """int8 dynamic quantisation (weights int8 per tensor, activations quantised per batch) of
    the vision tower's linear layers, in place. CPU and float32 only: raises `ValueError` else."""
    tower = model.clip.vision_model
    weight = model.clip.visual_projection.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        raise ValueError(f"int8 quantisation runs on the CPU in float32; this model is {weight.dtype} on {weight.device.type}.")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's eager quantisation is deprecated for torchao, still shipped in torch 2.13
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantize_dynamic(tower, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def compile_vision_tower(model):
    """`torch.compile` the vision tower's forward in place (the module tree and state dict are
    unchanged). Batches are padded to the rows of the first batch it sees (larger ones are split
    into pieces of that size), so a short last batch does not compile a second graph."""
    tower = model.clip.vision_model
    if getattr(tower, "_uniqa_compiled", False):
        return model
    for layer in tower.encoder.layers:
        if isinstance(layer.mlp, RowChunkedMLP):
            layer.mlp.rows = sys.maxsize  # one plain pass: inductor fuses it, and a chunk loop only slows compiling
    on_cpu = model.clip.visual_projection.weight.device.type == "cpu"
    eager = tower.forward
    # Freezing folds the weights into the graph and lets oneDNN prepack them (CPU inference only).
    compiled = torch.compile(eager, dynamic=False, options={"freezing": True} if on_cpu else None)
    rows = []

    def forward(pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        count = pixel_values.shape[0]
        if not rows:  # the first call compiles; should that fail (no C++ compiler...), score on uncompiled
            try:
                output = padded(pixel_values, count, **kwargs)
            except Exception as error:
                logger.warning("torch.compile of the vision tower failed, scoring uncompiled: %s", " ".join(str(error).split())[:500])
                tower.forward = eager
                return eager(pixel_values=pixel_values, **kwargs)
            rows.append(count)
            return output
        return padded(pixel_values, rows[0], **kwargs)

    def padded(pixel_values: torch.Tensor, size: int, **kwargs) -> BaseModelOutputWithPooling:
        count = pixel_values.shape[0]
        pieces = []
        for start in range(0, count, size):
            real = min(size, count - start)
            # (real, 3, H, W) -> (size, 3, H, W), zeros dropped below. Always a new tensor, so every
            # call passes the graph's guards alike (an inference-mode tensor or not, a view or not).
            piece = pixel_values.new_zeros(size, *pixel_values.shape[1:])
            piece[:real] = pixel_values[start : start + real]
            out = compiled(pixel_values=piece, **kwargs)
            pieces.append((out.last_hidden_state[:real], out.pooler_output[:real]))
        return BaseModelOutputWithPooling(
            last_hidden_state=torch.cat([hidden for hidden, _ in pieces]), pooler_output=torch.cat([pooled for _, pooled in pieces])
        )

    tower.forward = forward
    tower._uniqa_compiled = True
    return model


def compile_pays_off(seconds_per_image: float, images_left: int, payback_seconds: float = COMPILE_PAYBACK_SECONDS) -> bool:
    """`uniqa score`'s default: whether the work left, at the uncompiled rate, is long enough to repay
    compiling (about a minute at ViT-B/16 on 2 CPU cores, for about 10% off every forward)."""
    return seconds_per_image * images_left >= payback_seconds


def optimize_for_scoring(model, device: torch.device, compile: bool = False, quantize: str | None = None) -> list:
    """Apply the scoring speed-ups to a `UniQAModel` in eval mode on `device`; returns what was
    applied (names for logs). The class-token last layer always and row-chunked MLPs on the CPU
    always (both exact to 1e-6); `compile` and
    `quantize` (`"int8"`, CPU float32 only) as asked. `ValueError` for a combination that cannot run."""
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize {quantize!r}: choose from {', '.join(QUANTIZE_CHOICES)}.")
    if quantize and compile:
        raise ValueError("choose one of compile and int8 quantisation: quantised layers do not compile on the CPU.")
    applied = []
    class_token_last_layer(model)  # every device: the same numbers (within 1e-6) for less work
    applied.append("class-token last layer")
    if device.type == "cpu" and not compile:  # compiled, inductor fuses the MLP itself (and a chunk loop slows compiling)
        chunk_vision_mlps(model)
        applied.append("row-chunked MLPs")
    if quantize == "int8":
        if device.type != "cpu":
            raise ValueError("int8 quantisation is for CPU scoring; on a GPU use --dtype bfloat16 or float16.")
        quantize_vision_int8(model)
        applied.append("int8 dynamic quantisation")
    if compile:
        compile_vision_tower(model)
        applied.append("torch.compile")
    return applied
