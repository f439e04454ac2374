"""`uniqa convert`: the authors' checkpoint and adapter weights -> a complete UniQA folder."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModel, AutoTokenizer, CLIPConfig, CLIPModel, pipeline

from modeling_uniqa import UniQAModel
from modeling_uniqa.cli import main as uniqa_main
from modeling_uniqa.hub.convert import convert
from tests.helpers import build_tiny_tokenizer, random_rgb, tiny_clip_config
from tests.openai_clip_reference import OpenAICLIPReference, make_random_openai_state_dict

HEAD_DIM = 16  # the tiny reference towers are 64 wide: 4 heads
EMBED_DIM = 32
NATURAL = [
    ["bad image", "poor image", "fair image", "good image", "perfect image"],
    ["extremely blurry image", "blurry image", "fair image", "sharp image", "extremely sharp image"],
    ["extremely noisy image", "noisy image", "fair image", "noise-free image", "extremely noise-free image"],
    ["extremely low-quality image", "low-quality image", "fair image", "high-quality image", "extremely high-quality image"],
]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny `UniQA_weight.pt` (fp16 OpenAI CLIP) and an authors'-format adapter file."""
    folder = tmp_path_factory.mktemp("release")
    state_dict = make_random_openai_state_dict(embed_dim=EMBED_DIM, head_dim=HEAD_DIM, seed=3)
    torch.save(state_dict, folder / "UniQA_weight.pt")
    generator = torch.Generator().manual_seed(5)
    adapter = {
        "adapter.fc.0.weight": torch.randn(EMBED_DIM // 2, EMBED_DIM, generator=generator) / 4,
        "adapter.fc.2.weight": torch.randn(EMBED_DIM, EMBED_DIM // 2, generator=generator) / 4,
        "score_level": torch.tensor([0.05, 0.35, 0.5, 0.85, 0.97]),
    }
    torch.save({"params": adapter}, folder / "net_best.pth")  # IQA-PyTorch style wrapper
    return {"folder": folder, "state_dict": state_dict, "adapter": adapter}


def authors_scores(state_dict, adapter, pixels, token_ids):
    """The release's scoring rule (method.md section 3) on the independent reference CLIP."""
    clip = OpenAICLIPReference.from_state_dict(state_dict, head_dim=HEAD_DIM)
    with torch.no_grad():
        image = clip.encode_image(pixels)  # raw, un-normalised
        hidden = torch.relu(image @ adapter["adapter.fc.0.weight"].t())
        image = torch.relu(hidden @ adapter["adapter.fc.2.weight"].t()) + image  # ratio 1, final ReLU
        text = clip.encode_text(token_ids)
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        logits = clip.logit_scale.exp() * image @ text.t()  # (n, groups * 5)
        probs = logits.view(len(pixels), -1, 5).softmax(-1)
        return (probs * adapter["score_level"]).sum(-1).mean(-1)


def openai_tokens(tokenizer, prompts, context=77):
    """OpenAI's `clip.tokenize`: BOS ... EOS, zero padded to the context length."""
    ids = torch.zeros(len(prompts), context, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        tokens = tokenizer(prompt)["input_ids"]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids


def test_converted_scores_match_authors_rule(release, tmp_path):
    output = tmp_path / "uniqa"
    model = convert(
        str(release["folder"] / "UniQA_weight.pt"),
        output_dir=str(output),
        adapter=str(release["folder"] / "net_best.pth"),
        head_dim=HEAD_DIM,
        prompt_groups="natural",
        mos_range=[0, 100],
    )
    assert model.config.use_adapter and model.config.adapter_reduction == 2 and not model.config.adapter_bias
    loaded = AutoModel.from_pretrained(output).eval()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokenizer = AutoTokenizer.from_pretrained(output)
    prompts = [p for group in NATURAL for p in group]
    expected = authors_scores(release["state_dict"], release["adapter"], pixels, openai_tokens(tokenizer, prompts))
    with torch.no_grad():
        got = loaded(pixel_values=pixels).scores
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded.level_scores, release["adapter"]["score_level"])


def test_cli_writes_a_complete_offline_folder(tmp_path, capsys):
    checkpoint = tmp_path / "UniQA_weight.pt"
    torch.save(make_random_openai_state_dict(head_dim=64), checkpoint)  # OpenAI's head width, as the CLI assumes
    output = tmp_path / "zero_shot"
    code = uniqa_main(["convert", "--checkpoint", str(checkpoint), "--output", str(output), "--prompts", "sharpness,noise", "--dtype", "bfloat16"])
    assert code == 0 and "zero-shot" in capsys.readouterr().out
    files = {p.name for p in output.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json", "modeling_uniqa.py", "README.md"} <= files
    # The command writes the card (an OpenAI-format file: the authors' release, non-commercial).
    card = ModelCard.load(output / "README.md")
    assert card.data.to_dict()["uniqa"]["source"] == {"kind": "authors-release", "checkpoint": "UniQA_weight.pt"}
    assert card.data.license == "other" and card.data.to_dict()["license_name"] == "uniqa-weights-non-commercial"
    config = json.loads((output / "config.json").read_text())
    assert config["use_adapter"] is False and config["prompt_group_names"] == ["sharpness", "noise"]
    model = AutoModel.from_pretrained(output)
    assert model.dtype == torch.bfloat16 and model.adapter is None
    scorer = pipeline("image-quality", model=str(output))
    result = scorer(random_rgb(40, 48), return_group_scores=True)
    assert set(result["group_scores"]) == {"sharpness", "noise"} and 0 <= result["score"] <= 1


def test_adapter_with_unknown_keys_is_refused(release, tmp_path):
    bad = dict(release["adapter"], **{"clip_model.visual.proj": torch.zeros(2, 2)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="clip_model.visual.proj"):
        convert(str(release["folder"] / "UniQA_weight.pt"), adapter=str(tmp_path / "bad.pth"), head_dim=HEAD_DIM)


def test_adapter_of_the_wrong_width_is_refused(release, tmp_path):
    narrow = {"adapter.fc.0.weight": torch.zeros(8, 16), "adapter.fc.2.weight": torch.zeros(16, 8)}
    torch.save(narrow, tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match="32-d"):
        convert(str(release["folder"] / "UniQA_weight.pt"), adapter=str(tmp_path / "narrow.pth"), head_dim=HEAD_DIM)


def test_missing_checkpoint_and_odd_vocab(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        convert(str(tmp_path / "nothing.pt"))
    small_vocab = make_random_openai_state_dict(vocab=100, head_dim=HEAD_DIM)
    torch.save(small_vocab, tmp_path / "small.pt")
    with pytest.raises(ValueError, match="100 tokens"):
        convert(str(tmp_path / "small.pt"), head_dim=HEAD_DIM)
    assert uniqa_main(["convert", "--checkpoint", str(tmp_path / "nothing.pt"), "--output", str(tmp_path / "o")]) == 2


def test_hf_clip_folder(tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**tiny_clip_config()))
    clip.save_pretrained(tmp_path / "clip")
    build_tiny_tokenizer().save_pretrained(tmp_path / "clip")
    model = convert(str(tmp_path / "clip"), output_dir=str(tmp_path / "uniqa"), prompt_groups="default", use_adapter=True)
    reloaded = UniQAModel.from_pretrained(tmp_path / "uniqa")
    assert reloaded.adapter is not None
    for name, tensor in clip.state_dict().items():
        torch.testing.assert_close(reloaded.clip.state_dict()[name], tensor)
    assert np.isfinite(pipeline("image-quality", model=str(tmp_path / "uniqa"))(random_rgb(40, 40))["score"])
    assert model.config.prompt_group_names == ["default"]


def test_faulty_hf_clip_folders_and_existing_outputs_are_refused(tmp_path, caplog):
    """Missing tensors were random weights and a UniQA folder lost its head, silently; an
    existing output kept another model's files (here a 224 px image processor) beside the new one."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    clip_dir = tmp_path / "clip"
    CLIPModel(CLIPConfig(**tiny_clip_config())).save_pretrained(clip_dir)
    build_tiny_tokenizer().save_pretrained(clip_dir)
    output = tmp_path / "uniqa"
    convert(str(clip_dir), output_dir=str(output))
    assert not (output / "README.md").exists()  # the library writes no card: the command does
    with pytest.raises(ValueError, match=r"uniqa/config.json: model_type is 'uniqa', not 'clip'.*a UniQA model folder already"):
        convert(str(output))
    with pytest.raises(ValueError, match=r"uniqa: exists and is not empty .*--overwrite"):
        convert(str(clip_dir), output_dir=str(output))
    (output / "preprocessor_config.json").write_text('{"image_processor_type": "UniQAImageProcessor", "crop_size": 224}')
    assert uniqa_main(["convert", "--checkpoint", str(clip_dir), "--output", str(output), "--overwrite"]) == 0
    assert json.loads((output / "preprocessor_config.json").read_text())["crop_size"] == 32
    assert ModelCard.load(output / "README.md").data.to_dict()["uniqa"]["source"] == {"kind": "hf-clip", "checkpoint": "clip"}
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert uniqa_main(["convert", "--checkpoint", str(clip_dir), "--output", str(tmp_path / "notes"), "--overwrite"]) == 2
    assert "replaces model folders only" in caplog.text and (tmp_path / "notes" / "todo.txt").is_file()
    with pytest.raises(ValueError, match=r"clip: holds the input"):  # --overwrite would delete the checkpoint
        convert(str(clip_dir), output_dir=str(clip_dir), overwrite=True)

    weights = load_file(clip_dir / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".layers.1." not in k}, clip_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"clip: the CLIP checkpoint lacks \d+ tensors \(text_model.encoder.layers.1"):
        convert(str(clip_dir))


def test_tokenizer_of_another_vocabulary_is_refused(release, tmp_path):
    """The OpenAI-vocabulary release with a tokenizer that does not fit it: refused, named."""
    build_tiny_tokenizer().save_pretrained(tmp_path / "tiny_tokenizer")
    with pytest.raises(ValueError, match="UniQA_weight.pt: .*60 tokens but the text tower's vocabulary has 49408"):
        convert(str(release["folder"] / "UniQA_weight.pt"), tokenizer=str(tmp_path / "tiny_tokenizer"), head_dim=HEAD_DIM)
