"""The read API shared by a live :class:`~mmsb.bus.Bus` and a detached snapshot."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import numpy.typing as npt

from mmsb.errors import BusClosedError, DeviceUnavailableError, InvalidArgumentError
from mmsb.storage.state import State
from mmsb.types import LOCATIONS, PageInfo

PAGE_TABLE_DTYPE = np.dtype(
    [("id", "<i8"), ("size", "<i8"), ("epoch", "<i8"), ("dtype", "u1"), ("location", "u1")]
)


class StateView:
    """Read access to a :class:`State`. Subclasses set ``_state`` and ``_lsn``."""

    _state: State | None
    _lsn: int

    def close(self) -> None:
        self._state = None

    @property
    def closed(self) -> bool:
        return self._state is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live_state(self) -> State:
        if self._state is None:
            raise BusClosedError(f"{type(self).__name__} is closed")
        return self._state

    @property
    def lsn(self) -> int:
        """The LSN of the last commit this view reflects (0 for the empty state)."""
        return self._lsn

    def read(self, page_id: int) -> npt.NDArray[Any]:
        """A copy of the page's contents as a 1-D array of the page's dtype.

        A copy, not a view: it never changes under the caller and never pins the arena.
        """
        return self._live_state().read(page_id)

    def read_many(self, page_ids: npt.ArrayLike) -> npt.NDArray[Any]:
        """Copies of several pages of one size and dtype as a 2-D array, a row per id in
        the order given, from one compiled gather (as :meth:`mmsb.Bus.read_many`)."""
        return self._live_state().read_many(page_ids)

    def device_view(self, page_id: int | str) -> Any:
        """The bytes of a ``gpu`` or ``unified`` page where they live, as a device array
        of the page's dtype, no copy (a numba device array: ``__cuda_array_interface__``
        on a device, so CuPy, PyTorch and numba kernels take it as it is).

        Valid until the page is deleted or its device arena grows (a later create). The
        array reads the page's current bytes; a write through it bypasses the log (it is
        not recovered, replayed or seen by history): change pages with ``write`` and
        ``apply_batch``. ``InvalidArgumentError`` for a ``cpu`` page;
        ``DeviceUnavailableError`` where the page is in host memory (no device,
        ``cpu_fallback``, snapshots and ``at()``) or in another process (a live reader).
        """
        st = self._live_state()
        pid = st.require(page_id)
        loc = LOCATIONS[int(st.loc[pid])]
        if loc == "cpu":
            raise InvalidArgumentError(
                f"page {pid} is a cpu page; device_view needs a gpu or unified page "
                "(read() copies any page to the host)"
            )
        dev = st.dev
        if dev is None:
            raise DeviceUnavailableError(
                f"page {pid} is a {loc} page held in host memory here (no device backend, "
                "cpu_fallback, or a snapshot or replayed state): there is no device array "
                "to view; read() returns its bytes, and pip install 'mmsb[gpu]' on a machine "
                "with an NVIDIA GPU puts such pages on the device"
            )
        return dev.view(pid)

    def page(self, page_id: int) -> PageInfo:
        """Id, size, dtype, location, epoch and metadata of a live page."""
        return self._live_state().info(page_id)

    def page_id(self, name: str) -> int:
        """The id of the live page called ``name`` (``PageNotFoundError`` if none is).
        Every call that takes a page id also takes the name; this is for code that keeps ids."""
        return self._live_state().page_id(name)

    def page_names(self) -> dict[str, int]:
        """Every live page name and its page id (a copy)."""
        return dict(self._live_state().by_name)

    def page_ids(self) -> npt.NDArray[np.int64]:
        """Ids of all live pages, ascending."""
        return self._live_state().live_ids()

    def page_table(self) -> npt.NDArray[np.void]:
        """The live pages as one structured array (vectorised; no object per page).

        Fields: ``id``, ``size``, ``epoch`` (int64), ``dtype`` and ``location`` (uint8
        codes indexing :data:`mmsb.types.DTYPE_NAMES` and :data:`mmsb.types.LOCATIONS`).
        """
        st = self._live_state()
        ids = st.live_ids()
        out = np.empty(ids.size, dtype=PAGE_TABLE_DTYPE)
        out["id"] = ids
        out["size"] = st.size[ids]
        out["epoch"] = st.epoch[ids]
        out["dtype"] = st.dtype[ids]
        out["location"] = st.loc[ids]
        return out

    def __contains__(self, page_id: object) -> bool:
        if isinstance(page_id, str):
            return page_id in self._live_state().by_name
        return isinstance(page_id, (int, np.integer)) and self._live_state().is_live(int(page_id))

    def __len__(self) -> int:
        return self._live_state().live_count

    def state_hash(self) -> str:
        """A digest of the logical state (pages, epochs, metadata, bytes); equal states give
        equal digests whatever the arena layout."""
        return self._live_state().state_hash()
