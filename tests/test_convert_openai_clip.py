"""OpenAI CLIP -> transformers CLIPModel conversion, checked against an independent reference."""

import math

import pytest
import torch

from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
from modeling_uniqa.hub.convert_openai_clip import (
    convert_openai_state_dict,
    infer_clip_config,
    load_state_dict_file,
    openai_to_hf_clip,
)
from tests.openai_clip_reference import OpenAICLIPReference, make_random_openai_state_dict

TINY_HEAD_DIM = 16  # 64-wide towers -> 4 heads, so a q/k/v or head-split error shows
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def openai_state_dict():
    return make_random_openai_state_dict()


@pytest.fixture(scope="module")
def checkpoint_path(openai_state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "UniQA_weight.pt"
    torch.save(openai_state_dict, path)
    return path


@pytest.fixture(scope="module")
def reference(openai_state_dict):
    return OpenAICLIPReference.from_state_dict(openai_state_dict, head_dim=TINY_HEAD_DIM)


@pytest.fixture(scope="module")
def converted(checkpoint_path):
    return openai_to_hf_clip(checkpoint_path, head_dim=TINY_HEAD_DIM)


def _token_rows(pad_id: int) -> torch.Tensor:
    """Two 77-token prompts ('bad image', 'a photo of a cat' ids), padded with ``pad_id``."""
    rows = torch.full((2, 77), pad_id, dtype=torch.long)
    for row, ids in zip(rows, ([BOS, 2103, 2867, EOS], [BOS, 320, 1125, 539, 320, 2368, EOS])):
        row[: len(ids)] = torch.tensor(ids)
    return rows


def test_random_state_dict_has_openai_key_layout(openai_state_dict):
    block = [
        "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
        "ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias",
        "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
    ]  # fmt: skip
    expected = {
        "visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding",
        "visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight", "visual.ln_post.bias",
        "visual.proj", "token_embedding.weight", "positional_embedding", "ln_final.weight",
        "ln_final.bias", "text_projection", "logit_scale",
    }  # fmt: skip
    for tower in ("visual.", ""):
        expected |= {f"{tower}transformer.resblocks.{i}.{name}" for i in range(2) for name in block}
    assert set(openai_state_dict) == expected
    assert {t.dtype for t in openai_state_dict.values()} == {torch.float16}


def test_infer_config_tiny(openai_state_dict):
    config = infer_clip_config(openai_state_dict, head_dim=TINY_HEAD_DIM)
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (64, 2, 4)
    assert (vision.patch_size, vision.image_size, vision.intermediate_size) == (8, 32, 256)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (64, 2, 4)
    assert (text.vocab_size, text.max_position_embeddings, text.intermediate_size) == (49408, 77, 256)
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (BOS, EOS, EOS)
    assert config.projection_dim == vision.projection_dim == text.projection_dim == 32
    assert vision.hidden_act == text.hidden_act == "quick_gelu"
    assert vision.layer_norm_eps == text.layer_norm_eps == 1e-5


def test_vit_b16_shapes_on_meta_device():
    """A full ViT-B/16 layout, shapes only: config matches openai/clip-vit-base-patch16 and every key maps."""
    state_dict = make_random_openai_state_dict(
        image_size=224, patch=16, vision_width=768, vision_layers=12, text_width=512, text_layers=12,
        embed_dim=512, head_dim=64, device="meta",
    )  # fmt: skip
    config = infer_clip_config(state_dict)
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers) == (768, 3072, 12)
    assert (vision.num_attention_heads, vision.patch_size, vision.image_size) == (12, 16, 224)
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads) == (
        512, 2048, 12, 8,
    )  # fmt: skip
    assert (text.vocab_size, text.max_position_embeddings, config.projection_dim) == (49408, 77, 512)
    converted = convert_openai_state_dict(state_dict, config)
    assert len(converted) == 398 and all(t.is_meta for t in converted.values())
    assert "vision_model.embeddings.position_ids" not in converted  # non-persistent buffer


def test_converted_model_matches_reference(converted, reference):
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    token_ids = _token_rows(pad_id=0)
    with torch.no_grad():
        image = converted.get_image_features(pixel_values=pixels).pooler_output
        text = converted.get_text_features(input_ids=token_ids).pooler_output
        expected_image, expected_text = reference.encode_image(pixels), reference.encode_text(token_ids)
    assert image.dtype == text.dtype == torch.float32
    assert expected_image.abs().mean() > 0.1 and expected_text.abs().mean() > 0.1
    torch.testing.assert_close(image, expected_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(converted.logit_scale.exp(), torch.tensor(1 / 0.07), atol=0.05, rtol=0)


def test_text_pooling_is_eot_with_openai_or_hf_padding(converted, reference):
    """OpenAI pads with 0, HF tokenizers with <|endoftext|>: both must pool at the first EOT."""
    with torch.no_grad():
        expected = reference.encode_text(_token_rows(pad_id=0))
        for pad_id in (0, EOS):
            token_ids = _token_rows(pad_id)
            mask = (torch.arange(77) <= (token_ids == EOS).int().argmax(-1, keepdim=True)).long()
            for attention_mask in (None, mask):
                pooled = converted.get_text_features(input_ids=token_ids, attention_mask=attention_mask)
                torch.testing.assert_close(pooled.pooler_output, expected, atol=1e-5, rtol=1e-5)


def test_hf_tokenizer_batch_pools_like_openai(converted, reference):
    """End to end: the offline tokenizer's eos-padded batch gives OpenAI's zero-padded embeddings."""
    batch = build_clip_tokenizer()(["bad image", "a photo of a cat"], padding="max_length", return_tensors="pt")
    assert torch.equal(batch.input_ids.masked_fill(batch.attention_mask == 0, 0), _token_rows(pad_id=0))
    with torch.no_grad():
        pooled = converted.get_text_features(**batch).pooler_output
        torch.testing.assert_close(pooled, reference.encode_text(_token_rows(pad_id=0)), atol=1e-5, rtol=1e-5)


def test_dtype_argument(openai_state_dict):
    assert {t.dtype for t in convert_openai_state_dict(openai_state_dict, None).values()} == {torch.float32}
    kept = convert_openai_state_dict(openai_state_dict, infer_clip_config(openai_state_dict), dtype=None)
    assert {t.dtype for t in kept.values()} == {torch.float16}
    model = openai_to_hf_clip(openai_state_dict, dtype=torch.bfloat16, head_dim=TINY_HEAD_DIM)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_load_keeps_stored_dtype(checkpoint_path, openai_state_dict):
    loaded = load_state_dict_file(checkpoint_path)
    assert loaded.keys() == openai_state_dict.keys()
    assert all(loaded[k].dtype == torch.float16 and torch.equal(loaded[k], v) for k, v in openai_state_dict.items())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    ],
    ids=["state_dict", "model", "module-prefix", "wrapped-module-prefix"],
)
def test_wrapped_checkpoints_accepted(wrap, openai_state_dict, tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(openai_state_dict), path)
    assert load_state_dict_file(path).keys() == openai_state_dict.keys()
    model = openai_to_hf_clip(wrap(openai_state_dict), head_dim=TINY_HEAD_DIM)
    torch.testing.assert_close(model.logit_scale, torch.tensor(math.log(1 / 0.07)), atol=1e-3, rtol=0)


def test_non_parameter_keys_ignored(openai_state_dict):
    extra = {"input_resolution": torch.tensor(32), "context_length": torch.tensor(77), "vocab_size": torch.tensor(49408)}
    converted = convert_openai_state_dict({**openai_state_dict, **extra}, None)
    assert converted.keys() == convert_openai_state_dict(openai_state_dict, None).keys()


def test_resnet_clip_rejected(openai_state_dict):
    resnet = {k: v for k, v in openai_state_dict.items() if not k.startswith("visual.")}
    resnet |= {"visual.layer1.0.conv1.weight": torch.zeros(1), "visual.attnpool.c_proj.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"ResNet CLIP \(visual\.layer1\.0\.conv1\.weight"):
        infer_clip_config(resnet)


def test_unknown_state_dict_rejected():
    with pytest.raises(ValueError, match=r"no OpenAI CLIP keys found; first keys: \['encoder.weight'"):
        infer_clip_config({"encoder.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)})


def test_unmapped_key_named(openai_state_dict):
    state_dict = {**openai_state_dict, "visual.transformer.resblocks.0.attn.bias_k": torch.zeros(64)}
    with pytest.raises(ValueError, match=r"no CLIPModel counterpart: \['visual.transformer.resblocks.0.attn.bias_k'\]"):
        convert_openai_state_dict(state_dict, None)


def test_missing_key_named(openai_state_dict):
    state_dict = {k: v for k, v in openai_state_dict.items() if k != "transformer.resblocks.1.ln_2.bias"}
    with pytest.raises(ValueError, match=r"unfilled by the checkpoint: \['text_model.encoder.layers.1.layer_norm2.bias'\]"):
        openai_to_hf_clip(state_dict, head_dim=TINY_HEAD_DIM)


def test_missing_required_key_named(openai_state_dict):
    state_dict = {k: v for k, v in openai_state_dict.items() if k != "visual.proj"}
    with pytest.raises(ValueError, match=r"missing \['visual.proj'\]"):
        infer_clip_config(state_dict)


def test_shape_mismatch_with_given_config(openai_state_dict):
    config = infer_clip_config(make_random_openai_state_dict(embed_dim=16, device="meta"), head_dim=TINY_HEAD_DIM)
    with pytest.raises(ValueError, match=r"visual_projection.weight: checkpoint \(32, 64\) vs model \(16, 64\)"):
        convert_openai_state_dict(openai_state_dict, config)


class _NotATensor:
    pass


def test_pickled_object_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"visual.conv1.weight": _NotATensor()}, path)
    with pytest.raises(ValueError, match=rf"{path.name} holds objects other than tensors"):
        load_state_dict_file(path)


def test_torchscript_archive_refused(tmp_path):
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(ValueError, match="TorchScript archive"):
        load_state_dict_file(path)


def test_non_dict_refused(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match=r"expected a state_dict \(dict\), got Tensor"):
        load_state_dict_file(path)


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "EOFError"), (b"hello world\n", "KeyError"), (b'{"a": 1}', "Unsupported operand")],
    ids=["empty", "text", "json"],
)
def test_files_that_are_no_checkpoint_are_named(tmp_path, content, reason):
    """Empty or foreign files gave a bare `EOFError` / `KeyError: 101` (a traceback from `uniqa convert`)."""
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"weights.pt .*(not a readable torch.save checkpoint|no torch.save checkpoint).*{reason}"):
        load_state_dict_file(path)
    with pytest.raises(FileNotFoundError, match="not a checkpoint file"):
        load_state_dict_file(tmp_path)
