"""Issue 24 item 5: test-time views seeded per image (a hash of its pixels with `view_seed`), the
old rule (every image seeded by `view_seed` alone) kept for folders saved before and on request."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from modeling_uniqa import UniQAImageProcessor, UniQAModel
from modeling_uniqa.processing_uniqa import crop_boxes, cut_views, detail_views, image_view_seed
from tests.helpers import make_tiny_uniqa

SAVED_BEFORE = os.path.join(os.path.dirname(__file__), "data", "saved-before-layout")
CROP = 32


def _pictures(count=3, size=(90, 70)):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


def test_per_image_seeds_differ_between_images_and_do_not_depend_on_the_batch():
    a, b, c = _pictures()
    processor = UniQAImageProcessor(crop_size=CROP, view_policy="random10", view_seeding="per_image")
    seeds = {image_view_seed(image, 123) for image in (a, b, c)}
    assert len(seeds) == 3 and image_view_seed(a, 123) == image_view_seed(a.copy(), 123) != image_view_seed(a, 124)
    views = processor.views(a)
    assert np.array_equal(views, cut_views(a, a.size, CROP, crop_boxes(*a.size, CROP, "random10", image_view_seed(a, 123))))
    forward = processor([a, b, c], return_tensors="np")["pixel_values"]
    backward = processor([c, b, a], return_tensors="np")["pixel_values"]
    assert np.array_equal(forward, backward[::-1])  # independent of batch order
    # Same-size images get different crop positions: b's views are not b cut at a's positions.
    assert not np.array_equal(processor.views(b), cut_views(b, b.size, CROP, crop_boxes(*b.size, CROP, "random10", image_view_seed(a, 123))))


def test_shared_rule_is_the_old_one_and_the_default_of_a_processor_without_the_setting(tmp_path):
    a, b, _ = _pictures()
    shared = UniQAImageProcessor(crop_size=CROP, view_policy="random10")
    assert shared.view_seeding == "shared"
    boxes = crop_boxes(*a.size, CROP, "random10", 123)  # every image of this size: the same positions
    assert np.array_equal(shared.views(a), cut_views(a, a.size, CROP, boxes)) and np.array_equal(shared.views(b), cut_views(b, b.size, CROP, boxes))
    # A folder saved before the setting existed keeps the old rule.
    with open(os.path.join(SAVED_BEFORE, "preprocessor_config.json")) as handle:
        assert "view_seeding" not in json.load(handle)
    assert UniQAImageProcessor.from_pretrained(SAVED_BEFORE).view_seeding == "shared"
    with pytest.raises(ValueError, match="view_seeding"):
        UniQAImageProcessor(view_seeding="per_batch")


def test_detail_views_use_the_same_per_image_seed():
    a, _, _ = _pictures(size=(120, 90))
    processor = UniQAImageProcessor(crop_size=CROP, view_policy="detail4", view_seeding="per_image")
    assert np.array_equal(processor.views(a), detail_views(a, a.size, CROP, 4, image_view_seed(a, 123)))
    shared = UniQAImageProcessor(crop_size=CROP, view_policy="detail4")
    assert np.array_equal(shared.views(a), detail_views(a, a.size, CROP, 4, 123))


def test_new_folders_are_saved_with_per_image_seeding(tmp_path, tiny_tokenizer):
    model = make_tiny_uniqa(tiny_tokenizer)
    assert model.default_image_processor().view_seeding == "shared"  # a folder without a processor: the old rule
    model.save_pretrained(str(tmp_path / "new"))
    assert UniQAImageProcessor.from_pretrained(str(tmp_path / "new")).view_seeding == "per_image"
    assert isinstance(UniQAModel.from_pretrained(str(tmp_path / "new")), UniQAModel)


def test_retrieval_index_fingerprint_records_per_image_seeding_only_where_it_changes_the_views(tiny_tokenizer):
    from modeling_uniqa.core.zero_shot import embedding_fingerprint

    model = make_tiny_uniqa(tiny_tokenizer)
    shared = UniQAImageProcessor(crop_size=CROP)
    per_image = UniQAImageProcessor(crop_size=CROP, view_seeding="per_image")
    assert embedding_fingerprint(model, shared, "random10", 123, "adapted") != embedding_fingerprint(model, per_image, "random10", 123, "adapted")
    assert embedding_fingerprint(model, shared, "center", 123, "adapted") == embedding_fingerprint(model, per_image, "center", 123, "adapted")


def test_a_resaved_model_keeps_its_folders_seeding(saved_tiny_model, tmp_path):
    # The folder's processor has no `view_seeding` ("shared"): a loaded and re-saved model must not
    # switch to "per_image", or its scores would change with a save.
    from transformers import AutoModel

    model = AutoModel.from_pretrained(saved_tiny_model)
    model.save_pretrained(tmp_path / "resaved")
    with open(tmp_path / "resaved" / "preprocessor_config.json") as handle:
        assert json.load(handle)["view_seeding"] == "shared"
    fresh = type(model)(model.config)  # a new model: seeded per image
    fresh.save_pretrained(tmp_path / "new")
    with open(tmp_path / "new" / "preprocessor_config.json") as handle:
        assert json.load(handle)["view_seeding"] == "per_image"
