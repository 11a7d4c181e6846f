"""Operator vocabulary shared by the graph mappers (fx fallbacks and aten programs)."""

from __future__ import annotations

from typing import Any

__all__ = ["BINARY_OPS", "RESHAPE_OPS", "SHAPE_OPS", "UNITWISE_OPS", "Unmappable", "op_name"]


class Unmappable(Exception):
    """Raised inside a mapper for an operation the connectivity analysis cannot map; the
    mapper turns it into a reason string, never lets it out."""


#: functions / methods / aten ops acting unit by unit (activations, pooling, normalisation,
#: copies and dtype casts).
UNITWISE_OPS = frozenset(
    """relu relu_ relu6 leaky_relu leaky_relu_ prelu elu elu_ selu celu gelu silu mish tanh
    tanh_ hardtanh hardtanh_ sigmoid hardsigmoid hardswish softplus softsign logsigmoid erf
    dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_dropout native_dropout
    max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
    max_pool2d_with_indices batch_norm _native_batch_norm_legit_no_training
    _native_batch_norm_legit native_batch_norm instance_norm group_norm layer_norm
    native_layer_norm contiguous clone detach to float double half bfloat16 type_as neg abs
    square exp sin cos alias identity _to_copy lift_fresh_copy""".split()
)
RESHAPE_OPS = frozenset("flatten view reshape _unsafe_view".split())
BINARY_OPS = frozenset("add add_ iadd sub sub_ isub mul mul_ imul truediv div div_".split())
SHAPE_OPS = frozenset("size dim shape numel sym_size".split())


def op_name(target: Any) -> str:
    schema = getattr(target, "_schema", None)
    if schema is not None:  # an aten OpOverload
        return schema.name.split("::")[-1]
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))
