"""UniQA for Hugging Face: model, config, image processor and `pipeline("image-quality")`.

Importing this package registers `AutoConfig`, `AutoModel`, `AutoImageProcessor` and the
`image-quality` pipeline task, and marks the classes for remote code, so a saved model loads with
`AutoModel.from_pretrained(dir)` here and with `trust_remote_code=True` where this package is absent.
`DEFAULT_MODEL` is the folder of UniQA-Tiny, the small model shipped with the package.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .clip_tokenizer import build_clip_tokenizer, openai_clip_tokenizer, resolve_prompt_tokenizer
from .configuration_uniqa import (
    LEVEL_NAMES,
    NAMED_PROMPT_ENSEMBLES,
    NAMED_PROMPT_GROUPS,
    UniQAConfig,
    mos_to_score,
    score_to_mos,
)
from .core import moved as _moved
from .core.default_model import DEFAULT_MODEL
from .modeling_uniqa import IMAGE_QUALITY_TASK, MultiCueAdapter, UniQAModel, UniQAOutput, UniQAPreTrainedModel
from .pipeline_uniqa import ImageQualityPipeline
from .processing_uniqa import UniQAImageError, UniQAImageProcessor, load_image

__version__ = "0.1.0"

# The flat layout's module paths (`modeling_uniqa.score_images`...) keep working for one release, with a warning.
_moved.install()

AutoConfig.register(UniQAConfig.model_type, UniQAConfig, exist_ok=True)
AutoModel.register(UniQAConfig, UniQAModel, exist_ok=True)
AutoImageProcessor.register(UniQAConfig, slow_image_processor_class=UniQAImageProcessor, exist_ok=True)
# `pipeline("image-quality")` without a model uses UniQA-Tiny, shipped in the package.
PIPELINE_REGISTRY.register_pipeline(
    IMAGE_QUALITY_TASK, pipeline_class=ImageQualityPipeline, pt_model=AutoModel, type="image",
    default={"model": (DEFAULT_MODEL, None)},
)

__all__ = [
    "DEFAULT_MODEL",
    "ImageQualityPipeline",
    "LEVEL_NAMES",
    "MultiCueAdapter",
    "NAMED_PROMPT_ENSEMBLES",
    "NAMED_PROMPT_GROUPS",
    "UniQAConfig",
    "UniQAImageError",
    "UniQAImageProcessor",
    "UniQAModel",
    "UniQAOutput",
    "UniQAPreTrainedModel",
    "build_clip_tokenizer",
    "load_image",
    "mos_to_score",
    "openai_clip_tokenizer",
    "resolve_prompt_tokenizer",
    "score_to_mos",
]
