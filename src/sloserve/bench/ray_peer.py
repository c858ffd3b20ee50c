"""The Ray Serve peer: the same ONNX model served by Ray Serve with ``@serve.batch``.

Started and stopped by the peers benchmark as a child process on 127.0.0.1. It answers the Open
Inference Protocol's model-metadata and infer routes (JSON and binary tensors, decoded with the
same codec as sloserve's server) so one load generator drives every peer. Settings follow Ray
Serve's batching guide: ``max_batch_size`` is the largest batch whose latency fits half the SLO
(the other half is left for waiting and queueing), ``batch_wait_timeout_s`` a small fraction of
the SLO, and ``max_ongoing_requests`` at least the batch size so batches can fill. Replicas get
the cores of the machine (one replica per ``threads`` cores).

Run: ``python -m sloserve.bench.ray_peer MODEL_DIR --port P --max-batch-size B --wait-s W``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any


def build_app(
    model_dir: Path, name: str, threads: int, max_batch_size: int, wait_s: float, replicas: int
) -> Any:
    """The Ray Serve application for one ONNX model (imports Ray lazily)."""
    import numpy as np
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from sloserve.runtime.backend import metadata_document
    from sloserve.runtime.codec import ProtocolError, decode_http_infer, encode_http_infer
    from sloserve.runtime.onnx_backend import OnnxBackend
    from sloserve.runtime.stacking import split_outputs

    @serve.deployment(
        num_replicas=replicas,
        max_ongoing_requests=max(2 * max_batch_size, 8),
        ray_actor_options={"num_cpus": threads},
    )
    class OnnxDeployment:
        def __init__(self) -> None:
            self.backend = OnnxBackend(model_dir / "model.onnx", threads=threads)
            self.input_name = self.backend.inputs[0].name
            self.output_names = [o.name for o in self.backend.outputs]

        def metadata(self) -> dict[str, Any]:
            return metadata_document(
                name, "1", "onnxruntime_onnx (ray serve)", self.backend.inputs, self.backend.outputs
            )

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=wait_s)
        async def run_batch(self, items: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
            out = self.backend.run({self.input_name: np.concatenate(items)})
            return split_outputs(out, [len(x) for x in items])

        async def __call__(self, request: Request) -> Response:
            if request.method == "GET":
                return JSONResponse(self.metadata())
            body = await request.body()
            head = request.headers.get("inference-header-content-length")
            try:
                req = decode_http_infer(body, int(head) if head else None)
                x = req.inputs[self.input_name]
            except (ProtocolError, KeyError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            outputs = await self.run_batch(x)
            payload, header_len = encode_http_infer(name, "1", req, outputs, self.output_names)
            headers = {} if header_len is None else {"Inference-Header-Content-Length": str(header_len)}
            return Response(payload, headers=headers, media_type="application/octet-stream")

    return OnnxDeployment.bind()  # type: ignore[attr-defined]


def main() -> None:
    """Start Ray and the deployment, print ``{"port": P}`` when ready, serve until SIGTERM."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path, help="model directory holding model.onnx")
    parser.add_argument("--name", default=None, help="model name in URLs (default: directory name)")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per replica")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=10)
    parser.add_argument("--wait-s", type=float, default=0.01)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    args = parser.parse_args()
    name = args.name or args.model_dir.name

    import ray
    from ray import serve

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    app = build_app(args.model_dir, name, args.threads, args.max_batch_size, args.wait_s, args.replicas)
    serve.run(app, name=name, route_prefix=f"/v2/models/{name}")
    print(json.dumps({"port": args.port}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()


if __name__ == "__main__":
    main()
