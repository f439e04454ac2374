import numpy as np
import pytest
from PIL import Image

from data_builders.distortions import KADID_DISTORTIONS, distortion_phrase
from train_scripts.common.full_reference import gmsd, pseudo_mos
from train_scripts.common.synthetic_distortions import (
    CODES,
    IMPLEMENTATIONS,
    LEVEL_PARAMETERS,
    apply,
    distort,
    level_parameter,
)


def _photo(size=(96, 72), seed=0):
    """A smooth gradient with texture and edges: blur, noise and blocking all change it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 2.0, y * 3.0, (x + y) * 1.2], axis=-1) % 256
    base[::12] = 255 - base[::12]  # edges
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


def test_every_code_is_a_kadid_code_and_named():
    assert set(CODES) <= set(KADID_DISTORTIONS)
    assert distortion_phrase("10", 4) == "strong JPEG compression"
    assert distortion_phrase(1, 1) == "very slight Gaussian blur"
    with pytest.raises(ValueError, match="unknown KADID distortion"):
        distortion_phrase("99", 1)
    with pytest.raises(ValueError, match="level must be 1..5"):
        distortion_phrase("01", 6)


@pytest.mark.parametrize("code", CODES)
def test_each_distortion_keeps_size_and_mode_and_is_seeded(code):
    image = _photo()
    first = distort(image, code, 3, np.random.default_rng(1), jitter=0.3)
    again = distort(image, code, 3, np.random.default_rng(1), jitter=0.3)
    assert first.size == image.size and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))


@pytest.mark.parametrize("code", [c for c in CODES if c != "07"])
def test_stronger_levels_are_worse_by_the_full_reference_measure(code):
    image = _photo()
    pixels = np.asarray(image)
    scores = [gmsd(pixels, np.asarray(distort(image, code, level, np.random.default_rng(0)))) for level in (1, 5)]
    assert scores[1] > scores[0], (code, scores)


@pytest.mark.parametrize("code", sorted(IMPLEMENTATIONS))
def test_each_implementation_distorts_and_the_first_is_the_default(code):
    image = _photo()
    value = level_parameter(code, 4)
    made = {name: np.asarray(apply(image, code, value, np.random.default_rng(0), name)) for name in IMPLEMENTATIONS[code]}
    assert np.array_equal(made[IMPLEMENTATIONS[code][0]], np.asarray(apply(image, code, value, np.random.default_rng(0))))
    assert all(pixels.shape == np.asarray(image).shape for pixels in made.values())
    assert len({pixels.tobytes() for pixels in made.values()}) == len(made)  # each one its own picture
    reference = np.asarray(image)
    assert all(gmsd(reference, pixels) > 0.01 for pixels in made.values())  # and each a distortion
    with pytest.raises(ValueError, match="has no implementation 'cv2'"):
        apply(image, code, value, np.random.default_rng(0), "cv2")


def test_grey_noise_is_one_field_on_all_channels():
    flat = Image.new("RGB", (64, 48), (128, 100, 90))
    noisy = np.asarray(apply(flat, "11", 8.0, np.random.default_rng(0), "grey"), dtype=np.float64) - (128, 100, 90)
    assert np.allclose(noisy[..., 0], noisy[..., 1]) and np.allclose(noisy[..., 0], noisy[..., 2]) and noisy.std() > 5
    coloured = np.asarray(apply(flat, "11", 8.0, np.random.default_rng(0)), dtype=np.float64) - (128, 100, 90)
    assert not np.allclose(coloured[..., 0], coloured[..., 1])


def test_vary_implementation_draws_among_them_after_the_parameter():
    image = _photo()
    plain = distort(image, "01", 3, np.random.default_rng(5), jitter=0.3)
    # Without it the draws (and so the images) are those of before; with it both blurs occur.
    assert np.array_equal(np.asarray(plain), np.asarray(distort(image, "01", 3, np.random.default_rng(5), 0.3, vary_implementation=False)))
    varied = {np.asarray(distort(image, "01", 3, np.random.default_rng(seed), 0.3, vary_implementation=True)).tobytes() for seed in range(12)}
    assert len(varied) == 12
    position = 3 + np.random.default_rng(7).uniform(-0.3, 0.3)
    by_name = {name: np.asarray(apply(image, "01", level_parameter("01", position), None, name)).tobytes() for name in IMPLEMENTATIONS["01"]}
    drawn = np.asarray(distort(image, "01", 3, np.random.default_rng(7), 0.3, vary_implementation=True)).tobytes()
    assert drawn in by_name.values()
    # Distortions with one implementation are the same either way.
    assert np.array_equal(np.asarray(distort(image, "02", 3, np.random.default_rng(1), 0.3, vary_implementation=True)),
                          np.asarray(distort(image, "02", 3, np.random.default_rng(1), 0.3)))


def test_level_parameters_interpolate_between_anchors():
    for code, anchors in LEVEL_PARAMETERS.items():
        assert level_parameter(code, 2) == pytest.approx(anchors[1])
        mid = level_parameter(code, 2.5)
        assert min(anchors[1], anchors[2]) <= mid <= max(anchors[1], anchors[2])
    with pytest.raises(ValueError, match="level must be 1..5"):
        distort(_photo(), "01", 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no synthetic distortion"):
        distort(_photo(), "20", 1, np.random.default_rng(0))


def test_pseudo_mos_is_five_for_the_reference_and_falls_with_noise():
    pixels = np.asarray(_photo())
    assert pseudo_mos(pixels, pixels) == pytest.approx(5.0)
    noisy = [np.asarray(distort(_photo(), "11", level, np.random.default_rng(0))) for level in (1, 3, 5)]
    mos = [pseudo_mos(pixels, image) for image in noisy]
    assert mos[0] > mos[1] > mos[2] >= 1.0
    curved = [pseudo_mos(pixels, image, exponent=0.5) for image in noisy]
    assert curved[0] > curved[1] > curved[2] and all(c < m for c, m in zip(curved, mos))
    assert pseudo_mos(pixels, pixels, exponent=0.5) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="positive"):
        pseudo_mos(pixels, noisy[0], exponent=0)
    with pytest.raises(ValueError, match="differ in shape"):
        gmsd(pixels, pixels[:10])
