"""`pipeline("image-quality")`: score images with a UniQA model.

Shipped as remote code with every saved model (see `UniQAModel.save_pretrained`): imports only
`torch`, `transformers` and its sibling files.
"""

import torch
from transformers import Pipeline

from .configuration_uniqa import LEVEL_NAMES, parse_view_policy, view_count

ERROR_MODES = ("raise", "return")


class ImageQualityPipeline(Pipeline):
    """
    Scores images with a UniQA model. Inputs: a file path, PIL image or numpy array, or a list of
    them. Each image gives a dict:

    - `score`: normalised quality / aesthetics in [0, 1]-ish units, 1 = best;
    - `mos`: the score on the training data's MOS scale (when the model knows it);
    - `group_scores` (with `return_group_scores=True`): `{group name: score}`;
    - `level_probs` (with `return_level_probs=True`): `{group name: {level: probability}}`.

    Call options: `view_policy` (`random10`, `center`, `five_crop`, `ten_crop`, `resize`, ...;
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
        self, view_policy=None, view_seed=None, return_group_scores=None, return_level_probs=None, errors=None, **kwargs
    ):
        preprocess_params, postprocess_params = {}, {}
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
        return preprocess_params, {}, postprocess_params

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

    def _forward(self, model_inputs):
        pixel_values = model_inputs["pixel_values"]
        if "error" not in model_inputs:
            outputs = self.model(pixel_values=pixel_values.to(self.model.device))
            return {"scores": outputs.scores, "group_scores": outputs.group_scores, "level_probs": outputs.level_probs}
        errors = model_inputs["error"]
        errors = errors if isinstance(errors, list) else [errors]  # a batch gives a list, one item not
        valid = torch.tensor([error is None for error in errors])
        groups = self.model.config.num_prompt_groups
        results = {
            "scores": torch.full((len(errors),), float("nan")),
            "group_scores": torch.full((len(errors), groups), float("nan")),
            "level_probs": torch.full((len(errors), groups, len(LEVEL_NAMES)), float("nan")),
        }
        if valid.any():
            outputs = self.model(pixel_values=pixel_values[valid].to(self.model.device))
            for key, value in zip(("scores", "group_scores", "level_probs"), (outputs.scores, outputs.group_scores, outputs.level_probs)):
                results[key][valid] = value.detach().float().cpu()
        return {**results, "error": errors}

    def postprocess(self, model_outputs, return_group_scores=False, return_level_probs=False):
        error = model_outputs.get("error")
        error = error[0] if isinstance(error, list) else error
        if error is not None:
            return {"error": error}
        model, names = self.model, self.model.config.prompt_group_names
        score = model_outputs["scores"].reshape(-1)[0].float()
        result = {"score": score.item()}
        mos = model.score_to_mos(score)
        if mos is not None:
            result["mos"] = float(mos)
        if return_group_scores:
            group_scores = model_outputs["group_scores"].reshape(-1).tolist()
            result["group_scores"] = dict(zip(names, group_scores))
        if return_level_probs:
            level_probs = model_outputs["level_probs"].reshape(len(names), len(LEVEL_NAMES)).tolist()
            result["level_probs"] = {name: dict(zip(LEVEL_NAMES, probs)) for name, probs in zip(names, level_probs)}
        return result


__all__ = ["ImageQualityPipeline"]
