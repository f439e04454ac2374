import pytest
import torch

from train_scripts.common.weight_average import WeightAverage


def test_the_average_follows_the_ema_rule_and_swaps_back():
    layer = torch.nn.Linear(2, 1)
    average = WeightAverage(layer, decay=0.75)
    steps = [torch.full_like(layer.weight, value) for value in (1.0, 3.0, -2.0)]
    for weight in steps:
        with torch.no_grad():
            layer.weight.copy_(weight)
        average.update(layer)
    expected = 0.75 * (0.75 * 1.0 + 0.25 * 3.0) + 0.25 * -2.0  # the first update copies
    with average.swapped_into(layer):
        assert torch.allclose(layer.weight, torch.full_like(layer.weight, expected))
    assert torch.equal(layer.weight, steps[-1])  # its own weights again
    average.copy_into(layer)
    assert torch.allclose(layer.weight, torch.full_like(layer.weight, expected))


def test_decay_zero_is_the_last_step_and_bad_decays_are_refused():
    layer = torch.nn.Linear(2, 1)
    average = WeightAverage(layer, decay=0.0)
    for value in (1.0, 5.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update(layer)
    with average.swapped_into(layer):
        assert torch.equal(layer.weight, torch.full_like(layer.weight, 5.0))
    for decay in (1.0, -0.1):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(layer, decay)
