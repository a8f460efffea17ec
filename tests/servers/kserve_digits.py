"""A real KServe ModelServer (Open Inference Protocol v2 REST) serving the built-in digits CNN on loopback.

Started by the endpoint tests and bench/bench_endpoint.py in a subprocess:
``python tests/servers/kserve_digits.py PORT STATS_FILE [--grpc-port P] [--labels] [--token TOKEN] [--fail-every N]``.
It keeps its own books (requests, rows, time spent in predict, when each request id arrived) in STATS_FILE
after every request, so a test compares what the server saw with what attackgen logged. ``--grpc-port``
also serves the v2 gRPC protocol; ``--labels`` answers only the top-1 label; ``--token`` demands
``Authorization: Bearer TOKEN``; ``--fail-every N`` answers every N-th request with HTTP 503 / gRPC
UNAVAILABLE (to exercise retries).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time

import torch

torch.set_num_threads(1)

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402
from kserve.errors import InvalidInput, ModelNotReady  # noqa: E402

from attackgen.models.zoo import load_builtin_model  # noqa: E402


class ServiceUnavailable(ModelNotReady):
    """HTTP 503 on REST, UNAVAILABLE on gRPC (whose error mapping reads ``reason``)."""

    reason = "injected failure"


class Digits(Model):
    def __init__(self, name: str, stats: str, labels: bool, token: str | None, fail_every: int) -> None:
        super().__init__(name)
        self.stats_path, self.labels, self.token, self.fail_every = stats, labels, token, fail_every
        self.stats = {"requests": 0, "rows": 0, "predict_s": 0.0, "failed": 0, "unauthorised": 0, "starts": [],
                      "arrivals": {}}
        self.lock = threading.Lock()
        self.net = load_builtin_model("digits-cnn").eval()
        self.ready = True
        self._save()

    def _save(self) -> None:
        tmp = self.stats_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(self.stats, handle)
        os.replace(tmp, self.stats_path)

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> InferResponse:
        start, arrived = time.perf_counter(), time.time()  # arrival: what a rate limit is judged by
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        with self.lock:
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                self.stats["unauthorised"] += 1
                self._save()
                raise InvalidInput("unauthorised")
            self.stats["requests"] += 1
            if self.fail_every and self.stats["requests"] % self.fail_every == 0:
                self.stats["failed"] += 1
                self._save()
                raise ServiceUnavailable(self.name)
        x = torch.from_numpy(payload.inputs[0].as_numpy().astype("float32"))
        with torch.no_grad():
            logits = self.net(x)
        if self.labels:
            out = InferOutput("label", [len(x)], "INT64", logits.argmax(1).numpy())
        else:
            out = InferOutput("logits", list(logits.shape), "FP32", logits.numpy())
        with self.lock:
            self.stats["rows"] += len(x)
            self.stats["predict_s"] += time.perf_counter() - start
            self.stats["starts"].append(arrived)
            self.stats["arrivals"][payload.id or str(len(self.stats["starts"]))] = arrived
            self._save()
        return InferResponse(response_id=payload.id or "0", model_name=self.name, infer_outputs=[out])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("stats")
    parser.add_argument("--labels", action="store_true")
    parser.add_argument("--token", default=None)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    model = Digits("digits", args.stats, args.labels, args.token, args.fail_every)
    grpc = {"enable_grpc": True, "grpc_port": args.grpc_port} if args.grpc_port else {"enable_grpc": False}
    ModelServer(http_port=args.port, workers=1, enable_latency_logging=False, access_log_format=None,
                **grpc).start([model])


if __name__ == "__main__":
    main()
