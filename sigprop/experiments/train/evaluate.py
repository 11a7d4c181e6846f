"""Loss and accuracy of a model on a data set, in evaluation mode."""

from __future__ import annotations

import torch
from torch import nn

from sigprop.experiments.data import minibatches

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 2048,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in ``eval()`` mode, without gradients.

    Cross-entropy and top-1 accuracy for int64 labels; mean squared error and NaN accuracy
    for float targets. The model's train/eval mode is restored afterwards. Empty data gives
    ``(nan, nan)``.
    """
    n = int(x.shape[0])
    if n == 0:
        return float("nan"), float("nan")
    classify = not torch.is_floating_point(y)
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        for xb, yb in minibatches(x, y, batch_size, shuffle=False):
            out = model(xb)
            if classify:
                loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum").double()
                correct += (out.argmax(dim=1) == yb).sum()
            else:
                loss_sum += nn.functional.mse_loss(out, yb, reduction="sum").double() / (
                    yb[0].numel()
                )
    finally:
        model.train(was_training)
    acc = correct.item() / n if classify else float("nan")
    return loss_sum.item() / n, acc
