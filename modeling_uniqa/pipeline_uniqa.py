"""`pipeline("image-quality")`: score images with a UniQA model.

Shipped as remote code with every saved model (see `UniQAModel.save_pretrained`): imports only
`torch`, `transformers` and its sibling files.
"""

from transformers import Pipeline

from .configuration_uniqa import LEVEL_NAMES, parse_view_policy


class ImageQualityPipeline(Pipeline):
    """
    Scores images with a UniQA model. Inputs: a file path, PIL image or numpy array, or a list of
    them. Each image gives a dict:

    - `score`: normalised quality / aesthetics in [0, 1]-ish units, 1 = best;
    - `mos`: the score on the training data's MOS scale (when the model knows it);
    - `group_scores` (with `return_group_scores=True`): `{group name: score}`;
    - `level_probs` (with `return_level_probs=True`): `{group name: {level: probability}}`.

    Call options: `view_policy` (`random10`, `center`, `five_crop`, `ten_crop`, `resize`, ...;
    default: the model's), `view_seed`, `batch_size` (images per forward).

    Example:
        >>> scorer = pipeline("image-quality", model="path/to/uniqa")
        >>> scorer(["a.jpg", "b.png"], batch_size=8, view_policy="five_crop")
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

    def _sanitize_parameters(self, view_policy=None, view_seed=None, return_group_scores=None, return_level_probs=None, **kwargs):
        preprocess_params, postprocess_params = {}, {}
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

    def preprocess(self, image, view_policy=None, view_seed=None):
        policy = view_policy or self.model.config.view_policy
        seed = self.model.config.view_seed if view_seed is None else view_seed
        return self.image_processor(image, view_policy=policy, view_seed=seed, return_tensors="pt")

    def _forward(self, model_inputs):
        pixel_values = model_inputs["pixel_values"].to(self.model.device)
        outputs = self.model(pixel_values=pixel_values)
        return {"scores": outputs.scores, "group_scores": outputs.group_scores, "level_probs": outputs.level_probs}

    def postprocess(self, model_outputs, return_group_scores=False, return_level_probs=False):
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
