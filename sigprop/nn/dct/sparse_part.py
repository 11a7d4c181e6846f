"""The sparse part S shared by the DCT-plus-sparse layers: dense or compact storage of the
kept values, masks, the kernel choice and the DCT offset scale α."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sigprop.nn.dct.kernels import (
    _KERNELS,
    _STORAGES,
    AUTO_DENSE_DENSITY,
    AUTO_DENSE_NUMEL,
    _CSRLinear,
    _KeptValues,
    _Pattern,
)
from sigprop.nn.masked import MaskedMixin, as_generator
from sigprop.validate import InvalidInput


class _SparsePart(MaskedMixin):
    """The masked weight S shared by the DCT-plus-sparse layers: pattern cache, the two
    storage modes and the product ``x ↦ x Sᵀ`` over a flattened (rows = output units)
    view of S."""

    def _setup_sparse(
        self,
        shape: tuple[int, ...],
        bias: bool,
        alpha: float,
        alpha_trainable: bool,
        density: float,
        generator: torch.Generator | int | None,
        sparse_std: float,
        kernel: str,
        storage: str,
        factory: dict[str, Any],
    ) -> None:
        """Create ``weight`` (S, of ``shape``), ``bias`` (zeros, one per output unit) and the
        scalar ``alpha``, then draw S and its mask (shared by every DCT-plus-sparse layer)."""
        self.weight = nn.Parameter(torch.empty(*shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.zeros(shape[0], **factory))
        else:
            self.register_parameter("bias", None)
        self.alpha = nn.Parameter(
            torch.tensor(float(alpha), **factory), requires_grad=alpha_trainable
        )
        generator = as_generator(generator)
        if kernel not in _KERNELS:
            raise InvalidInput(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        if storage not in _STORAGES:
            raise InvalidInput(f"storage must be one of {_STORAGES}, got {storage!r}")
        if (
            not (isinstance(sparse_std, (int, float)) and math.isfinite(sparse_std))
            or sparse_std < 0
        ):
            raise InvalidInput(f"sparse_std must be a finite number >= 0, got {sparse_std!r}")
        self.kernel = kernel
        self.sparse_std = float(sparse_std)
        self.storage = "dense"
        with torch.no_grad():
            if sparse_std > 0:
                fan_in = self.weight[0].numel()
                self.weight.normal_(0.0, sparse_std / math.sqrt(fan_in), generator=generator)
            else:
                self.weight.zero_()
        self._init_mask(density, generator)
        self.__dict__["_pattern_key"] = None
        if storage == "compact":
            # Same draws as dense storage (weight first, then mask): the two modes built
            # from one seed hold the same S.
            self.to_compact_storage()

    # -- storage ------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name == "weight" and self.__dict__.get("storage") == "compact":
            return self._compact_weight()
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "weight" and self.__dict__.get("storage") == "compact":
            raise InvalidInput(
                f"{type(self).__name__} has compact storage: `weight` is read-only (derived "
                "from `values`); call to_dense_storage() first to assign a dense weight"
            )
        super().__setattr__(name, value)

    def _compact_weight(self) -> Tensor:
        """S as a dense tensor of the mask's shape, materialised from ``values`` (exact
        zeros at pruned positions; differentiable with respect to ``values``)."""
        mask = self.weight_mask
        flat = self._pattern().flat_index
        values = self._parameters["values"]
        dense = values.new_zeros(mask.numel()).index_put((flat,), values)
        return dense.view(mask.shape)

    @torch.no_grad()
    def to_compact_storage(self):
        """Switch S to compact storage in place (no-op if already compact): the dense
        ``weight`` parameter is replaced by the parameter ``values`` of its kept entries
        (row-major order of the mask), with the same ``requires_grad``. Returns ``self``.
        An optimizer built before the switch must be rebuilt (the parameter is new)."""
        if self.storage == "compact":
            return self
        weight = self._parameters["weight"]
        pattern = self._pattern()
        values = weight.detach().reshape(-1)[pattern.flat_index].clone()
        del self._parameters["weight"]
        self.__dict__.pop("_hooked_weight", None)
        self.__dict__["storage"] = "compact"
        self.__dict__["_support"] = pattern.flat_index
        self.register_parameter("values", nn.Parameter(values, requires_grad=weight.requires_grad))
        return self

    @torch.no_grad()
    def to_dense_storage(self):
        """Switch S back to dense storage in place (no-op if already dense): ``weight``
        becomes a dense parameter again (exact zeros at pruned positions) and ``values``
        is removed. Returns ``self``."""
        if self.storage == "dense":
            return self
        values = self._parameters["values"]
        weight = self._compact_weight().detach().clone()
        del self._parameters["values"]
        self.__dict__["storage"] = "dense"
        self.__dict__.pop("_support", None)
        self.register_parameter("weight", nn.Parameter(weight, requires_grad=values.requires_grad))
        return self

    @torch.no_grad()
    def set_mask(self, mask: Any) -> None:
        if self.storage == "compact":
            raise InvalidInput(
                f"{type(self).__name__} has compact storage, whose support is fixed; call "
                "to_dense_storage() to re-mask it (and to_compact_storage() afterwards)"
            )
        super().set_mask(mask)

    @torch.no_grad()
    def apply_mask_(self) -> None:
        if self.storage == "compact":
            # Pruned entries are not stored, so only the finiteness check applies.
            if not torch.isfinite(self._parameters["values"]).all():
                raise InvalidInput(
                    f"{type(self).__name__}: weight contains NaN or inf at kept positions"
                )
            return
        super().apply_mask_()

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.storage == "compact":
            # Checkpoints use the dense layout (what sigprop.io and dense storage read).
            del destination[prefix + "values"]
            weight = self._compact_weight()
            destination[prefix + "weight"] = weight if keep_vars else weight.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        w_key, m_key = prefix + "weight", prefix + "weight_mask"
        if self.storage == "compact" and w_key in state_dict and m_key in state_dict:
            weight, mask = state_dict.pop(w_key), state_dict[m_key]
            if tuple(weight.shape) != tuple(self.weight_mask.shape) or tuple(mask.shape) != tuple(
                weight.shape
            ):
                error_msgs.append(
                    f"size mismatch for {w_key}: checkpoint weight {tuple(weight.shape)} and "
                    f"mask {tuple(mask.shape)}, layer {tuple(self.weight_mask.shape)}"
                )
            else:
                flat = _Pattern(mask.reshape(mask.shape[0], -1)).flat_index
                values = self._parameters["values"]
                state_dict[prefix + "values"] = weight.reshape(-1)[flat]
                if flat.numel() != values.numel():
                    values.data = values.new_empty(flat.numel())  # the support changes size
                self.__dict__["_support"] = flat.to(values.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # -- the product ----------------------------------------------------------------------
    def _pattern(self) -> _Pattern:
        mask = self.weight_mask
        key = (mask.data_ptr(), mask._version, tuple(mask.shape), mask.device)
        if self.__dict__.get("_pattern_key") != key:
            pattern = _Pattern(mask.reshape(mask.shape[0], -1))
            support = self.__dict__.get("_support")
            if self.storage == "compact" and not torch.equal(
                pattern.flat_index, support.to(pattern.flat_index.device)
            ):
                raise InvalidInput(
                    f"the weight_mask of a compact-storage {type(self).__name__} was changed "
                    "in place; its support is fixed (convert with to_dense_storage() to "
                    "re-mask)"
                )
            self.__dict__["_pattern_cache"] = pattern
            self.__dict__["_pattern_key"] = key
        return self.__dict__["_pattern_cache"]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_pattern_cache", None)
        state.pop("_masked_grad", None)
        state["_pattern_key"] = None
        return state

    @property
    def kept(self) -> int:
        """Number of kept weights (from the cached pattern: no pass over the mask)."""
        return self._pattern().nnz

    def uses_sparse_kernel(self) -> bool:
        """Whether the S product runs through the CSR kernel (else dense masked)."""
        if self.kernel == "csr":
            return True
        if self.kernel == "dense":
            return False
        numel = self.weight_mask.numel()
        # The kept count comes from the cached pattern (no pass over the mask per call).
        return numel >= AUTO_DENSE_NUMEL and self._pattern().nnz <= AUTO_DENSE_DENSITY * numel

    def _sparse_product(self, x2d: Tensor) -> Tensor:
        """x2d (M, fan_in) ↦ (M, n_out) = x2d · S_flatᵀ."""
        if self.storage == "compact":
            pattern = self._pattern()
            values = self._parameters["values"]
            if not self.uses_sparse_kernel():
                return x2d @ self._compact_weight().reshape(pattern.shape).t()
            return _CSRLinear.apply(values, x2d, pattern)
        self._ensure_grad_hook()
        self.__dict__.pop("_masked_grad", None)  # left over by a failed backward pass
        w2d = self.weight.reshape(self.weight.shape[0], -1)
        if not self.uses_sparse_kernel():
            return x2d @ (w2d * self.weight_mask.reshape(w2d.shape)).t()
        pattern = self._pattern()
        values = _KeptValues.apply(self.weight, pattern, self)
        return _CSRLinear.apply(values, x2d, pattern)

    def _grad_is_masked(self, grad: Tensor) -> bool:
        """True when ``grad`` is, unchanged, the gradient :class:`_KeptValues` built from the
        kept entries of the current mask in this backward pass (the same tensor with the same
        version counter: nothing was added into it since), i.e. the weight was reached only
        through the sparse product."""
        mark = self.__dict__.pop("_masked_grad", None)
        if mark is None:
            return False
        ptr, version, shape, pattern = mark
        return (
            grad.data_ptr() == ptr
            and grad._version == version
            and grad.shape == shape
            and pattern is self._pattern()
        )
