"""sigprop.nn: the torch layers the theory describes, their initialisation, model builders.

* :mod:`~sigprop.nn.masked`: ``MaskedLinear``, ``MaskedConv1d``, ``MaskedConv2d`` (a
  ``weight_mask`` buffer, pruned weights exactly zero through training); the one
  ``check_density``; the model walkers ``masked_modules``, ``prunable_layers``,
  ``require_prunable`` and the masked optimiser step ``masked_step_``.
* :mod:`~sigprop.nn.utils`: ``as_batches``, the one reader of ``(inputs, targets)`` data.
* :mod:`~sigprop.nn.dct`: ``DCTPlusSparseLinear``, ``DCTPlusSparseConv1d``,
  ``DCTPlusSparseConv2d`` (y = α·D·x + S·x + b, Price & Tanner, arXiv 2102.07655), with a
  fast DCT (``dct2``) and a sparse product.
* :mod:`~sigprop.nn.activation`: ``Activation``, the torch twin of
  ``sigprop.theory.get_activation``.
* :mod:`~sigprop.nn.init`: ``eoc_init_``, ``gaussian_init_``, ``orthogonal_init_``,
  ``rescale_`` (the rescaling trick of Hayou et al., arXiv 2002.08797),
  ``stable_resnet_scale_``.
* :mod:`~sigprop.nn.models`: ``mlp``, ``digits_convnet``, ``conv1d_net``, ``resnet``,
  ``ResidualBlock``.

See docs/architecture.md for how the other parts use these.
"""

from sigprop.nn.activation import ACTIVATIONS, Activation, parse_activation_spec
from sigprop.nn.dct import (
    DCTPlusSparseConv1d,
    DCTPlusSparseConv2d,
    DCTPlusSparseLinear,
    dct2,
    dct3,
    dct_matrix,
)
from sigprop.nn.init import (
    InitRecord,
    LayerRescale,
    RescaleResult,
    eoc_init_,
    gaussian_init_,
    orthogonal_init_,
    rescale_,
    stable_resnet_scale_,
)
from sigprop.nn.masked import (
    MaskedConv1d,
    MaskedConv2d,
    MaskedLinear,
    MaskedMixin,
    check_density,
    random_mask,
    validate_mask,
)
from sigprop.nn.models import ResidualBlock, conv1d_net, digits_convnet, mlp, resnet
from sigprop.nn.prunable import (
    apply_masks_,
    masked_modules,
    masked_step_,
    prunable_layers,
    reapply_mask_,
    require_prunable,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "InitRecord",
    "LayerRescale",
    "RescaleResult",
    "ResidualBlock",
    "conv1d_net",
    "digits_convnet",
    "eoc_init_",
    "gaussian_init_",
    "mlp",
    "orthogonal_init_",
    "rescale_",
    "resnet",
    "stable_resnet_scale_",
    "DCTPlusSparseConv1d",
    "DCTPlusSparseConv2d",
    "DCTPlusSparseLinear",
    "MaskedConv1d",
    "MaskedConv2d",
    "MaskedLinear",
    "MaskedMixin",
    "apply_masks_",
    "check_density",
    "masked_modules",
    "masked_step_",
    "prunable_layers",
    "reapply_mask_",
    "require_prunable",
    "dct2",
    "dct3",
    "dct_matrix",
    "parse_activation_spec",
    "random_mask",
    "validate_mask",
]
