"""Test helpers shared by the diagnostics tests."""

import math

import numpy as np


def check_errors(errors, allowance, what):
    """Mean per-layer error over R networks within 5 standard errors (the largest over the
    layers) plus ``allowance``; returns (mean, se). ``errors`` has shape (R, L)."""
    errors = np.asarray(errors)
    mean = errors.mean(axis=0)
    se = errors.std(axis=0, ddof=1).max() / math.sqrt(errors.shape[0])
    assert np.all(np.abs(mean) <= 5 * se + allowance), (what, mean, se)
    return mean, se
