"""Triton's system shared-memory extension: tensors passed through POSIX shared memory.

A local client creates a POSIX shared-memory object (``/dev/shm/<key>``), registers a *region* of
it under a name (``POST /v2/systemsharedmemory/region/{name}/register`` with ``key``, ``offset``,
``byte_size``; gRPC ``SystemSharedMemoryRegister``), and then names the region in an infer
request's input or output parameters instead of sending the tensor bytes over the socket:

- ``shared_memory_region`` (string, required), ``shared_memory_byte_size`` (int, required),
  ``shared_memory_offset`` (int, optional, default 0; relative to the region's start).
- An **input** is read from the region: its byte size must equal shape × datatype exactly. It is
  copied out of the object as the request is decoded (one ``pread``; no socket transfer), so the
  client may reuse the region as soon as it has the answer.
- A requested **output** is written into the region (``shared_memory_byte_size`` must be at least
  the output's size) and its data is left out of the response; the response entry keeps ``name``,
  ``shape``, ``datatype`` and the shared-memory parameters, as Triton's does.

:class:`SystemSharedMemory` is the server's registry (one per :class:`~sloserve.runtime.server.
InferenceServer`, shared by the HTTP and gRPC front ends). It is thread-safe: the decode pool's
workers read regions while the event loop registers and unregisters them.

**Regions are read and written through a file descriptor, not a mapping.** A client may shrink
the object under a registered region (``ftruncate``); a mapped page past the new end would kill the
server with ``SIGBUS`` on the next access, while ``pread`` / ``pwrite`` just come up short or grow
the object again. A read that comes up short is a 400 saying the object shrank. Unregistering
closes the descriptor at once (reads and writes hold the registry's lock).

Errors are :class:`~sloserve.runtime.codec.ProtocolError` with status 400 (404 for the status of a
region that is not registered), each saying which region, input or output and what was wrong.
Unregistering a name that is not registered succeeds, as in Triton.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sloserve.runtime.backend import DATATYPE_TO_NUMPY
from sloserve.runtime.codec import (
    BYTE_SIZE,
    OFFSET,
    InferRequest,
    ProtocolError,
    ShmRef,
    element_count,
    tensor_from_bytes,
    tensor_to_bytes,
)

SHM_ROOT = Path("/dev/shm")
"""Where POSIX shared-memory objects live on Linux (``shm_open(key)`` opens ``/dev/shm/key``)."""


class _Region:
    """One registered region: ``byte_size`` bytes at ``offset`` of the object ``key``, open read-write."""

    __slots__ = ("byte_size", "fd", "key", "name", "offset")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, root: Path) -> None:
        self.name, self.key, self.offset, self.byte_size = name, key, offset, byte_size
        path = root / _object_name(key)
        try:  # as shm_open does: no symlinks (a link could name any file the server may write)
            self.fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ProtocolError(
                f"unable to open shared memory region {name!r}: no shared memory object with key {key!r}"
            ) from None
        except OSError as exc:
            link = exc.errno == errno.ELOOP
            why = "it is a symbolic link, not a shared memory object" if link else exc.strerror
            raise ProtocolError(
                f"unable to open shared memory object {key!r} for region {name!r}: {why}"
            ) from None
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(self.fd)
            raise ProtocolError(f"region {name!r}: {key!r} is not a shared memory object")
        size = info.st_size
        if offset + byte_size > size:
            os.close(self.fd)
            raise ProtocolError(
                f"region {name!r}: offset {offset} + byte_size {byte_size} runs past the end of "
                f"shared memory object {key!r} ({size} bytes)"
            )

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def span(self, ref: ShmRef, where: str) -> int:
        """Offset in the object of the tensor ``ref`` names, after checking it fits the region."""
        if ref.offset + ref.byte_size > self.byte_size:
            raise ProtocolError(
                f"{where}: {OFFSET} {ref.offset} + {BYTE_SIZE} {ref.byte_size} runs past the end of "
                f"shared memory region {self.name!r} ({self.byte_size} bytes)"
            )
        return self.offset + ref.offset

    def read_into(self, buffer: memoryview, start: int, where: str) -> None:
        """Fill ``buffer`` from the object at ``start``; 400 if the object no longer holds it."""
        done = 0
        while done < len(buffer):
            got = os.preadv(self.fd, [buffer[done:]], start + done)
            if got == 0:
                size = os.fstat(self.fd).st_size
                raise ProtocolError(
                    f"{where}: shared memory object {self.key!r} of region {self.name!r} has shrunk to "
                    f"{size} bytes, short of the {len(buffer)} bytes at offset {start}"
                )
            done += got

    def write_from(self, data: memoryview, start: int) -> None:
        """Write ``data`` into the object at ``start``."""
        done = 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], start + done)

    def close(self) -> None:
        os.close(self.fd)


def _object_name(key: str) -> str:
    name = key.lstrip("/")
    if not name or "/" in name or "\0" in name or name in (".", "..") or not _encodable(name):
        raise ProtocolError(
            f"invalid shared memory key {key!r}: expected '/name' in valid Unicode with no other '/' "
            "and no NUL"
        )
    return name


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (JSON's ``\\ud800`` escapes give a string that is not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class SystemSharedMemory:
    """The registry of system shared-memory regions; see the module docstring."""

    def __init__(self, root: Path = SHM_ROOT) -> None:
        self.root = root
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._regions)

    # -- the extension's API ---------------------------------------------------------------------

    def register(self, name: str, key: Any, offset: Any, byte_size: Any) -> None:
        """Map ``byte_size`` bytes at ``offset`` of the object ``key`` as region ``name``."""
        if not isinstance(name, str) or not name:
            raise ProtocolError("a shared memory region needs a non-empty name")
        if not isinstance(key, str) or not key:
            raise ProtocolError(f"region {name!r}: 'key' must be a non-empty string, got {key!r}")
        for field, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ProtocolError(
                    f"region {name!r}: {field!r} must be a non-negative integer, got {value!r}"
                )
        if byte_size == 0:
            raise ProtocolError(f"region {name!r}: 'byte_size' must be positive")
        with self._lock:
            if name in self._regions:
                raise ProtocolError(f"shared memory region {name!r} is already registered")
        region = _Region(name, key, offset, byte_size, self.root)  # file I/O outside the lock
        with self._lock:
            if name in self._regions:
                region.close()
                raise ProtocolError(f"shared memory region {name!r} is already registered")
            self._regions[name] = region

    def unregister(self, name: str | None = None) -> None:
        """Forget region ``name`` (every region when None or empty); unknown names are no error."""
        with self._lock:
            if name:
                gone = [r for r in (self._regions.pop(name, None),) if r is not None]
            else:
                gone = list(self._regions.values())
                self._regions.clear()
        for region in gone:
            region.close()

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """``[{name, key, offset, byte_size}]`` of region ``name`` (404 if unknown) or of every region."""
        with self._lock:
            if not name:
                return [r.status() for r in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise ProtocolError(f"unable to find system shared memory region {name!r}", 404)
        return [region.status()]

    # -- tensors ---------------------------------------------------------------------------------

    def _get(self, name: str, where: str) -> _Region:
        region = self._regions.get(name)
        if region is None:
            raise ProtocolError(f"{where}: shared memory region {name!r} is not registered")
        return region

    def read(self, ref: ShmRef, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
        """The input tensor ``ref`` names, copied out of its region."""
        dtype = DATATYPE_TO_NUMPY[datatype]
        count = element_count(shape)
        if datatype != "BYTES" and ref.byte_size != count * dtype.itemsize:
            raise ProtocolError(
                f"{where}: {BYTE_SIZE} {ref.byte_size} does not match shape {list(shape)} {datatype} "
                f"({count * dtype.itemsize} bytes expected)"
            )
        with self._lock:  # the region and the span checked first: the size is the client's word
            region = self._get(ref.region, where)
            start = region.span(ref, where)
            raw = bytearray(ref.byte_size)
            region.read_into(memoryview(raw), start, where)
        if datatype == "BYTES":
            return tensor_from_bytes(datatype, shape, memoryview(raw), where)
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)

    def check_output(self, ref: ShmRef, where: str) -> None:
        """Before inference: the region of a requested output is registered and ``ref`` fits it."""
        with self._lock:
            self._get(ref.region, where).span(ref, where)

    def write(self, ref: ShmRef, arr: np.ndarray, where: str) -> None:
        """Write the output tensor ``arr`` where ``ref`` says (400 if it does not fit)."""
        if arr.dtype.kind in ("O", "S", "U"):
            data = memoryview(tensor_to_bytes(arr))
        else:
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).data.cast("B")
        if len(data) > ref.byte_size:
            raise ProtocolError(
                f"{where}: {BYTE_SIZE} {ref.byte_size} is too small for the output of shape "
                f"{list(arr.shape)} ({len(data)} bytes)"
            )
        with self._lock:
            region = self._get(ref.region, where)
            region.write_from(data, region.span(ref, where))

    def write_outputs(self, request: InferRequest, outputs: Mapping[str, np.ndarray]) -> None:
        """Write each requested output that names a region (after :meth:`InferenceServer.infer`)."""
        for out in request.outputs or ():
            if out.shm is not None:
                self.write(out.shm, outputs[out.name], f"output {out.name!r}")
