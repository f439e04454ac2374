"""PretrainTransform: the release's resize + centre crop, and the seeded random crop."""

import numpy as np
import pytest
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from tests.helpers import random_rgb
from train_scripts.common.transforms import PretrainTransform


def _image(height=40, width=64, seed=0):
    return Image.fromarray(random_rgb(height, width, seed=seed))


def test_release_mode_is_resize_short_side_then_centre_crop():
    image = _image(40, 64)
    out = PretrainTransform(size=32)(image)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    resized = image.resize((51, 32), Image.BICUBIC)  # short side 40 -> 32, 64 -> 51.2 -> 51
    left = int(round((51 - 32) / 2.0))
    expected = np.asarray(resized.crop((left, 0, left + 32, 32)), dtype=np.float32)
    expected = (expected / 255.0 - np.asarray(OPENAI_CLIP_MEAN)) / np.asarray(OPENAI_CLIP_STD)
    np.testing.assert_allclose(out, expected.transpose(2, 0, 1), atol=1e-5)


def test_release_mode_is_deterministic_without_rng():
    image = _image()
    np.testing.assert_array_equal(
        PretrainTransform(size=32)(image), PretrainTransform(size=32)(image, np.random.default_rng(5))
    )


def test_random_resized_crop_is_seeded_and_in_range():
    image = _image(80, 100)
    transform = PretrainTransform(size=32, mode="random_resized_crop", hflip=0.5)
    first = transform(image, np.random.default_rng([1, 2, 3]))
    again = transform(image, np.random.default_rng([1, 2, 3]))
    other = transform(image, np.random.default_rng([1, 2, 4]))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    for seed in range(50):
        left, top, w, h = transform.crop_box(100, 80, np.random.default_rng(seed))
        assert 0.9 * 8000 * 0.98 <= w * h <= 8000 and left + w <= 100 and top + h <= 80


def test_random_modes_need_a_generator_and_bad_options_are_rejected():
    with pytest.raises(ValueError, match="needs a numpy Generator"):
        PretrainTransform(size=32, mode="random_resized_crop")(_image())
    with pytest.raises(ValueError, match="Unknown pre-training transform mode"):
        PretrainTransform(mode="colour_jitter")
    with pytest.raises(ValueError, match="scale"):
        PretrainTransform(mode="random_resized_crop", scale=(0.0, 1.0))


def test_native_crop_is_a_window_at_native_resolution():
    image = _image(80, 100, seed=3)
    transform = PretrainTransform(size=32, mode="native_crop")
    out = transform(image, np.random.default_rng(7))
    assert out.shape == (3, 32, 32)
    pixels = (out.transpose(1, 2, 0) * np.asarray(OPENAI_CLIP_STD) + np.asarray(OPENAI_CLIP_MEAN)) * 255.0
    native = np.asarray(image, dtype=np.float64)
    # The window's pixels are the image's own, unresampled: it is found at one offset exactly.
    found = [(top, left) for top in range(80 - 31) for left in range(100 - 31)
             if np.abs(native[top : top + 32, left : left + 32] - pixels).max() < 1e-3]
    assert len(found) == 1
    np.testing.assert_array_equal(out, transform(image, np.random.default_rng(7)))
    assert not np.array_equal(out, transform(image, np.random.default_rng(8)))
    small = transform(_image(20, 30), np.random.default_rng(0))  # a smaller image is upscaled to the crop first
    assert small.shape == (3, 32, 32)


def _half_detailed(height=96, width=192):
    """Left half flat grey, right half random texture: a picture whose detail sits in one place."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    pixels[:, width // 2 :] = random_rgb(height, width - width // 2, seed=5)
    return Image.fromarray(pixels)


def test_detail_prob_picks_crops_with_detail():
    image = _half_detailed()
    plain = PretrainTransform(size=32, mode="native_crop")
    detailed = PretrainTransform(size=32, mode="native_crop", detail_prob=1.0, detail_candidates=8)

    def flat_share(transform):  # crops that are entirely the flat grey half
        outs = [transform(image, np.random.default_rng(seed)) for seed in range(60)]
        return np.mean([np.ptp(out, axis=(1, 2)).max() == 0 for out in outs])

    assert flat_share(plain) > 0.15  # uniform windows often land in the flat half
    assert flat_share(detailed) == 0.0  # the most detailed of 8 never does
    out = detailed(image, np.random.default_rng(3))
    np.testing.assert_array_equal(out, detailed(image, np.random.default_rng(3)))  # still seeded
    with pytest.raises(ValueError, match="native_crop"):
        PretrainTransform(mode="release", detail_prob=0.5)
    with pytest.raises(ValueError, match="probability"):
        PretrainTransform(mode="native_crop", detail_prob=1.5)
    with pytest.raises(ValueError, match="detail_candidates"):
        PretrainTransform(mode="native_crop", detail_prob=0.5, detail_candidates=0)


def test_detail_prob_zero_draws_as_before():
    # Runs made before `detail_prob` existed resume with the same crops: no extra draw from the generator.
    image = _image(80, 100, seed=3)
    before = PretrainTransform(size=32, mode="native_crop", hflip=0.5)
    now = PretrainTransform(size=32, mode="native_crop", hflip=0.5, detail_prob=0.0, detail_candidates=9)
    for seed in range(5):
        np.testing.assert_array_equal(before(image, np.random.default_rng(seed)), now(image, np.random.default_rng(seed)))


def test_rot90_turns_the_crop_and_leaves_other_runs_alone():
    image = _image(80, 100, seed=3)
    plain = PretrainTransform(size=32, mode="native_crop", hflip=0.5)
    turned = PretrainTransform(size=32, mode="native_crop", hflip=0.5, rot90=True)
    turns = set()
    for seed in range(24):
        out, base = turned(image, np.random.default_rng(seed)), plain(image, np.random.default_rng(seed))
        # the same window and flip (drawn first), then one of the four turns of it
        matches = [k for k in range(4) if np.array_equal(out, np.ascontiguousarray(np.rot90(base, k=k, axes=(1, 2))))]
        assert len(matches) >= 1, seed
        turns.update(matches)
        np.testing.assert_array_equal(out, turned(image, np.random.default_rng(seed)))  # seeded
    assert turns == {0, 1, 2, 3}
    assert turned.is_random and PretrainTransform(size=32, rot90=True).is_random  # release + rot90 needs a generator
    with pytest.raises(ValueError, match="rot90=True"):
        PretrainTransform(size=32, rot90=True)(image)
