"""Device pages on an NVIDIA GPU (optional extra ``mmsb[gpu]``).

The package is layered just above :mod:`mmsb.engine`: arrays in, arrays out, no logging.
Importing it loads neither numba.cuda nor the kernels; :func:`backend` loads them on first
use and says which backend runs them (a real device, or the simulator when
``NUMBA_ENABLE_CUDASIM=1``). Modules:

* :mod:`mmsb.device.probe` - the backend probe (:func:`backend`, :func:`available`);
* :mod:`mmsb.device.arena` - :class:`~mmsb.device.arena.DeviceArena`, page bytes in device
  (or managed) memory addressed by byte slot like the host arena;
* :mod:`mmsb.device.plan` - the host-side row plan (per-row addresses, grouping by page,
  the disjointness proof that picks the kernel);
* :mod:`mmsb.device.apply` - :func:`~mmsb.device.apply.apply_rows_device` and the gathers;
* :mod:`mmsb.device.propagate` - semiring propagation on the device;
* :mod:`mmsb.device.kernels` - the CUDA kernels themselves (imports numba.cuda).
"""

from mmsb.device.probe import INSTALL, Backend, available, backend

__all__ = ["INSTALL", "Backend", "available", "backend"]
