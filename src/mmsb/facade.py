"""Building a facade's methods from its components' methods.

``forward(get, Component.method)`` makes a method of the facade that finds the component
with ``get(facade)`` (which also checks the facade may be used now) and calls the
component's method on it. The result keeps the component method's name, docstring and
signature (``inspect.signature`` follows ``__wrapped__``) and, through ``ParamSpec``, its
types, so the facade adds one line per method and no second copy of any documentation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F")  # the facade's type


def forward(
    get: Callable[[F], Any], fn: Callable[Concatenate[Any, P], R], name: str = ""
) -> Callable[Concatenate[F, P], R]:
    """A facade method running ``fn`` on the component ``get(facade)`` returns."""

    def method(self: F, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return fn(get(self), *args, **kwargs)

    functools.update_wrapper(method, fn)
    method.__name__ = name or fn.__name__
    return method


def component(attr: str | None, check: str) -> Callable[[Any], Any]:
    """A ``get`` for :func:`forward`: calls the facade's ``check`` method (which raises if
    the facade cannot be used now), then returns its attribute ``attr`` (None: what
    ``check`` returned)."""

    def get(facade: Any) -> Any:
        checked = getattr(facade, check)()
        return checked if attr is None else getattr(facade, attr)

    return get


def forward_property(get: Callable[[F], Any], prop: Any) -> property:
    """A facade property reading (and, if ``prop`` has a setter, setting) ``prop`` on the
    component ``get(facade)`` returns; it keeps ``prop``'s docstring and types."""

    def fget(self: F) -> Any:
        return prop.__get__(get(self))

    functools.update_wrapper(fget, prop.fget)
    if prop.fset is None:
        return property(fget, doc=prop.__doc__)

    def fset(self: F, value: Any) -> None:
        prop.__set__(get(self), value)

    return property(fget, fset, doc=prop.__doc__)
