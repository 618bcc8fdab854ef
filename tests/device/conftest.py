"""Device tests: the CUDA simulator by default, a real GPU with ``MMSB_DEVICE_TESTS=real``.

The simulator is asked for here, at collection time: ``numba.cuda`` is loaded as the
simulator at once (other test folders may already have imported numba's CPU compiler,
which reads its environment once; the backend probe, :func:`mmsb.device.probe.backend`,
reads it again before importing ``numba.cuda``), and ``NUMBA_ENABLE_CUDASIM`` is then set
back, so tests outside this folder still run without a device (the simulator counts only
while the variable is set). Every test here runs with it set (``_simulator``).

Tests marked ``gpu`` need a real device: they are deselected by default and skipped under
the simulator. ``tools/gpu_check.py`` runs this folder with ``MMSB_DEVICE_TESTS=real``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from mmsb.device import Backend, backend

REAL = os.environ.get("MMSB_DEVICE_TESTS", "") == "real"
_SIM = "NUMBA_ENABLE_CUDASIM"
if not REAL and importlib.util.find_spec("numba_cuda") is not None:
    _before = os.environ.get(_SIM)
    os.environ[_SIM] = "1"
    backend()  # numba.cuda is the simulator for the rest of this process
    if _before is None:
        del os.environ[_SIM]
    else:
        os.environ[_SIM] = _before


@pytest.fixture(autouse=True)
def _simulator() -> Iterator[None]:
    """The simulator counts as a device during each test of this folder (a patch of its
    own: a test's ``monkeypatch.undo()`` leaves it in place)."""
    if REAL:
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(_SIM, "1")
        yield


@pytest.fixture(scope="session")
def dev() -> Backend:
    """The backend: the simulator in the default run (a missing numba-cuda skips the
    folder: the lean install has no device extra), the GPU under MMSB_DEVICE_TESTS=real."""
    if importlib.util.find_spec("numba_cuda") is None and not REAL:
        pytest.skip("numba-cuda is not installed (pip install 'mmsb[gpu]')")
    if REAL:
        return backend()
    with pytest.MonkeyPatch.context() as mp:  # set up before the per-test _simulator
        mp.setenv(_SIM, "1")
        return backend()


@pytest.fixture
def real_dev(dev: Backend) -> Backend:
    if dev.simulator:
        pytest.skip("needs a real GPU: MMSB_DEVICE_TESTS=real on a machine with one")
    return dev


@pytest.fixture(scope="session")
def scale(dev: Backend) -> int:
    """How much bigger the random cases get on a real device (the simulator runs every
    thread in Python)."""
    return 1 if dev.simulator else 50
