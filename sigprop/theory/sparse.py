"""The pruned-layer theory under its historical name: ``sigprop.theory.sparse`` is
:mod:`sigprop.theory.pruned` (masks, rescaling, layer collapse, DCT offsets) plus Stable
ResNet's residual q-map (:mod:`sigprop.theory.resnet`)."""

from sigprop.theory.pruned import *  # noqa: F403
from sigprop.theory.pruned import __all__  # noqa: F401
from sigprop.theory.pruned.collapse import _score_isf  # noqa: F401 - tests probe the inverse law
