"""The feature bank of adapter-mode fine-tuning, and the UniQA head on image embeddings.

With the CLIP backbone frozen, an image view's embedding never changes during training. So the
embeddings of a fixed bank of augmented views per image (N random crops and their mirror
images) are computed once, in large batches and without gradients, and every epoch draws one
view per image from the bank: an epoch costs the adapter and the level scores only, which is
thousands of times cheaper than a backbone forward. The price is augmentation from N crop
positions instead of a fresh one every epoch.

`embed_views` is also how adapter-mode evaluation works: the test views' embeddings are
computed once and each epoch's evaluation runs the head on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from modeling_uniqa.core.atomic_files import atomic_write
from modeling_uniqa.core.fingerprints import prefixed_state, state_digest

logger = logging.getLogger(__name__)


class EmbeddingHead(nn.Module):
    """UniQA's scoring from raw CLIP image embeddings: adapter, prompt similarities, level
    scores (eq. 6-8): `UniQAModel.score_embeddings` of the default head.

    Wraps `model` so that DDP sees the adapter and level scores as this module's parameters.
    `forward(raw_embeds (n, dim) or (n, views, dim)) -> scores (n,)`, averaged over views.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, raw_embeds: torch.Tensor) -> torch.Tensor:
        return self.model.score_embeddings(raw_embeds).scores


def image_encoder(model):
    """`pixel_values (n, 3, H, W) -> raw image embeddings (n, dim)` of a UniQA model's CLIP."""

    def encode(pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(model.clip.visual_projection.weight.dtype)
        return model.clip.get_image_features(pixel_values=pixel_values).pooler_output

    return encode


@torch.no_grad()
def embed_views(encode, dataset, views_per_image: int, accelerator, batch_size: int = 256, num_workers: int = 0, desc: str = "Embedding views") -> torch.Tensor:
    """Raw embeddings `(len(dataset), views, dim)` (float32, CPU, on every process) of every view.

    `dataset` is an `ImageViewDataset`; `batch_size` counts views per forward. With several
    processes each embeds a strided share and the shares are gathered.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    total = len(dataset)
    shard = list(range(rank, total, world))
    loader = DataLoader(Subset(dataset, shard), batch_size=max(1, batch_size // views_per_image), num_workers=num_workers)
    chunks = []
    with tqdm(total=len(shard), unit="img", desc=desc, disable=not accelerator.is_local_main_process) as bar:
        for _, views in loader:
            pixel_values = views.to(accelerator.device).flatten(0, 1)
            embeds = encode(pixel_values).float()
            chunks.append(embeds.view(views.shape[0], views.shape[1], -1))
            bar.update(views.shape[0])
    local = torch.cat(chunks) if chunks else None
    if world == 1:
        return local.cpu()
    # Equal-sized shares for the gather (padding rows are dropped below).
    per_process = math.ceil(total / world)
    if local is None:
        probe = encode(dataset[0][1][:1].to(accelerator.device)).float()
        local = probe.new_zeros((0, views_per_image, probe.shape[-1]))
    padded = torch.cat([local, local.new_zeros((per_process - local.shape[0], *local.shape[1:]))])
    gathered = accelerator.gather(padded).cpu().view(world, per_process, *local.shape[1:])
    order = torch.empty((total, *local.shape[1:]))
    for process in range(world):
        count = len(range(process, total, world))
        order[process::world] = gathered[process, :count]
    return order


def model_fingerprint(model) -> str:
    """A hash of the image tower's weights: a cached bank is valid only for the same backbone."""
    clip = model.clip
    return state_digest(prefixed_state(vision_model=clip.vision_model, visual_projection=clip.visual_projection))


def bank_cache_file(cache_dir: str, model, sources: list, settings: dict) -> str:
    """`<cache_dir>/bank-<hash>.safetensors`, the hash covering the backbone, the images and `settings`."""
    names = [source if isinstance(source, str) else source[0] for source in sources]
    key = json.dumps({"model": model_fingerprint(model), "images": names, "settings": settings}, sort_keys=True)
    return os.path.join(cache_dir, f"bank-{hashlib.sha256(key.encode()).hexdigest()[:20]}.safetensors")


class FeatureBank:
    """Embeddings `(images, views, dim)` of a fixed set of augmented views of each image."""

    def __init__(self, features: torch.Tensor):
        self.features = features

    @classmethod
    def build(cls, encode, dataset, views_per_image: int, accelerator, batch_size: int = 256, num_workers: int = 0, cache_file: str | None = None) -> FeatureBank:
        """Embed the bank's views, or load them from `cache_file` when it exists (and write it when not)."""
        if cache_file and os.path.isfile(cache_file):
            features = load_file(cache_file)["features"]
            if features.shape[:2] != (len(dataset), views_per_image):
                raise ValueError(f"{cache_file}: holds {tuple(features.shape[:2])} (images, views), expected {(len(dataset), views_per_image)}; delete it.")
            logger.info("Feature bank loaded from %s.", cache_file)
            return cls(features)
        features = embed_views(encode, dataset, views_per_image, accelerator, batch_size, num_workers, desc="Feature bank")
        if cache_file and accelerator.is_main_process:
            os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
            # never a half-written bank under the final name
            atomic_write(cache_file, lambda temporary: save_file({"features": features.contiguous()}, temporary))
        return cls(features)

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def views_per_image(self) -> int:
        return self.features.shape[1]

    def draw_views(self, generator: torch.Generator, count: int = 1) -> torch.Tensor:
        """Random view indices per image, `(images,)` for one view, else `(images, count)`
        distinct views: an epoch's augmentation, drawn up front so that a run resumed
        mid-epoch sees the same views as an uninterrupted one."""
        if count == 1:
            return torch.randint(self.views_per_image, (len(self),), generator=generator)
        if not 1 <= count <= self.views_per_image:
            raise ValueError(f"count must be 1..{self.views_per_image} (the bank's views per image), got {count}.")
        return torch.rand((len(self), self.views_per_image), generator=generator).argsort(dim=1)[:, :count]

    def sample(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """The embeddings of images `indices` in their drawn `views`: `(len(indices), dim)` for
        one view per image, `(len(indices), count, dim)` for several."""
        chosen = views[indices]
        if chosen.dim() == 2:
            return self.features[indices.unsqueeze(1), chosen]
        return self.features[indices, chosen]


__all__ = ["EmbeddingHead", "image_encoder", "embed_views", "model_fingerprint", "bank_cache_file", "FeatureBank"]
