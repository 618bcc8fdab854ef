"""Validation target #9, numeric stability: the graph computes what its bound assumes, the
target passes on the stated functions and fails on an amplifying map, a pole, a NaN and a
function that is not repeatable."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb.validation import Context, format_line, load_targets, numeric, run_target
from mmsb.validation.numeric import LAYERS, Layer, build, cumulative_bounds, measure

SMALL: dict[str, Any] = {"sources": 16, "elements": 16, "ticks": 12, "noise": 1e-9, "seed": 5}


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    c = Context(str(tmp_path), seed=5, size="quick", progress=None)
    yield c
    c.close()


def _replace(name: str, fn: Any) -> tuple[Layer, ...]:
    """The stated layers with one page function swapped, its declared constant kept."""
    return tuple(dataclasses.replace(x, fn=fn) if x.name == name else x for x in LAYERS)


def test_the_stated_bound_is_the_product_of_the_lipschitz_constants() -> None:
    assert [x.lipschitz for x in LAYERS] == [1.0, 1.5, 2.0, 1.0, 1.0]
    assert cumulative_bounds(LAYERS) == [1.0, 1.5, 3.0, 3.0, 3.0]
    assert numeric.STATED_BOUND == 3.0
    spec = next(s for s in load_targets() if s.id == 9)
    assert (spec.key, spec.runner) == ("numeric", "mmsb.validation.numeric")
    assert "C = 3" in spec.goal


def test_the_declared_constants_hold_on_the_functions() -> None:
    """Finite differences over the parents' range never exceed the declared constants."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (2, 200_000))
    h = 1e-6
    da, db = rng.choice([-h, h], (2, a.size))
    for fn, lip in ((numeric.squash, 1.5), (numeric.logistic, 1.0)):
        moved = np.abs(fn(a + da, b + db) - fn(a, b)) / h
        assert moved.max() <= lip * (1 + 1e-6)
        assert moved.max() >= 0.8 * lip  # and the constants are not loose by much
    # product: parents are squash outputs, in (-1, 1)
    sa, sb = numeric.squash(a, b), numeric.squash(b, -a)
    moved = np.abs(numeric.product(sa + da, sb + db) - numeric.product(sa, sb)) / h
    assert moved.max() <= 2.0 * (1 + 1e-6)


def test_the_bus_computes_the_stated_graph() -> None:
    """Oracle: every derived page equals a numpy recomputation from its parents' contents
    and the registration (weights, function) the bound was derived for."""
    rng = np.random.default_rng(9)
    with mmsb.open(None) as bus:
        levels, nodes = build(bus, LAYERS, 16, 16, seed=2)
        assert [lv.size for lv in levels] == [16, 8, 8, 4, 4, 4]
        for _ in range(4):
            pages, offsets, values = numeric.source_writes(rng, levels[0], 16, 6)
            bus.tick(numeric._batch(pages, offsets, values))
        for node in nodes:
            parents = [bus.read(p) for p in node.parents]
            if node.weights is None:
                assert node.layer.fn is not None
                want = node.layer.fn(*parents)
            else:
                assert abs(sum(abs(w) for w in node.weights) - 1.0) < 1e-12
                want = sum(w * p for w, p in zip(node.weights, parents, strict=True))
            np.testing.assert_allclose(bus.read(node.child), want, rtol=0, atol=1e-15)
        assert {n.layer.name for n in nodes} == {x.name for x in LAYERS}
        for node in nodes:  # each layer reads the one below
            level = [x.name for x in LAYERS].index(node.layer.name)
            assert set(node.parents) <= set(levels[level].tolist())


def test_numeric_target_passes(ctx: Context) -> None:
    out = numeric.run(ctx, dict(SMALL))
    assert out.passed and out.correct, out.notes
    f = out.figures
    assert f["nonfinite_values"] == 0
    assert f["layers_over_bound"] == 0
    assert f["repeat_bytes_differing"] == 0 and f["repeat_divergence"] == 0.0
    assert f["repeat_hash_equal"] is True
    assert 0 < f["max_input_noise"] <= 1e-9
    assert 0 < f["max_divergence"] <= 3.0 * f["max_input_noise"]
    assert f["amplification"] == pytest.approx(f["max_divergence"] / f["max_input_noise"])
    assert [x["layer"] for x in f["layers"]] == [x.name for x in LAYERS]
    for layer in f["layers"]:
        assert 0 < layer["max_divergence"] <= layer["bound"] * f["max_input_noise"] + 2.0**-40
    assert f["derived"] == 8 + 8 + 4 + 4 + 4


def test_numeric_target_through_the_registry(ctx: Context) -> None:
    spec = next(s for s in load_targets() if s.id == 9)
    small = dataclasses.replace(spec, sizes={**spec.sizes, "quick": dict(SMALL)})
    result = run_target(ctx, small, "quick")
    assert result.passed and result.goal_met, result.notes
    line = format_line(result, "quick")
    assert line.startswith("✓ #9 Numeric stability [quick: 16 of 256 source pages; 12 of 200")
    assert line.endswith("repeat_hash_equal true = true ✓ ★")
    assert "floor nonfinite_values 0 = 0 ✓, layers_over_bound 0 = 0 ✓" in line


def test_an_amplifying_map_fails_the_bound(ctx: Context) -> None:
    """tanh(20 (a + b)) declared with squash's constant 1.5: slope up to 40."""
    layers = _replace("squash", lambda a, b: np.tanh(20.0 * (a + b)))
    out = measure(ctx, **_sizes(), layers=layers)
    assert not out.passed and out.correct is False
    f = out.figures
    assert f["nonfinite_values"] == 0  # finite, but not bounded
    assert f["layers_over_bound"] >= 1
    assert f["amplification"] > 3.0
    assert "layer squash above its bound" in out.notes


def test_a_pole_fails_the_bound(ctx: Context) -> None:
    """x -> 1 / (x - a) near its pole: the relative noise is amplified by 1 / (x - a)^2."""

    def pole(a: Any, b: Any) -> Any:
        return 1e-3 / (a + b - 0.3 + 1e-3 * np.sign(a + b - 0.3 + 1e-300))

    out = measure(ctx, **_sizes(), layers=_replace("squash", pole))
    assert not out.passed
    assert out.figures["layers_over_bound"] >= 1
    assert out.figures["amplification"] > 3.0


def test_a_nan_fails(ctx: Context) -> None:
    def sqrt(a: Any, b: Any) -> Any:
        with np.errstate(invalid="ignore"):
            return np.sqrt(a + b)  # NaN where a + b < 0

    out = measure(ctx, **_sizes(), layers=_replace("squash", sqrt))
    assert not out.passed
    assert out.figures["nonfinite_values"] > 0
    assert out.figures["layers_over_bound"] >= 1  # a NaN divergence is never within a bound


def test_a_function_that_is_not_repeatable_fails(ctx: Context) -> None:
    calls = itertools.count()

    def drifting(a: Any, b: Any) -> Any:
        return np.tanh(0.75 * (a + b)) + 1e-12 * next(calls)  # depends on the call count

    out = measure(ctx, **_sizes(), layers=_replace("squash", drifting))
    assert not out.passed
    f = out.figures
    assert f["repeat_bytes_differing"] > 0 and f["repeat_divergence"] > 0
    assert any("repeat differs" in n for n in out.notes)


def test_bad_sizes_are_refused(ctx: Context) -> None:
    with pytest.raises(ValueError, match="bad sizes"):
        measure(ctx, **{**_sizes(), "elements": 4})
    with pytest.raises(ValueError, match="bad sizes"):
        measure(ctx, **{**_sizes(), "noise": 0.0})


@pytest.mark.slow
def test_numeric_target_at_the_stated_size(ctx: Context) -> None:
    spec = next(s for s in load_targets() if s.id == 9)
    result = run_target(ctx, spec, "stated")
    assert result.passed and result.goal_met, result.notes
    assert result.figures["derived"] == 448 and result.figures["ticks"] == 200


def _sizes() -> dict[str, Any]:
    return {k: SMALL[k] for k in ("sources", "elements", "ticks", "noise", "seed")}
