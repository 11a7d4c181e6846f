"""Graph propagation of mean-field moments and gradient second moments (numpy only).

The forward rules carry per-channel, per-position moments (q, mean) and per-channel
cross moments of two positions, two batch members and an input pair through every layer
kind of the networks people prune (convolutions with zero padding, BatchNorm in train and
eval mode, pooling, residual sums, concatenation, attention); the backward rules carry
the gradient second moment back and give each weight layer's E‖∂L/∂W ⊙ M‖². See README.md
in this folder for the graph IR contract (op names and parameters) and each module's
docstring for its equations and approximations.
"""

from __future__ import annotations

from sigprop.theory.propagation.activation import resolve
from sigprop.theory.propagation.dense import (
    DEFAULT_BUDGET,
    conv,
    conv_backward,
    conv_weight_grad,
    linear,
    linear_backward,
    linear_weight_grad,
)
from sigprop.theory.propagation.engine import (
    OP_NAMES,
    NodeResult,
    PropagationResult,
    TheoryGraph,
    TheoryNode,
    propagate,
)
from sigprop.theory.propagation.norm import (
    batchnorm_eval,
    batchnorm_eval_backward,
    batchnorm_train,
    batchnorm_train_backward,
    groupnorm,
    groupnorm_backward,
    layernorm,
    layernorm_backward,
)
from sigprop.theory.propagation.pointwise import (
    add,
    add_backward,
    affine,
    affine_backward,
    cat,
    cat_backward,
    dropout,
    dropout_backward,
    elementwise,
    elementwise_backward,
    flatten,
    flatten_backward,
    flatten_positions,
    flatten_positions_backward,
    mul,
    mul_backward,
    scale,
    select_position,
    select_position_backward,
)
from sigprop.theory.propagation.pool import (
    adaptive_avg_pool,
    adaptive_avg_pool_backward,
    avg_pool,
    avg_pool_backward,
    max_pool,
    max_pool_backward,
)
from sigprop.theory.propagation.pwl import PiecewiseLinear
from sigprop.theory.propagation.records import Grad, Moments
from sigprop.theory.propagation.selfattn import (
    attention,
    attention_backward,
    attention_weight_grads,
)
from sigprop.theory.propagation.softmax import softmax_overlap, softmax_stats

__all__ = [
    "DEFAULT_BUDGET",
    "Grad",
    "Moments",
    "NodeResult",
    "OP_NAMES",
    "PiecewiseLinear",
    "PropagationResult",
    "TheoryGraph",
    "TheoryNode",
    "adaptive_avg_pool",
    "adaptive_avg_pool_backward",
    "add",
    "add_backward",
    "affine",
    "affine_backward",
    "attention",
    "attention_backward",
    "attention_weight_grads",
    "avg_pool",
    "avg_pool_backward",
    "batchnorm_eval",
    "batchnorm_eval_backward",
    "batchnorm_train",
    "batchnorm_train_backward",
    "cat",
    "cat_backward",
    "conv",
    "conv_backward",
    "conv_weight_grad",
    "dropout",
    "dropout_backward",
    "elementwise",
    "elementwise_backward",
    "flatten",
    "flatten_backward",
    "flatten_positions",
    "flatten_positions_backward",
    "groupnorm",
    "groupnorm_backward",
    "layernorm",
    "layernorm_backward",
    "linear",
    "linear_backward",
    "linear_weight_grad",
    "max_pool",
    "max_pool_backward",
    "mul",
    "mul_backward",
    "propagate",
    "resolve",
    "scale",
    "select_position",
    "select_position_backward",
    "softmax_overlap",
    "softmax_stats",
]
