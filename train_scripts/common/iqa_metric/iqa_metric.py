"""IQA/IAA correlation metrics (SRCC, PLCC, KRCC, RMSE) as an `evaluate` metric module.

Load it offline from this folder; the maths lives in `train_scripts.common.metrics` (numpy and
scipy), this file only wraps it::

    import evaluate
    metric = evaluate.load("train_scripts/common/iqa_metric")
    metric.compute(predictions=[0.1, 0.5, 0.7], references=[20.0, 41.0, 90.0])
    metric.compute(predictions=..., references=..., logistic=True)  # adds plcc_logistic
"""

import datasets
import evaluate

from train_scripts.common.metrics import compute_metrics

_DESCRIPTION = """
Correlation between predicted quality (or aesthetics) scores and mean opinion scores:
Spearman (SRCC), Pearson (PLCC, raw; optionally after the 4-parameter logistic fit),
Kendall (KRCC) and the root mean squared error (RMSE, in the units of the inputs).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted scores.
    references (`list` of `float`): mean opinion scores, same length.
    logistic (`bool`, defaults to `False`): also return `plcc_logistic`, the PLCC after fitting
        the 4-parameter logistic from the predictions to the references.
Returns:
    `dict` with `srcc`, `plcc`, `krcc`, `rmse` (and `plcc_logistic`).
Examples:
    >>> metric = evaluate.load("train_scripts/common/iqa_metric")
    >>> round(metric.compute(predictions=[1, 2, 3, 4], references=[1, 3, 2, 4])["srcc"], 2)
    0.8
"""

_CITATION = """
UniQA: Unified Vision-Language Pre-training for Image Quality and Aesthetic Assessment.
Hantao Zhou, Longxiang Tang, Rui Yang, Guanyi Qin, Yan Zhang, Yutao Liu, Xiu Li, Runze Hu,
Guangtao Zhai.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IqaMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references, logistic: bool = False):
        return compute_metrics(predictions, references, logistic=logistic)
