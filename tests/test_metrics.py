import numpy as np
import pytest
from scipy import stats

from train_scripts.common.metrics import compute_metrics, krcc, plcc, rmse, srcc


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
    [([0.1, np.nan, 0.3], [1, 2, 3], "non-finite predictions"), ([0.1, 0.2], [1, 2, 3], "2 predictions for 3"), ([1], [1], "at least 3"), ([0.1, 0.2], [1, 2], "at least 3 items, got 2")],
)
def test_bad_inputs_are_refused(predictions, targets, message):
    with pytest.raises(ValueError, match=message):
        srcc(predictions, targets)


def test_constant_input_gives_nan_correlations_with_a_warning_naming_it():
    with pytest.warns(stats.ConstantInputWarning) as caught:
        result = compute_metrics([0.5, 0.5, 0.5, 0.5], [1, 2, 3, 4])
    assert np.isnan([result["srcc"], result["plcc"], result["krcc"]]).all()
    assert result["rmse"] == pytest.approx(np.sqrt(5.25))  # RMSE stays defined
    assert {str(w.message).split(":")[0] for w in caught} == {"SRCC", "PLCC", "KRCC"}
    assert all("predictions are constant" in str(w.message) for w in caught)
    with pytest.warns(stats.ConstantInputWarning, match="targets are constant"):
        assert np.isnan(krcc([1, 2, 3], [4, 4, 4]))


def test_logistic_plcc_equals_a_direct_scipy_fit():
    from scipy.optimize import curve_fit

    from train_scripts.common.metrics import compute_metrics, logistic_4, plcc_logistic

    rng = np.random.default_rng(1)
    targets = rng.uniform(0, 100, size=150)
    predictions = 1 / (1 + np.exp(-(targets - 50) / 15)) + rng.normal(0, 0.05, size=150)  # non-linear in the MOS
    initial = [targets.max(), targets.min(), predictions.mean(), predictions.std()]
    params, _ = curve_fit(logistic_4, predictions, targets, p0=initial, maxfev=20000)
    expected = stats.pearsonr(logistic_4(predictions, *params), targets)[0]
    assert plcc_logistic(predictions, targets) == pytest.approx(expected, abs=1e-9)
    assert plcc_logistic(predictions, targets) > plcc(predictions, targets)  # the fit removes the non-linearity
    metrics = compute_metrics(predictions, targets, logistic=True)
    assert set(metrics) == {"srcc", "plcc", "krcc", "rmse", "plcc_logistic"}
    assert set(compute_metrics(predictions, targets)) == {"srcc", "plcc", "krcc", "rmse"}


def test_evaluate_module_loads_offline_and_wraps_the_functions():
    import os

    import evaluate

    from tests.helpers import REPO_ROOT
    from train_scripts.common.metrics import compute_metrics

    metric = evaluate.load(os.path.join(REPO_ROOT, "train_scripts", "common", "iqa_metric"))
    rng = np.random.default_rng(2)
    targets = rng.uniform(1, 5, size=50)
    predictions = targets + rng.normal(0, 0.5, size=50)
    result = metric.compute(predictions=predictions.tolist(), references=targets.tolist(), logistic=True)
    expected = compute_metrics(predictions, targets, logistic=True)
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9)
