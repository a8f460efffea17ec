"""Remote endpoints against a REAL model server: KServe's ModelServer (Open Inference Protocol v2 REST)
serving the built-in digits CNN on 127.0.0.1, started by these tests (extra [serve]; skipped without it).

What a user relies on: the server saw exactly the queries attackgen logged; each input's attack queries in
the log equal its count in results.json and stay within the budget (charged before a request leaves); the
rate limit holds within 5%; a label-only spec sees labels only; an auth token from the environment reaches
the server and appears in no file; failed requests are retried; a run killed mid-way and resumed sends no
query twice (the server's total equals an uninterrupted run's)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("kserve")

from attackgen.cli.main import run_in_process as cli
from attackgen.models.remote import EndpointConfig, EndpointError, RemoteModel
from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import save_plan
from attackgen.plan.planner import plan as make_plan
from attackgen.results import RunResult
from attackgen.run.access import LabelOracle
from taxonomy.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "servers" / "kserve_digits.py"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A KServe ModelServer in a subprocess, with its own books in a stats file."""

    def __init__(self, folder: Path, *args: str, grpc: bool = False) -> None:
        self.port = _free_port()
        self.grpc_port = _free_port() if grpc else 0
        self.stats_path = folder / f"stats-{self.port}.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        command = [sys.executable, str(SERVER), str(self.port), str(self.stats_path), *args]
        if grpc:
            command += ["--grpc-port", str(self.grpc_port)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                for port in filter(None, (self.port, self.grpc_port)):
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        pass
                if self.stats_path.exists():
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("the KServe test server exited at start")
            time.sleep(0.2)
        raise RuntimeError("the KServe test server did not start in 90 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/models/digits"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}/digits"

    def stats(self) -> dict:
        return json.loads(self.stats_path.read_text())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("server"), grpc=True)
    yield s
    s.stop()


def _endpoint_file(folder: Path, url: str, **fields: object) -> Path:
    path = folder / "endpoint.yaml"
    path.write_text(yaml.safe_dump({"endpoint": {"url": url, "input_name": "x", **fields}}))
    return path


def _plan(folder: Path, name: str, knowledge: dict, bound: dict, optimizer: dict) -> Path:
    spec = {"name": name, "task": "classification",
            "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", **bound}],
                       "model_knowledge": knowledge, "data_knowledge": "none"},
            "strategy": {"model_basis": "victim", **optimizer}, "input_space": {"bounds": [0, 1]}}
    return save_plan(make_plan(parse_spec(spec, "test"), max_primary=1), folder / f"{name}.yaml")


SQUARE = ({"kind": "query_limited", "query_budget": 200, "granularity": "logits"}, {"norm": "inf", "epsilon": 0.15},
          {"optimizer": "evolution"})
HSJ = ({"kind": "label_only", "query_budget": 300}, {"norm": 2, "mode": "minimal"}, {})


def _lines(out: Path) -> list[dict]:
    """The log's records; a line that a kill cut short (at most one per stop) is not one."""
    records, cut = [], 0
    for line in (out / "queries.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            cut += 1
    assert cut <= 1
    return records


def _log(out: Path) -> list[dict]:
    """The answered queries (one line each); requests are also written before they leave (``pending``)."""
    return [r for r in _lines(out) if "pending" not in r]


@pytest.mark.parametrize("name,access,budget,transport", [("square", SQUARE, 200, "rest"), ("hsj", HSJ, 300, "rest"),
                                                           ("square", SQUARE, 200, "grpc")])
def test_attack_through_endpoint_matches_server_books(server, tmp_path, name, access, budget, transport):
    plan = _plan(tmp_path, f"endpoint-{name}", *access)
    url = server.grpc_url if transport == "grpc" else server.url
    endpoint = _endpoint_file(tmp_path, url, concurrency=2, max_batch=16)
    before = server.stats()
    out = tmp_path / "run"
    assert cli("run", plan, "--model", endpoint, "--data", "digits", "--limit", "6", "-q", "-o", out) == 0
    after = server.stats()
    log = _log(out)
    assert after["rows"] - before["rows"] == len(log)  # every input the server answered is in the log
    assert after["requests"] - before["requests"] == len({r["request"] for r in log})
    result = RunResult.model_validate_json((out / "results.json").read_text())
    assert result.complete and sum(i.n_success for i in result.items) > 0
    per_input = Counter(r["input"] for r in log if r["purpose"] == "attack")
    recorded: Counter[int] = Counter()
    for item in result.items:
        for r in item.inputs:
            assert r.queries <= budget
            recorded[r.index] += r.queries
    assert per_input == +recorded  # the log and results.json count the same attack queries per input
    pending = [r for r in _lines(out) if "pending" in r]  # each request was written down before it left
    assert sorted(h for r in pending for h in r["pending"]) == sorted(r["hash"] for r in log)


def test_label_only_attack_gets_labels_from_a_scoring_endpoint(server):
    model = RemoteModel(EndpointConfig(url=server.url, input_name="x"), server.url)
    oracle = LabelOracle(model, 4, budget=2)
    x = load_builtin_data("digits").x[:4]
    answer = oracle(x)
    assert answer.shape == (4,) and answer.dtype == torch.long
    assert not hasattr(oracle, "model") and not any(isinstance(v, torch.nn.Module) for v in vars(oracle).values())
    oracle(x)
    before = server.stats()["rows"]
    with pytest.raises(RuntimeError, match="budget"):
        oracle(x)  # budget spent: refused before a request leaves
    assert server.stats()["rows"] == before


def test_rate_limit_holds_on_every_window(server):
    """The limit is judged where it is enforced, on when each request left (written to the log before it
    goes), and checked against the server's clock: no request reached the server before the time logged
    for it, and over every window between two departures no more inputs left than the rate allows (one
    input of slack). A loaded machine can only delay requests, which these checks allow; a limiter that
    lets requests through early or bunches them after a stall fails them."""
    rate = 20.0
    folder = server.stats_path.parent / "rate"
    model = RemoteModel(EndpointConfig(url=server.url, input_name="x", rate_limit=rate, concurrency=4, max_batch=2),
                        server.url, folder)
    x = load_builtin_data("digits").x[:60]
    model(x[:1])
    model(x[1:20])  # one input, then a burst of ten requests from four threads
    model(x[20:])
    model.close()
    sends = sorted((r["sent_at"], len(r["pending"]), f"{r['session']}-{r['request']}")
                   for r in _lines(folder) if "pending" in r)
    assert sum(n for _, n, _ in sends) == 60
    arrivals = server.stats()["arrivals"]
    for left, _, request in sends:
        assert arrivals[request] >= left - 1e-3, "a request reached the server before its logged departure"
    for i in range(len(sends)):
        for j in range(i + 1, len(sends)):
            inputs = sum(n for _, n, _ in sends[i:j])  # the inputs that left in [t_i, t_j)
            allowed = rate * (sends[j][0] - sends[i][0]) + 1 + 1e-6 * rate
            assert inputs <= allowed, f"{inputs} inputs left in {sends[j][0] - sends[i][0]:.3f} s at {rate}/s"
    span = sends[-1][0] - sends[0][0]
    assert (60 - sends[-1][1]) / span > 0.5 * rate  # and the limit is what decides: not far below it


def test_auth_from_environment_and_retries(tmp_path, monkeypatch):
    token = "s3cret-token-value"
    secured = Server(tmp_path, "--token", token, "--fail-every", "3", grpc=True)
    try:
        plan = _plan(tmp_path, "endpoint-auth", *SQUARE)
        endpoint = _endpoint_file(tmp_path, secured.url, auth_header="Authorization", auth_env="DIGITS_TOKEN",
                                  auth_prefix="Bearer ", retries=3, backoff_s=0.01)
        out = tmp_path / "run"
        monkeypatch.delenv("DIGITS_TOKEN", raising=False)
        assert cli("run", plan, "--model", endpoint, "--data", "digits", "--limit", "3", "-q", "-o", out) == 2
        monkeypatch.setenv("DIGITS_TOKEN", token)
        assert cli("run", plan, "--model", endpoint, "--data", "digits", "--limit", "3", "-q", "-o", out,
                   "--force") == 0
        stats = secured.stats()
        assert stats["unauthorised"] == 0 and stats["failed"] > 0  # every third request failed and was retried
        assert stats["rows"] == len(_log(out))
        for file in out.rglob("*"):
            if file.is_file():
                assert token.encode() not in file.read_bytes(), f"the token leaked into {file}"
        x = load_builtin_data("digits").x[:6]  # the same over gRPC: token as metadata, UNAVAILABLE retried
        config = EndpointConfig(url=secured.grpc_url, input_name="x", max_batch=1, auth_header="Authorization",
                                auth_env="DIGITS_TOKEN", auth_prefix="Bearer ", backoff_s=0.01)
        before = secured.stats()
        answer = RemoteModel(config, secured.grpc_url)(x)
        after = secured.stats()
        assert answer.shape == (6, 10) and after["rows"] - before["rows"] == 6
        assert after["unauthorised"] == 0 and after["failed"] > before["failed"]
        monkeypatch.setenv("DIGITS_TOKEN", "wrong")
        with pytest.raises(EndpointError, match="INVALID_ARGUMENT"):  # refused, not retried
            RemoteModel(config, secured.grpc_url)(x[:1])
    finally:
        secured.stop()


def test_resume_sends_again_only_the_request_in_flight(server, tmp_path):
    """A stopped run's log: answered requests, and one written down before it left but never answered (the
    process died with it in flight). The resumed run replays the answered inputs, sends the in-flight ones
    again, marked ``resent``, and nothing else."""
    config = EndpointConfig(url=server.grpc_url, input_name="x", max_batch=2)
    x = load_builtin_data("digits").x[:8]
    first = RemoteModel(config, server.grpc_url, tmp_path)
    first(x[:4])
    first.close()
    log = tmp_path / "queries.jsonl"
    in_flight = json.loads(log.read_text().splitlines()[0])  # a request, as it was written before it left
    in_flight.update(request=99, session="killed", pending=[_hash(row) for row in x[4:6]])
    with open(log, "a") as handle:
        handle.write(json.dumps(in_flight) + "\n" + '{"run": "cut sho')  # and a line the kill cut short
    before = server.stats()["rows"]
    resumed = RemoteModel(config, server.grpc_url, tmp_path, resume=True)
    assert torch.equal(resumed(x[:6]).argmax(1), load_builtin_model("digits-cnn")(x[:6]).argmax(1))
    resumed.close()
    assert (resumed.replayed, resumed.sent, resumed.resent) == (4, 2, 2)
    assert server.stats()["rows"] - before == 2
    resent = [r for r in _log(tmp_path) if r.get("resent")]
    assert sorted(r["hash"] for r in resent) == sorted(in_flight["pending"])


def _hash(row: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(row.to(torch.float32).contiguous().numpy().tobytes()).hexdigest()[:32]


def _run_subprocess(plan: Path, endpoint: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "attackgen", "run", str(plan), "--model", str(endpoint), "--data", "digits",
               "--limit", "12", "--batch-size", "4", "-q", "-o", str(out), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_killed_run_resumes_without_sending_a_query_twice(tmp_path):
    plan = _plan(tmp_path, "endpoint-resume", *SQUARE)
    whole_server = Server(tmp_path)
    try:
        endpoint = _endpoint_file(tmp_path, whole_server.url)
        assert _run_subprocess(plan, endpoint, tmp_path / "whole").wait(300) == 0
        whole = whole_server.stats()
    finally:
        whole_server.stop()
    split_server = Server(tmp_path)
    try:
        endpoint = _endpoint_file(tmp_path, split_server.url)
        out = tmp_path / "split"
        first = _run_subprocess(plan, endpoint, out)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill inside the second batch of four inputs
            log = out / "queries.jsonl"
            if log.exists() and log.read_bytes().count(b"\n") > whole["rows"] // 2:
                break
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        assert not (out / "results.json").exists() or not json.loads((out / "results.json").read_text())["complete"]
        assert _run_subprocess(plan, endpoint, out, "--resume").wait(300) == 0
        split = split_server.stats()
    finally:
        split_server.stop()
    log = _log(out)
    sessions = list(dict.fromkeys(r["session"] for r in log))
    assert len(sessions) == 2  # the killed process and the resumed one
    first_answered = {r["hash"] for r in log if r["session"] == sessions[0]}
    again = [r for r in log if r["session"] == sessions[1] and r["hash"] in first_answered]
    assert not again, f"the resumed run sent {len(again)} queries whose answers the killed run had logged"
    # The one thing a kill can cost: a request in flight, written down before it left, whose answer died
    # with the process. The resumed run sends exactly those again, marked, so the books still balance.
    in_flight = {h for r in _lines(out) if "pending" in r and r["session"] == sessions[0] for h in r["pending"]}
    lost = in_flight - first_answered
    assert len(lost) <= 4  # at most one request (concurrency 1) of at most --batch-size 4 inputs
    resent = [r for r in log if r.get("resent")]
    assert {r["hash"] for r in resent} <= lost and all(r["session"] == sessions[1] for r in resent)
    assert len(log) <= split["rows"] <= len(log) + len(resent)  # the server saw each logged query, lost ones once more
    assert split["rows"] <= whole["rows"] + len(resent)
    a = RunResult.model_validate_json((tmp_path / "whole" / "results.json").read_text())
    b = RunResult.model_validate_json((out / "results.json").read_text())
    assert b.complete and [(i.n_success, [r.queries for r in i.inputs]) for i in b.items] == \
        [(i.n_success, [r.queries for r in i.inputs]) for i in a.items]


def test_generic_json_endpoint_described_by_a_mapping(tmp_path):
    """A plain JSON service ({"instances": [...]} in, {"result": {"labels": [...]}} out), described by the
    endpoint file's request template and response path; labels only, so a label-only spec runs on it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from attackgen.models.zoo import load_builtin_model

    net = load_builtin_model("digits-cnn").eval()
    seen = {"rows": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            x = torch.tensor(body["instances"], dtype=torch.float32)
            seen["rows"] += len(x)
            with torch.no_grad():
                labels = net(x).argmax(1).tolist()
            raw = json.dumps({"result": {"labels": labels}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        endpoint = tmp_path / "service.yaml"
        endpoint.write_text(yaml.safe_dump({"endpoint": {
            "protocol": "json", "url": f"http://127.0.0.1:{httpd.server_port}/predict",
            "request": {"instances": "$inputs", "version": 2}, "response": "result.labels",
            "returns": "labels", "num_classes": 10}}))
        plan = _plan(tmp_path, "json-hsj", *HSJ)
        out = tmp_path / "run"
        assert cli("run", plan, "--model", endpoint, "--data", "digits", "--limit", "4", "-q", "-o", out) == 0
        result = RunResult.model_validate_json((out / "results.json").read_text())
        assert result.clean_accuracy == 1.0 and sum(i.n_success for i in result.items) > 0
        assert seen["rows"] == len(_log(out))
        assert cli("audit", out, "--format", "json", "-o", tmp_path / "audit") == 0  # the log is counted, not choked on
        sources = json.loads((tmp_path / "audit" / "coverage.json").read_text())["sources"]
        note = next(s for s in sources if s["path"].endswith("queries.jsonl"))
        assert note["kind"] == "queries" and note["records"] == len(_log(out))
        square = _plan(tmp_path, "json-square", *SQUARE)  # scores from a labels-only service: refused by rule
        assert cli("run", square, "--model", endpoint, "--data", "digits", "--limit", "4", "-q",
                   "-o", tmp_path / "refused") == 2
    finally:
        httpd.shutdown()
