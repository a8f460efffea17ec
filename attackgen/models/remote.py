"""A model behind an HTTP endpoint: one more oracle, rate-limited, retried, and logged query by query.

Two protocols:

- ``oip``: the Open Inference Protocol (KServe v2 REST, also spoken by Triton and MLServer):
  ``POST {url}/v2/models/{name}/infer`` with ``{"inputs": [{"name", "shape", "datatype", "data"}]}``;
  the answer's ``outputs`` hold scores (N, classes) or labels (N,).
- ``json``: any JSON endpoint, described by a small mapping: a request template in which the string
  ``"$inputs"`` stands for the batch as nested lists (N, C, H, W), and a dotted path to the answer.

``--model http://host:port/v2/models/NAME`` names an OIP model directly; ``--model endpoint.yaml`` reads
a file with an ``endpoint:`` mapping (fields of ``EndpointConfig``) for everything else.

The attack never holds this module: attackgen.run.access wraps it in a ScoreOracle or LabelOracle,
which charges each input's query budget before the request leaves and passes only labels to a
label-only attack, whatever the endpoint returns. Here: a rate limit in queries (inputs) per second,
requests of at most ``max_batch`` inputs sent ``concurrency`` at a time, a timeout per request, and
retries with exponential back-off on connection errors, 429 and 5xx. An auth header's value is read
from an environment variable and is never written to results, logs or messages.

Every input sent is one line of ``queries.jsonl`` in the run folder (run, input index, purpose, input
hash, answer, latency). A resumed run reads the log back and answers queries it already holds from
it, so a run stopped mid-way and resumed sends no query twice.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from attackgen.models.onnx import OracleOnlyModel
from taxonomy.errors import AttackgenError

LOG_NAME = "queries.jsonl"
URL_SCHEMES = ("http://", "https://", "grpc://", "grpcs://")
_RETRY_STATUS = {429, 500, 502, 503, 504}


class EndpointError(AttackgenError):
    """The endpoint cannot be reached, refuses, or answers in a shape attackgen cannot read."""


class EndpointConfig(BaseModel):
    """How to reach and read one endpoint (the ``endpoint:`` mapping of an endpoint file)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="oip: the server root or .../v2/models/NAME[/infer]; json: the URL to POST to.")
    protocol: Literal["oip", "json"] = "oip"
    model_name: str | None = Field(None, description="oip: the model name, when the URL does not end with it.")
    input_name: str = Field("input-0", description="oip: the name of the input tensor.")
    output_name: str | None = Field(None, description="oip: the output to read (default: the first).")
    datatype: Literal["FP32", "FP64"] = "FP32"
    request: Any = Field(default_factory=lambda: {"instances": "$inputs"},
                         description='json: the request body; the string "$inputs" stands for the batch.')
    response: str = Field("predictions", description="json: dotted path to the answer in the response.")
    returns: Literal["scores", "labels"] = Field("scores", description="Scores (N, classes) or labels (N,).")
    num_classes: int | None = Field(None, gt=1, description="Needed when the endpoint returns labels only.")
    rate_limit: float | None = Field(None, gt=0, description="Queries (inputs) per second, at most.")
    concurrency: int = Field(1, ge=1, le=64, description="Requests in flight at once.")
    max_batch: int = Field(64, ge=1, description="Inputs per request.")
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0, le=10, description="Retries on connection errors, 429 and 5xx.")
    backoff_s: float = Field(0.2, ge=0, description="First retry waits this long, doubling each time.")
    auth_header: str | None = Field(None, description="Header to send, e.g. Authorization.")
    auth_env: str | None = Field(None, description="Environment variable that holds the header's value.")
    auth_prefix: str = Field("", description="Put before the value, e.g. 'Bearer '.")


def is_endpoint_ref(ref: str) -> bool:
    """An http(s) URL, or a YAML/JSON file whose top level is an ``endpoint:`` mapping."""
    if ref.startswith(URL_SCHEMES):
        return True
    path = Path(ref)
    if path.suffix.lower() not in (".yaml", ".yml", ".json") or not path.is_file():
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:
        return False
    return isinstance(data, dict) and "endpoint" in data


def load_endpoint(ref: str, run_dir: Path | None = None, resume: bool = False) -> RemoteModel:
    if ref.startswith(URL_SCHEMES):
        config = EndpointConfig(url=ref)
    else:
        data = yaml.safe_load(Path(ref).read_text(encoding="utf-8"))
        try:
            config = EndpointConfig.model_validate(data["endpoint"])
        except ValidationError as error:
            problems = "; ".join(f"endpoint.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise EndpointError(f"--model {ref}: {problems}.") from None
    return RemoteModel(config, ref, run_dir, resume)


# The global input indices of the rows being queried, set by the oracle around each query (None: the
# evaluator's own queries: clean predictions and verification).
_QUERY_IDS: ContextVar[list[int] | Callable[[], list[int]] | None] = ContextVar("attackgen_query_ids", default=None)


@contextmanager
def querying(ids: list[int] | Callable[[], list[int]]) -> Iterator[None]:
    """The data indices of the inputs in the query under way; a callable is read only by a remote model,
    so a local model's query loop never copies its row indices to the host (a GPU sync per query)."""
    token = _QUERY_IDS.set(ids)
    try:
        yield
    finally:
        _QUERY_IDS.reset(token)


class RateLimiter:
    """At most ``rate`` inputs per second, judged on the times requests actually leave.

    A generic cell rate algorithm with one input of slack: a request of ``n`` inputs leaves no earlier
    than the theoretical arrival time of the inputs before it minus ``1 / rate`` (at most 50 ms), and
    that time then moves ``n / rate`` on from when it actually left. So in any window of ``T`` seconds at
    most ``rate * T + 1`` inputs leave, plus one request's batch, however late the machine
    wakes a sleeping thread; the slack only keeps a late wake-up from lowering the rate. The lock is held
    while sleeping: with several requests in flight, each slot follows the previous one's departure.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.tat = 0.0
        self.lock = threading.Lock()

    def wait(self, n: int) -> float:
        """Block until a request of ``n`` inputs may leave; its departure on the wall clock."""
        if self.rate is None:
            return time.time()
        with self.lock:
            slack = min(1.0 / self.rate, 0.05)
            now = time.monotonic()
            if self.tat - slack > now:
                time.sleep(self.tat - slack - now)
                now = time.monotonic()
            self.tat = max(self.tat, now) + n / self.rate
            return time.time()


class RemoteModel(OracleOnlyModel):
    """An endpoint as a module: float NCHW in, scores (N, classes) out (one-hot for a labels endpoint)."""

    def __init__(self, config: EndpointConfig, ref: str, run_dir: Path | None = None, resume: bool = False) -> None:
        super().__init__()
        self.config, self.ref = config, ref
        self.source = f"the endpoint {ref}"
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
            raise EndpointError(f"--model {ref}: endpoint.url {config.url!r} is not an http(s) or grpc(s) URL.")
        self.grpc = parts.scheme in ("grpc", "grpcs")
        if self.grpc and config.protocol != "oip":
            raise EndpointError(f"--model {ref}: gRPC speaks the Open Inference Protocol only; a protocol: json "
                                "endpoint needs an http(s) URL.")
        if parts.username or parts.password:
            raise EndpointError(
                f"--model {ref}: endpoint.url carries credentials; attackgen records the URL in results, so "
                "give them as a header read from the environment (endpoint.auth_header, auth_env) instead."
            )
        if config.returns == "labels" and config.num_classes is None:
            raise EndpointError(f"--model {ref}: an endpoint that returns labels needs endpoint.num_classes.")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or {"https": 443, "grpcs": 443, "grpc": GRPC_PORT}.get(parts.scheme, 80)
        self.path = self._infer_path(parts.path)
        self.model_name = self._grpc_model_name(parts.path) if self.grpc else ""
        self.headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if config.auth_header:
            if not config.auth_env:
                raise EndpointError(f"--model {ref}: endpoint.auth_header needs endpoint.auth_env (the variable "
                                    "that holds its value; secrets are never written in files attackgen reads).")
            value = os.environ.get(config.auth_env)
            if not value:
                raise EndpointError(f"--model {ref}: the environment variable {config.auth_env} (endpoint.auth_env) "
                                    "is not set; it must hold the value of the auth header.")
            self.headers[config.auth_header] = config.auth_prefix + value
        self.limiter = RateLimiter(config.rate_limit)
        self.pool = ThreadPoolExecutor(config.concurrency) if config.concurrency > 1 else None
        self.local = threading.local()
        self.lock = threading.Lock()
        self.session = uuid.uuid4().hex[:12]
        self.run = run_dir.name if run_dir is not None else None
        self.log_path = run_dir / LOG_NAME if run_dir is not None else None
        self.replay: dict[str, list[Any]] = {}
        self.lost: set[str] = set()  # sent by the stopped run, answer lost with it (see _read_log)
        if resume:
            self.replay, self.lost = self._read_log()
        self._log_file: Any = None
        self._log_mode = "a" if resume else "w"
        self.requests = 0  # requests sent by this process
        self.sent = 0  # inputs sent by this process
        self.replayed = 0  # inputs answered from the log of the stopped run
        self.resent = 0  # inputs the stopped run sent whose answers it lost: sent again
        self._stub: Any = None
        self.client_s = 0.0  # time in this client outside the network wait (bench/bench_endpoint.py)

    # ------------------------------------------------------------------ wire format

    def _grpc_model_name(self, path: str) -> str:
        name = path.strip("/").removeprefix("v2/models/").removesuffix("/infer").strip("/")
        name = name or (self.config.model_name or "")
        if not name or "/" in name:
            raise EndpointError(f"--model {self.ref}: a gRPC endpoint names the model: grpc://host:port/NAME, or "
                                "the endpoint file gives endpoint.model_name.")
        return name

    def _infer_path(self, path: str) -> str:
        if self.grpc:
            return ""
        if self.config.protocol == "json":
            return path or "/"
        path = path.rstrip("/")
        if path.endswith("/infer"):
            return path
        if "/v2/models/" in path:
            return path + "/infer"
        if not self.config.model_name:
            raise EndpointError(
                f"--model {self.ref}: an Open Inference Protocol URL names the model "
                "(http://host:port/v2/models/NAME), or the endpoint file gives endpoint.model_name."
            )
        return f"{path}/v2/models/{self.config.model_name}/infer"

    def _body(self, array: np.ndarray, request_id: str) -> bytes:
        if self.config.datatype == "FP64":
            array = array.astype(np.float64)
        if self.config.protocol == "oip":
            payload: Any = {"id": request_id, "inputs": [{"name": self.config.input_name, "shape": list(array.shape),
                                        "datatype": self.config.datatype, "data": array.ravel()}]}
        else:
            payload = _substitute(self.config.request, array)
        return _dumps(payload)

    def _parse(self, data: Any, n: int) -> np.ndarray:
        if self.config.protocol == "oip":
            outputs = data.get("outputs") if isinstance(data, dict) else None
            if not isinstance(outputs, list) or not outputs:
                raise self._bad("an Open Inference Protocol answer has a non-empty 'outputs' list")
            wanted = self.config.output_name
            chosen = next((o for o in outputs if o.get("name") == wanted), None) if wanted else outputs[0]
            if chosen is None:
                names = [o.get("name") for o in outputs]
                raise self._bad(f"an output named {wanted!r} (endpoint.output_name); the answer has {names}")
            try:
                answer = np.asarray(chosen["data"], dtype=np.float64).reshape(chosen["shape"])
            except (KeyError, TypeError, ValueError):
                raise self._bad("outputs with 'data' and a matching 'shape'") from None
        else:
            value = data
            for key in self.config.response.split("."):
                if isinstance(value, dict) and key in value:
                    value = value[key]
                elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                    value = value[int(key)]
                else:
                    raise self._bad(f"a value at {self.config.response!r} (endpoint.response)")
            try:
                answer = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise self._bad(f"numbers at {self.config.response!r}") from None
        return self._checked(answer, n)

    def _checked(self, answer: np.ndarray, n: int) -> np.ndarray:
        if self.config.returns == "labels":
            answer = answer.reshape(-1)
            if answer.shape != (n,):
                raise self._bad(f"{n} labels")
        elif answer.ndim != 2 or answer.shape[0] != n:
            raise self._bad(f"scores of shape ({n}, classes), got shape {answer.shape}")
        return answer

    def _bad(self, expected: str) -> EndpointError:
        return EndpointError(f"--model {self.ref}: the endpoint's answer is not what attackgen reads: expected "
                             f"{expected}.")

    # ------------------------------------------------------------------ gRPC (Open Inference Protocol v2)

    def _grpc(self) -> Any:
        """The ModelInfer stub on one channel (thread-safe, shared by the concurrent requests)."""
        with self.lock:
            if self._stub is None:
                grpc, _, pb_grpc = _grpc_modules(self.ref)
                target = f"{self.host}:{self.port}"
                options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
                channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(), options)
                           if self.scheme == "grpcs" else grpc.insecure_channel(target, options))
                self._stub = pb_grpc.GRPCInferenceServiceStub(channel)
            return self._stub

    def _grpc_request(self, array: np.ndarray, request_id: str) -> Any:
        """Raw tensor bytes (little-endian, row-major), not JSON: the v2 gRPC protocol's compact form."""
        _, pb, _ = _grpc_modules(self.ref)
        dtype = np.dtype("<f8" if self.config.datatype == "FP64" else "<f4")
        request = pb.ModelInferRequest(model_name=self.model_name, id=request_id)
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = self.config.input_name, self.config.datatype
        tensor.shape.extend(array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
        return request

    def _grpc_answer(self, response: Any, n: int) -> np.ndarray:
        outputs = list(response.outputs)
        if not outputs:
            raise self._bad("a gRPC ModelInferResponse with outputs")
        wanted = self.config.output_name
        index = next((i for i, o in enumerate(outputs) if o.name == wanted), None) if wanted else 0
        if index is None:
            raise self._bad(f"an output named {wanted!r} (endpoint.output_name); the answer has "
                            f"{[o.name for o in outputs]}")
        output = outputs[index]
        kind = _GRPC_TYPES.get(output.datatype)
        if kind is None:
            raise self._bad(f"a numeric output, not datatype {output.datatype!r}")
        dtype, field = kind
        try:
            if len(response.raw_output_contents) > index:
                answer = np.frombuffer(response.raw_output_contents[index], dtype=dtype)
            else:
                answer = np.asarray(getattr(output.contents, field), dtype=dtype)
            answer = answer.astype(np.float64).reshape(tuple(output.shape))
        except ValueError:
            raise self._bad("outputs whose contents match their shape") from None
        return self._checked(answer, n)

    # ------------------------------------------------------------------ sending

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.config.timeout_s)
            self.local.conn = conn
        return conn

    def _exchange(self, payload: Any, n: int) -> tuple[np.ndarray, float]:
        """One try: the answer and the seconds on the wire; _Retry for what a retry may cure (connection
        errors, 429, 5xx, gRPC UNAVAILABLE / RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED), EndpointError for the rest."""
        if self.grpc:
            grpc, _, _ = _grpc_modules(self.ref)
            metadata = [(k.lower(), v) for k, v in self.headers.items() if k not in ("Content-Type", "Connection")]
            stub = self._grpc()
            start = time.perf_counter()
            try:
                response = stub.ModelInfer(payload, timeout=self.config.timeout_s, metadata=metadata)
            except grpc.RpcError as error:
                code = error.code()
                problem = f"gRPC {code.name}: {error.details()}"
                if code.name in _GRPC_RETRY:
                    raise _Retry(problem) from None
                raise EndpointError(f"--model {self.ref}: the endpoint answered {problem[:240]}.") from None
            wire = time.perf_counter() - start
            return self._grpc_answer(response, n), wire
        conn = self._connection()
        start = time.perf_counter()
        try:
            conn.request("POST", self.path, body=payload, headers=self.headers)
            response = conn.getresponse()
            raw = response.read()
            wire = time.perf_counter() - start
        except (OSError, http.client.HTTPException) as error:
            self.local.conn = None
            raise _Retry(f"{type(error).__name__}: {error}") from None
        if response.status in _RETRY_STATUS:
            retry_after = response.getheader("Retry-After")
            wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else 0.0
            raise _Retry(f"HTTP {response.status}", min(wait, 60.0))
        if response.status >= 400:
            raise EndpointError(f"--model {self.ref}: the endpoint answered HTTP {response.status} "
                                f"({raw[:200].decode(errors='replace')}).")
        try:
            data = _loads(raw)
        except ValueError:
            raise self._bad("a JSON answer") from None
        return self._parse(data, n), wire

    def _send(self, array: np.ndarray, hashes: list[str]) -> tuple[np.ndarray, float, int, float]:
        """One request (retried): the answer, its latency in seconds, its number, when it left (wall clock).

        The request is written to the query log before it leaves (``pending``): if the process dies with
        the request in flight, a resumed run knows which inputs the server may have answered (see _read_log).
        Every try waits for its slot in the rate limit: a refused try reached the server too."""
        with self.lock:
            self.requests += 1
            number = self.requests
        request_id = f"{self.session}-{number}"
        start = time.perf_counter()
        payload = self._grpc_request(array, request_id) if self.grpc else self._body(array, request_id)
        client = time.perf_counter() - start
        problem = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            left = self.limiter.wait(len(array))
            if not attempt:
                self._log([{"run": self.run, "session": self.session, "request": number,
                            "sent_at": round(left, 6), "pending": hashes}])
            sent = time.perf_counter()
            try:
                answer, wire = self._exchange(payload, len(array))
            except _Retry as retry:
                problem = retry.problem
                time.sleep(retry.wait)
                continue
            with self.lock:  # encoding, and decoding with its checks: the client's own time
                self.client_s += client + (time.perf_counter() - sent - wire)
            return answer, wire, number, left
        raise EndpointError(f"--model {self.ref}: no answer after {self.config.retries + 1} tries ({problem}); "
                            f"check the server, or raise endpoint.retries / endpoint.timeout_s.")

    def forward(self, x: Tensor) -> Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        ids = _QUERY_IDS.get()
        if callable(ids):
            ids = ids()
        hashes = [hashlib.sha256(row.tobytes()).hexdigest()[:32] for row in array]
        answers: list[Any] = [self.replay.get(h) for h in hashes]
        todo = [i for i, a in enumerate(answers) if a is None]
        self.replayed += len(array) - len(todo)
        chunks = [todo[i:i + self.config.max_batch] for i in range(0, len(todo), self.config.max_batch)]

        def one(rows: list[int]) -> tuple[list[int], np.ndarray]:
            answer, latency, number, left = self._send(array[rows], [hashes[r] for r in rows])
            records = []
            for row, value in zip(rows, answer.tolist(), strict=True):
                record = {"run": self.run, "session": self.session, "input": None if ids is None else ids[row],
                          "purpose": "evaluation" if ids is None else "attack", "hash": hashes[row],
                          "answer": value, "latency_ms": round(latency * 1000, 3), "request": number,
                          "batch": len(rows), "sent_at": round(left, 6)}
                if hashes[row] in self.lost:
                    record["resent"] = True
                records.append(record)
            self._log(records)  # as each request is answered: a kill loses only the requests in flight
            with self.lock:
                self.sent += len(rows)
                self.resent += sum("resent" in r for r in records)
            return rows, answer

        if self.pool is not None and len(chunks) > 1:
            results = list(self.pool.map(one, chunks))
        else:
            results = [one(rows) for rows in chunks]
        for rows, answer in results:
            for row, value in zip(rows, answer.tolist(), strict=True):
                answers[row] = value
        out = np.asarray(answers, dtype=np.float32)
        if self.config.returns == "labels":
            assert self.config.num_classes is not None
            labels = out.astype(np.int64)
            if len(labels) and (labels.min() < 0 or labels.max() >= self.config.num_classes):
                raise self._bad(f"labels in 0..{self.config.num_classes - 1} (endpoint.num_classes)")
            out = np.eye(self.config.num_classes, dtype=np.float32)[labels]  # one-hot: only the decision
        return torch.from_numpy(out).to(x.device)

    # ------------------------------------------------------------------ the query log

    def _log(self, records: list[dict[str, Any]]) -> None:
        if self.log_path is None or not records:
            return
        with self.lock:
            if self._log_file is None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                cut = self._log_mode == "a" and _ends_mid_line(self.log_path)
                self._log_file = open(self.log_path, self._log_mode + "b")  # noqa: SIM115
                self._log_mode = "a"  # reopened after close(): add to this run's log, never truncate it
                if cut:  # a line the kill cut short: end it, or our first line would join it
                    self._log_file.write(b"\n")
            self._log_file.write(b"".join(_dumps(r) + b"\n" for r in records))  # orjson: 10x the json module
            self._log_file.flush()  # a killed run keeps every answer it received

    def _read_log(self) -> tuple[dict[str, list[Any]], set[str]]:
        """The stopped run's answers by input hash, and the inputs it sent whose answers it never received.

        Those (at most the requests in flight at the stop: ``concurrency`` requests of ``max_batch``
        inputs) the server may or may not have answered; the answer is gone with the process, so the
        resumed run has to send them again. They are marked ``"resent": true`` in the log, so the count
        of queries the server saw is reconciled exactly: answered lines plus resent lines at most."""
        answers: dict[str, list[Any]] = {}
        pending: dict[tuple[Any, Any], list[str]] = {}
        answered: set[tuple[Any, Any]] = set()
        if self.log_path is None or not self.log_path.exists():
            return answers, set()
        with open(self.log_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    key = (record.get("session"), record.get("request"))
                    if "pending" in record:
                        pending[key] = [str(h) for h in record["pending"]]
                    else:
                        answers[str(record["hash"])] = record["answer"]
                        answered.add(key)
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # a line cut short by the kill
        lost = {h for key, hashes in pending.items() if key not in answered for h in hashes if h not in answers}
        return answers, lost

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.pool is not None:
            self.pool.shutdown(wait=False)

    def __del__(self) -> None:
        with suppress(Exception):
            self.close()


class _Retry(Exception):
    """A try that a retry may cure: what went wrong, and how long the server asked us to wait."""

    def __init__(self, problem: str, wait: float = 0.0) -> None:
        super().__init__(problem)
        self.problem, self.wait = problem, wait


GRPC_PORT = 8081  # KServe's default gRPC port
_GRPC_RETRY = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"}
_GRPC_TYPES = {"FP32": ("<f4", "fp32_contents"), "FP64": ("<f8", "fp64_contents"), "FP16": ("<f2", ""),
               "INT64": ("<i8", "int64_contents"), "INT32": ("<i4", "int_contents"),
               "INT16": ("<i2", "int_contents"), "INT8": ("i1", "int_contents"),
               "UINT8": ("u1", "uint_contents"), "UINT32": ("<u4", "uint_contents"),
               "UINT64": ("<u8", "uint64_contents")}


def _grpc_modules(ref: str) -> tuple[Any, Any, Any]:
    """grpcio and the Open Inference Protocol v2 stubs (shipped by kserve: the [serve] extra)."""
    try:
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    except ImportError as error:
        raise EndpointError(
            f"--model {ref}: a grpc:// endpoint needs grpcio and the Open Inference Protocol stubs "
            f"({error.name or error} does not import): pip install 'attackgen[serve]'."
        ) from None
    return grpc, grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or not path.stat().st_size:
        return False
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


def _dumps(payload: Any) -> bytes:
    """JSON with the arrays in it: orjson (with the [serve] extra) writes a batch of 64 16x16 images in about
    2 ms where the json module, going through Python floats, takes about 20 times longer."""
    try:
        import orjson
    except ImportError:
        return json.dumps(payload, separators=(",", ":"), default=lambda a: a.tolist()).encode()
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def _loads(raw: bytes) -> Any:
    try:
        import orjson
    except ImportError:
        return json.loads(raw)
    return orjson.loads(raw)


def _substitute(template: Any, inputs: Any) -> Any:
    if template == "$inputs":
        return inputs
    if isinstance(template, dict):
        return {k: _substitute(v, inputs) for k, v in template.items()}
    if isinstance(template, list):
        return [_substitute(v, inputs) for v in template]
    return template


def read_query_log(path: Path) -> dict[str, Any]:
    """Counts from a query log: answered queries, by attacks and for evaluation, queries sent again after a
    stop, requests written before they left (``pending``), runs (for audit)."""
    counts: dict[str, int] = {"queries": 0, "attack": 0, "evaluation": 0, "resent": 0, "requests": 0,
                              "bad_lines": 0}
    runs: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                if "pending" in record:
                    counts["requests"] += 1
                    continue
                purpose = record["purpose"]
            except (ValueError, KeyError, TypeError):
                counts["bad_lines"] += 1
                continue
            counts["queries"] += 1
            counts[purpose if purpose in ("attack", "evaluation") else "evaluation"] += 1
            counts["resent"] += bool(record.get("resent"))
            runs.add(str(record.get("run")))
    return {**counts, "runs": runs}
