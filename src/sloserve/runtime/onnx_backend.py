"""ONNX Runtime execution backend: one ``InferenceSession`` per instance, resizable in place.

Session settings per instance: ``intra_op_num_threads = threads`` (the calling worker thread is one
of them), ``inter_op_num_threads = 1``, sequential execution, full graph optimisation, and thread
spinning **off** (``session.intra_op.allow_spinning = 0``): with spinning on, ORT's pool threads
busy-wait after each run and an idle instance keeps burning its cores, which on a small machine
steals them from the instances that are working. The session's intra-op threads are created in the
default scheduling class even when a worker in ``SCHED_BATCH`` builds the session
(:mod:`sloserve.runtime.thread_class`).

ONNX Runtime cannot change the thread count of a live session. :meth:`OnnxBackend.set_threads`
therefore builds a new session with the new count on a background thread and swaps it in with one
reference assignment; a run that already picked up the old session finishes on it, and the old
session is freed when its last run returns. No run fails because of a resize.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from sloserve.runtime.backend import BackendError, TensorSpec
from sloserve.runtime.thread_class import threads_born_in_default_class

_ONNX_TO_DATATYPE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def session_options(threads: int, *, spinning: bool = False) -> ort.SessionOptions:
    """The per-instance session options described in the module docstring."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4  # fatal only: a failed run's error is raised, and logged as JSON by the server
    flag = "1" if spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", flag)
    so.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return so


def _spec(arg: Any) -> TensorSpec:
    datatype = _ONNX_TO_DATATYPE.get(arg.type)
    if datatype is None:
        raise BackendError(f"tensor {arg.name!r} has type {arg.type}, which sloserve does not serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    symbols = tuple(d if isinstance(d, str) and d else None for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape, symbols)


class OnnxBackend:
    """One model instance on ONNX Runtime (CPU); an :class:`~sloserve.runtime.backend.ExecutionBackend`."""

    def __init__(
        self, model: str | Path | bytes, threads: int = 1, *, spinning: bool = False, name: str | None = None
    ) -> None:
        """Load ``model`` (an ``.onnx`` path or its bytes) into a session with ``threads`` intra-op threads;
        ``name`` is what errors call it (default: the path, or ``<bytes>``).

        The model bytes are kept so that a resize never rereads the file.
        """
        self._model_bytes = model if isinstance(model, bytes) else Path(model).read_bytes()
        self._model_path: str | None = None
        """Set for a model whose weights lie beside it (ONNX's external data, e.g. ``model.onnx.data``):
        its sessions are built from the file, so they are found relative to it (from bytes, ONNX
        Runtime looks in the working directory); those weights are read from disk at every resize."""
        self._path = None if isinstance(model, bytes) else str(model)
        self._source = name or ("<bytes>" if isinstance(model, bytes) else str(model))
        self._spinning = spinning
        self._lock = threading.Lock()
        self._requested = 0  # generation of the latest resize request
        self._installed = 0  # generation of the session in use
        self._threads = threads
        self._session: ort.InferenceSession | None = self._new_session(threads)
        self._inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self._outputs = tuple(_spec(a) for a in self._session.get_outputs())
        self._output_names = [o.name for o in self._outputs]

    def _new_session(self, threads: int) -> ort.InferenceSession:
        options = session_options(threads, spinning=self._spinning)
        try:
            return _session(self._model_path or self._model_bytes, options)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            failed = BackendError(f"{self._source}: cannot load the model: {exc}")
            if self._path is None or self._model_path is not None:
                raise failed from exc
            try:  # weights beside the file (external data) load from the file only
                session = _session(self._path, options)
            except Exception:
                raise failed from exc
            self._model_path = self._path
            return session

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def source(self) -> str:
        """Where the model came from (a path, or ``<bytes>``)."""
        return self._source

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch on the current session (blocking); the session in use is picked up once.
        A ``BYTES`` input's elements go to ONNX Runtime as text (given ``bytes``, it would pass
        ``str(b"hi")``, i.e. ``"b'hi'"``); elements that are not UTF-8 are the client's error."""
        session = self._session
        if session is None:
            raise BackendError(f"{self._source}: the instance is closed")
        missing = [s.name for s in self._inputs if s.name not in inputs]
        if missing:
            raise BackendError(
                f"missing input(s) {missing}; the model takes {[s.name for s in self._inputs]}",
                bad_input=True,
            )
        feed = {
            s.name: _as_text(s, inputs[s.name]) if s.datatype == "BYTES" else inputs[s.name]
            for s in self._inputs
        }
        try:
            results = session.run(self._output_names, feed)
        except Exception as exc:  # ORT's InvalidArgument, Fail, RuntimeException
            bad = isinstance(exc, InvalidArgument)  # ORT's status for values a kernel refuses
            raise BackendError(str(exc), bad_input=bad) from exc  # said to the client: no path
        return dict(zip(self._output_names, results, strict=True))

    def set_threads(self, threads: int) -> Future[None]:
        """Build a session with ``threads`` threads in the background and swap it in.

        Resolves once the new session serves new runs, or at once if nothing changes; when several
        resizes overlap, the latest request wins (an older build that finishes later is dropped).
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        done: Future[None] = Future()
        with self._lock:
            if threads == self._threads and self._requested == self._installed:
                done.set_result(None)
                return done
            self._requested += 1
            generation = self._requested

        def build() -> None:
            try:
                session = self._new_session(threads)
            except BaseException as exc:
                done.set_exception(exc)
                return
            with self._lock:
                if generation > self._installed and self._session is not None:
                    self._session = session  # one reference assignment: atomic for readers
                    self._threads = threads
                    self._installed = generation
            done.set_result(None)

        threading.Thread(target=build, name=f"ort-resize-{threads}", daemon=True).start()
        return done

    def close(self) -> None:
        """Drop the session; runs in flight keep their reference and finish."""
        with self._lock:
            self._session = None

    def __repr__(self) -> str:
        return f"OnnxBackend({self._source!r}, threads={self._threads})"


def _session(model: str | bytes, options: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session of ``model`` (a path or the file's bytes)."""
    with threads_born_in_default_class():  # the session's intra-op threads
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def _as_text(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """A ``BYTES`` input as ONNX Runtime's string tensors take it: an object array of ``str``."""
    try:
        text = np.vectorize(lambda x: x.decode() if isinstance(x, bytes) else x, otypes=[object])(arr)
        return np.asarray(text, dtype=object)
    except UnicodeDecodeError:
        raise BackendError(
            f"input {spec.name!r}: an element is not UTF-8 text, which the model's string tensor needs",
            bad_input=True,
        ) from None
