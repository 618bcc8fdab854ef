"""The backend probe: lazy loading, the simulator switch, and the missing-extra error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from mmsb.device import INSTALL, Backend, available, backend, probe
from mmsb.device.arena import DeviceArena
from mmsb.errors import DeviceUnavailableError, InvalidArgumentError


def run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=environ, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_mmsb_and_the_device_package_loads_no_numba_cuda() -> None:
    out = run(
        """
        import sys
        import mmsb, mmsb.device, mmsb.device.arena, mmsb.device.apply, mmsb.device.plan
        import mmsb.device.propagate, mmsb.device.probe
        print(sorted(m for m in sys.modules if m.startswith(("numba.cuda", "numba_cuda"))))
        """,
        NUMBA_ENABLE_CUDASIM="1",
    )
    assert out == "[]"


def test_the_simulator_counts_when_asked_for_after_numba_was_imported() -> None:
    out = run(
        """
        import os
        from numba import njit
        njit(lambda x: x + 1)(1)  # numba has read its environment: no simulator in it
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        from mmsb.device import backend
        b = backend()
        print(b.simulator, b.name)
        """
    )
    assert out == "True numba-cuda simulator"


def test_the_simulator_is_known_after_numba_reads_its_environment_again() -> None:
    """numba reads its environment again whenever it compiles a CPU kernel: once the
    simulator variable is set back, its config flag says no simulator while ``numba.cuda``
    stays the simulator. The probe and the device kernels go by the loaded module."""
    out = run(
        """
        import os
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        from mmsb.device import backend, probe
        backend()
        del os.environ["NUMBA_ENABLE_CUDASIM"]
        from numba import njit
        from numba.core import config
        njit(lambda x: x + 1)(1)  # reads the environment again: the flag goes to 0
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        probe.forget()
        from mmsb.device import kernels
        b = backend()
        print(config.ENABLE_CUDASIM, b.simulator, kernels.SIMULATOR)
        """
    )
    assert out == "0 True True"


def test_without_the_simulator_a_machine_without_a_gpu_has_no_device() -> None:
    out = run(
        """
        from mmsb.device import backend
        from mmsb.errors import DeviceUnavailableError
        try:
            b = backend()
            print("DEVICE", b.simulator)
        except DeviceUnavailableError as exc:
            print("NONE", exc)
        """
    )
    if os.path.exists("/dev/nvidiactl"):
        assert out == "DEVICE False"
    else:
        assert out.startswith("NONE") and INSTALL in out and "cpu_fallback" in out


@pytest.fixture
def forget() -> Iterator[None]:
    probe.forget()
    yield
    probe.forget()


def test_a_missing_numba_cuda_names_the_extra(
    dev: Backend, forget: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # the import now fails
    with pytest.raises(DeviceUnavailableError, match=r"pip install 'mmsb\[gpu\]'"):
        backend()
    assert not available()
    with pytest.raises(DeviceUnavailableError, match="numba-cuda"):
        DeviceArena(64)
    monkeypatch.undo()
    probe.forget()
    assert backend().simulator == dev.simulator


def test_the_backend_is_cached_and_described(dev: Backend) -> None:
    assert backend() is backend()
    assert available()
    assert dev.name in dev.describe()
    if dev.simulator:
        assert dev.name == probe.SIMULATOR_NAME


def test_arena_arguments_are_checked(dev: Backend) -> None:
    with pytest.raises(InvalidArgumentError, match="gpu"):
        DeviceArena(64, location="cpu")
    with pytest.raises(InvalidArgumentError, match="threads"):
        DeviceArena(64, threads=512)
