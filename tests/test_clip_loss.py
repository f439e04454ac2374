"""ClipLoss: the symmetric CLIP loss, and exactness of global-batch negatives under real DDP."""

import torch
import torch.nn.functional as F

from tests.clip_loss_ddp_worker import build
from tests.helpers import launch_two_processes
from train_scripts.common.clip_loss import ClipLoss, gather_features


def test_clip_loss_is_the_symmetric_cross_entropy():
    torch.manual_seed(0)
    images = F.normalize(torch.randn(5, 4), dim=-1)
    texts = F.normalize(torch.randn(5, 4), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * images @ texts.t()
    expected = sum(-torch.log_softmax(logits, 1)[i, i] - torch.log_softmax(logits, 0)[i, i] for i in range(5)) / 10
    torch.testing.assert_close(ClipLoss()(images, texts, scale), expected)
    # matched pairs give a low loss, shuffled ones a high one
    assert (
        ClipLoss()(images, images, torch.tensor(100.0))
        < 1e-3
        < ClipLoss()(images, images.roll(1, 0), torch.tensor(100.0))
    )


def test_groups_make_views_of_one_image_each_others_positives():
    torch.manual_seed(1)
    images = F.normalize(torch.randn(6, 4), dim=-1)
    texts = F.normalize(torch.randn(6, 4), dim=-1)
    scale = torch.tensor(5.0)
    # distinct groups: exactly the plain loss
    torch.testing.assert_close(ClipLoss()(images, texts, scale, groups=torch.arange(6)), ClipLoss()(images, texts, scale))
    # rows 0-2 are crops of one image, 3-5 of another: the target spreads over the group
    groups = torch.tensor([7, 7, 7, 2, 2, 2])
    logits = scale * images @ texts.t()
    same = (groups[:, None] == groups[None, :]).float() / 3
    expected = (-(same * torch.log_softmax(logits, 1)).sum(1).mean() - (same * torch.log_softmax(logits.t(), 1)).sum(1).mean()) / 2
    torch.testing.assert_close(ClipLoss()(images, texts, scale, groups=groups), expected)
    # which caption of its group a crop is paired with does not matter; without groups it does
    swapped = texts[[1, 2, 0, 3, 4, 5]]
    torch.testing.assert_close(
        ClipLoss()(images, swapped, scale, groups=groups), ClipLoss()(images, texts, scale, groups=groups)
    )
    assert not torch.isclose(ClipLoss()(images, swapped, scale), ClipLoss()(images, texts, scale))


def test_gather_is_the_identity_on_one_process_and_shapes_are_checked():
    features = torch.randn(3, 4)
    assert gather_features(features) is features
    try:
        ClipLoss()(torch.randn(3, 4), torch.randn(2, 4), torch.tensor(1.0))
    except ValueError as error:
        assert "differ in shape" in str(error)
    else:
        raise AssertionError("a shape mismatch must raise")


def test_two_processes_give_the_loss_and_gradients_of_one_process(tmp_path):
    model, images, texts = build()
    loss = ClipLoss()(*model(images, texts))
    loss.backward()
    expected = {name: p.grad for name, p in model.named_parameters()}

    result = launch_two_processes(["tests/clip_loss_ddp_worker.py", str(tmp_path)], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert out["world"] == 2
        torch.testing.assert_close(out["loss"], loss.detach(), atol=1e-5, rtol=0)
        for name, grad in expected.items():
            # DDP's averaged gradient equals the one-process gradient of the global-batch loss
            torch.testing.assert_close(
                out["grads"][name], grad, atol=1e-5, rtol=0, msg=f"gradient of {name}, rank {rank}"
            )
