"""Shared definitions of the pruned-layer theory: result base class, mask and score names."""

from __future__ import annotations

from typing import Any

from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput

#: Mask models with a closed-form effect on the variance map.
MASKS = ("random", "magnitude")
#: Score laws for global pruning: |W| (half-normal) and |g·W| (|product of two normals|).
SCORES = ("magnitude", "sensitivity")


class Result:
    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON data (:func:`sigprop._json.to_jsonable`: arrays become lists,
        non-finite numbers become ``None``)."""
        return to_jsonable(self, type(self).__name__)


def check_mask(mask: str) -> str:
    if mask not in MASKS:
        raise InvalidInput(f"mask must be one of {MASKS}, got {mask!r}")
    return mask
