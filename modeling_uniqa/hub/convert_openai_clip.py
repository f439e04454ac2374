"""Convert an OpenAI-CLIP (ViT) ``state_dict``, such as UniQA's ``UniQA_weight.pt``, into a
``transformers.CLIPModel``.

The architecture is read from tensor shapes only (so ``meta`` tensors work). Every source key
must map onto a ``CLIPModel`` parameter and every parameter must be filled, otherwise a
``ValueError`` names the offending keys.

Text pooling: OpenAI CLIP pools the text tower at ``argmax(input_ids)``, the first end-of-text
token because it has the highest id. ``CLIPTextModel`` pools at the first position equal to
``config.eos_token_id`` (unless that id is 2, a legacy argmax path). With ``eos_token_id`` set to
the last vocabulary id (49407) both rules pick the same position, whether sequences are padded
with 0 (OpenAI) or with 49407 (Hugging Face tokenizers).
"""

import math
import os
import re
import zipfile
from pickle import UnpicklingError

import torch
from transformers import CLIPConfig, CLIPModel
from transformers.initialization import no_init_weights

# OpenAI CLIP uses 64-dimensional attention heads in both towers.
HEAD_DIM = 64
# Scalars stored next to the weights in OpenAI's TorchScript exports; not parameters.
NON_PARAMETER_KEYS = frozenset({"input_resolution", "context_length", "vocab_size"})
RESNET_PREFIXES = ("visual.layer1.", "visual.attnpool.")
REQUIRED_KEYS = (
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.proj",
    "visual.transformer.resblocks.0.mlp.c_fc.weight",
    "token_embedding.weight",
    "positional_embedding",
    "text_projection",
    "transformer.resblocks.0.mlp.c_fc.weight",
)

# OpenAI module -> CLIPModel module, for keys copied as they are (``.weight`` and ``.bias``).
_MODULE_RENAMES = {
    "visual.ln_pre": "vision_model.pre_layrnorm",  # sic: transformers' attribute name
    "visual.ln_post": "vision_model.post_layernorm",
    "ln_final": "text_model.final_layer_norm",
}
_DIRECT_RENAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "logit_scale": "logit_scale",
    **{f"{src}.{param}": f"{dst}.{param}" for src, dst in _MODULE_RENAMES.items() for param in ("weight", "bias")},
}
# OpenAI projects with ``x @ proj`` ([width, embed]); nn.Linear stores [embed, width].
_TRANSPOSED_RENAMES = {
    "visual.proj": "visual_projection.weight",
    "text_projection": "text_projection.weight",
}
# Inside one residual block: OpenAI module -> CLIPEncoderLayer module.
_LAYER_MODULE_RENAMES = {
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_LAYER_KEY = re.compile(r"^(?P<tower>visual\.)?transformer\.resblocks\.(?P<index>\d+)\.(?P<rest>.+)$")
_PACKED_ATTENTION = re.compile(r"^attn\.in_proj_(?P<param>weight|bias)$")


def _check_openai_vit_clip(state_dict: dict) -> None:
    """Raise a ``ValueError`` unless ``state_dict`` looks like a complete OpenAI ViT CLIP."""
    resnet_keys = [key for key in state_dict if key.startswith(RESNET_PREFIXES)]
    if resnet_keys:
        raise ValueError(
            f"found ResNet CLIP ({', '.join(resnet_keys[:3])}, ...); only ViT CLIP is supported"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state_dict]
    if len(missing) == len(REQUIRED_KEYS):
        raise ValueError(f"no OpenAI CLIP keys found; first keys: {list(state_dict)[:8]}")
    if missing:
        raise ValueError(f"incomplete OpenAI CLIP state_dict: missing {missing}")


def _count_layers(state_dict: dict, tower: str) -> int:
    """Number of residual blocks of one tower (``tower`` is ``"visual."`` or ``""``)."""
    indices = set()
    for key in state_dict:
        match = _LAYER_KEY.match(key)
        if match and (match["tower"] or "") == tower:
            indices.add(int(match["index"]))
    if indices != set(range(len(indices))):
        raise ValueError(f"non-contiguous {tower or 'text '}resblock indices: {sorted(indices)}")
    return len(indices)


def _num_heads(width: int, head_dim: int) -> int:
    """Attention heads of a tower ``width`` wide (OpenAI: width // 64)."""
    if width % head_dim:
        raise ValueError(f"width {width} is not a multiple of the head dimension {head_dim}")
    return width // head_dim


def infer_clip_config(state_dict: dict, head_dim: int = HEAD_DIM) -> CLIPConfig:
    """Infer the ``CLIPConfig`` of an OpenAI ViT CLIP from the shapes in its ``state_dict``.

    Only ``.shape`` is read, so tensors may live on the ``meta`` device. The head count is the
    one value shapes cannot tell; it follows OpenAI's rule heads = width // ``head_dim``.

    Args:
        state_dict: raw OpenAI CLIP state_dict (``visual.conv1.weight``, ``token_embedding.weight``, ...).
        head_dim: attention head size of both towers; 64 for every OpenAI release (smaller
            values are for tiny test models).
    """
    _check_openai_vit_clip(state_dict)
    vision_width, _, patch_size, _ = state_dict["visual.conv1.weight"].shape  # [width, 3, patch, patch]
    num_patches = state_dict["visual.positional_embedding"].shape[0] - 1  # [1 + grid**2, width]
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"visual.positional_embedding holds {num_patches} patch positions, not a square grid")
    vocab_size, text_width = state_dict["token_embedding.weight"].shape  # [vocab, width]
    vision_embed_dim = state_dict["visual.proj"].shape[1]  # [vision_width, embed]
    text_embed_dim = state_dict["text_projection"].shape[1]  # [text_width, embed]
    if vision_embed_dim != text_embed_dim:
        raise ValueError(f"visual.proj projects to {vision_embed_dim} but text_projection to {text_embed_dim}")

    openai_defaults = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}  # nn.LayerNorm's default eps
    vision_config = {
        **openai_defaults,
        "hidden_size": vision_width,
        "intermediate_size": state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _count_layers(state_dict, "visual."),
        "num_attention_heads": _num_heads(vision_width, head_dim),
        "patch_size": patch_size,
        "image_size": patch_size * grid,
        "projection_dim": vision_embed_dim,
    }
    text_config = {
        **openai_defaults,
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _count_layers(state_dict, ""),
        "num_attention_heads": _num_heads(text_width, head_dim),
        "max_position_embeddings": state_dict["positional_embedding"].shape[0],
        "projection_dim": text_embed_dim,
        # OpenAI appends <|startoftext|>, <|endoftext|> as the last two ids; the tokenizer pads
        # with <|endoftext|>. Pooling then finds the first eos, as OpenAI's argmax does.
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
    }
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=vision_embed_dim)


def _rename(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """CLIPModel (name, tensor) pairs for one OpenAI key; empty if the key is unknown."""
    if key in _DIRECT_RENAMES:
        return [(_DIRECT_RENAMES[key], tensor)]
    if key in _TRANSPOSED_RENAMES:
        return [(_TRANSPOSED_RENAMES[key], tensor.T)]
    match = _LAYER_KEY.match(key)
    if match is None:
        return []
    tower = "vision_model" if match["tower"] else "text_model"
    prefix = f"{tower}.encoder.layers.{match['index']}"
    rest = match["rest"]
    packed = _PACKED_ATTENTION.match(rest)
    if packed:
        # in_proj_weight [3 * width, width] / in_proj_bias [3 * width], stacked as q, k, v.
        return [
            (f"{prefix}.self_attn.{name}_proj.{packed['param']}", part)
            for name, part in zip("qkv", tensor.chunk(3, dim=0))
        ]
    module, _, param = rest.rpartition(".")
    if module in _LAYER_MODULE_RENAMES and param in ("weight", "bias"):
        return [(f"{prefix}.{_LAYER_MODULE_RENAMES[module]}.{param}", tensor)]
    return []


def _expected_shapes(config: CLIPConfig) -> dict[str, torch.Size]:
    """Parameter name -> shape of ``CLIPModel(config)``, built on ``meta`` (no memory).

    ``position_ids`` buffers are non-persistent, so they are not part of the state_dict.
    """
    with torch.device("meta"):
        model = CLIPModel(config)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def convert_openai_state_dict(
    state_dict: dict, config: CLIPConfig | None = None, dtype: torch.dtype | None = torch.float32
) -> dict[str, torch.Tensor]:
    """Rename (and split/transpose) an OpenAI CLIP state_dict into ``CLIPModel`` names.

    Args:
        state_dict: raw OpenAI ViT CLIP state_dict.
        config: target config; inferred from ``state_dict`` when omitted.
        dtype: dtype of the converted tensors (``None`` keeps the stored dtype, fp16 for OpenAI).

    Returns:
        A new dict of contiguous tensors (no storage shared with the input or each other).

    Raises:
        ValueError: naming source keys that map nowhere, ``CLIPModel`` keys left unfilled, or
            shape mismatches with ``config``.
    """
    if config is None:
        config = infer_clip_config(state_dict)
    converted, unmapped = {}, []
    for key, tensor in state_dict.items():
        if key in NON_PARAMETER_KEYS:
            continue
        pairs = _rename(key, tensor)
        if not pairs:
            unmapped.append(key)
        for name, value in pairs:
            converted[name] = value.to(dtype=dtype or value.dtype, memory_format=torch.contiguous_format, copy=True)
    if unmapped:
        raise ValueError(f"OpenAI CLIP keys with no CLIPModel counterpart: {unmapped}")

    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ValueError(f"CLIPModel keys left unfilled by the checkpoint: {missing}")
    wrong_shape = [
        f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[name])}"
        for name, tensor in converted.items()
        if tensor.shape != expected[name]
    ]
    if wrong_shape:
        raise ValueError(f"shape mismatch with the CLIP config: {wrong_shape}")
    return converted


# Keys under which training code nests a state_dict (IQA-PyTorch / BasicSR use "params").
STATE_DICT_WRAPPERS = ("state_dict", "model", "params", "params_ema", "net")


def unwrap_state_dict(checkpoint: object, source: str) -> dict:
    """Return the state_dict inside ``checkpoint``: bare, or under one of ``STATE_DICT_WRAPPERS``,
    with a DataParallel ``module.`` prefix removed."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{source}: expected a state_dict (dict), got {type(checkpoint).__name__}")
    for wrapper in STATE_DICT_WRAPPERS:
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    if checkpoint and all(key.startswith("module.") for key in checkpoint):
        checkpoint = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    return checkpoint


def _is_torchscript_archive(path: str | os.PathLike) -> bool:
    """TorchScript zips carry ``code/`` and ``constants.pkl``; plain ``torch.save`` zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint file safely (``weights_only=True``) onto the CPU.

    Accepts a bare state_dict or one wrapped under a key of ``STATE_DICT_WRAPPERS``, with or
    without a ``module.`` prefix. Tensors keep their stored dtype.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: for a TorchScript archive, a file holding non-tensor Python objects, a file
            that is no ``torch.save`` checkpoint (empty, truncated, text, ...), or anything that
            is not a state_dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not a checkpoint file (missing, or a folder)")
    if _is_torchscript_archive(path):
        raise ValueError(
            f"{path} is a TorchScript archive (like OpenAI's released ViT-B-16.pt). If you trust it, "
            "save `torch.jit.load(path, map_location='cpu').state_dict()` with torch.save and convert that."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers, or is no torch.save checkpoint; "
            f"refusing to unpickle it (torch.load weights_only=True: {_weights_only_reason(error)})"
        ) from error
    except (EOFError, KeyError, RuntimeError, OSError) as error:
        # torch's own errors for an empty, truncated or non-checkpoint file (a bare EOFError, KeyError: 101, ...).
        raise ValueError(
            f"{path} ({os.path.getsize(path)} bytes) is not a readable torch.save checkpoint: empty, truncated or "
            f"another kind of file ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'})"
        ) from error
    return unwrap_state_dict(checkpoint, source=str(path))


def _weights_only_reason(error: UnpicklingError) -> str:
    """The line of torch's long weights_only message that says what was refused."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        for line in text.split(marker, 1)[1].splitlines():
            if line.strip():
                return line.strip()
    return text.splitlines()[0] if text else type(error).__name__


def openai_to_hf_clip(
    path_or_state_dict: str | os.PathLike | dict, dtype: torch.dtype = torch.float32, head_dim: int = HEAD_DIM
) -> CLIPModel:
    """Build a ``CLIPModel`` (eval mode) from an OpenAI CLIP checkpoint file or state_dict.

    Args:
        path_or_state_dict: checkpoint path (see ``load_state_dict_file``) or a state_dict.
        dtype: dtype of the returned model.
        head_dim: attention head size (64 for OpenAI releases).
    """
    if isinstance(path_or_state_dict, dict):
        state_dict = unwrap_state_dict(path_or_state_dict, source="state_dict")
    else:
        state_dict = load_state_dict_file(path_or_state_dict)
    config = infer_clip_config(state_dict, head_dim=head_dim)
    converted = convert_openai_state_dict(state_dict, config, dtype=dtype)
    with no_init_weights():  # every parameter is overwritten below (strict), skip random init
        model = CLIPModel(config).to(dtype)
    model.load_state_dict(converted, strict=True)
    return model.eval()
