"""Device tests: the CUDA simulator by default, a real GPU with ``MMSB_DEVICE_TESTS=real``.

The simulator is asked for here, at collection time, before anything loads ``numba.cuda``
(nothing outside ``mmsb.device`` does). Other test folders may already have imported numba's
CPU compiler, which reads its environment once; the backend probe
(:func:`mmsb.device.probe.backend`) reads it again before importing ``numba.cuda``, so the
variable set here still counts. It changes nothing for numba's CPU compiler.

Tests marked ``gpu`` need a real device: they are deselected by default and skipped under
the simulator. ``tools/gpu_check.py`` runs this folder with ``MMSB_DEVICE_TESTS=real``.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from mmsb.device import Backend, backend

REAL = os.environ.get("MMSB_DEVICE_TESTS", "") == "real"
if not REAL:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


@pytest.fixture(scope="session")
def dev() -> Backend:
    """The backend: the simulator in the default run (a missing numba-cuda skips the
    folder: the lean install has no device extra), the GPU under MMSB_DEVICE_TESTS=real."""
    if importlib.util.find_spec("numba_cuda") is None and not REAL:
        pytest.skip("numba-cuda is not installed (pip install 'mmsb[gpu]')")
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
