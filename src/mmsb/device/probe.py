"""Finding the device backend: numba-cuda on a real NVIDIA GPU, or numba-cuda's simulator.

Nothing here imports ``numba.cuda`` until :func:`backend` is first called, so ``import
mmsb`` (and ``import mmsb.device``) never loads it. The simulator counts as a backend only
while ``NUMBA_ENABLE_CUDASIM=1`` is set (checked at every call, so a process can turn it
off again: a test suite does, around tests that expect no device); it runs the same
kernel source one thread at a time in Python, which is how the device code is tested on
machines without a GPU.

numba reads its environment when ``numba`` is first imported (and again whenever it
compiles a CPU kernel), and ``numba.cuda`` picks the simulator or the driver when *it* is
first imported. A process that imported numba's CPU compiler before asking for the
simulator (a test suite does) has the variable read again here, before ``numba.cuda`` is
imported; once ``numba.cuda`` is loaded its choice is final for the process, and
:func:`loaded_as_simulator` tells which it made (numba's config flag may say otherwise).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

from mmsb.errors import DeviceUnavailableError

INSTALL = "pip install 'mmsb[gpu]'"
SIMULATOR_NAME = "numba-cuda simulator"


@dataclass(frozen=True)
class Backend:
    """The loaded device backend."""

    cuda: Any  # the numba.cuda module
    simulator: bool
    name: str  # the card's name, or SIMULATOR_NAME
    compute_capability: tuple[int, int]

    def describe(self) -> str:
        cc = ".".join(str(c) for c in self.compute_capability)
        return self.name if self.simulator else f"{self.name} (compute capability {cc})"


_lock = threading.Lock()
_found: Backend | None = None


def simulator_requested() -> bool:
    """Whether the environment asks for the CUDA simulator."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0")


def backend() -> Backend:
    """The device backend, loading ``numba.cuda`` on first use.

    Raises :class:`~mmsb.errors.DeviceUnavailableError` when numba-cuda (or its CUDA
    bindings) cannot be imported, or when no device is present and the simulator was not
    asked for; the message names the extra to install."""
    global _found
    found = _found
    if found is None:
        with _lock:
            if _found is None:
                _found = _load()
            found = _found
    if found.simulator and not simulator_requested():
        raise DeviceUnavailableError(
            "numba.cuda was loaded as the CUDA simulator but NUMBA_ENABLE_CUDASIM is no "
            f"longer set; the simulator counts as a device only while it is ({INSTALL} "
            "for a real device)"
        )
    return found


def available() -> bool:
    """Whether :func:`backend` would succeed (never raises)."""
    try:
        backend()
    except DeviceUnavailableError:
        return False
    return True


def forget() -> None:
    """Drop the cached probe result, so the next :func:`backend` probes again (tests)."""
    global _found
    with _lock:
        _found = None


def loaded_as_simulator(cuda: Any) -> bool:
    """Whether the loaded ``numba.cuda`` is the simulator. Read from the module itself, not
    from numba's config flag: numba reads its environment again whenever it compiles a CPU
    kernel, so once the simulator variable is set back the flag says 0 while ``numba.cuda``
    stays the simulator for the rest of the process."""
    return str(getattr(cuda.jit, "__module__", "")).startswith("numba.cuda.simulator")


def _load() -> Backend:
    if "numba.cuda" not in sys.modules and simulator_requested():
        config = sys.modules.get("numba.core.config")
        if config is not None:
            config.reload_config()
    try:
        cuda = importlib.import_module("numba.cuda")
    except ImportError as exc:
        raise DeviceUnavailableError(
            f"gpu and unified pages need numba-cuda with its CUDA libraries, which cannot be "
            f"imported ({exc}); install them with: {INSTALL}"
        ) from exc
    if loaded_as_simulator(cuda):
        if not simulator_requested():
            raise DeviceUnavailableError(
                "numba.cuda was loaded as the CUDA simulator but NUMBA_ENABLE_CUDASIM is no "
                "longer set; the simulator counts as a device only while it is"
            )
        dev = cuda.get_current_device()
        cc = tuple(getattr(dev, "compute_capability", (0, 0)))
        return Backend(cuda, True, SIMULATOR_NAME, (int(cc[0]), int(cc[1])))
    try:
        present = bool(cuda.is_available())
    except Exception:  # a broken driver install: treat as no device
        present = False
    if not present:
        raise DeviceUnavailableError(
            "gpu and unified pages need an NVIDIA GPU with a working driver, and numba.cuda "
            f"finds none (numba.cuda.is_available() is False); the extra is {INSTALL}, "
            "or open the bus with cpu_fallback=True"
        )
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    major, minor = dev.compute_capability
    return Backend(cuda, False, name, (int(major), int(minor)))
