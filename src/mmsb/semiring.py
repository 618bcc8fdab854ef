"""Semirings for built-in propagation: ``child = ⊕_p (w_p ⊗ parent_p)``, element-wise.

A :class:`Semiring` names its addition ⊕ and multiplication ⊗ (numpy ufuncs, so every
operation is vectorised), its zero (the identity of ⊕, which ⊗ annihilates) and its one (the
identity of ⊗), and the page dtypes it works on. The five built-ins also carry a kernel code:
propagation runs them in a compiled kernel that processes a whole tick's semiring pages in
one call; :meth:`Semiring.fold` is the plain numpy definition the kernel is tested against.

User-defined semirings (``code=-1``) work too; they are folded with numpy, one page at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.errors import InvalidArgumentError

FLOATS = ("float32", "float64")


@dataclass(frozen=True)
class Semiring:
    """An algebra ``(S, ⊕, ⊗, zero, one)`` over the elements of a page.

    ``add`` and ``mul`` are binary numpy ufuncs (or callables with ufunc semantics on arrays).
    ``dtypes`` lists the page dtypes the semiring accepts; for ``BOOLEAN`` any non-zero byte
    reads as true and results are written as 0/1.
    """

    name: str
    add: Any
    mul: Any
    zero: Any
    one: Any
    dtypes: tuple[str, ...] = FLOATS
    code: int = -1
    boolean: bool = False

    def __repr__(self) -> str:
        return f"Semiring({self.name})"

    def check_dtype(self, dtype: str) -> None:
        if dtype not in self.dtypes:
            raise InvalidArgumentError(
                f"semiring {self.name} works on {', '.join(self.dtypes)} pages, not {dtype}"
            )

    def _elements(self, a: npt.ArrayLike) -> npt.NDArray[Any]:
        arr = np.asarray(a)
        return arr != 0 if self.boolean else arr

    def plus(self, a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[Any]:
        """``a ⊕ b`` element-wise."""
        return np.asarray(self.add(self._elements(a), self._elements(b)))

    def times(self, a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[Any]:
        """``a ⊗ b`` element-wise."""
        return np.asarray(self.mul(self._elements(a), self._elements(b)))

    def fold(
        self,
        parents: Sequence[npt.ArrayLike],
        weights: Sequence[Any] | npt.ArrayLike | None = None,
        dtype: Any = None,
    ) -> npt.NDArray[Any]:
        """``⊕_p (w_p ⊗ parents[p])``; the empty fold is ``zero``. Returns ``dtype`` (default:
        the first parent's dtype)."""
        if not parents:
            raise InvalidArgumentError("a fold needs at least one parent")
        arrays = [np.asarray(p) for p in parents]
        out_dtype = np.dtype(dtype if dtype is not None else arrays[0].dtype)
        w = [self.one] * len(arrays) if weights is None else list(np.asarray(weights).tolist())
        if len(w) != len(arrays):
            raise InvalidArgumentError(f"{len(arrays)} parents but {len(w)} weights")
        acc = self._elements(np.full(arrays[0].shape, self.zero, dtype=out_dtype))
        for wp, arr in zip(w, arrays, strict=True):
            # a boolean weight is true when non-zero: casting it to the page dtype first
            # would turn 0.5 into 0 (or reject -1) on uint8 pages
            wv = np.asarray(wp) if self.boolean else np.asarray(wp, out_dtype)
            term = self.mul(self._elements(wv), self._elements(arr))
            acc = self.add(acc, term)
        return np.asarray(acc).astype(out_dtype, copy=False)


BOOLEAN = Semiring(
    "BOOLEAN", np.logical_or, np.logical_and, False, True, ("bool", "uint8"), code=0, boolean=True
)
MIN_PLUS = Semiring("MIN_PLUS", np.minimum, np.add, np.inf, 0.0, code=1)
MAX_PLUS = Semiring("MAX_PLUS", np.maximum, np.add, -np.inf, 0.0, code=2)
MAX_MIN = Semiring("MAX_MIN", np.maximum, np.minimum, -np.inf, np.inf, code=3)
SUM_PRODUCT = Semiring("SUM_PRODUCT", np.add, np.multiply, 0.0, 1.0, code=4)
TROPICAL = MIN_PLUS

BUILTINS: tuple[Semiring, ...] = (BOOLEAN, MIN_PLUS, MAX_PLUS, MAX_MIN, SUM_PRODUCT)

__all__ = [
    "BOOLEAN",
    "BUILTINS",
    "MAX_MIN",
    "MAX_PLUS",
    "MIN_PLUS",
    "SUM_PRODUCT",
    "TROPICAL",
    "Semiring",
]
