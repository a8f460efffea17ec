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
from collections.abc import Iterator
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
    if ref.startswith(("http://", "https://")):
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
    if ref.startswith(("http://", "https://")):
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
_QUERY_IDS: ContextVar[list[int] | None] = ContextVar("attackgen_query_ids", default=None)


@contextmanager
def querying(ids: list[int]) -> Iterator[None]:
    token = _QUERY_IDS.set(ids)
    try:
        yield
    finally:
        _QUERY_IDS.reset(token)


class RateLimiter:
    """At most ``rate`` inputs per second on average: each request reserves its slot on one clock."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self, n: int) -> None:
        if self.rate is None:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + n / self.rate
        if start > now:
            time.sleep(start - now)


class RemoteModel(OracleOnlyModel):
    """An endpoint as a module: float NCHW in, scores (N, classes) out (one-hot for a labels endpoint)."""

    def __init__(self, config: EndpointConfig, ref: str, run_dir: Path | None = None, resume: bool = False) -> None:
        super().__init__()
        self.config, self.ref = config, ref
        self.source = f"the endpoint {ref}"
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointError(f"--model {ref}: endpoint.url {config.url!r} is not an http(s) URL.")
        if parts.username or parts.password:
            raise EndpointError(
                f"--model {ref}: endpoint.url carries credentials; attackgen records the URL in results, so "
                "give them as a header read from the environment (endpoint.auth_header, auth_env) instead."
            )
        if config.returns == "labels" and config.num_classes is None:
            raise EndpointError(f"--model {ref}: an endpoint that returns labels needs endpoint.num_classes.")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = self._infer_path(parts.path)
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
        self.replay: dict[str, list[Any]] = self._read_log() if resume else {}
        self._log_file: Any = None
        self._log_mode = "a" if resume else "w"
        self.requests = 0  # requests sent by this process
        self.sent = 0  # inputs sent by this process
        self.replayed = 0  # inputs answered from the log of the stopped run
        self.client_s = 0.0  # time in this client outside the network wait (bench/bench_endpoint.py)

    # ------------------------------------------------------------------ wire format

    def _infer_path(self, path: str) -> str:
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

    def _body(self, array: np.ndarray) -> bytes:
        if self.config.datatype == "FP64":
            array = array.astype(np.float64)
        if self.config.protocol == "oip":
            payload: Any = {"inputs": [{"name": self.config.input_name, "shape": list(array.shape),
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

    # ------------------------------------------------------------------ sending

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.config.timeout_s)
            self.local.conn = conn
        return conn

    def _send(self, array: np.ndarray) -> tuple[np.ndarray, float, int]:
        """One request (retried), after the rate limiter: the answer, its latency in seconds, its number."""
        self.limiter.wait(len(array))
        start = time.perf_counter()
        body = self._body(array)
        encoded = time.perf_counter()
        problem = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            sent = time.perf_counter()
            try:
                conn = self._connection()
                conn.request("POST", self.path, body=body, headers=self.headers)
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.local.conn = None
                problem = f"{type(error).__name__}: {error}"
                continue
            received = time.perf_counter()
            with self.lock:
                self.requests += 1
                number = self.requests
            if response.status in _RETRY_STATUS:
                problem = f"HTTP {response.status}"
                retry_after = response.getheader("Retry-After")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    time.sleep(min(float(retry_after), 60.0))
                continue
            if response.status >= 400:
                raise EndpointError(f"--model {self.ref}: the endpoint answered HTTP {response.status} "
                                    f"({raw[:200].decode(errors='replace')}).")
            try:
                answer = self._parse(_loads(raw), len(array))
            except ValueError:
                raise self._bad("a JSON answer") from None
            with self.lock:
                self.client_s += (encoded - start) + (time.perf_counter() - received)
            return answer, received - sent, number
        raise EndpointError(f"--model {self.ref}: no answer after {self.config.retries + 1} tries ({problem}); "
                            f"check the server, or raise endpoint.retries / endpoint.timeout_s.")

    def forward(self, x: Tensor) -> Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        ids = _QUERY_IDS.get()
        hashes = [hashlib.sha256(row.tobytes()).hexdigest()[:32] for row in array]
        answers: list[Any] = [self.replay.get(h) for h in hashes]
        todo = [i for i, a in enumerate(answers) if a is None]
        self.replayed += len(array) - len(todo)
        chunks = [todo[i:i + self.config.max_batch] for i in range(0, len(todo), self.config.max_batch)]
        if self.pool is not None and len(chunks) > 1:
            results = list(self.pool.map(lambda rows: self._send(array[rows]), chunks))
        else:
            results = [self._send(array[rows]) for rows in chunks]
        records = []
        for rows, (answer, latency, number) in zip(chunks, results, strict=True):
            for row, value in zip(rows, answer.tolist(), strict=True):
                answers[row] = value
                records.append({"run": self.run, "session": self.session,
                                "input": None if ids is None else ids[row],
                                "purpose": "evaluation" if ids is None else "attack",
                                "hash": hashes[row], "answer": value, "latency_ms": round(latency * 1000, 3),
                                "request": number, "batch": len(rows)})
        self.sent += len(todo)
        self._log(records)
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
                self._log_file = open(self.log_path, self._log_mode, encoding="utf-8")  # noqa: SIM115
            self._log_file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
            self._log_file.flush()  # a killed run keeps every answer it received

    def _read_log(self) -> dict[str, list[Any]]:
        answers: dict[str, list[Any]] = {}
        if self.log_path is None or not self.log_path.exists():
            return answers
        with open(self.log_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    answers[str(record["hash"])] = record["answer"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by the kill
        return answers

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.pool is not None:
            self.pool.shutdown(wait=False)

    def __del__(self) -> None:
        with suppress(Exception):
            self.close()


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
    """Counts from a query log: lines, inputs queried by attacks, evaluation queries, runs (for audit)."""
    counts: dict[str, int] = {"queries": 0, "attack": 0, "evaluation": 0, "bad_lines": 0}
    runs: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                purpose = record["purpose"]
            except (ValueError, KeyError, TypeError):
                counts["bad_lines"] += 1
                continue
            counts["queries"] += 1
            counts[purpose if purpose in ("attack", "evaluation") else "evaluation"] += 1
            runs.add(str(record.get("run")))
    return {**counts, "runs": runs}
