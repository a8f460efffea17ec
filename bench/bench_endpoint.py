"""Overhead of attackgen's endpoint client on loopback, per batched request, against a real KServe server.

Starts tests/servers/kserve_digits.py (needs the [serve] extra), then for each batch size sends the same
inputs two ways, alternating rounds so machine load hits both alike:

- raw: http.client on a kept-alive connection posting a pre-encoded Open Inference Protocol body and
  reading the answer bytes: the server's own time plus the loopback round trip, nothing else;
- attackgen: RemoteModel.forward (encode, rate limiter with no limit, send, parse, hash, query log).

and the same over gRPC (raw: the generated stub sending a pre-built ModelInferRequest). The difference of
the medians is the client's overhead (target: <= 2 ms per batched request). Then the rate limit: inputs
sent one per request from four threads at --rates, the achieved rate from the departures in the query log
and from the server's arrival times (target: within 5% of the limit, never above it).
Run: PYTHONPATH=. .venv-serve/bin/python bench/bench_endpoint.py [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attackgen.models.remote import EndpointConfig, RemoteModel  # noqa: E402
from attackgen.models.zoo import load_builtin_data  # noqa: E402
from tests.test_endpoint import Server  # noqa: E402


def _overhead(model: RemoteModel, send_raw: object, x: torch.Tensor, requests: int) -> tuple[float, float, float]:
    """Median ms of the raw exchange and of RemoteModel.forward (alternating), and the client's own ms."""
    raw, ours = [], []
    client_before, requests_before = model.client_s, model.requests
    for i in range(requests):
        xi = (x + i * 1e-7).clamp(0, 1)  # a new input each time: no replay, a fresh hash
        start = time.perf_counter()
        send_raw()  # type: ignore[operator]
        raw.append(time.perf_counter() - start)
        start = time.perf_counter()
        model(xi)
        ours.append(time.perf_counter() - start)
    client = (model.client_s - client_before) / (model.requests - requests_before)
    return statistics.median(raw) * 1e3, statistics.median(ours) * 1e3, client * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--rates", default="20,100")
    parser.add_argument("--rate-queries", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    server = Server(folder, grpc=True)
    try:
        data = load_builtin_data("digits").x
        rest = RemoteModel(EndpointConfig(url=server.url, input_name="x", max_batch=1024), server.url, folder / "rest")
        grpc_model = RemoteModel(EndpointConfig(url=server.grpc_url, input_name="x", max_batch=1024), server.grpc_url,
                                 folder / "grpc")
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        path = "/v2/models/digits/infer"
        print(f"load: {os.getloadavg()[0]:.1f} (1-min average), {os.cpu_count()} CPUs")
        print(f"{'transport':>9} {'batch':>5} {'raw ms':>8} {'attackgen ms':>13} {'overhead ms':>12} "
              f"{'client-side ms':>15}")
        for batch in [int(b) for b in args.batches.split(",")]:
            x = data[:batch]
            body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                           "data": x.numpy().ravel().tolist()}]}).encode()

            def post(body: bytes = body) -> None:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                conn.getresponse().read()

            request = grpc_model._grpc_request(x.numpy(), "raw")

            def infer(request: object = request, stub: object = grpc_model._grpc()) -> None:
                stub.ModelInfer(request)  # type: ignore[attr-defined]

            for name, model, send in (("rest", rest, post), ("grpc", grpc_model, infer)):
                r, o, c = _overhead(model, send, x, args.requests)
                print(f"{name:>9} {batch:>5} {r:>8.2f} {o:>13.2f} {o - r:>12.2f} {c:>15.2f}")
        rest.close()
        grpc_model.close()
        print(f"\n{'rate limit':>10} {'queries':>8} {'from departures':>16} {'from arrivals':>14} {'deviation':>10}")
        for rate in [float(r) for r in args.rates.split(",")]:
            log_dir = folder / f"rate-{rate:g}"
            model = RemoteModel(EndpointConfig(url=server.url, input_name="x", rate_limit=rate, concurrency=4,
                                               max_batch=1), server.url, log_dir)
            n = args.rate_queries
            model((data[:n] + rate * 1e-6).clamp(0, 1))
            model.close()
            pending = [json.loads(line) for line in (log_dir / "queries.jsonl").read_text().splitlines()]
            sends = sorted((r["sent_at"], f"{r['session']}-{r['request']}") for r in pending if "pending" in r)
            arrivals = server.stats()["arrivals"]
            arrived = sorted(arrivals[key] for _, key in sends)
            by_departure = (len(sends) - 1) / (sends[-1][0] - sends[0][0])
            by_arrival = (len(arrived) - 1) / (arrived[-1] - arrived[0])
            print(f"{rate:>10g} {len(sends):>8} {by_departure:>16.2f} {by_arrival:>14.2f} "
                  f"{(by_departure - rate) / rate:>+10.1%}")
        print(f"load after: {os.getloadavg()[0]:.1f}")
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


if __name__ == "__main__":
    main()
