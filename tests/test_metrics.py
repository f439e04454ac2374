import numpy as np
import pytest
from scipy import stats

from train_scripts.common.metrics import krcc, plcc, rmse, srcc


def test_metrics_equal_scipy_on_random_data():
    rng = np.random.default_rng(0)
    targets = rng.uniform(0, 100, size=200)
    predictions = targets / 100 + rng.normal(0, 0.2, size=200)
    assert srcc(predictions, targets) == pytest.approx(stats.spearmanr(predictions, targets)[0], abs=1e-12)
    assert plcc(predictions, targets) == pytest.approx(stats.pearsonr(predictions, targets)[0], abs=1e-12)
    assert krcc(predictions, targets) == pytest.approx(stats.kendalltau(predictions, targets)[0], abs=1e-12)
    assert rmse(predictions, targets) == pytest.approx(np.sqrt(np.mean((predictions - targets) ** 2)))
    assert srcc(targets, targets) == pytest.approx(1.0)
    assert srcc(-targets, targets) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("predictions", "targets", "message"),
    [([0.1, np.nan, 0.3], [1, 2, 3], "non-finite predictions"), ([0.1, 0.2], [1, 2, 3], "2 predictions for 3"), ([1], [1], "at least 2")],
)
def test_bad_inputs_are_refused(predictions, targets, message):
    with pytest.raises(ValueError, match=message):
        srcc(predictions, targets)
