"""Model cards for UniQA model and adapter directories (huggingface_hub `ModelCard`)."""

from .card import ModelCardError, merge_eval_results, read_model_info, results_to_eval_results, write_model_card

__all__ = ["ModelCardError", "merge_eval_results", "read_model_info", "results_to_eval_results", "write_model_card"]
