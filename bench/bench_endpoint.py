"""Overhead of attackgen's endpoint client on loopback, per batched request, against a real KServe server.

Starts tests/servers/kserve_digits.py (needs the [serve] extra), then for each batch size sends the same
inputs two ways, alternating rounds so machine load hits both alike:

- raw: http.client on a kept-alive connection posting a pre-encoded Open Inference Protocol body and
  reading the answer bytes: the server's own time plus the loopback round trip, nothing else;
- attackgen: RemoteModel.forward (encode, rate limiter with no limit, send, parse, hash, query log).

The difference of the medians is the client's overhead (target: <= 2 ms per batched request).
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batches", default="1,16,64")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    server = Server(folder)
    try:
        data = load_builtin_data("digits").x
        model = RemoteModel(EndpointConfig(url=server.url, input_name="x", max_batch=1024), server.url, folder)
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        path = "/v2/models/digits/infer"
        print(f"load: {os.getloadavg()[0]:.1f} (1-min average), {os.cpu_count()} CPUs")
        print(f"{'batch':>5} {'raw ms':>8} {'attackgen ms':>13} {'overhead ms':>12} {'client-side ms':>15}")
        for batch in [int(b) for b in args.batches.split(",")]:
            x = data[:batch]
            body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                           "data": x.numpy().ravel().tolist()}]}).encode()
            raw, ours = [], []
            client_before, requests_before = model.client_s, model.requests
            for i in range(args.requests):
                xi = (x + i * 1e-7).clamp(0, 1)  # a new input each time: no replay, a fresh hash
                start = time.perf_counter()
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                conn.getresponse().read()
                raw.append(time.perf_counter() - start)
                start = time.perf_counter()
                model(xi)
                ours.append(time.perf_counter() - start)
            client = (model.client_s - client_before) / (model.requests - requests_before)
            r, o = statistics.median(raw) * 1e3, statistics.median(ours) * 1e3
            print(f"{batch:>5} {r:>8.2f} {o:>13.2f} {o - r:>12.2f} {client * 1e3:>15.2f}")
        model.close()
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


if __name__ == "__main__":
    main()
