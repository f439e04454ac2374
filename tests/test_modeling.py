"""UniQAModel: the head's maths, prompts, modes, training switches, and save/load."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from modeling_uniqa import (
    NAMED_PROMPT_GROUPS,
    UniQAConfig,
    UniQAModel,
    build_clip_tokenizer,
    mos_to_score,
    score_to_mos,
)
from modeling_uniqa.clip_tokenizer import OPENAI_VOCAB_SIZE
from modeling_uniqa.modeling_uniqa import REMOTE_CODE_FILES
from tests.helpers import TINY_IMAGE_SIZE, launch_two_processes, tiny_clip_config


def pixels(batch: int, views: int | None = None, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE) if views is None else (batch, views, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    return torch.randn(shape, generator=generator)


def reference_scores(model: UniQAModel, tokenizer, pixel_values: torch.Tensor, adapter: bool = True) -> torch.Tensor:
    """The scoring rule written out independently of the model's head code."""
    clip = model.clip
    with torch.no_grad():
        raw = clip.visual_projection(clip.vision_model(pixel_values=pixel_values).pooler_output)  # (n, d)
        prompts = [p for group in model.config.prompt_groups for p in group]
        tokens = tokenizer(prompts, padding=True, return_tensors="pt")
        text = clip.text_projection(clip.text_model(**tokens).pooler_output)  # (g*5, d)
        if adapter:
            w1 = model.adapter.fc[0].weight
            w2 = model.adapter.fc[2].weight
            hidden = torch.relu(raw @ w1.t())
            image = torch.relu(hidden @ w2.t()) + raw
        else:
            image = raw
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        cosine = image @ text.t()  # (n, g*5)
        groups = len(model.config.prompt_groups)
        probs = torch.softmax(clip.logit_scale.exp() * cosine.view(-1, groups, 5), dim=-1)
        levels = model.level_scores.detach()
        return (probs * levels).sum(-1).mean(-1)  # (n,)


def test_head_matches_independent_formula(tiny_model_factory, tiny_tokenizer):
    model = tiny_model_factory(prompt_groups="natural")
    with torch.no_grad():
        model.level_scores.copy_(torch.tensor([0.1, 0.3, 0.45, 0.7, 0.95]))  # not the init values
    x = pixels(4)
    expected = reference_scores(model, tiny_tokenizer, x)
    with torch.no_grad():
        out = model(pixel_values=x)
    torch.testing.assert_close(out.scores, expected, atol=1e-5, rtol=1e-5)
    assert out.level_probs.shape == (4, 4, 5)
    assert out.group_scores.shape == (4, 4)
    torch.testing.assert_close(out.level_probs.sum(-1), torch.ones(4, 4))
    torch.testing.assert_close(out.group_scores.mean(-1), out.scores)


def test_zero_shot_mode_has_no_adapter(tiny_model_factory, tiny_tokenizer):
    model = tiny_model_factory(use_adapter=False, prompt_groups=["default", "sharpness"])
    assert model.adapter is None
    assert not any("adapter" in name for name in model.state_dict())
    x = pixels(3)
    with torch.no_grad():
        out = model(pixel_values=x)
    torch.testing.assert_close(out.scores, reference_scores(model, tiny_tokenizer, x, adapter=False), atol=1e-5, rtol=1e-5)


def test_adapter_options(tiny_model_factory):
    model = tiny_model_factory(adapter_final_relu=False, adapter_bias=True, adapter_reduction=4, adapter_residual_ratio=0.5)
    fc = model.adapter.fc
    assert len(fc) == 3 and fc[0].bias is not None and fc[0].out_features == 4
    x = torch.randn(5, 16)
    expected = fc[2](torch.relu(fc[0](x))) + 0.5 * x
    torch.testing.assert_close(model.adapter(x), expected)


def test_views_are_averaged(tiny_model_factory):
    model = tiny_model_factory()
    x = pixels(2, views=3)
    with torch.no_grad():
        out = model(pixel_values=x)
        per_view = model(pixel_values=x.flatten(0, 1)).scores.view(2, 3)
    torch.testing.assert_close(out.scores, per_view.mean(1), atol=1e-6, rtol=1e-6)
    assert out.image_embeds.shape == (2, 3, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(2, 3))


def test_batch_invariance(tiny_model_factory):
    model = tiny_model_factory()
    x = pixels(5, views=2)
    with torch.no_grad():
        together = model(pixel_values=x).scores
        alone = torch.cat([model(pixel_values=x[i : i + 1]).scores for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_bad_pixel_values_shape(tiny_model_factory):
    with pytest.raises(ValueError, match="pixel_values"):
        tiny_model_factory()(pixel_values=torch.zeros(3, 32, 32))


def test_loss_is_mse(tiny_model_factory):
    model = tiny_model_factory()
    labels = torch.tensor([0.2, 0.9, 0.5])
    out = model(pixel_values=pixels(3), labels=labels)
    torch.testing.assert_close(out.loss, F.mse_loss(out.scores, labels))
    out.loss.backward()
    assert model.adapter.fc[0].weight.grad is not None and model.level_scores.grad is not None


def test_text_tower_not_run_when_scoring(tiny_model_factory):
    model = tiny_model_factory()
    calls = []
    model.clip.text_model.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        for seed in range(5):
            model(pixel_values=pixels(2, seed=seed))
    assert calls == []


def test_prompt_change_is_one_call(tiny_model_factory, tiny_tokenizer):
    model = tiny_model_factory()
    x = pixels(3)
    with torch.no_grad():
        before = model(pixel_values=x)
    calls = []
    model.clip.text_model.register_forward_hook(lambda *args: calls.append(1))
    model.set_prompts(["sharpness", "noise", ["awful photo", "weak photo", "okay photo", "nice photo", "superb photo"]], tiny_tokenizer)
    assert len(calls) == 1  # embedded once, here
    assert model.config.prompt_group_names == ["sharpness", "noise", "group2"]
    assert model.config.prompt_groups[0] == NAMED_PROMPT_GROUPS["sharpness"]
    with torch.no_grad():
        after = model(pixel_values=x)
    assert len(calls) == 1
    assert before.group_scores.shape == (3, 1) and after.group_scores.shape == (3, 3)
    assert not torch.allclose(before.scores, after.scores)
    torch.testing.assert_close(after.scores, reference_scores(model, tiny_tokenizer, x), atol=1e-5, rtol=1e-5)


def test_unknown_prompt_group_is_named():
    with pytest.raises(ValueError, match="sharpnes"):
        UniQAConfig(prompt_groups=["sharpnes"])
    with pytest.raises(ValueError, match="five|5"):
        UniQAConfig(prompt_groups=[["a", "b"]])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mos_range", [0, 50, 100], r"`mos_range` must be \[low, high\] \(two numbers\)"),  # was read as [0, 50]
        ("mos_higher_is_better", "false", r"`mos_higher_is_better` must be true or false"),  # a truthy string: DMOS read as MOS
        ("use_adapter", "no", r"`use_adapter` must be true or false"),
        ("temperature", "hot", r"`temperature` must be a number or null"),
        ("view_seed", "abc", r"`view_seed` must be an integer"),
        ("heads", ["sharpness"], r"`heads` must be a dict"),
    ],
)
def test_config_values_of_the_wrong_type_are_refused(field, value, message):
    """config.json values of the wrong type fail when the config is read, naming the field,
    not later while scoring (or never, giving wrong scores)."""
    with pytest.raises(ValueError, match=message):
        UniQAConfig(clip_config=tiny_clip_config(), **{field: value})


def test_training_text_tower_refreshes_cache(tiny_model_factory):
    model = tiny_model_factory()
    model.train()
    optimizer = torch.optim.SGD(model.clip.text_model.parameters(), lr=1.0)
    out = model(pixel_values=pixels(2), labels=torch.tensor([0.0, 1.0]))
    out.loss.backward()
    assert model.clip.text_model.embeddings.token_embedding.weight.grad is not None
    optimizer.step()
    assert torch.isnan(model.prompt_embeds).all()  # invalidated while the text tower learns
    model.eval()
    with torch.no_grad():
        model(pixel_values=pixels(1))
        fresh = model.encode_prompts()
    torch.testing.assert_close(model.prompt_embeds, fresh)


def test_prompts_need_tokens():
    """A fresh model whose vocabulary is not OpenAI's has no tokenizer to use: it says so."""
    model = UniQAModel(UniQAConfig(clip_config=tiny_clip_config(vocab_size=100))).eval()
    assert model.config.prompt_input_ids is None
    with pytest.raises(ValueError, match="set_prompts"):
        model(pixel_values=pixels(1))
    with pytest.raises(ValueError, match="100 tokens.*not OpenAI's"):
        model.set_prompts(None)


def openai_vocab_clip_config() -> dict:
    config = tiny_clip_config(vocab_size=OPENAI_VOCAB_SIZE)
    config["text_config"].update(bos_token_id=OPENAI_VOCAB_SIZE - 2, eos_token_id=OPENAI_VOCAB_SIZE - 1, pad_token_id=1)
    return config


def test_fresh_openai_vocab_model_scores_without_set_prompts():
    torch.manual_seed(0)
    model = UniQAModel(UniQAConfig(clip_config=openai_vocab_clip_config(), prompt_groups=["default", "noise"])).eval()
    assert model.config.prompt_input_ids[0] == [49406, 2103, 2867, 49407]  # "bad image", OpenAI's ids
    x = pixels(2)
    with torch.no_grad():
        fresh = model(pixel_values=x).scores
    assert torch.isfinite(fresh).all()
    model.set_prompts(None, build_clip_tokenizer())  # the explicit way gives the same scores
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).scores, fresh, atol=0, rtol=0)


def test_set_prompts_refuses_a_tokenizer_of_another_vocabulary(tiny_model_factory, tiny_tokenizer):
    model = tiny_model_factory()
    before = list(model.config.prompt_input_ids)
    with pytest.raises(ValueError, match="49408 tokens but the text tower's vocabulary has 60"):
        model.set_prompts(["sharpness"], build_clip_tokenizer())
    other_eos = UniQAModel(UniQAConfig(clip_config=tiny_clip_config()))
    other_eos.config.clip_config.text_config.eos_token_id = 5
    with pytest.raises(ValueError, match="eos_token_id is 1 but the text tower's is 5"):
        other_eos.set_prompts(None, tiny_tokenizer)
    assert model.config.prompt_input_ids == before  # nothing changed on refusal


def test_saved_folder_tokenizer_and_fallbacks(tiny_model_factory, tiny_tokenizer, tmp_path):
    """`set_prompts(groups)` without a tokenizer uses the one saved with the model; a folder whose
    tokenizer is broken (no tokenizer.json: transformers builds a 2-token one) is refused."""
    model = tiny_model_factory()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = UniQAModel.from_pretrained(tmp_path).eval()
    loaded.set_prompts(["sharpness"])
    model.set_prompts(["sharpness"], tiny_tokenizer)
    assert loaded.config.prompt_input_ids == model.config.prompt_input_ids
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="does not fit.*2 tokens.*not OpenAI's"):
        loaded.set_prompts(["noise"])
    assert loaded.config.prompt_group_names == ["sharpness"]


def test_logit_scale_stays_frozen(tiny_model_factory, tmp_path):
    model = tiny_model_factory()
    assert not model.clip.logit_scale.requires_grad
    model.requires_grad_(True)
    assert not model.clip.logit_scale.requires_grad
    assert model.clip.vision_model.embeddings.patch_embedding.weight.requires_grad
    model.save_pretrained(tmp_path)
    assert not UniQAModel.from_pretrained(tmp_path).clip.logit_scale.requires_grad


def trainable_names(model) -> set:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_set_trainable(tiny_model_factory):
    model = tiny_model_factory()
    everything = {name for name, _ in model.named_parameters()}
    head = {name for name in everything if name.startswith("adapter.")} | {"level_scores"}
    vision = {name for name in everything if name.startswith(("clip.vision_model.", "clip.visual_projection."))}
    text = {name for name in everything if name.startswith(("clip.text_model.", "clip.text_projection."))}
    assert head | vision | text | {"clip.logit_scale"} == everything
    assert trainable_names(model.set_trainable()) == head
    assert trainable_names(model.set_trainable(backbone=True)) == head | vision | text
    assert trainable_names(model.set_trainable(adapter=False, backbone=True, text_tower=False)) == vision
    assert trainable_names(model.set_trainable(adapter=False, backbone=False)) == set()
    zero_shot = tiny_model_factory(use_adapter=False).set_trainable()
    assert trainable_names(zero_shot) == {"level_scores"}


def test_temperature_override(tiny_model_factory):
    model = tiny_model_factory(temperature=0.5)
    assert float(model.logit_scale) == pytest.approx(2.0)


def test_score_to_mos(tiny_model_factory):
    scores = torch.tensor([0.0, 0.25, 1.0])
    model = tiny_model_factory(mos_range=[1, 5])
    torch.testing.assert_close(model.score_to_mos(scores), torch.tensor([1.0, 2.0, 5.0]))
    dmos = tiny_model_factory(mos_range=[0, 100], mos_higher_is_better=False)
    torch.testing.assert_close(dmos.score_to_mos(scores), torch.tensor([100.0, 75.0, 0.0]))
    assert tiny_model_factory().score_to_mos(scores) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_load_round_trip(tiny_model_factory, tmp_path, dtype):
    model = tiny_model_factory(prompt_groups="natural", mos_range=[0, 100], task="aesthetics").to(dtype)
    with torch.no_grad():
        model.level_scores.copy_(torch.tensor([0.0, 0.3, 0.5, 0.8, 0.9]))
    x = pixels(3, views=2)
    with torch.no_grad():
        expected = model(pixel_values=x)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for name in ("configuration_uniqa.py", "modeling_uniqa.py", "processing_uniqa.py", "pipeline_uniqa.py"):
        assert (tmp_path / name).is_file(), name

    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, UniQAModel)
    assert loaded.dtype == dtype
    assert loaded.config.prompt_group_names == ["default", "sharpness", "noise", "quality"]
    assert loaded.config.task == "aesthetics" and loaded.config.mos_range == [0.0, 100.0]
    calls = []
    loaded.clip.text_model.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        got = loaded(pixel_values=x)
    assert calls == []  # prompt embeddings came from the checkpoint
    torch.testing.assert_close(got.scores, expected.scores, atol=0, rtol=0)
    torch.testing.assert_close(got.level_probs, expected.level_probs, atol=0, rtol=0)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "uniqa"


def test_missing_prompt_embeds_are_recomputed(tiny_model_factory, tmp_path):
    """A checkpoint without cached prompt embeddings still scores right (they are rebuilt once)."""
    from safetensors.torch import load_file, save_file

    model = tiny_model_factory()
    x = pixels(2)
    with torch.no_grad():
        expected = model(pixel_values=x).scores
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["prompt_embeds"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = UniQAModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).scores, expected, atol=1e-6, rtol=1e-6)


def test_from_clip(tiny_tokenizer, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(1)
    clip = CLIPModel(CLIPConfig(**tiny_clip_config()))
    clip.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model = UniQAModel.from_clip(str(tmp_path), prompt_groups=["default", "noise"]).eval()
    torch.testing.assert_close(model.clip.logit_scale, clip.logit_scale)
    assert not torch.isnan(model.prompt_embeds).any()
    x = pixels(2)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).scores, reference_scores(model, tiny_tokenizer, x), atol=1e-5, rtol=1e-5)


def test_resave_rewrites_stale_remote_code(tiny_model_factory, tmp_path):
    """Saving into a folder that holds older copies of the remote code replaces every one."""
    import modeling_uniqa.modeling_uniqa as modeling_module

    package_dir = os.path.dirname(modeling_module.__file__)
    for name in REMOTE_CODE_FILES:
        (tmp_path / name).write_text("# stale copy from an older version\n")
    tiny_model_factory().save_pretrained(tmp_path)
    for name in REMOTE_CODE_FILES:
        with open(os.path.join(package_dir, name)) as handle:
            assert (tmp_path / name).read_text() == handle.read(), name


def test_resave_in_another_shard_layout_loads_the_new_weights(tiny_model_factory, tmp_path):
    """A sharded save over an unsharded one left the old model.safetensors, which loading prefers."""
    x = pixels(2)
    old, new = tiny_model_factory(seed=0), tiny_model_factory(seed=1)
    old.save_pretrained(tmp_path)
    new.save_pretrained(tmp_path, max_shard_size="50KB")
    assert not (tmp_path / "model.safetensors").exists() and (tmp_path / "model.safetensors.index.json").is_file()
    with torch.no_grad():
        torch.testing.assert_close(UniQAModel.from_pretrained(tmp_path).eval()(pixel_values=x).scores, new(pixel_values=x).scores)
    old.save_pretrained(tmp_path)  # and back: no index naming deleted shards is left
    assert sorted(name for name in os.listdir(tmp_path) if name.startswith("model.") or name.startswith("model-")) == ["model.safetensors"]


def test_save_refuses_when_remote_code_is_missing(tiny_model_factory, tmp_path, monkeypatch):
    """A folder saved without one of its remote-code files would not load with
    trust_remote_code=True: the save stops before writing anything, naming the file."""
    import modeling_uniqa.modeling_uniqa as modeling_module

    monkeypatch.setattr(modeling_module, "REMOTE_CODE_FILES", (*REMOTE_CODE_FILES, "gone_uniqa.py"))
    with pytest.raises(FileNotFoundError, match="gone_uniqa.py"):
        tiny_model_factory().save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_mos_score_mapping_on_floats_arrays_and_tensors():
    assert mos_to_score(25.0, (0, 100)) == pytest.approx(0.25)
    assert mos_to_score(25.0, (0, 100), higher_is_better=False) == pytest.approx(0.75)
    assert isinstance(mos_to_score(np.float32(3), [1, 5]), float)
    scores = mos_to_score(np.array([1, 3, 5]), [1, 5])  # integer array: float64 result, like numpy
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(mos_to_score([1, 3, 5], [1, 5], False), [1.0, 0.5, 0.0])
    tensor = score_to_mos(torch.tensor([0.0, 0.25, 1.0], dtype=torch.bfloat16), [0, 100], False)
    assert tensor.dtype == torch.bfloat16
    torch.testing.assert_close(tensor, torch.tensor([100.0, 75.0, 0.0], dtype=torch.bfloat16))
    assert score_to_mos(torch.tensor([1, 0]), [1, 5]).dtype == torch.float32
    mos = np.array([1.3, 2.7, 4.9])
    for higher in (True, False):  # round trip in float64
        np.testing.assert_allclose(score_to_mos(mos_to_score(mos, [1, 5], higher), [1, 5], higher), mos, rtol=1e-15)
    with pytest.raises(ValueError, match="high > low"):
        mos_to_score(1.0, (5, 5))


def test_ddp_step_with_backbone_unfrozen(tmp_path):
    """Two real processes (gloo DDP) train everything but logit_scale without DDP stopping."""
    result_path = tmp_path / "result.json"
    completed = launch_two_processes(["tests/ddp_train_step.py", result_path], timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert result["processes"] == 2
    assert result["replica_difference"] == 0.0 and result["parameters_moved"] > 0
    assert result["text_tower_moved"] and result["logit_scale_unchanged"]
