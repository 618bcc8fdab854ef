"""Purity checks: the semiring laws on samples, and side-effect checks on recompute functions.

Propagation relies on two promises. A :class:`~mmsb.semiring.Semiring` must really be a
semiring, or folding parents in a different order (or regrouping them) changes a child's
bytes. A recompute function must be pure: the same inputs give the same bytes, and the inputs
(read-only arrays holding the parents' pages) are never written. This module checks both on samples.
A check can show a law broken or a function impure; passing is evidence, not proof.

Semiring laws (each a :class:`LawResult`)
    ⊕ associative, ⊕ commutative, ⊗ associative, zero is the ⊕ identity (left and right),
    one is the ⊗ identity (left and right), ⊗ distributes over ⊕ (left and right), zero
    annihilates ⊗ (left and right). ⊗ need not commute.

Equality and tolerance
    Laws built only from min, max, or, and (and every law over bool or integer dtypes) are
    compared exactly: ``lhs == rhs`` element-wise, so ``-0.0`` equals ``0.0``. Laws that use
    any other operation (``+``, ``*``, a user callable) on floats allow rounding:
    ``|lhs - rhs| <= atol + rtol * scale``, where ``scale`` is the largest finite magnitude
    among the operands and every intermediate result of both sides. Floating-point addition is
    not associative: ``(1e16 + -1e16) + 1`` is 1 but ``1e16 + (-1e16 + 1)`` is 0, so the error
    is proportional to the terms, not to the (possibly cancelled) result. For the three-term
    laws the rounding error is at most about ``2.5 * eps * scale``; the default ``rtol`` is
    ``16 * eps`` of the dtype (float64: 3.6e-15, float32: 1.9e-6), and the default ``atol`` is
    the dtype's smallest normal number, which absorbs results that underflow. Where either side
    is infinite the two must be equal exactly.

NaN
    Generated samples never contain NaN. In samples a caller passes, NaN equals NaN at the same
    position (and only there): a law holds on an element where both sides are NaN.

Generated samples
    ``samples=N`` builds N element triples ``(a, b, c)`` per dtype, evaluated as three arrays.
    About half come from a set of 19 to 21 float edge values (every ordered combination once
    N >= 2 * count**3, under 20,000 for the built-ins; a random subset below): the semiring's
    zero and one, ±0, ±1, values where rounding bites (0.1, 0.2, 0.3, 1/3,
    1 ± eps, 2**(mantissa bits + 1) and its neighbours), and the largest and smallest
    magnitudes used. The rest are random: log-uniform magnitudes, values near 1, and values
    near 2**(mantissa bits + 1). Magnitudes are bounded (float64: 1e-100 to 1e100, float32:
    1e-12 to 1e12) so that no product of three samples overflows. Infinities are generated
    only where they are the semiring's zero or one, because those are the only infinities in
    its carrier: MIN_PLUS gets +inf, MAX_PLUS -inf, MAX_MIN both, SUM_PRODUCT none (``0 * inf``
    is NaN: ordinary arithmetic is a semiring only over finite numbers).
"""

from __future__ import annotations

from mmsb.purity.functions import (
    MUTATES,
    NOT_REPEATABLE,
    RAISES,
    check_function,
)
from mmsb.purity.laws import (
    ADD_ASSOCIATIVE,
    ADD_COMMUTATIVE,
    ADD_IDENTITY_LEFT,
    ADD_IDENTITY_RIGHT,
    ANNIHILATION_LEFT,
    ANNIHILATION_RIGHT,
    DISTRIBUTIVE_LEFT,
    DISTRIBUTIVE_RIGHT,
    LAW_NAMES,
    MUL_ASSOCIATIVE,
    MUL_IDENTITY_LEFT,
    MUL_IDENTITY_RIGHT,
    check_semiring,
)
from mmsb.purity.report import (
    Example,
    LawResult,
    PurityReport,
)

__all__ = [
    "ADD_ASSOCIATIVE",
    "ADD_COMMUTATIVE",
    "ADD_IDENTITY_LEFT",
    "ADD_IDENTITY_RIGHT",
    "ANNIHILATION_LEFT",
    "ANNIHILATION_RIGHT",
    "DISTRIBUTIVE_LEFT",
    "DISTRIBUTIVE_RIGHT",
    "LAW_NAMES",
    "MUL_ASSOCIATIVE",
    "MUL_IDENTITY_LEFT",
    "MUL_IDENTITY_RIGHT",
    "MUTATES",
    "NOT_REPEATABLE",
    "RAISES",
    "Example",
    "LawResult",
    "PurityReport",
    "check_function",
    "check_semiring",
]
