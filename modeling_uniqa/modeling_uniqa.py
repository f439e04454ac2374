"""UniQA: CLIP + Multi-Cue Integration Adapter + prompt ensembles (method.md sections 1 and 3).

Shipped as remote code with every saved model: imports only `torch`, `transformers` and the
sibling files.
"""

import copy
import math
import os
import shutil
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, ModelOutput

from .clip_tokenizer import DEFAULT_MERGES_PATH, is_openai_vocab, openai_clip_tokenizer, resolve_prompt_tokenizer
from .configuration_uniqa import (
    DEFAULT_HEAD,
    HEAD_FIELDS,
    LEVEL_NAMES,
    HeadConfig,
    UniQAConfig,
    check_head_name,
    check_head_settings,
    resolve_prompt_groups,
    score_to_mos,
)

# Files a saved model directory needs next to the weights so that both `AutoModel` and
# `pipeline("image-quality")` work with `trust_remote_code=True` and no package installed.
REMOTE_CODE_FILES = (
    "configuration_uniqa.py",
    "modeling_uniqa.py",
    "clip_tokenizer.py",
    "processing_uniqa.py",
    "pipeline_uniqa.py",
)
# The Inference Endpoints handler written beside them: source in the package, name in the folder.
ENDPOINT_HANDLER_SOURCE, ENDPOINT_HANDLER_NAME = "hub_handler.py", "handler.py"
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
        head_outputs (`dict[str, UniQAOutput]`, *optional*):
            The extra named heads' outputs (`scores`, `group_scores`, `level_probs`,
            `image_embeds`), from the same image-tower pass; `None` for a single-head model.
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    group_scores: torch.FloatTensor | None = None
    level_probs: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    head_outputs: dict | None = None


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


def build_adapter(settings, dim: int) -> MultiCueAdapter | None:
    """The Multi-Cue adapter a head's settings describe (`None` for a zero-shot head)."""
    if not settings.use_adapter:
        return None
    return MultiCueAdapter(
        dim,
        reduction=settings.adapter_reduction,
        bias=settings.adapter_bias,
        final_relu=settings.adapter_final_relu,
        residual_ratio=settings.adapter_residual_ratio,
    )


class UniQAHead(nn.Module):
    """An extra named head on the shared backbone: its adapter (`None` when zero-shot), five
    level scores and the embeddings of its prompts; settings live in `config.heads[name]`.

    The default head keeps the single-head layout (`UniQAModel.adapter`, `.level_scores`,
    `.prompt_embeds`), so both expose the same attribute names and `UniQAModel` scores either
    with the same code. Weights are saved as `heads.<name>.*`.
    """

    def __init__(self, name: str, settings, dim: int):
        super().__init__()
        self.name = name
        self.adapter = build_adapter(settings, dim)
        self.level_scores = nn.Parameter(torch.tensor(settings.initial_level_scores))
        self.register_buffer("prompt_embeds", torch.full((len(settings.prompts), dim), float("nan")))
        self.register_buffer("prompt_input_ids", None, persistent=False)
        self.register_buffer("prompt_attention_mask", None, persistent=False)


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
        elif isinstance(module, (UniQAModel, UniQAHead)):
            settings = self.config.head_config(module.name if isinstance(module, UniQAHead) else None)
            init.copy_(module.level_scores, torch.tensor(settings.initial_level_scores, dtype=module.level_scores.dtype))
            # NaN marks "not computed yet": the first forward (or `set_prompts`) fills them.
            init.constant_(module.prompt_embeds, float("nan"))
            if module.prompt_input_ids is not None:
                # Non-persistent buffers are not in the checkpoint: rebuild them from the config.
                input_ids, attention_mask = prompt_token_tensors(settings, self.config)
                init.copy_(module.prompt_input_ids, input_ids)
                init.copy_(module.prompt_attention_mask, attention_mask)


def prompt_token_tensors(settings, config: UniQAConfig):
    """Padded prompt token ids and mask `(groups * 5, length)` from a head's id lists."""
    prompt_input_ids = settings.prompt_input_ids
    pad_id = config.clip_config.text_config.pad_token_id or 0
    length = max(len(ids) for ids in prompt_input_ids)
    input_ids = torch.full((len(prompt_input_ids), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompt_input_ids), length), dtype=torch.long)
    for row, ids in enumerate(prompt_input_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


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
        self.adapter = build_adapter(config, embed_dim)
        self.level_scores = nn.Parameter(torch.tensor(config.initial_level_scores))
        self.register_buffer("prompt_embeds", torch.full((len(config.prompts), embed_dim), float("nan")))
        # Extra named heads; empty for a single-head model (no weights, no config key).
        self.heads = nn.ModuleDict(
            {name: UniQAHead(name, config.head_config(name), embed_dim) for name in (config.heads or {})}
        )
        text_config = config.clip_config.text_config
        for head in config.head_names:
            settings = config.head_config(head)
            if settings.prompt_input_ids is None and is_openai_vocab(text_config) and DEFAULT_MERGES_PATH.is_file():
                # (The merges file is absent in remote code run without this package: set_prompts then.)
                tokenizer = openai_clip_tokenizer(text_config.max_position_embeddings)
                settings.prompt_input_ids = self._tokenize_prompts(tokenizer, settings.prompts)
            self._set_prompt_token_buffers(head)
        self.post_init()
        self.set_trainable(adapter=True, backbone=True)  # everything but logit_scale, like a fresh nn.Module

    # ----------------------------------------------------------------------------------------
    # Heads
    # ----------------------------------------------------------------------------------------
    @property
    def head_names(self) -> list:
        """`"default"` (the top-level adapter, level scores and prompts) then the extra heads."""
        return self.config.head_names

    def _head(self, head: str | None = None):
        """`(module holding the head's weights, its settings)`: the model itself for the default head."""
        settings = self.config.head_config(head)  # raises on an unknown name
        return (self, settings) if settings is self.config else (self.heads[head], settings)

    def head_state(self, head: str | None = None) -> tuple:
        """`(settings, tensors)` of a head, detached copies: what `set_head` takes back. Tensors are
        `adapter.*` (absent for a zero-shot head), `level_scores` and `prompt_embeds`."""
        module, settings = self._head(head)
        if torch.isnan(module.prompt_embeds).any():
            if module.prompt_input_ids is None:
                raise ValueError(f"Head {head or DEFAULT_HEAD!r} has no embedded prompts: call `set_prompts(..., head=...)` first.")
            self.refresh_prompt_embeds(head)
        tensors = {}
        if module.adapter is not None:
            tensors.update({f"adapter.{key}": value for key, value in module.adapter.state_dict().items()})
        tensors["level_scores"] = module.level_scores
        tensors["prompt_embeds"] = module.prompt_embeds
        tensors = {key: value.detach().clone() for key, value in tensors.items()}
        return {field: copy.deepcopy(getattr(settings, field)) for field in HEAD_FIELDS}, tensors

    def set_head(self, head: str | None, settings: dict, tensors: dict | None = None) -> "UniQAModel":
        """Add a named head, or replace one (`None` / `"default"`: the default head), in place.

        Args:
            head: the head's name (letters, digits, `_`, `-`; see `check_head_name`).
            settings: the head's `HEAD_FIELDS` (missing ones take their defaults).
            tensors: `adapter.*` (when `use_adapter`), `level_scores`, `prompt_embeds`, as from
                `head_state`; `None` starts a head with a fresh adapter, the initial level scores and
                its prompts embedded by the text tower (needs `prompt_input_ids`).

        Everything is checked before the model changes; errors name the head and the problem.
        """
        name = DEFAULT_HEAD if head is None else head
        if name != DEFAULT_HEAD:
            check_head_name(name)
        settings = copy.deepcopy(dict(settings))
        if name == DEFAULT_HEAD and settings.get("initial_level_scores") is None:
            settings["initial_level_scores"] = self.config.initial_level_scores
        settings = check_head_settings(settings, where=f"head {name!r}")
        dim = self.config.clip_config.projection_dim
        holder = HeadConfig(settings)
        adapter = build_adapter(holder, dim)
        tensors = dict(tensors or {})
        prompt_embeds = tensors.pop("prompt_embeds", None)
        level_scores = tensors.pop("level_scores", None)
        if prompt_embeds is not None and tuple(prompt_embeds.shape) != (len(holder.prompts), dim):
            raise ValueError(
                f"Head {name!r}: prompt_embeds has shape {tuple(prompt_embeds.shape)}, expected "
                f"({len(holder.prompts)}, {dim}) for {len(holder.prompt_groups)} prompt groups."
            )
        if prompt_embeds is None and settings["prompt_input_ids"] is None:
            raise ValueError(f"Head {name!r}: neither prompt embeddings nor tokenised prompts (prompt_input_ids) were given.")
        if level_scores is not None and level_scores.numel() != len(LEVEL_NAMES):
            raise ValueError(f"Head {name!r}: level_scores has {level_scores.numel()} values, expected {len(LEVEL_NAMES)}.")
        adapter_state = {key[len("adapter.") :]: value for key, value in tensors.items() if key.startswith("adapter.")}
        unknown = sorted(key for key in tensors if not key.startswith("adapter."))
        if unknown:
            raise ValueError(f"Head {name!r}: unexpected tensors {', '.join(unknown)}.")
        if adapter is None and adapter_state:
            raise ValueError(f"Head {name!r}: adapter weights given for a head with use_adapter=False.")
        if adapter is not None and tensors:
            try:
                adapter.load_state_dict(adapter_state, strict=True)
            except RuntimeError as error:
                raise ValueError(f"Head {name!r}: the adapter weights do not fit its settings: {error}") from error

        # Everything is checked: now change the model.
        dtype, device = self.level_scores.dtype, self.level_scores.device
        if name == DEFAULT_HEAD:
            module = self
            for field, value in settings.items():
                setattr(self.config, field, value)
        else:
            self.config.heads = {**(self.config.heads or {}), name: settings}
            module = UniQAHead(name, self.config.head_config(name), dim)
        module.adapter = None if adapter is None else adapter.to(device=device, dtype=dtype)
        values = torch.tensor(settings["initial_level_scores"]) if level_scores is None else level_scores.detach().reshape(-1)
        if name == DEFAULT_HEAD:
            with torch.no_grad():  # in place: the parameter (and any optimizer's reference to it) stays
                self.level_scores.copy_(values.to(dtype))
        else:
            module.level_scores = nn.Parameter(values.to(device=device, dtype=dtype).clone(), requires_grad=False)
        if module.adapter is not None and name != DEFAULT_HEAD:
            module.adapter.requires_grad_(False)
        embeds_dtype = self.prompt_embeds.dtype
        module.register_buffer(
            "prompt_embeds",
            torch.full((len(holder.prompts), dim), float("nan")) if prompt_embeds is None else prompt_embeds.detach().clone(),
        )
        module.prompt_embeds = module.prompt_embeds.to(device=device, dtype=embeds_dtype)
        if name != DEFAULT_HEAD:
            self.heads[name] = module
        self._set_prompt_token_buffers(name)
        if prompt_embeds is None:
            self.refresh_prompt_embeds(name)
        return self

    def remove_head(self, head: str) -> "UniQAModel":
        """Remove an extra head (the default head cannot be removed)."""
        if head in (None, DEFAULT_HEAD):
            raise ValueError(f"The {DEFAULT_HEAD!r} head is the model's own and cannot be removed.")
        self.config.head_config(head)  # raises on an unknown name
        del self.heads[head]
        remaining = {name: settings for name, settings in self.config.heads.items() if name != head}
        self.config.heads = remaining or None
        return self

    def add_prompt_head(self, head: str, prompt_groups, tokenizer=None, task: str = "quality") -> "UniQAModel":
        """Add a zero-shot head (no adapter, initial level scores) scoring with `prompt_groups`:
        Table II names (`sharpness`, `noise`, `content`, ...), ensembles, or lists of five
        prompts worst to best. `tokenizer` as in `set_prompts`."""
        tokenizer = resolve_prompt_tokenizer(self, tokenizer)
        names, groups = resolve_prompt_groups(prompt_groups)
        prompts = [prompt for group in groups for prompt in group]
        settings = {
            "use_adapter": False,
            "prompt_groups": groups,
            "prompt_group_names": names,
            "prompt_input_ids": self._tokenize_prompts(tokenizer, prompts),
            "task": task,
        }
        return self.set_head(head, settings)

    # ----------------------------------------------------------------------------------------
    # Prompts
    # ----------------------------------------------------------------------------------------
    def _prompt_token_tensors(self, head: str | None = None):
        """Padded prompt token ids and mask `(groups * 5, length)` from the config's id lists."""
        return prompt_token_tensors(self.config.head_config(head), self.config)

    def _set_prompt_token_buffers(self, head: str | None = None):
        """(Re)register a head's prompt token buffers to match the config (`None` without tokens)."""
        module, settings = self._head(head)
        input_ids = attention_mask = None
        if settings.prompt_input_ids is not None:
            device = module.prompt_embeds.device
            input_ids, attention_mask = (t.to(device) for t in prompt_token_tensors(settings, self.config))
        module.register_buffer("prompt_input_ids", input_ids, persistent=False)
        module.register_buffer("prompt_attention_mask", attention_mask, persistent=False)

    def _tokenize_prompts(self, tokenizer, prompts) -> list:
        """Unpadded id lists, cut to the text tower's context length."""
        max_length = self.config.clip_config.text_config.max_position_embeddings
        input_ids = tokenizer(list(prompts), padding=False, truncation=True, max_length=max_length)["input_ids"]
        return [list(map(int, ids)) for ids in input_ids]

    def set_prompts(self, prompt_groups=None, tokenizer=None, head: str | None = None):
        """Replace the prompt groups (names, ensembles or 5-prompt lists) of a head in one call.

        Tokenises the prompts, stores the ids in the config (so the saved model needs no
        tokenizer) and recomputes the prompt embeddings once with the text tower.
        `prompt_groups=None` keeps the current groups (tokenise and embed them).
        `tokenizer` (object or folder) must match the text tower's vocabulary; `None` picks one
        with `resolve_prompt_tokenizer`: the tokenizer saved with the model if it fits, else
        OpenAI's BPE (shipped here) for OpenAI's vocabulary, else a `ValueError`.
        `head`: which head (`None`: the default head).
        """
        module, settings = self._head(head)
        tokenizer = resolve_prompt_tokenizer(self, tokenizer)
        if prompt_groups is None:
            names, groups = settings.prompt_group_names, settings.prompt_groups
        else:
            names, groups = resolve_prompt_groups(prompt_groups)
        prompts = [prompt for group in groups for prompt in group]
        input_ids = self._tokenize_prompts(tokenizer, prompts)
        settings.prompt_groups, settings.prompt_group_names = groups, names
        settings.prompt_input_ids = input_ids
        self._set_prompt_token_buffers(head)
        embeds = module.prompt_embeds
        module.register_buffer("prompt_embeds", torch.full((len(prompts), embeds.shape[1]), float("nan"), dtype=embeds.dtype, device=embeds.device))
        self.refresh_prompt_embeds(head)

    def encode_prompts(self, head: str | None = None) -> torch.Tensor:
        """Run the text tower on a head's stored prompts: (groups * 5, dim), un-normalised."""
        module, _ = self._head(head)
        if module.prompt_input_ids is None:
            raise ValueError(
                f"The {head or DEFAULT_HEAD!r} head of this UniQA model has no tokenised prompts: call "
                "`model.set_prompts(prompt_groups, tokenizer)` with the CLIP model's tokenizer first."
            )
        return self.clip.get_text_features(
            input_ids=module.prompt_input_ids, attention_mask=module.prompt_attention_mask
        ).pooler_output

    @torch.no_grad()
    def refresh_prompt_embeds(self, head: str | None = None):
        """Recompute a head's cached prompt embeddings (after editing the text tower by hand)."""
        module, _ = self._head(head)
        module.prompt_embeds.copy_(self.encode_prompts(head).to(module.prompt_embeds.dtype))

    def _text_tower_is_training(self) -> bool:
        return self.training and any(p.requires_grad for p in self.clip.text_model.parameters())

    def prompt_features(self, head: str | None = None) -> torch.Tensor:
        """The prompt embeddings a head scores with: (groups * 5, dim), un-normalised."""
        module, _ = self._head(head)
        if self._text_tower_is_training():
            # Text tower is learning: fresh features with gradients, and the cache is stale.
            module.prompt_embeds.fill_(float("nan"))
            return self.encode_prompts(head)
        if torch.isnan(module.prompt_embeds).any():
            self.refresh_prompt_embeds(head)
        return module.prompt_embeds

    # ----------------------------------------------------------------------------------------
    # Scoring
    # ----------------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        """1 / tau of eq. 7 for the default head (see `head_logit_scale`)."""
        return self.head_logit_scale()

    def head_logit_scale(self, head: str | None = None) -> torch.Tensor:
        """1 / tau of eq. 7: CLIP's own `logit_scale.exp()` unless the head's settings override tau."""
        temperature = self.config.head_config(head).temperature
        if temperature is not None:
            return torch.tensor(1.0 / temperature)
        return self.clip.logit_scale.detach().float().exp()

    def adapt_image_embeds(self, image_embeds: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """A head's adapter + L2 normalisation of raw CLIP image embeddings: (n, dim) -> (n, dim), fp32."""
        module, _ = self._head(head)
        if module.adapter is not None:
            image_embeds = module.adapter(image_embeds)
        return F.normalize(image_embeds.float(), dim=-1)

    def score_levels(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """Level probabilities of eq. 7: normalised (n, dim) images x (groups*5, dim) prompts -> (n, groups, 5)."""
        text_embeds = F.normalize(text_embeds.float(), dim=-1)
        logits = self.head_logit_scale(head).to(image_embeds.device) * image_embeds @ text_embeds.t()  # (n, groups*5)
        return logits.view(logits.shape[0], -1, len(LEVEL_NAMES)).softmax(dim=-1)

    def score_embeddings(self, image_embeds: torch.Tensor, head: str | None = None) -> UniQAOutput:
        """Score raw CLIP image embeddings with one head (everything of `forward` after the image tower).

        Args:
            image_embeds: `(n, dim)`, or `(n, views, dim)` whose scores are averaged over views:
                `clip.get_image_features(...)`, before any adapter.
            head: the head's name; `None` is the default head.

        Returns a `UniQAOutput` with `scores (n,)`, `group_scores (n, groups)`, `level_probs
        (n, groups, 5)` and the adapted `image_embeds` (same leading shape as the input).
        """
        if image_embeds.dim() not in (2, 3):
            raise ValueError(f"`image_embeds` must be (n, dim) or (n, views, dim), got shape {tuple(image_embeds.shape)}.")
        module, _ = self._head(head)
        leading = image_embeds.shape[:-1]
        adapted = self.adapt_image_embeds(image_embeds.reshape(-1, image_embeds.shape[-1]), head)  # (n * views, dim), fp32
        level_probs = self.score_levels(adapted, self.prompt_features(head), head)  # (n * views, groups, 5)
        group_scores = level_probs @ module.level_scores.float()  # (n * views, groups)
        batch, views = leading[0], (leading[1] if len(leading) == 2 else 1)
        level_probs = level_probs.view(batch, views, *level_probs.shape[1:]).mean(1)  # (n, groups, 5)
        group_scores = group_scores.view(batch, views, -1).mean(1)  # (n, groups)
        return UniQAOutput(
            scores=group_scores.mean(-1),
            group_scores=group_scores,
            level_probs=level_probs,
            image_embeds=adapted.view(*leading, -1),
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        heads: list | None = None,
        **kwargs,
    ) -> UniQAOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 3, H, W)` or `(batch, views, 3, H, W)`):
            One view a row, or several views of each image whose scores are averaged.
        labels (`torch.FloatTensor` of shape `(batch,)`, *optional*):
            Normalised MOS targets in [0, 1]; gives an MSE `loss` (of the default head).
        heads (`list[str]`, *optional*):
            The extra heads to score into `head_outputs`; `None`: all of them. The default head
            is always scored (`scores`). One image-tower pass feeds every head.
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
        selected = list(self.heads) if heads is None else [name for name in heads if name != DEFAULT_HEAD]
        for name in selected:
            self.config.head_config(name)  # unknown names raise before the image tower runs

        raw_embeds = self.clip.get_image_features(pixel_values=pixel_values, **kwargs).pooler_output  # (n, dim)
        if views is not None:
            raw_embeds = raw_embeds.view(batch, views, -1)
        default = self.score_embeddings(raw_embeds, None)
        scores = default.scores
        loss = None
        if labels is not None:
            loss = F.mse_loss(scores, labels.to(scores.device, scores.dtype).view(-1))
        output = UniQAOutput(
            loss=loss,
            scores=scores,
            group_scores=default.group_scores,
            level_probs=default.level_probs,
            image_embeds=default.image_embeds,
            head_outputs={name: self.score_embeddings(raw_embeds, name) for name in selected} or None,
        )
        return output if return_dict is not False else output.to_tuple()

    def score_to_mos(self, scores, head: str | None = None):
        """Map a head's normalised scores (1 = best) to its training data's MOS scale; `None` if unknown.

        Uses `configuration_uniqa.score_to_mos` (floats, arrays or tensors; tensors stay tensors).
        """
        settings = self.config.head_config(head)
        if settings.mos_range is None:
            return None
        return score_to_mos(scores, settings.mos_range, settings.mos_higher_is_better)

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

        `clip.logit_scale` stays frozen whatever is asked (tau is fixed; see the class doc), and
        so do the extra named heads: they are scored in every forward but never in the loss
        (train a head as a single-head model, then add it with `uniqa heads add`).
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
        self.heads.requires_grad_(False)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "UniQAModel":
        """`nn.Module.requires_grad_`, except that `clip.logit_scale` and the extra heads stay frozen
        (they never get a gradient, and DDP stops on a trainable parameter without one)."""
        super().requires_grad_(requires_grad)
        self.clip.logit_scale.requires_grad_(False)
        self.heads.requires_grad_(False)
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
        model.heads.requires_grad_(False)
        source = kwargs.get("pretrained_model_name_or_path", args[0] if args else None)
        model.source_view_seeding = _folder_view_seeding(source, kwargs)
        return loaded

    def default_image_processor(self, view_seeding: str = "shared"):
        """The image processor matching this model: CLIP conventions, its view policy and seed.
        `view_seeding` (see `UniQAImageProcessor`): "shared" by default, the rule of a folder saved
        without the setting; `save_pretrained` writes new folders' processors with "per_image"."""
        from .processing_uniqa import UniQAImageProcessor

        return UniQAImageProcessor(
            crop_size=self.config.clip_config.vision_config.image_size,
            view_policy=self.config.view_policy,
            view_seed=self.config.view_seed,
            view_seeding=view_seeding,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config with the remote code, the `image-quality` pipeline code and
        (unless one is there already) an image processor, so the directory is complete:
        `pipeline(model=dir, trust_remote_code=True)` works where this package is absent.

        The remote-code files are always (re)written, so re-saving into an existing folder never
        leaves code from an older version beside new weights. They are copied from this file's
        folder, also when this file runs as remote code; a file missing there is an error before
        anything is written."""
        # Imported for transformers' sake: a relative import here makes it copy pipeline_uniqa.py
        # into the remote-code module folder beside this file, so a model loaded with
        # trust_remote_code=True re-saves a folder whose `pipeline(...)` still works.
        from .pipeline_uniqa import ImageQualityPipeline  # noqa: F401

        source_dir = os.path.dirname(os.path.abspath(__file__))
        missing = [name for name in REMOTE_CODE_FILES if not os.path.isfile(os.path.join(source_dir, name))]
        if missing:
            raise FileNotFoundError(
                f"{source_dir}: lacks the remote-code files {', '.join(missing)}; the saved folder would not load "
                "with trust_remote_code=True. Save from an installed uniqa-hf package."
            )
        for head in self.head_names:
            module, _ = self._head(head)
            if torch.isnan(module.prompt_embeds).any() and module.prompt_input_ids is not None:
                self.refresh_prompt_embeds(head)
        # transformers deletes old shards but not a `model.safetensors` (or index) of the other
        # layout, and loading prefers `model.safetensors`: a sharded save over an unsharded one
        # would load the old weights.
        for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME):
            if os.path.isfile(os.path.join(save_directory, name)):
                os.remove(os.path.join(save_directory, name))
        self.config.custom_pipelines = CUSTOM_PIPELINES
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            del self.config.custom_pipelines
        for name in REMOTE_CODE_FILES:
            source = os.path.join(source_dir, name)
            target = os.path.join(save_directory, name)
            if not (os.path.isfile(target) and os.path.samefile(source, target)):
                shutil.copyfile(source, target)
        # Inference Endpoints handler (issue #26): the package's `hub_handler.py`, as `handler.py`.
        # Not there when this file runs as remote code: the folder then keeps the handler it has.
        handler_source = os.path.join(source_dir, ENDPOINT_HANDLER_SOURCE)
        if os.path.isfile(handler_source):
            shutil.copyfile(handler_source, os.path.join(save_directory, ENDPOINT_HANDLER_NAME))
        if not os.path.isfile(os.path.join(save_directory, "preprocessor_config.json")):
            # A new model's views are seeded per image; a loaded one keeps its folder's rule, so a
            # re-saved model scores as it did.
            seeding = getattr(self, "source_view_seeding", None) or "per_image"
            self.default_image_processor(view_seeding=seeding).save_pretrained(save_directory)


def _folder_view_seeding(source, kwargs: dict) -> str:
    """The `view_seeding` of the processor saved with a model (local folder or Hub repo):
    "shared" when it has no such setting or no processor (the rule such folders are scored with)."""
    import json

    from transformers.utils import cached_file

    try:
        path = cached_file(
            source, "preprocessor_config.json", cache_dir=kwargs.get("cache_dir"), revision=kwargs.get("revision"),
            local_files_only=kwargs.get("local_files_only", False),
            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
        )
        if path is None:
            return "shared"
        with open(path, encoding="utf-8") as handle:
            return json.load(handle).get("view_seeding", "shared")
    except Exception:  # unreadable or odd: the processor load reports it; here, the rule of old folders
        return "shared"


UniQAModel.register_for_auto_class("AutoModel")

__all__ = ["UniQAModel", "UniQAPreTrainedModel", "UniQAOutput", "UniQAHead", "MultiCueAdapter", "build_adapter"]
