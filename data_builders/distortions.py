"""The names of KADID-10k's 25 distortion types, by the two-digit code in its file names.

``I01_10_03.png`` is reference 1, distortion ``10`` (JPEG), level 3 (KADID's levels run from
1, the mildest, to 5). The codes and names follow the KADID-10k paper (Lin, Hosu, Saupe, 2019,
Table I). Captioners use them to say which distortion an image shows and how strong it is.
"""

from __future__ import annotations

KADID_DISTORTIONS = {
    "01": "Gaussian blur",
    "02": "lens blur",
    "03": "motion blur",
    "04": "color diffusion",
    "05": "color shift",
    "06": "color quantization",
    "07": "color desaturation",
    "08": "color oversaturation",
    "09": "JPEG2000 compression",
    "10": "JPEG compression",
    "11": "white noise",
    "12": "white noise in the color channels",
    "13": "impulse noise",
    "14": "multiplicative noise",
    "15": "over-denoising",
    "16": "over-brightening",
    "17": "darkening",
    "18": "a mean shift of brightness",
    "19": "pixel jitter",
    "20": "non-eccentric patch swaps",
    "21": "pixelation",
    "22": "quantization",
    "23": "color blocks",
    "24": "over-sharpening",
    "25": "loss of contrast",
}

# Words for KADID's levels 1..5.
STRENGTH_WORDS = ("very slight", "slight", "moderate", "strong", "very strong")


def distortion_phrase(code: str, level: int) -> str:
    """``("10", 4)`` -> ``"strong JPEG compression"``; a clear error for an unknown code or level."""
    name = KADID_DISTORTIONS.get(f"{int(code):02d}" if str(code).isdigit() else str(code))
    if name is None:
        raise ValueError(f"unknown KADID distortion code {code!r}; expected 01..25")
    if not 1 <= int(level) <= len(STRENGTH_WORDS):
        raise ValueError(f"distortion level must be 1..{len(STRENGTH_WORDS)}, got {level!r}")
    return f"{STRENGTH_WORDS[int(level) - 1]} {name}"


__all__ = ["KADID_DISTORTIONS", "STRENGTH_WORDS", "distortion_phrase"]
