"""`pipeline("image-quality")`: score images with a UniQA model.

Shipped as remote code with every saved model (see `UniQAModel.save_pretrained`): imports only
`torch`, `transformers` and its sibling files.
"""

import torch
from transformers import Pipeline

from .configuration_uniqa import DEFAULT_HEAD, LEVEL_NAMES, parse_view_policy, view_count

ERROR_MODES = ("raise", "return")
OUTPUT_FIELDS = ("scores", "group_scores", "level_probs")


def _output_key(head: str, field: str) -> str:
    """Flat key of one head's output in `_forward`'s dict (the pipeline batches flat tensors)."""
    return field if head == DEFAULT_HEAD else f"heads.{head}.{field}"


def _result_key(head: str, key: str) -> str:
    """Result key: the default head's `score`, `mos`, ...; a head X's `X`, `X_mos`, `X_group_scores`, ..."""
    if head == DEFAULT_HEAD:
        return key
    return head if key == "score" else f"{head}_{key}"


class ImageQualityPipeline(Pipeline):
    """
    Scores images with a UniQA model. Inputs: a file path, PIL image or numpy array, or a list of
    them. Each image gives a dict:

    - `score`: normalised quality / aesthetics in [0, 1]-ish units, 1 = best;
    - `mos`: the score on the training data's MOS scale (when the model knows it);
    - `group_scores` (with `return_group_scores=True`): `{group name: score}`;
    - `level_probs` (with `return_level_probs=True`): `{group name: {level: probability}}`;
    - for each extra named head X of the model (`uniqa heads add`): `X` (its score), `X_mos`,
      and with the options above `X_group_scores`, `X_level_probs`. One image-tower pass feeds
      every head. `heads=[...]` keeps only the heads named (`"default"` is the `score` head).

    Call options: `heads` (default: all), `view_policy` (`random10`, `center`, `five_crop`, `ten_crop`, `resize`, ...;
    default: the model's), `view_seed`, `batch_size` (images per forward), and `errors`:

    - `errors="raise"` (default, the transformers convention): an image that cannot be read or
      processed raises, and the call returns nothing;
    - `errors="return"`: that image's result is `{"error": "<exception type>: <message>"}` (the
      message names the file when there is one) and the other images are scored as usual, in
      the same order. Only reading and processing images is guarded; a failing forward raises.

    Example:
        >>> scorer = pipeline("image-quality", model="path/to/uniqa")
        >>> scorer(["a.jpg", "b.png"], batch_size=8, view_policy="five_crop")
        >>> scorer(["a.jpg", "broken.jpg"], errors="return")
        [{'score': 0.71}, {'error': "UniQAImageError: broken.jpg: ..."}]
    """

    _load_processor = False
    _load_image_processor = None  # load the saved one when there is one, else the model default
    _load_feature_extractor = False
    _load_video_processor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.image_processor is None:  # a model object given without a processor
            self.image_processor = self.model.default_image_processor()

    def _sanitize_parameters(
        self,
        view_policy=None,
        view_seed=None,
        return_group_scores=None,
        return_level_probs=None,
        errors=None,
        heads=None,
        **kwargs,
    ):
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if heads is not None:
            heads = [heads] if isinstance(heads, str) else list(heads)
            unknown = [name for name in heads if name not in self.model.head_names]
            if unknown or not heads:
                raise ValueError(
                    f"`heads` must name some of this model's heads ({', '.join(self.model.head_names)}), got {heads!r}."
                )
            forward_params["heads"] = postprocess_params["heads"] = heads
        if errors is not None:
            if errors not in ERROR_MODES:
                raise ValueError(f"`errors` must be one of {ERROR_MODES}, got {errors!r}.")
            preprocess_params["errors"] = errors
        if view_policy is not None:
            parse_view_policy(view_policy)
            preprocess_params["view_policy"] = view_policy
        if view_seed is not None:
            preprocess_params["view_seed"] = view_seed
        if return_group_scores is not None:
            postprocess_params["return_group_scores"] = return_group_scores
        if return_level_probs is not None:
            postprocess_params["return_level_probs"] = return_level_probs
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, image, view_policy=None, view_seed=None, errors="raise"):
        policy = view_policy or self.model.config.view_policy
        seed = self.model.config.view_seed if view_seed is None else view_seed
        if errors == "raise":
            return self.image_processor(image, view_policy=policy, view_seed=seed, return_tensors="pt")
        # errors="return": every item carries an `error` entry (batches need the same keys) and a
        # failed one a placeholder of the right shape, which `_forward` leaves out.
        try:
            pixel_values = self.image_processor(image, view_policy=policy, view_seed=seed, return_tensors="pt")["pixel_values"]
            error = None
        except Exception as exception:  # any failure of this one image becomes its result
            crop = self.image_processor.crop_size
            pixel_values = torch.zeros(1, view_count(policy), 3, crop, crop)
            error = f"{type(exception).__name__}: {exception}"
        return {"pixel_values": pixel_values, "error": error}

    def _model_outputs(self, pixel_values, heads):
        """Flat `{key: tensor}` of every selected head's outputs (the default head is always run)."""
        outputs = self.model(pixel_values=pixel_values.to(self.model.device), heads=heads)
        flat = {_output_key(DEFAULT_HEAD, field): outputs[field] for field in OUTPUT_FIELDS}
        for name, head_output in (outputs.head_outputs or {}).items():
            flat.update({_output_key(name, field): head_output[field] for field in OUTPUT_FIELDS})
        return flat

    def _forward(self, model_inputs, heads=None):
        pixel_values = model_inputs["pixel_values"]
        if "error" not in model_inputs:
            return self._model_outputs(pixel_values, heads)
        errors = model_inputs["error"]
        errors = errors if isinstance(errors, list) else [errors]  # a batch gives a list, one item not
        valid = torch.tensor([error is None for error in errors])
        results = {}
        for name in self.model.head_names if heads is None else [DEFAULT_HEAD, *heads]:
            groups = self.model.config.head_config(name).num_prompt_groups
            results[_output_key(name, "scores")] = torch.full((len(errors),), float("nan"))
            results[_output_key(name, "group_scores")] = torch.full((len(errors), groups), float("nan"))
            results[_output_key(name, "level_probs")] = torch.full((len(errors), groups, len(LEVEL_NAMES)), float("nan"))
        if valid.any():
            for key, value in self._model_outputs(pixel_values[valid], heads).items():
                results[key][valid] = value.detach().float().cpu()
        return {**results, "error": errors}

    def postprocess(self, model_outputs, return_group_scores=False, return_level_probs=False, heads=None):
        error = model_outputs.get("error")
        error = error[0] if isinstance(error, list) else error
        if error is not None:
            return {"error": error}
        model, result = self.model, {}
        for head in model.head_names if heads is None else [name for name in model.head_names if name in heads]:
            names = model.config.head_config(head).prompt_group_names
            score = model_outputs[_output_key(head, "scores")].reshape(-1)[0].float()
            result[_result_key(head, "score")] = score.item()
            mos = model.score_to_mos(score, head)
            if mos is not None:
                result[_result_key(head, "mos")] = float(mos)
            if return_group_scores:
                group_scores = model_outputs[_output_key(head, "group_scores")].reshape(-1).tolist()
                result[_result_key(head, "group_scores")] = dict(zip(names, group_scores))
            if return_level_probs:
                level_probs = model_outputs[_output_key(head, "level_probs")].reshape(len(names), len(LEVEL_NAMES)).tolist()
                result[_result_key(head, "level_probs")] = {name: dict(zip(LEVEL_NAMES, probs)) for name, probs in zip(names, level_probs)}
        return result


__all__ = ["ImageQualityPipeline"]
