"""MOS-guided captioning prompts, per-caption seeds and the offline template captioner
(method.md section 1, step 1; Fig. 2 of the paper).

* :data:`PROMPT_TEMPLATES`: the two prompts of Fig. 2, exactly, with ``{level}`` standing for
  one of ``bad, poor, fair, good, perfect`` (the MOS level of the image);
  :func:`load_prompt_templates` reads replacements from a file.
* :func:`caption_seed`: the seed of one caption, a function of the run seed, the image and the
  caption's index only, so a caption does not depend on batching, sharding or resuming.
* :class:`TemplateCaptioner`: writes deterministic MOS-guided sentences without an MLLM (varied
  wording per level, task and seed), so the whole pipeline runs offline. Its records say
  ``template: true``. Given the image's distortion (``"strong JPEG compression"``, from a
  synthetic set's file names), a quality caption names it instead of describing generic
  factors, as an MLLM that sees the distortion would.

The MLLM backend lives in :mod:`train_scripts.common.hf_captioner`.
"""

from __future__ import annotations

import hashlib
import json
import random

from data_builders.levels import LEVEL_NAMES

__all__ = [
    "DEFAULT_CAPTIONS_PER_IMAGE",
    "LEVEL_PLACEHOLDER",
    "PROMPT_TEMPLATES",
    "TASKS",
    "TemplateCaptioner",
    "caption_seed",
    "format_prompt",
    "load_prompt_templates",
]

TASKS = ("quality", "aesthetics")
LEVEL_PLACEHOLDER = "{level}"

# Fig. 2 of the paper, word for word.
PROMPT_TEMPLATES = {
    "quality": (
        "What you are given is a {level} quality image. "
        "Evaluate image quality based on factors such as sharpness, color balance, and noise level."
    ),
    "aesthetics": (
        "What you get is an image of {level} aesthetics. "
        "Evaluate image aesthetics based on factors such as content, color, lighting, and composition."
    ),
}

# The paper: 3 captions per image for IQA (FLIVE -> 119,421), 1 for IAA (AVA -> 234,090).
DEFAULT_CAPTIONS_PER_IMAGE = {"quality": 3, "aesthetics": 1}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def format_prompt(template: str, level: str) -> str:
    """The prompt for one image: ``template`` with ``{level}`` replaced (other braces kept)."""
    if level not in LEVEL_NAMES:
        raise ValueError(f"level must be one of {LEVEL_NAMES}, got {level!r}")
    if LEVEL_PLACEHOLDER not in template:
        raise ValueError(f"a prompt template must contain {LEVEL_PLACEHOLDER}, got {template!r}")
    return template.replace(LEVEL_PLACEHOLDER, level)


def load_prompt_templates(path: str, task: str) -> str:
    """The prompt template for ``task`` from a file.

    The file is either JSON, an object ``{"quality": "...{level}...", "aesthetics": "..."}``
    (either key may be absent when not used), or plain text: the template itself (surrounding
    whitespace stripped). Errors name the file and what was expected.
    """
    _check_task(task)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ValueError(f"{path}: cannot read the prompt file ({error})") from error
    template = text.strip()
    if template.startswith("{") and not template.startswith(LEVEL_PLACEHOLDER):
        try:
            data = json.loads(template)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from error
        if not isinstance(data, dict) or not isinstance(data.get(task), str):
            raise ValueError(f'{path}: expected a JSON object with a string "{task}", got keys {sorted(data) if isinstance(data, dict) else type(data).__name__}')
        template = data[task].strip()
    if LEVEL_PLACEHOLDER not in template:
        raise ValueError(f"{path}: the {task} prompt must contain {LEVEL_PLACEHOLDER} (where the MOS level goes), got {template!r}")
    return template


def caption_seed(seed: int, image: str, caption_index: int) -> int:
    """A 31-bit seed for caption ``caption_index`` of ``image`` in a run seeded with ``seed``.

    A hash of the three (not ``seed + i``), so captions of different images or runs never share
    a seed and the value does not depend on the order in which captions are produced.
    """
    digest = hashlib.sha256(f"{int(seed)}\0{image}\0{int(caption_index)}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)


# --------------------------------------------------------------------------------------------
# The template captioner
# --------------------------------------------------------------------------------------------
# For each task: opening sentences, then per factor of the prompt one phrase list per level
# (bad .. perfect). A caption is an opening plus every factor's phrase, factors shuffled.
_OPENINGS = {
    "quality": [
        "This is a {level} quality image.",
        "The overall quality of this image is {level}.",
        "Judged on its technical quality, this photo is {level}.",
    ],
    "aesthetics": [
        "This is an image of {level} aesthetics.",
        "Aesthetically, this photo is {level}.",
        "The aesthetic appeal of this image is {level}.",
    ],
}
_FACTORS = {
    "quality": {
        "sharpness": [
            ["the image is heavily blurred and details are lost", "edges are smeared by strong blur"],
            ["details are soft and noticeably blurry", "the focus is off and fine textures are unclear"],
            ["sharpness is acceptable though fine details are a little soft", "the subject is reasonably sharp but not crisp"],
            ["the image is sharp with clear details", "edges are crisp and sharp, textures well defined"],
            ["the image is tack sharp with every fine detail resolved", "focus is excellent and textures are crystal clear"],
        ],
        "color balance": [
            ["colors are badly distorted by a strong cast", "the colors look washed out and unnatural"],
            ["colors are dull and slightly off", "a visible color cast spoils the balance"],
            ["the color balance is acceptable but a little flat", "colors are mostly natural with minor shifts"],
            ["colors are natural and well balanced", "the color balance is pleasing and accurate"],
            ["colors are vivid, accurate and perfectly balanced", "the color rendition is rich and faithful"],
        ],
        "noise": [
            ["heavy noise and artifacts cover the image", "strong grain and compression artifacts are everywhere"],
            ["noise is clearly visible in flat areas", "distracting grain and some artifacts remain"],
            ["some noise is visible but not disturbing", "mild grain appears in the darker regions"],
            ["noise is low and hardly noticeable", "the image is clean with little grain"],
            ["there is no visible noise or artifact", "the image is perfectly clean and free of noise"],
        ],
    },
    "aesthetics": {
        "content": [
            ["the subject is dull and the scene is cluttered", "nothing in the content draws the eye"],
            ["the subject is ordinary and lacks a clear story", "the content is plain and somewhat distracting"],
            ["the subject is pleasant but unremarkable", "the content is clear though not very engaging"],
            ["the subject is interesting and well chosen", "the content tells a clear and engaging story"],
            ["the subject is captivating and memorable", "the content is striking and full of emotion"],
        ],
        "color": [
            ["the colors clash and look muddy", "the palette is drab and unappealing"],
            ["the colors are flat and a bit dull", "the palette lacks harmony"],
            ["the colors are acceptable but unremarkable", "the palette is balanced yet plain"],
            ["the colors are harmonious and appealing", "the palette supports the mood well"],
            ["the colors are rich and beautifully harmonious", "the palette is vivid and perfectly judged"],
        ],
        "lighting": [
            ["the lighting is harsh and unflattering", "poor exposure hides the subject"],
            ["the lighting is flat and uninspiring", "the exposure is a little off"],
            ["the lighting is adequate but ordinary", "the exposure is correct if unexciting"],
            ["the lighting is soft and flattering", "good light gives the scene depth"],
            ["the lighting is dramatic and masterfully used", "beautiful light sculpts the whole scene"],
        ],
        "composition": [
            ["the composition is unbalanced and awkward", "the framing cuts the subject badly"],
            ["the composition is weak and the framing is loose", "the subject is placed without intent"],
            ["the composition is acceptable but conventional", "the framing is tidy though predictable"],
            ["the composition is balanced and guides the eye", "the framing places the subject well"],
            ["the composition is flawless and elegant", "every element is placed with perfect balance"],
        ],
    },
}


def _sentence(phrase: str) -> str:
    return phrase[0].upper() + phrase[1:] + "."


# A quality caption of an image whose distortion is known: "{distortion}" is e.g. "strong JPEG compression".
_DISTORTION_SENTENCES = [
    "It is degraded by {distortion}.",
    "The picture shows {distortion}.",
    "{distortion} is visible across the image.",
    "The main defect is {distortion}.",
]


class TemplateCaptioner:
    """Offline, deterministic MOS-guided captions: a stand-in for an MLLM.

    ``caption(level, task, seed)`` picks an opening and one phrase per factor of the task's
    prompt (sharpness, color balance, noise / content, color, lighting, composition) for the
    level, in an order drawn from ``seed``: the same arguments always give the same sentence,
    different seeds mostly give different wordings, and each level reads differently.
    With ``distortion`` (a phrase such as ``"strong Gaussian blur"``) a quality caption is the
    opening plus a sentence naming the distortion: generic factor phrases would contradict it
    (a "heavily blurred" caption for a noisy image).
    """

    name = "template"

    def caption(self, level: str, task: str, seed: int, distortion: str | None = None) -> str:
        _check_task(task)
        if level not in LEVEL_NAMES:
            raise ValueError(f"level must be one of {LEVEL_NAMES}, got {level!r}")
        rng = random.Random(seed)
        index = LEVEL_NAMES.index(level)
        opening = rng.choice(_OPENINGS[task]).replace(LEVEL_PLACEHOLDER, level)
        if distortion is not None and task == "quality":
            sentence = rng.choice(_DISTORTION_SENTENCES).format(distortion=distortion)
            return f"{opening} {sentence[0].upper()}{sentence[1:]}"
        factors = list(_FACTORS[task].values())
        rng.shuffle(factors)
        return " ".join([opening, *(_sentence(rng.choice(phrases[index])) for phrases in factors)])

    @staticmethod
    def meaning(level: str, task: str, distortion: str | None = None) -> str:
        """What a caption of :meth:`caption` states, whatever its wording: ``"quality|bad|strong
        JPEG compression"``. Two captions with equal meanings say the same thing in other words
        (``train_pretrain.py --meaning_positives`` counts their images as each other's positives)."""
        _check_task(task)
        if distortion is not None and task == "quality":
            return f"{task}|{level}|{distortion}"
        return f"{task}|{level}"

    def settings(self) -> dict:
        """What is recorded as the generation settings of template captions."""
        return {"backend": "template", "template": True}

