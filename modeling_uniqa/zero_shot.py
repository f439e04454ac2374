"""UniQA's joint image-text space, as `uniqa retrieve` and `uniqa explain` use it.

- `load_model_folder`: a UniQA model folder -> model (eval), image processor, tokenizer.
- `embed_texts`: prompts or free text -> L2-normalised text embeddings.
- `embed_image_views`: pixel views -> L2-normalised image embeddings of a chosen kind:
  `"adapted"` is `I' = normalize(adapter(I))`, the embedding the model scores with (the same as
  `"clip"` for a zero-shot model); `"clip"` is the plain CLIP embedding `normalize(I)`, the space the
  text tower was trained to match. The cosine `I' . T` is exactly the similarity of eq. 7, so
  ranking by a prompt with `"adapted"` agrees with the model's own multi-cue scoring.
- `model_fingerprint`: a digest of everything an image embedding depends on, so an index built
  with one model (or view policy, or embedding kind) is never mixed with another's.
"""

import hashlib
import json
import os

import torch
import torch.nn.functional as F

from .modeling_uniqa import UniQAModel
from .processing_uniqa import UniQAImageProcessor

EMBEDDING_KINDS = ("adapted", "clip")


def load_model_folder(model_dir, tokenizer_dir=None, dtype=torch.float32, device="cpu", need_tokenizer: bool = True):
    """`(model, processor, tokenizer)` of a UniQA model folder; the model in eval mode on `device`.

    The tokenizer comes from `tokenizer_dir` (default: the model folder); with
    `need_tokenizer=False` a missing one gives `None`. Raises `ValueError` naming the folder when
    the model or a needed tokenizer cannot be loaded.
    """
    try:
        model = UniQAModel.from_pretrained(model_dir, dtype=dtype)
    except (OSError, ValueError) as error:
        raise ValueError(f"{model_dir}: cannot load a UniQA model ({error}).") from error
    if os.path.isfile(os.path.join(model_dir, "preprocessor_config.json")):
        processor = UniQAImageProcessor.from_pretrained(model_dir)
    else:
        processor = model.default_image_processor()
    tokenizer = None
    tokenizer_dir = tokenizer_dir or model_dir
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError) as error:
        if need_tokenizer:
            raise ValueError(
                f"{tokenizer_dir}: no CLIP tokenizer to read the text with ({error}); pass a tokenizer folder "
                "(e.g. one written by `uniqa convert`)."
            ) from error
    return model.to(device).eval(), processor, tokenizer


def embed_texts(model: UniQAModel, tokenizer, texts) -> torch.Tensor:
    """Texts -> L2-normalised CLIP text embeddings `(len(texts), dim)`, float32, no gradient."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts or any(not isinstance(text, str) or not text.strip() for text in texts):
        raise ValueError(f"expected non-empty texts, got {texts!r}.")
    max_length = model.config.clip_config.text_config.max_position_embeddings
    tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = model.clip.text_projection.weight.device
    with torch.no_grad():
        features = model.clip.get_text_features(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        ).pooler_output
    return F.normalize(features.float(), dim=-1)


def embed_image_views(model: UniQAModel, pixel_values: torch.Tensor, embedding: str = "adapted") -> torch.Tensor:
    """CLIP-normalised views `(n, 3, H, W)` -> L2-normalised image embeddings `(n, dim)`, float32.

    Runs under the caller's grad mode.
    """
    pixel_values = pixel_values.to(model.clip.visual_projection.weight.device, model.clip.visual_projection.weight.dtype)
    return image_embeds_from_features(model, model.clip.get_image_features(pixel_values=pixel_values).pooler_output, embedding)


def image_embeds_from_features(model: UniQAModel, features: torch.Tensor, embedding: str = "adapted") -> torch.Tensor:
    """Raw CLIP image features `(n, dim)` -> the L2-normalised embedding of kind `embedding`, float32."""
    if embedding not in EMBEDDING_KINDS:
        raise ValueError(f"embedding must be one of {EMBEDDING_KINDS}, got {embedding!r}.")
    if embedding == "adapted":
        return model.adapt_image_embeds(features)
    return F.normalize(features.float(), dim=-1)


def model_fingerprint(model: UniQAModel, processor: UniQAImageProcessor, view_policy: str, view_seed: int, embedding: str) -> str:
    """A hex digest of what an image's index embedding depends on: the vision tower, projection
    and (for `"adapted"`) adapter weights with their dtypes, the image processor's geometry and
    normalisation, the view policy and seed, and the embedding kind."""
    digest = hashlib.sha256()
    settings = {
        "embedding": embedding,
        "view_policy": view_policy,
        "view_seed": int(view_seed),
        "crop_size": processor.crop_size,
        "shortest_edge": processor.shortest_edge,
        "image_mean": [float(value) for value in processor.image_mean],
        "image_std": [float(value) for value in processor.image_std],
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    modules = {"vision_model": model.clip.vision_model, "visual_projection": model.clip.visual_projection}
    if embedding == "adapted" and model.adapter is not None:
        modules["adapter"] = model.adapter
    for prefix, module in modules.items():
        for name, tensor in sorted(module.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{prefix}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


__all__ = ["EMBEDDING_KINDS", "embed_image_views", "embed_texts", "image_embeds_from_features", "load_model_folder", "model_fingerprint"]
