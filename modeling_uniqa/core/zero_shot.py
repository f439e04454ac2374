"""UniQA's joint image-text space, as `uniqa retrieve` and `uniqa explain` use it.

- `embed_texts`: prompts or free text -> L2-normalised text embeddings.
- `embed_image_views`: pixel views -> L2-normalised image embeddings of a chosen kind:
  `"adapted"` is `I' = normalize(adapter(I))`, the embedding the model scores with (the same as
  `"clip"` for a zero-shot model); `"clip"` is the plain CLIP embedding `normalize(I)`, the space the
  text tower was trained to match. The cosine `I' . T` is exactly the similarity of eq. 7, so
  ranking by a prompt with `"adapted"` agrees with the model's own multi-cue scoring.
- `embedding_fingerprint`: a digest of everything an image embedding depends on, so an index built
  with one model (or view policy, or embedding kind) is never mixed with another's.
"""

import hashlib
import json
import logging

import torch
import torch.nn.functional as F

from ..modeling_uniqa import UniQAModel
from ..processing_uniqa import UniQAImageProcessor, per_image_views
from .fingerprints import prefixed_state, state_digest

logger = logging.getLogger(__name__)

EMBEDDING_KINDS = ("adapted", "clip")


def embed_texts(model: UniQAModel, tokenizer, texts) -> torch.Tensor:
    """Texts -> L2-normalised CLIP text embeddings `(len(texts), dim)`, float32, no gradient.

    A text longer than the text tower's context is cut to it (end-of-text token kept), with a
    warning naming the text: what is embedded is then not the whole query."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts or any(not isinstance(text, str) or not text.strip() for text in texts):
        raise ValueError(f"expected non-empty texts, got {texts!r}.")
    max_length = model.config.clip_config.text_config.max_position_embeddings
    for text, ids in zip(texts, tokenizer(list(texts), verbose=False)["input_ids"]):
        if len(ids) > max_length:
            logger.warning(
                "%r is %d tokens long, the text tower reads %d: only its beginning is embedded.",
                text if len(text) <= 80 else text[:77] + "...", len(ids), max_length,
            )
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


def embedding_fingerprint(model: UniQAModel, processor: UniQAImageProcessor, view_policy: str, view_seed: int, embedding: str) -> str:
    """A hex digest of what an image's index embedding depends on: the vision tower, projection
    and (for `"adapted"`) adapter weights with their dtypes, the image processor's geometry,
    normalisation and JPEG draft decoding (where it applies), the view policy and seed, and the
    embedding kind."""
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
    if processor.draft_size(view_policy):  # only then: indexes built before `jpeg_draft` existed stay valid
        settings["jpeg_draft"] = True
    if per_image_views(processor, view_policy):  # likewise for `view_seeding`
        settings["view_seeding"] = "per_image"
    digest.update(json.dumps(settings, sort_keys=True).encode())
    modules = {"vision_model": model.clip.vision_model, "visual_projection": model.clip.visual_projection}
    if embedding == "adapted" and model.adapter is not None:
        modules["adapter"] = model.adapter
    return state_digest(prefixed_state(**modules), digest=digest)


__all__ = ["EMBEDDING_KINDS", "embed_image_views", "embed_texts", "image_embeds_from_features", "embedding_fingerprint"]
