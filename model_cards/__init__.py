"""Model cards for UniQA model and adapter directories (huggingface_hub `ModelCard`)."""

from .card import (
    ModelCardError,
    inherited_license,
    merge_eval_results,
    read_model_info,
    results_to_eval_results,
    write_model_card,
)

__all__ = ["ModelCardError", "inherited_license", "merge_eval_results", "read_model_info", "results_to_eval_results", "write_model_card"]
