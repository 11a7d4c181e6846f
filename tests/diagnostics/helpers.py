"""Test helpers shared by the diagnostics tests."""

import math

import numpy as np
from torch import nn


def check_errors(errors, allowance, what):
    """Mean per-layer error over R networks within 5 standard errors (the largest over the
    layers) plus ``allowance``; returns (mean, se). ``errors`` has shape (R, L)."""
    errors = np.asarray(errors)
    mean = errors.mean(axis=0)
    se = errors.std(axis=0, ddof=1).max() / math.sqrt(errors.shape[0])
    assert np.all(np.abs(mean) <= 5 * se + allowance), (what, mean, se)
    return mean, se


class AttentionHead(nn.Module):
    """Self-attention (``nn.MultiheadAttention``, 16 features, 4 heads) and a linear readout
    (the module paths ``a.in_proj``, ``a.out_proj``, ``o``)."""

    def __init__(self, batch_first: bool = True):
        super().__init__()
        self.a = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.o = nn.Linear(16, 3)

    def forward(self, x):
        return self.o(self.a(x, x, x, need_weights=False)[0])
