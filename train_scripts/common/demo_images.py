"""The demo's images: scikit-image's public-domain / CC0 sample photographs and the 8 distortions
`make demo` applies at 5 levels (`make_demo_data.py`; `benchmarks/bench_views.py` distorts its
photos the same way)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from modeling_uniqa.errors import UniQAError


class MissingDependencyError(UniQAError, ImportError):
    """An optional dependency the demo images need is not installed; the message says what to install."""


# scikit-image sample photographs with a public-domain or CC0 licence (from each loader's docstring).
REFERENCES = (
    ("astronaut", "Eileen Collins, NASA", "public domain"),
    ("chelsea", "Stefan van der Walt", "CC0"),
    ("coffee", "Rachel Michetti", "CC0"),
    ("rocket", "SpaceX", "public domain"),
    ("hubble_deep_field", "NASA", "public domain"),
    ("retina", "Häggström, Mikael (2014)", "CC0"),
    ("brick", "CC0Textures", "CC0"),
    ("grass", "CC0Textures", "CC0"),
    ("gravel", "CC0Textures", "CC0"),
    ("camera", "Lav Varshney", "CC0"),
    ("coins", "Brooklyn Museum (Greek coins from Pompeii)", "public domain"),
)

DISTORTIONS = ("gaussian_blur", "gaussian_noise", "jpeg", "contrast", "darken", "desaturate", "pixelate", "motion_blur")
LEVELS = 5


def load_references(size: int, count: int) -> list[tuple[str, Image.Image]]:
    """The reference photographs as RGB images with short side `size`."""
    try:
        from skimage import data as sample_images
    except ImportError as error:
        raise MissingDependencyError("The demo data needs scikit-image's sample photographs: pip install -e '.[demo]'") from error
    references = []
    for name, _, _ in REFERENCES[:count]:
        image = Image.fromarray(getattr(sample_images, name)()).convert("RGB")
        scale = size / min(image.size)
        references.append((name, image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)))
    return references


def distort(image: Image.Image, kind: str, level: int, rng: np.random.Generator) -> Image.Image:
    """`image` with distortion `kind` at `level` (1 = mildest, 5 = strongest)."""
    strength = level / LEVELS
    if kind == "gaussian_blur":
        return image.filter(ImageFilter.GaussianBlur(radius=0.4 + 2.6 * strength))
    if kind == "gaussian_noise":
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 4 + 46 * strength, size=(image.height, image.width, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(round(40 - 36 * strength)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "contrast":
        return ImageEnhance.Contrast(image).enhance(1 - 0.85 * strength)
    if kind == "darken":
        return ImageEnhance.Brightness(image).enhance(1 - 0.8 * strength)
    if kind == "desaturate":
        return ImageEnhance.Color(image).enhance(1 - strength)
    if kind == "pixelate":
        factor = 1 + 7 * strength
        small = image.resize((max(1, round(image.width / factor)), max(1, round(image.height / factor))), Image.BILINEAR)
        return small.resize(image.size, Image.NEAREST)
    if kind == "motion_blur":
        length = 1 + 2 * level
        pixels = np.asarray(image, dtype=np.float32)
        # A horizontal box filter: the mean of `length` shifted copies (edges repeat).
        padded = np.pad(pixels, ((0, 0), (length // 2, length - 1 - length // 2), (0, 0)), mode="edge")
        blurred = np.mean([padded[:, shift : shift + image.width] for shift in range(length)], axis=0)
        return Image.fromarray(np.clip(blurred, 0, 255).astype(np.uint8))
    raise ValueError(f"Unknown distortion {kind!r}; expected one of {DISTORTIONS}.")


__all__ = ["DISTORTIONS", "LEVELS", "MissingDependencyError", "REFERENCES", "distort", "load_references"]
