"""UniQA: CLIP + Multi-Cue Integration Adapter + prompt ensembles (method.md sections 1 and 3).

Shipped as remote code with every saved model: imports only `torch`, `transformers` and the
sibling files.
"""

import math
import os
import shutil
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .clip_tokenizer import DEFAULT_MERGES_PATH, is_openai_vocab, openai_clip_tokenizer, resolve_prompt_tokenizer
from .configuration_uniqa import LEVEL_NAMES, UniQAConfig, resolve_prompt_groups, score_to_mos

# Files a saved model directory needs next to the weights so that both `AutoModel` and
# `pipeline("image-quality")` work with `trust_remote_code=True` and no package installed.
REMOTE_CODE_FILES = (
    "configuration_uniqa.py",
    "modeling_uniqa.py",
    "clip_tokenizer.py",
    "processing_uniqa.py",
    "pipeline_uniqa.py",
)
IMAGE_QUALITY_TASK = "image-quality"
CUSTOM_PIPELINES = {
    IMAGE_QUALITY_TASK: {
        "impl": "pipeline_uniqa.ImageQualityPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    }
}


@dataclass
class UniQAOutput(ModelOutput):
    """
    Output of [`UniQAModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean squared error between `scores` and `labels`, when labels are given.
        scores (`torch.FloatTensor` of shape `(batch,)`):
            Predicted quality (or aesthetics) in normalised-MOS units: 0 = worst, 1 = best. The mean
            over views and prompt groups.
        group_scores (`torch.FloatTensor` of shape `(batch, groups)`):
            The score of each prompt group (eq. 7), averaged over views.
        level_probs (`torch.FloatTensor` of shape `(batch, groups, 5)`):
            Softmax over the five levels (bad ... perfect) of each group, averaged over views.
        image_embeds (`torch.FloatTensor` of shape `(batch, dim)` or `(batch, views, dim)`):
            The adapted, L2-normalised image embeddings `I'` (one per view for 5-D inputs).
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    group_scores: torch.FloatTensor | None = None
    level_probs: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


class MultiCueAdapter(nn.Module):
    """Visual adaptation of the Multi-Cue Integration Adapter: `fc(x) + residual_ratio * x`.

    `fc` is Linear(dim -> dim / reduction) -> ReLU -> Linear(-> dim) [-> ReLU], bias-free by
    default; the module names (`fc.0`, `fc.2`) are those of the authors' adapter weights. The
    residual is the raw (un-normalised) CLIP image embedding; normalisation happens after.
    """

    def __init__(self, dim: int, reduction: int = 2, bias: bool = False, final_relu: bool = True, residual_ratio: float = 1.0):
        super().__init__()
        hidden = dim // reduction
        layers = [nn.Linear(dim, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, dim, bias=bias)]
        if final_relu:
            layers.append(nn.ReLU())
        self.fc = nn.Sequential(*layers)
        self.residual_ratio = residual_ratio

    def reset_parameters(self):
        # PyTorch's default Linear init, as in the released adapter.
        for layer in self.fc:
            if isinstance(layer, nn.Linear):
                init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
                if layer.bias is not None:
                    bound = 1 / math.sqrt(layer.in_features)
                    init.uniform_(layer.bias, -bound, bound)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        # image_embeds: (n, dim) -> (n, dim)
        return self.fc(image_embeds) + self.residual_ratio * image_embeds


class UniQAPreTrainedModel(PreTrainedModel):
    config: UniQAConfig
    config_class = UniQAConfig
    base_model_prefix = "uniqa"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MultiCueAdapter):
            module.reset_parameters()
        elif isinstance(module, UniQAModel):
            init.copy_(module.level_scores, torch.tensor(self.config.initial_level_scores, dtype=module.level_scores.dtype))
            # NaN marks "not computed yet": the first forward (or `set_prompts`) fills them.
            init.constant_(module.prompt_embeds, float("nan"))
            if module.prompt_input_ids is not None:
                # Non-persistent buffers are not in the checkpoint: rebuild them from the config.
                input_ids, attention_mask = module._prompt_token_tensors()
                init.copy_(module.prompt_input_ids, input_ids)
                init.copy_(module.prompt_attention_mask, attention_mask)


class UniQAModel(UniQAPreTrainedModel):
    """
    The UniQA scorer: a CLIP model (`model.clip`), the Multi-Cue adapter (`model.adapter`, `None`
    in zero-shot mode), five learnable level scores and a set of prompt groups.

    Scoring (method.md eq. 6-8, per view): `I = clip.get_image_features(x)`,
    `I' = normalize(adapter(I))`, for each group g: `p_g = softmax(I' . normalize(T_g) / tau)` over
    its five prompts, `q_g = p_g . c`; the score is the mean of `q_g` over groups, then over views.

    The prompt text embeddings `T` are constants at scoring time: they are computed once by the
    text tower, kept in the `prompt_embeds` buffer (saved with the weights) and only recomputed
    when the prompts change or while the text tower is being trained.

    A model whose text tower uses OpenAI's vocabulary (49,408 ids) tokenises its prompts with the
    OpenAI BPE tokenizer shipped in this package when it is built without `prompt_input_ids`, so
    `UniQAModel(UniQAConfig())` scores right away; any other vocabulary needs `set_prompts`.

    `clip.logit_scale` is always frozen: tau is fixed (the checkpoint's value or
    `config.temperature`), so it never gets a gradient, and a trainable parameter without one
    stops DDP. Use `set_trainable` to choose what trains.
    """

    def __init__(self, config: UniQAConfig):
        super().__init__(config)
        self.clip = CLIPModel._from_config(config.clip_config)
        embed_dim = config.clip_config.projection_dim
        self.adapter = (
            MultiCueAdapter(
                embed_dim,
                reduction=config.adapter_reduction,
                bias=config.adapter_bias,
                final_relu=config.adapter_final_relu,
                residual_ratio=config.adapter_residual_ratio,
            )
            if config.use_adapter
            else None
        )
        self.level_scores = nn.Parameter(torch.tensor(config.initial_level_scores))
        self.register_buffer("prompt_embeds", torch.full((len(config.prompts), embed_dim), float("nan")))
        text_config = config.clip_config.text_config
        if config.prompt_input_ids is None and is_openai_vocab(text_config) and DEFAULT_MERGES_PATH.is_file():
            # (The merges file is absent in remote code run without this package: set_prompts then.)
            tokenizer = openai_clip_tokenizer(text_config.max_position_embeddings)
            config.prompt_input_ids = self._tokenize_prompts(tokenizer, config.prompts)
        self._set_prompt_token_buffers()
        self.post_init()
        self.set_trainable(adapter=True, backbone=True)  # everything but logit_scale, like a fresh nn.Module

    # ----------------------------------------------------------------------------------------
    # Prompts
    # ----------------------------------------------------------------------------------------
    def _prompt_token_tensors(self):
        """Padded prompt token ids and mask `(groups * 5, length)` from the config's id lists."""
        prompt_input_ids = self.config.prompt_input_ids
        pad_id = self.config.clip_config.text_config.pad_token_id or 0
        length = max(len(ids) for ids in prompt_input_ids)
        input_ids = torch.full((len(prompt_input_ids), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompt_input_ids), length), dtype=torch.long)
        for row, ids in enumerate(prompt_input_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def _set_prompt_token_buffers(self):
        """(Re)register the prompt token buffers to match the config (`None` without tokens)."""
        input_ids = attention_mask = None
        if self.config.prompt_input_ids is not None:
            device = self.prompt_embeds.device
            input_ids, attention_mask = (t.to(device) for t in self._prompt_token_tensors())
        self.register_buffer("prompt_input_ids", input_ids, persistent=False)
        self.register_buffer("prompt_attention_mask", attention_mask, persistent=False)

    def _tokenize_prompts(self, tokenizer, prompts) -> list:
        """Unpadded id lists, cut to the text tower's context length."""
        max_length = self.config.clip_config.text_config.max_position_embeddings
        input_ids = tokenizer(list(prompts), padding=False, truncation=True, max_length=max_length)["input_ids"]
        return [list(map(int, ids)) for ids in input_ids]

    def set_prompts(self, prompt_groups=None, tokenizer=None):
        """Replace the prompt groups (names, ensembles or 5-prompt lists) in one call.

        Tokenises the prompts, stores the ids in the config (so the saved model needs no
        tokenizer) and recomputes the prompt embeddings once with the text tower.
        `prompt_groups=None` keeps the current groups (tokenise and embed them).
        `tokenizer` (object or folder) must match the text tower's vocabulary; `None` picks one
        with `resolve_prompt_tokenizer`: the tokenizer saved with the model if it fits, else
        OpenAI's BPE (shipped here) for OpenAI's vocabulary, else a `ValueError`.
        """
        tokenizer = resolve_prompt_tokenizer(self, tokenizer)
        if prompt_groups is None:
            names, groups = self.config.prompt_group_names, self.config.prompt_groups
        else:
            names, groups = resolve_prompt_groups(prompt_groups)
        prompts = [prompt for group in groups for prompt in group]
        input_ids = self._tokenize_prompts(tokenizer, prompts)
        self.config.prompt_groups, self.config.prompt_group_names = groups, names
        self.config.prompt_input_ids = input_ids
        self._set_prompt_token_buffers()
        embeds = self.prompt_embeds
        self.register_buffer("prompt_embeds", torch.full((len(prompts), embeds.shape[1]), float("nan"), dtype=embeds.dtype, device=embeds.device))
        self.refresh_prompt_embeds()

    def encode_prompts(self) -> torch.Tensor:
        """Run the text tower on the stored prompts: (groups * 5, dim), un-normalised."""
        if self.prompt_input_ids is None:
            raise ValueError(
                "This UniQA model has no tokenised prompts: call `model.set_prompts(prompt_groups, tokenizer)` "
                "with the CLIP model's tokenizer first."
            )
        return self.clip.get_text_features(
            input_ids=self.prompt_input_ids, attention_mask=self.prompt_attention_mask
        ).pooler_output

    @torch.no_grad()
    def refresh_prompt_embeds(self):
        """Recompute the cached prompt embeddings (after editing the text tower by hand)."""
        self.prompt_embeds.copy_(self.encode_prompts().to(self.prompt_embeds.dtype))

    def _text_tower_is_training(self) -> bool:
        return self.training and any(p.requires_grad for p in self.clip.text_model.parameters())

    def prompt_features(self) -> torch.Tensor:
        """The prompt embeddings used for scoring: (groups * 5, dim), un-normalised."""
        if self._text_tower_is_training():
            # Text tower is learning: fresh features with gradients, and the cache is stale.
            self.prompt_embeds.fill_(float("nan"))
            return self.encode_prompts()
        if torch.isnan(self.prompt_embeds).any():
            self.refresh_prompt_embeds()
        return self.prompt_embeds

    # ----------------------------------------------------------------------------------------
    # Scoring
    # ----------------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        """1 / tau of eq. 7: CLIP's own `logit_scale.exp()` unless the config overrides tau."""
        if self.config.temperature is not None:
            return torch.tensor(1.0 / self.config.temperature)
        return self.clip.logit_scale.detach().float().exp()

    def adapt_image_embeds(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Adapter + L2 normalisation of raw CLIP image embeddings: (n, dim) -> (n, dim), fp32."""
        if self.adapter is not None:
            image_embeds = self.adapter(image_embeds)
        return F.normalize(image_embeds.float(), dim=-1)

    def score_levels(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Level probabilities of eq. 7: normalised (n, dim) images x (groups*5, dim) prompts -> (n, groups, 5)."""
        text_embeds = F.normalize(text_embeds.float(), dim=-1)
        logits = self.logit_scale.to(image_embeds.device) * image_embeds @ text_embeds.t()  # (n, groups*5)
        return logits.view(logits.shape[0], -1, len(LEVEL_NAMES)).softmax(dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> UniQAOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 3, H, W)` or `(batch, views, 3, H, W)`):
            One view a row, or several views of each image whose scores are averaged.
        labels (`torch.FloatTensor` of shape `(batch,)`, *optional*):
            Normalised MOS targets in [0, 1]; gives an MSE `loss`.
        """
        if pixel_values.dim() == 5:
            batch, views = pixel_values.shape[:2]
            pixel_values = pixel_values.flatten(0, 1)  # (batch * views, 3, H, W)
        elif pixel_values.dim() == 4:
            batch, views = pixel_values.shape[0], None
        else:
            raise ValueError(
                f"`pixel_values` must be (batch, 3, H, W) or (batch, views, 3, H, W), got shape {tuple(pixel_values.shape)}."
            )
        pixel_values = pixel_values.to(self.clip.visual_projection.weight.dtype)

        raw_embeds = self.clip.get_image_features(pixel_values=pixel_values, **kwargs).pooler_output  # (n, dim)
        image_embeds = self.adapt_image_embeds(raw_embeds)  # (n, dim), fp32
        level_probs = self.score_levels(image_embeds, self.prompt_features())  # (n, groups, 5)
        group_scores = level_probs @ self.level_scores.float()  # (n, groups)

        n_views = views or 1
        level_probs = level_probs.view(batch, n_views, *level_probs.shape[1:]).mean(1)  # (batch, groups, 5)
        group_scores = group_scores.view(batch, n_views, -1).mean(1)  # (batch, groups)
        scores = group_scores.mean(-1)  # (batch,)
        if views is not None:
            image_embeds = image_embeds.view(batch, views, -1)

        loss = None
        if labels is not None:
            loss = F.mse_loss(scores, labels.to(scores.device, scores.dtype).view(-1))

        output = UniQAOutput(
            loss=loss, scores=scores, group_scores=group_scores, level_probs=level_probs, image_embeds=image_embeds
        )
        return output if return_dict is not False else output.to_tuple()

    def score_to_mos(self, scores):
        """Map normalised scores (1 = best) to the training data's MOS scale; `None` if unknown.

        Uses `configuration_uniqa.score_to_mos` (floats, arrays or tensors; tensors stay tensors).
        """
        if self.config.mos_range is None:
            return None
        return score_to_mos(scores, self.config.mos_range, self.config.mos_higher_is_better)

    # ----------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------
    def set_trainable(self, adapter: bool = True, backbone: bool = False, text_tower: bool | None = None) -> "UniQAModel":
        """Choose which parameters train, in one call (returns the model).

        Args:
            adapter: the Multi-Cue adapter and the five level scores (the head; the paper's
                default rows train only these).
            backbone: CLIP's image tower and visual projection (the paper's "unfrozen" rows,
                with a 100x smaller learning rate).
            text_tower: CLIP's text tower and text projection; `None` follows `backbone`. While
                it trains, prompt embeddings are recomputed with gradients on every forward.

        `clip.logit_scale` stays frozen whatever is asked (tau is fixed; see the class doc).
        """
        text_tower = backbone if text_tower is None else text_tower
        clip = self.clip
        for module, trainable in (
            (clip.vision_model, backbone),
            (clip.visual_projection, backbone),
            (clip.text_model, text_tower),
            (clip.text_projection, text_tower),
        ):
            module.requires_grad_(trainable)
        if self.adapter is not None:
            self.adapter.requires_grad_(adapter)
        self.level_scores.requires_grad_(adapter)
        clip.logit_scale.requires_grad_(False)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "UniQAModel":
        """`nn.Module.requires_grad_`, except that `clip.logit_scale` stays frozen (it never gets a
        gradient, and DDP stops on a trainable parameter without one)."""
        super().requires_grad_(requires_grad)
        self.clip.logit_scale.requires_grad_(False)
        return self

    # ----------------------------------------------------------------------------------------
    # Construction and saving
    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_clip(cls, clip, tokenizer=None, **config_kwargs) -> "UniQAModel":
        """Start a UniQA model from an HF CLIP model, or the name or path of one, with its prompts
        tokenised and embedded.

        `tokenizer` (object or folder) must match the CLIP vocabulary; by default the one saved
        with the CLIP checkpoint is used if it fits, else OpenAI's BPE for OpenAI's vocabulary
        (see `resolve_prompt_tokenizer`); otherwise a `ValueError` says what to pass.
        """
        source = clip
        if not isinstance(clip, CLIPModel):
            clip = CLIPModel.from_pretrained(clip)
        local_folder = isinstance(source, (str, os.PathLike)) and os.path.isdir(source)
        tokenizer = resolve_prompt_tokenizer(source if local_folder else clip, tokenizer)
        model = cls(UniQAConfig(clip_config=clip.config.to_dict(), **config_kwargs))
        model.clip.load_state_dict(clip.state_dict())
        model.to(clip.dtype)
        model.set_prompts(None, tokenizer)
        return model

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with `clip.logit_scale` frozen again (loading makes
        every floating-point parameter trainable)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        model.clip.logit_scale.requires_grad_(False)
        return loaded

    def default_image_processor(self):
        """The image processor matching this model: CLIP conventions, its view policy."""
        from .processing_uniqa import UniQAImageProcessor

        return UniQAImageProcessor(
            crop_size=self.config.clip_config.vision_config.image_size,
            view_policy=self.config.view_policy,
            view_seed=self.config.view_seed,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config with the remote code, the `image-quality` pipeline code and
        (unless one is there already) an image processor, so the directory is complete:
        `pipeline(model=dir, trust_remote_code=True)` works where this package is absent.

        The remote-code files are always (re)written, so re-saving into an existing folder never
        leaves code from an older version beside new weights."""
        if torch.isnan(self.prompt_embeds).any() and self.prompt_input_ids is not None:
            self.refresh_prompt_embeds()
        self.config.custom_pipelines = CUSTOM_PIPELINES
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            del self.config.custom_pipelines
        source_dir = os.path.dirname(os.path.abspath(__file__))
        for name in REMOTE_CODE_FILES:
            source = os.path.join(source_dir, name)
            target = os.path.join(save_directory, name)
            if os.path.isfile(source) and not (os.path.isfile(target) and os.path.samefile(source, target)):
                shutil.copyfile(source, target)
        if not os.path.isfile(os.path.join(save_directory, "preprocessor_config.json")):
            self.default_image_processor().save_pretrained(save_directory)


UniQAModel.register_for_auto_class("AutoModel")

__all__ = ["UniQAModel", "UniQAPreTrainedModel", "UniQAOutput", "MultiCueAdapter"]
