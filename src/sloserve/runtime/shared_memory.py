"""Triton's system shared-memory extension: tensors passed through POSIX shared memory.

A local client creates a POSIX shared-memory object (``/dev/shm/<key>``), registers a *region* of
it under a name (``POST /v2/systemsharedmemory/region/{name}/register`` with ``key``, ``offset``,
``byte_size``; gRPC ``SystemSharedMemoryRegister``), and then names the region in an infer
request's input or output parameters instead of sending the tensor bytes over the socket:

- ``shared_memory_region`` (string, required), ``shared_memory_byte_size`` (int, required),
  ``shared_memory_offset`` (int, optional, default 0; relative to the region's start).
- An **input** is read from the region: its byte size must equal shape × datatype exactly, and be
  at most the server's request-body limit (``--max-body-mb``, 64 MiB by default: a 413 otherwise,
  before anything is read or allocated). The server's registry (``defer_reads``) reads it only once
  the request has passed the model's checks of names, shapes and datatypes
  (:meth:`SystemSharedMemory.load_inputs`, just before the request is queued), so a tensor the
  model would refuse is never copied; not enough memory to copy it is a 507 naming the input. It
  is copied (no socket transfer), so the client may reuse the region as soon as it has the answer.
- A requested **output** is written into the region (``shared_memory_byte_size`` must be at least
  the output's size) and its data is left out of the response; the response entry keeps ``name``,
  ``shape``, ``datatype`` and the shared-memory parameters, as Triton's does.

**A request holds the regions it names.** When a request is decoded, each of its shared-memory
tensors is checked against the region registered under its name *then*, and the request keeps that
:class:`Region` (:attr:`~sloserve.runtime.codec.ShmRef.mapped`): its input is read from, and its
output written to, that region even if the name is unregistered, or registered again for another
object, while the request waits or runs (as Triton, which postpones an unregister until the
requests using the region end). Unregistering removes the name at once; the region's mapping is
released when the last request holding it is gone.

**Regions are mapped, not held open.** Registering opens the object, maps the region and closes the
descriptor, as Triton does: a registered region costs no file descriptor (with one each, about a
thousand registrations used up the server's descriptors: no new connection, no model load). At most
:data:`MAX_REGIONS` regions are registered at once; one more is a 400 naming the limit. A client
may shrink the object under a registered region (``ftruncate``); touching a mapped page past the
new end would kill the server with ``SIGBUS``, so the server never touches the mapping itself: the
kernel copies in and out of it (``process_vm_readv`` on the server's own memory, or through a
scratch ``memfd`` where that call is not allowed), which stops short at such a page instead. A read
that comes up short is a 400 saying the object shrank; a write that does is finished through the
object's file (re-opened, and checked to be the same object), which grows it again.

:class:`SystemSharedMemory` is the server's registry (one per :class:`~sloserve.runtime.server.
InferenceServer`, shared by the HTTP and gRPC front ends). It is thread-safe: the decode pool's
workers look regions up while the event loop registers and unregisters them.

Errors are :class:`~sloserve.runtime.codec.ProtocolError` with status 400 (404 for the status of a
region that is not registered; 413 and 507 as above), each saying which region, input or output and
what was wrong. Registering a name that is registered already is a 400 that gRPC answers
``ALREADY_EXISTS``, as Triton does. Unregistering a name that is not registered succeeds, as in
Triton.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
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

MAX_REGIONS = 1024
"""Most regions registered at once (a registration beyond it is refused with a 400)."""

DEFAULT_MAX_INPUT_BYTES = 64 * 1024 * 1024
"""Largest input read from shared memory when no limit is given (the server passes its
``--max-body-mb``, whose default this is)."""


# -- copying in and out of a mapping without SIGBUS --------------------------------------------


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


def _libc() -> Any:
    try:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        )
        lib.munmap.restype = ctypes.c_int
        lib.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    except (OSError, AttributeError):  # not a POSIX C library: no shared memory here
        return None
    return lib


_LIBC = _libc()
_MAP_FAILED = ctypes.c_void_p(-1).value
_VM_READV: Any = getattr(_LIBC, "process_vm_readv", None)
if _VM_READV is not None:
    _VM_READV.restype = ctypes.c_ssize_t
    _VM_READV.argtypes = (
        ctypes.c_int,
        ctypes.POINTER(_Iovec),
        ctypes.c_ulong,
        ctypes.POINTER(_Iovec),
        ctypes.c_ulong,
        ctypes.c_ulong,
    )
_use_vm_copy = _VM_READV is not None
"""Whether ``process_vm_readv`` copies (turned off for good when a seccomp filter refuses it)."""

_SCRATCH_CHUNK = 1 << 20


def _copy(dst: int, src: int, size: int) -> int:
    """Copy ``size`` bytes from address ``src`` to ``dst`` through the kernel; the bytes copied.

    A page that cannot be touched (past the end of a shrunk object) ends the copy early, where the
    same access from Python would be a fatal ``SIGBUS``.
    """
    global _use_vm_copy
    done = 0
    while _use_vm_copy and done < size:
        local = _Iovec(dst + done, size - done)
        remote = _Iovec(src + done, size - done)
        got = _VM_READV(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got > 0:
            done += got
            continue
        err = ctypes.get_errno()
        if got == 0 or err == errno.EFAULT:
            return done
        if err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
            _use_vm_copy = False  # refused (a container's seccomp filter): the scratch file instead
        elif err != errno.EINTR:
            raise OSError(err, os.strerror(err))
    if done < size:
        done += _copy_through_scratch(dst + done, src + done, size - done)
    return done


def _view(address: int, size: int) -> memoryview:
    return memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def _copy_through_scratch(dst: int, src: int, size: int) -> int:
    """:func:`_copy` by writing ``src`` into a scratch ``memfd`` and reading it back into ``dst``
    (each a system call that fails with ``EFAULT`` where a direct access would raise ``SIGBUS``)."""
    fd = os.memfd_create("sloserve-shm-copy", os.MFD_CLOEXEC)
    try:
        done = 0
        while done < size:
            n = min(_SCRATCH_CHUNK, size - done)
            try:
                put = os.pwrite(fd, _view(src + done, n), 0)
                got = os.preadv(fd, [_view(dst + done, put)], 0) if put else 0
            except OSError as exc:
                if exc.errno == errno.EFAULT:
                    return done
                raise
            done += got
            if got < n:
                return done
        return done
    finally:
        os.close(fd)


def _munmap(address: int, length: int) -> None:
    _LIBC.munmap(address, length)


# -- regions -----------------------------------------------------------------------------------


class Region:
    """One registered region: ``byte_size`` bytes at ``offset`` of the object ``key``, mapped
    read-write (no descriptor kept). The mapping is released when the object is garbage: when it is
    unregistered and no request holds it any more."""

    __slots__ = ("__weakref__", "_address", "_identity", "_path", "byte_size", "key", "name", "offset")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, root: Path) -> None:
        self.name, self.key, self.offset, self.byte_size = name, key, offset, byte_size
        self._path = root / _object_name(key)
        if _LIBC is None:
            raise ProtocolError(f"region {name!r}: shared memory is not available on this platform")
        try:  # as shm_open does: no symlinks (a link could name any file the server may write)
            fd = os.open(self._path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
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
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ProtocolError(f"region {name!r}: {key!r} is not a shared memory object")
            if offset + byte_size > info.st_size:
                raise ProtocolError(
                    f"region {name!r}: offset {offset} + byte_size {byte_size} runs past the end of "
                    f"shared memory object {key!r} ({info.st_size} bytes)"
                )
            first = offset - offset % mmap.PAGESIZE  # a mapping starts on a page
            length = offset + byte_size - first
            prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED
            base = _LIBC.mmap(None, length, prot, flags, fd, first)
            if base is None or base == _MAP_FAILED:
                err = ctypes.get_errno()
                raise ProtocolError(
                    f"unable to map shared memory region {name!r} ({byte_size} bytes of {key!r}): "
                    f"{os.strerror(err)}",
                    507 if err == errno.ENOMEM else 400,
                )
        finally:
            os.close(fd)
        self._identity = (info.st_dev, info.st_ino)
        self._address = base - first  # the address of the object's byte 0 (never touched itself)
        weakref.finalize(self, _munmap, base, length).atexit = False

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

    def read_into(self, buffer: np.ndarray, start: int, where: str) -> None:
        """Fill ``buffer`` (bytes) from the object at ``start``; 400 if the object no longer holds it."""
        size = buffer.nbytes
        if size and _copy(buffer.ctypes.data, self._address + start, size) < size:
            now = self._size_now()
            said = f"{now} bytes" if now is not None else "fewer bytes (and it is no longer in /dev/shm)"
            raise ProtocolError(
                f"{where}: shared memory object {self.key!r} of region {self.name!r} has shrunk to "
                f"{said}, short of the {size} bytes at offset {start}"
            )

    def write_from(self, data: memoryview, start: int, where: str) -> None:
        """Write ``data`` into the object at ``start`` (growing it again if it has shrunk)."""
        src = np.frombuffer(data, dtype=np.uint8)
        size = src.nbytes
        done = _copy(self._address + start, src.ctypes.data, size) if size else 0
        if done < size:  # past the end of a shrunk object: through its file
            self._write_through_file(src.data[done:], start + done, where)

    def _size_now(self) -> int | None:
        """The object's size, if its key still names it (None once it is removed or replaced)."""
        try:
            info = os.stat(self._path, follow_symlinks=False)
        except OSError:
            return None
        return info.st_size if (info.st_dev, info.st_ino) == self._identity else None

    def _write_through_file(self, data: memoryview, start: int, where: str) -> None:
        gone = ProtocolError(
            f"{where}: shared memory object {self.key!r} of region {self.name!r} has shrunk below "
            f"offset {start + len(data)}, and it is no longer in /dev/shm to be written"
        )
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise gone from None
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != self._identity:
                raise gone
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], start + done)
        except OSError as exc:  # ENOSPC: /dev/shm is full
            raise ProtocolError(
                f"{where}: unable to write {len(data)} bytes into shared memory region {self.name!r}: "
                f"{exc.strerror}",
                507,
            ) from None
        finally:
            os.close(fd)


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


# -- inputs read after the model's checks --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    region: Region
    ref: ShmRef
    datatype: str
    shape: tuple[int, ...]
    where: str

    def load(self) -> np.ndarray:
        """The tensor, copied out of the region (507 if there is not memory enough for it)."""
        size = self.ref.byte_size
        try:
            raw = np.empty(size, dtype=np.uint8)
            self.region.read_into(raw, self.region.span(self.ref, self.where), self.where)
            if self.datatype == "BYTES":
                return tensor_from_bytes(self.datatype, self.shape, raw.data, self.where)
        except MemoryError:
            raise ProtocolError(
                f"{self.where}: not enough memory to read its {size} bytes from shared memory region "
                f"{self.region.name!r}",
                507,
            ) from None
        return raw.view(DATATYPE_TO_NUMPY[self.datatype].newbyteorder("<")).reshape(self.shape)


class PendingInput(np.ndarray):
    """An input still in shared memory: its shape and datatype (for the model's checks), no data
    (every element is the same zero). :meth:`SystemSharedMemory.load_inputs` reads it."""

    source: _Source


def _pending(source: _Source) -> PendingInput:
    dtype = DATATYPE_TO_NUMPY[source.datatype]
    arr = np.broadcast_to(np.zeros((), dtype=dtype), source.shape).view(PendingInput)
    arr.source = source
    return arr


# -- the registry --------------------------------------------------------------------------------


class SystemSharedMemory:
    """The registry of system shared-memory regions; see the module docstring.

    ``max_input_bytes``: the largest input read from a region (413 beyond). ``defer_reads``: inputs
    are read by :meth:`load_inputs` (the server, once the model's checks pass), not by :meth:`read`.
    ``max_regions``: most regions registered at once.
    """

    def __init__(
        self,
        root: Path = SHM_ROOT,
        *,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        defer_reads: bool = False,
        max_regions: int = MAX_REGIONS,
    ) -> None:
        self.root = root
        self.max_input_bytes = max_input_bytes
        self.defer_reads = defer_reads
        self.max_regions = max_regions
        self._regions: dict[str, Region] = {}
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
            self._check_room(name)
        region = Region(name, key, offset, byte_size, self.root)  # file I/O outside the lock
        with self._lock:
            self._check_room(name)  # (a refused region is unmapped as it is dropped)
            self._regions[name] = region

    def _check_room(self, name: str) -> None:
        if name in self._regions:
            raise ProtocolError(
                f"shared memory region {name!r} is already registered", grpc_code="ALREADY_EXISTS"
            )
        if len(self._regions) >= self.max_regions:
            raise ProtocolError(
                f"unable to register shared memory region {name!r}: {len(self._regions)} regions are "
                f"registered, the most this server takes ({self.max_regions}); unregister some first"
            )

    def unregister(self, name: str | None = None) -> None:
        """Forget region ``name`` (every region when None or empty); unknown names are no error.

        The name is free at once; requests that hold the region still read and write it, and its
        mapping is released when the last of them is gone.
        """
        with self._lock:
            if name:
                self._regions.pop(name, None)
            else:
                self._regions.clear()

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

    def _hold(self, ref: ShmRef, where: str) -> Region:
        """The region ``ref`` holds; one not yet held: the one registered under its name now."""
        if ref.mapped is not None:
            return ref.mapped
        with self._lock:
            region = self._regions.get(ref.region)
        if region is None:
            raise ProtocolError(f"{where}: shared memory region {ref.region!r} is not registered")
        ref.hold(region)
        return region

    def read(self, ref: ShmRef, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
        """The input tensor ``ref`` names, copied out of its region; with ``defer_reads`` a
        :class:`PendingInput` that :meth:`load_inputs` reads. The request holds the region."""
        dtype = DATATYPE_TO_NUMPY[datatype]
        count = element_count(shape)
        if datatype != "BYTES" and ref.byte_size != count * dtype.itemsize:
            raise ProtocolError(
                f"{where}: {BYTE_SIZE} {ref.byte_size} does not match shape {list(shape)} {datatype} "
                f"({count * dtype.itemsize} bytes expected)"
            )
        region = self._hold(ref, where)  # the region and span first: the size is the client's word
        region.span(ref, where)
        if ref.byte_size > self.max_input_bytes:
            raise ProtocolError(
                f"{where}: {BYTE_SIZE} {ref.byte_size} is over the limit of {self.max_input_bytes} bytes "
                "on an input in shared memory (the server's --max-body-mb)",
                413,
            )
        source = _Source(region, ref, datatype, shape, where)
        return _pending(source) if self.defer_reads else source.load()

    @staticmethod
    def load_inputs(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``inputs`` with each :class:`PendingInput` read from its region (in the same order)."""
        return {
            name: arr.source.load() if isinstance(arr, PendingInput) else arr for name, arr in inputs.items()
        }

    def check_output(self, ref: ShmRef, where: str) -> None:
        """Before inference: the region of a requested output is registered and ``ref`` fits it; the
        request holds that region from now on (its answer is written there)."""
        self._hold(ref, where).span(ref, where)

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
        region = self._hold(ref, where)
        region.write_from(data, region.span(ref, where), where)

    def write_outputs(self, request: InferRequest, outputs: Mapping[str, np.ndarray]) -> None:
        """Write each requested output that names a region (after :meth:`InferenceServer.infer`)."""
        for out in request.outputs or ():
            if out.shm is not None:
                self.write(out.shm, outputs[out.name], f"output {out.name!r}")
