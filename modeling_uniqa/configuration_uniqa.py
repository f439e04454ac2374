"""Configuration of UniQA: a CLIP model plus the Multi-Cue Integration Adapter head.

This file is shipped as remote code with every saved model, so it imports only `torch`,
`transformers` and its sibling files.
"""

import torch
from transformers import CLIPConfig, PreTrainedConfig

# The five text levels of the method, worst to best (method.md section 1).
LEVEL_NAMES = ("bad", "poor", "fair", "good", "perfect")

# Named prompt groups of Table II of the paper, five prompts each, worst to best.
NAMED_PROMPT_GROUPS = {
    "default": ["bad image", "poor image", "fair image", "good image", "perfect image"],
    "sharpness": [
        "extremely blurry image",
        "blurry image",
        "fair image",
        "sharp image",
        "extremely sharp image",
    ],
    "noise": [
        "extremely noisy image",
        "noisy image",
        "fair image",
        "noise-free image",
        "extremely noise-free image",
    ],
    "quality": [
        "extremely low-quality image",
        "low-quality image",
        "fair image",
        "high-quality image",
        "extremely high-quality image",
    ],
    "content": ["bad content", "poor content", "fair content", "good content", "perfect content"],
}

# Ensembles used by the authors' release: natural images, and AI-generated images (AGIQA-3K).
NAMED_PROMPT_ENSEMBLES = {
    "natural": ["default", "sharpness", "noise", "quality"],
    "aigc": ["default", "content"],
}

# Test-time view policies. `random<N>` (N random crops from a seeded generator; `random10` is
# the authors' protocol), `detail<N>` (half of N crops chosen for detail, half at random; see
# `processing_uniqa.detail_views`) and `pyramid<N>` (half of N crops at the image's resolution,
# half of it halved; `processing_uniqa.pyramid_views`) are parsed, the others are fixed.
COUNTED_VIEW_POLICIES = ("random", "detail", "pyramid")
FIXED_VIEW_POLICIES = ("center", "five_crop", "ten_crop", "resize")

TASKS = ("quality", "aesthetics")

# The head every UniQA model has: its settings are UniQAConfig's own top-level fields and its
# weights the top-level `adapter.*`, `level_scores` and `prompt_embeds` (the single-head layout).
DEFAULT_HEAD = "default"
# Settings each head has for itself; the view policy and the backbone are shared by all heads.
HEAD_FIELDS = (
    "use_adapter",
    "adapter_reduction",
    "adapter_bias",
    "adapter_final_relu",
    "adapter_residual_ratio",
    "temperature",
    "prompt_groups",
    "prompt_group_names",
    "prompt_input_ids",
    "initial_level_scores",
    "task",
    "mos_range",
    "mos_higher_is_better",
    "training_dataset",
)
HEAD_DEFAULTS = {
    "use_adapter": True,
    "adapter_reduction": 2,
    "adapter_bias": False,
    "adapter_final_relu": True,
    "adapter_residual_ratio": 1.0,
    "temperature": None,
    "prompt_groups": None,
    "prompt_group_names": None,
    "prompt_input_ids": None,
    "initial_level_scores": None,
    "task": "quality",
    "mos_range": None,
    "mos_higher_is_better": True,
    "training_dataset": None,
}
# Result keys of the `image-quality` pipeline: the default head gives `score`, `mos`,
# `group_scores`, `level_probs`; a head named X gives `X`, `X_mos`, `X_group_scores`, `X_level_probs`.
HEAD_KEY_SUFFIXES = ("_mos", "_group_scores", "_level_probs")
RESERVED_HEAD_NAMES = ("score", "mos", "error", "group_scores", "level_probs", "heads")

# A saved model's config.json points `pipeline()` at the `image-quality` code saved beside it
# (`custom_pipelines`), for use with `trust_remote_code=True` where this package is absent. When
# this file runs from the installed package, the task is registered locally instead, and the
# pointer is dropped: `pipeline()` would otherwise demand `trust_remote_code` for local code.
RUNNING_AS_REMOTE_CODE = __name__.startswith("transformers_modules.")


def _mos_bounds(mos_range) -> tuple[float, float]:
    # Exactly two values: a third one (e.g. [0, 50, 100]) would be dropped and the scale be wrong.
    if isinstance(mos_range, (str, bytes)) or not hasattr(mos_range, "__len__") or len(mos_range) != 2:
        raise ValueError(f"`mos_range` must be [low, high] (two numbers), got {mos_range!r}.")
    try:
        low, high = float(mos_range[0]), float(mos_range[1])
    except (TypeError, ValueError) as error:
        raise ValueError(f"`mos_range` must be [low, high] (two numbers), got {mos_range!r}.") from error
    if not high > low:
        raise ValueError(f"`mos_range` must be [low, high] with high > low, got {list(mos_range)}.")
    return low, high


def _as_float_values(values):
    """`(values as a float tensor, how to give results back)`: tensors stay tensors (float dtype
    kept, integers become the default float dtype); floats, numpy values and sequences are
    computed in float64 and come back as a `float` (0-d) or a numpy array, like numpy would."""
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point():
            values = values.to(torch.get_default_dtype())
        return values, lambda result: result
    values = torch.as_tensor(values, dtype=torch.float64)
    return values, lambda result: float(result) if result.dim() == 0 else result.numpy()


def mos_to_score(mos, mos_range, higher_is_better: bool = True):
    """Scale MOS to [0, 1] with 1 = best (flipped when lower is better, e.g. DMOS). Not clipped.

    Works on floats, numpy arrays (and sequences) and tensors; see `score_to_mos` for the inverse.
    """
    low, high = _mos_bounds(mos_range)
    values, give_back = _as_float_values(mos)
    score = (values - low) / (high - low)
    return give_back(score if higher_is_better else 1.0 - score)


def score_to_mos(score, mos_range, higher_is_better: bool = True):
    """Inverse of `mos_to_score`: a [0, 1] score (1 = best) back on the dataset's MOS scale."""
    low, high = _mos_bounds(mos_range)
    values, give_back = _as_float_values(score)
    values = values if higher_is_better else 1.0 - values
    return give_back(low + values * (high - low))


def resolve_prompt_groups(prompt_groups):
    """Turn a mix of group names and explicit 5-prompt lists into `(names, groups)`.

    `prompt_groups` may be a single name (`"default"`), an ensemble name (`"natural"`), a
    comma-separated string of names (`"sharpness,noise"`), or a list whose items are names or
    lists of exactly five prompts (worst to best). Unnamed groups are called `group<i>`.
    """
    if isinstance(prompt_groups, str):
        prompt_groups = [name.strip() for name in prompt_groups.split(",") if name.strip()]
    expanded = []
    for item in prompt_groups:
        if isinstance(item, str) and item in NAMED_PROMPT_ENSEMBLES:
            expanded.extend(NAMED_PROMPT_ENSEMBLES[item])
        else:
            expanded.append(item)
    if not expanded:
        raise ValueError("`prompt_groups` is empty: give at least one group of five prompts.")

    names, groups = [], []
    for index, item in enumerate(expanded):
        if isinstance(item, str):
            if item not in NAMED_PROMPT_GROUPS:
                known = sorted(NAMED_PROMPT_GROUPS) + sorted(NAMED_PROMPT_ENSEMBLES)
                raise ValueError(f"Unknown prompt group {item!r}; known names: {', '.join(known)}.")
            names.append(item)
            groups.append(list(NAMED_PROMPT_GROUPS[item]))
        else:
            prompts = list(item)
            if len(prompts) != len(LEVEL_NAMES) or not all(isinstance(p, str) and p for p in prompts):
                raise ValueError(
                    f"Prompt group {index} must be {len(LEVEL_NAMES)} non-empty strings "
                    f"(worst to best), got {item!r}."
                )
            names.append(f"group{index}")
            groups.append(prompts)
    if len(set(names)) != len(names):
        raise ValueError(f"Prompt group names repeat: {names}.")
    return names, groups


def check_head_name(name) -> str:
    """A head name is an identifier-like word (letters, digits, `_`, `-`; a letter first) that
    cannot collide with the pipeline's result keys; returns it."""
    if not isinstance(name, str) or not name or not name[0].isalpha() or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"Head name {name!r} must start with a letter and use only letters, digits, '_' and '-'.")
    if name in RESERVED_HEAD_NAMES or name.endswith(HEAD_KEY_SUFFIXES):
        raise ValueError(
            f"Head name {name!r} would clash with the pipeline's result keys: avoid {', '.join(RESERVED_HEAD_NAMES)} "
            f"and names ending in {', '.join(HEAD_KEY_SUFFIXES)}."
        )
    return name


# Types of the head settings that config.json may hold: a string "false" for a boolean would be
# truthy (a DMOS head read as MOS), so wrong types are refused when the config is read.
HEAD_BOOLEAN_FIELDS = ("use_adapter", "adapter_bias", "adapter_final_relu", "mos_higher_is_better")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_head_types(settings: dict, where: str) -> None:
    """Raise a `ValueError` naming `where` and the field for a setting of the wrong type."""
    problems = [f"`{field}` must be true or false, got {settings[field]!r}" for field in HEAD_BOOLEAN_FIELDS if not isinstance(settings[field], bool)]
    if not isinstance(settings["adapter_reduction"], int) or isinstance(settings["adapter_reduction"], bool):
        problems.append(f"`adapter_reduction` must be an integer, got {settings['adapter_reduction']!r}")
    if not _is_number(settings["adapter_residual_ratio"]):
        problems.append(f"`adapter_residual_ratio` must be a number, got {settings['adapter_residual_ratio']!r}")
    if settings["temperature"] is not None and not _is_number(settings["temperature"]):
        problems.append(f"`temperature` must be a number or null, got {settings['temperature']!r}")
    levels = settings["initial_level_scores"]
    if not isinstance(levels, (list, tuple)) or not all(_is_number(value) for value in levels):
        problems.append(f"`initial_level_scores` must be a list of numbers, got {levels!r}")
    if settings["training_dataset"] is not None and not isinstance(settings["training_dataset"], str):
        problems.append(f"`training_dataset` must be a string or null, got {settings['training_dataset']!r}")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems) + ".")


def check_head_settings(settings: dict, where: str = "config") -> dict:
    """Validate and fill in one head's settings (`HEAD_FIELDS`), in place; returns them.

    Prompt groups are resolved to lists of five prompts with their names; errors name `where`
    (the head) and the field."""
    unknown = sorted(set(settings) - set(HEAD_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown head settings {', '.join(unknown)}; a head has {', '.join(HEAD_FIELDS)}.")
    for field, default in HEAD_DEFAULTS.items():
        if settings.get(field) is None and default is not None:
            settings[field] = default
        settings.setdefault(field, default)
    try:
        names, groups = resolve_prompt_groups(settings["prompt_groups"] or ["default"])
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error
    if settings["prompt_group_names"] is not None and len(settings["prompt_group_names"]) == len(groups):
        names = list(settings["prompt_group_names"])
    settings["prompt_groups"], settings["prompt_group_names"] = groups, names
    prompt_input_ids = settings["prompt_input_ids"]
    if prompt_input_ids is not None and len(prompt_input_ids) != len(groups) * len(LEVEL_NAMES):
        raise ValueError(
            f"{where}: `prompt_input_ids` holds {len(prompt_input_ids)} prompts but the "
            f"{len(groups)} prompt groups need {len(groups) * len(LEVEL_NAMES)}."
        )
    if settings["initial_level_scores"] is None:
        settings["initial_level_scores"] = [0.2, 0.4, 0.6, 0.8, 1.0]
    _check_head_types(settings, where)
    if len(settings["initial_level_scores"]) != len(LEVEL_NAMES):
        raise ValueError(f"{where}: `initial_level_scores` needs {len(LEVEL_NAMES)} values, got {settings['initial_level_scores']}.")
    if settings["task"] not in TASKS:
        raise ValueError(f"{where}: `task` must be one of {TASKS}, got {settings['task']!r}.")
    if settings["mos_range"] is not None:
        try:
            settings["mos_range"] = list(_mos_bounds(settings["mos_range"]))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
    if settings["adapter_reduction"] < 1:
        raise ValueError(f"{where}: `adapter_reduction` must be >= 1, got {settings['adapter_reduction']}.")
    if settings["temperature"] is not None and not settings["temperature"] > 0:
        raise ValueError(f"{where}: `temperature` must be positive, got {settings['temperature']}.")
    return settings


class PromptGroupsView:
    """`num_prompt_groups` and `prompts`, read from `prompt_groups`, for every head's settings."""

    @property
    def num_prompt_groups(self) -> int:
        return len(self.prompt_groups)

    @property
    def prompts(self) -> list:
        """All prompts, group after group (groups x 5)."""
        return [prompt for group in self.prompt_groups for prompt in group]


class HeadConfig(PromptGroupsView):
    """Attribute view of one extra head's settings (a dict inside `UniQAConfig.heads`), with the
    same names as `UniQAConfig`'s fields so code reads a head's settings one way for every head."""

    def __init__(self, settings: dict):
        object.__setattr__(self, "_settings", settings)

    def __getattr__(self, field):
        try:
            return self._settings[field]
        except KeyError:
            raise AttributeError(field) from None

    def __setattr__(self, field, value):
        if field not in HEAD_FIELDS:
            raise AttributeError(f"{field!r} is not a head setting (one of {', '.join(HEAD_FIELDS)}).")
        self._settings[field] = value


def parse_view_policy(policy):
    """Validate a view policy; returns `("random", n)`, `("detail", n)`, `("pyramid", n)` or `(policy, None)`."""
    if policy in FIXED_VIEW_POLICIES:
        return policy, None
    for kind in COUNTED_VIEW_POLICIES:
        if isinstance(policy, str) and policy.startswith(kind) and policy[len(kind) :].isdigit():
            count = int(policy[len(kind) :])
            if count >= 1:
                return kind, count
    raise ValueError(
        f"Unknown view policy {policy!r}; use 'random<N>' (e.g. 'random10', the authors' protocol), "
        f"'detail<N>' (e.g. 'detail20'), 'pyramid<N>' (e.g. 'pyramid10', UniQA-Tiny's) or one of {', '.join(FIXED_VIEW_POLICIES)}."
    )


def view_count(policy) -> int:
    """How many views a view policy cuts from each image."""
    kind, count = parse_view_policy(policy)
    return count if kind in COUNTED_VIEW_POLICIES else {"center": 1, "resize": 1, "five_crop": 5, "ten_crop": 10}[kind]


class UniQAConfig(PromptGroupsView, PreTrainedConfig):
    r"""
    Configuration of [`UniQAModel`]: a CLIP backbone, the Multi-Cue Integration Adapter and the
    prompt groups whose similarities are turned into a score.

    Args:
        clip_config (`dict` or `CLIPConfig`, *optional*):
            The CLIP backbone (both towers). Defaults to `CLIPConfig()` (ViT-B/32-shaped); the
            released UniQA model is ViT-B/16.
        prompt_groups (`list` or `str`, *optional*):
            Groups of five prompts, worst to best (`bad ... perfect`). Items are names from
            `NAMED_PROMPT_GROUPS` (`default`, `sharpness`, `noise`, `quality`, `content`),
            ensemble names (`natural`, `aigc`) or explicit 5-string lists. Defaults to the single
            `default` group (`bad image` ... `perfect image`). Stored resolved to lists of prompts.
        prompt_group_names (`list[str]`, *optional*):
            One name per group, used as the key of per-group scores. Filled in from
            `prompt_groups`.
        prompt_input_ids (`list[list[int]]`, *optional*):
            The tokenised prompts (one unpadded id list per prompt, groups concatenated), written
            by `UniQAModel.set_prompts` (or by `UniQAModel` itself, with the shipped OpenAI BPE,
            when the CLIP vocabulary is OpenAI's) so the model can rebuild its prompt embeddings
            without a tokenizer.
        initial_level_scores (`list[float]`, *optional*):
            Initial values of the five learnable level scores `c` of eq. 7. Defaults to
            `[0.2, 0.4, 0.6, 0.8, 1.0]`.
        use_adapter (`bool`, *optional*, defaults to `True`):
            `False` gives the zero-shot model of Table VII: raw CLIP embeddings and prompts only.
        adapter_reduction (`int`, *optional*, defaults to 2):
            Hidden width of the adapter is `projection_dim // adapter_reduction` (512 -> 256).
        adapter_bias (`bool`, *optional*, defaults to `False`):
            Whether the two adapter linears have biases (the release has none).
        adapter_final_relu (`bool`, *optional*, defaults to `True`):
            ReLU after the second linear, as in the released adapter.
        adapter_residual_ratio (`float`, *optional*, defaults to 1.0):
            Weight of the raw image embedding in `adapter(x) + ratio * x`.
        temperature (`float`, *optional*):
            Softmax temperature `tau` of eq. 7. `None` uses CLIP's own `1 / logit_scale.exp()`.
        view_policy (`str`, *optional*, defaults to `"random10"`):
            Test-time views averaged into one score: `random<N>` (N random crops, seeded),
            `detail<N>` (of 2N seeded random crops, the N/2 with the most detail and N/2 others:
            blur and compression show where a picture has detail), `pyramid<N>` (N/2 seeded random
            crops of the image and N/2 of it halved, a 2x2 average: a crop of a heavily blurred
            picture is flat at its own scale but not at half of it; UniQA-Tiny's default), `center`,
            `five_crop`, `ten_crop` (five crops and their mirror images) or `resize` (the whole
            image resized to the crop size).
        view_seed (`int`, *optional*, defaults to 123):
            Seed of the `random<N>`, `detail<N>` and `pyramid<N>` crop positions; each image gets its own generator so a score
            never depends on the other images of a batch.
        task (`str`, *optional*, defaults to `"quality"`):
            `quality` (IQA) or `aesthetics` (IAA): what the score means.
        mos_range (`list[float]`, *optional*):
            `[low, high]` of the MOS scale of the training data; lets a score in [0, 1] be mapped
            back to that scale. `None` when unknown (zero-shot).
        mos_higher_is_better (`bool`, *optional*, defaults to `True`):
            `False` when the training labels were DMOS (lower = better).
        training_dataset (`str`, *optional*):
            Name of the dataset the head was trained on, for model cards and messages.
        heads (`dict`, *optional*):
            Extra named heads on the same backbone: `{name: settings}`, where settings are the
            per-head fields above (`HEAD_FIELDS`: adapter shape or `use_adapter=False`, prompts,
            level scores, task, MOS range and direction, training dataset). The top-level fields
            are the head named `"default"`. `None` (a single-head model) is not written to
            config.json, so single-head folders stay as they were.
    """

    model_type = "uniqa"
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | None = None
    prompt_groups: list | str | None = None
    prompt_group_names: list | None = None
    prompt_input_ids: list | None = None
    initial_level_scores: list | None = None
    use_adapter: bool = True
    adapter_reduction: int = 2
    adapter_bias: bool = False
    adapter_final_relu: bool = True
    adapter_residual_ratio: float = 1.0
    temperature: float | None = None
    view_policy: str = "random10"
    view_seed: int = 123
    task: str = "quality"
    mos_range: list | None = None
    mos_higher_is_better: bool = True
    training_dataset: str | None = None
    heads: dict | None = None

    def __post_init__(self, **kwargs):
        if not RUNNING_AS_REMOTE_CODE:
            kwargs.pop("custom_pipelines", None)
        settings = check_head_settings({field: getattr(self, field) for field in HEAD_FIELDS})
        for field, value in settings.items():
            setattr(self, field, value)
        parse_view_policy(self.view_policy)
        if not isinstance(self.view_seed, int) or isinstance(self.view_seed, bool):
            raise ValueError(f"config: `view_seed` must be an integer, got {self.view_seed!r}.")
        if self.heads is not None and not isinstance(self.heads, dict):
            raise ValueError(f"config: `heads` must be a dict {{name: settings}}, got {type(self.heads).__name__}.")
        heads = {}
        for name, head_settings in (self.heads or {}).items():
            if name == DEFAULT_HEAD:
                raise ValueError(f"`heads` must not name a head {DEFAULT_HEAD!r}: that one is the top-level settings.")
            if not isinstance(head_settings, dict):
                raise ValueError(f"`heads[{name!r}]` must be a dict of head settings, got {type(head_settings).__name__}.")
            heads[check_head_name(name)] = check_head_settings(dict(head_settings), where=f"heads[{name!r}]")
        self.heads = heads or None
        super().__post_init__(**kwargs)

    @property
    def head_names(self) -> list:
        """`"default"` then the extra heads, in order."""
        return [DEFAULT_HEAD, *(self.heads or {})]

    def head_config(self, head: str | None = None):
        """The settings of a head: this config for the default head (`None` or `"default"`),
        else a `HeadConfig` over `heads[head]`. Unknown names raise a `ValueError` listing the heads."""
        if head in (None, DEFAULT_HEAD):
            return self
        if head not in (self.heads or {}):
            raise ValueError(f"This UniQA model has no head {head!r}; its heads: {', '.join(self.head_names)}.")
        return HeadConfig(self.heads[head])

    def to_dict(self):
        output = super().to_dict()
        if not output.get("heads"):
            output.pop("heads", None)  # a single-head config.json keeps exactly its old keys
        return output


UniQAConfig.register_for_auto_class()

__all__ = ["UniQAConfig", "HeadConfig", "DEFAULT_HEAD", "HEAD_FIELDS", "check_head_name", "NAMED_PROMPT_GROUPS", "NAMED_PROMPT_ENSEMBLES", "LEVEL_NAMES", "mos_to_score", "score_to_mos"]
