"""Test helpers shared by the experiments tests."""

import torch
from torch import nn


class TinyMasked(nn.Linear):
    """A minimal masked layer following the `weight_mask` convention (no apply_mask_)."""

    def __init__(self, n_in, n_out, density, generator):
        super().__init__(n_in, n_out)
        mask = (torch.rand(n_out, n_in, generator=generator) < density).float()
        self.register_buffer("weight_mask", mask)

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.weight_mask, self.bias)
