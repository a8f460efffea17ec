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
from attackgen.models.remote import EndpointConfig, RemoteModel
from attackgen.models.zoo import load_builtin_data
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

    def __init__(self, folder: Path, *args: str) -> None:
        self.port = _free_port()
        self.stats_path = folder / f"stats-{self.port}.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, str(SERVER), str(self.port), str(self.stats_path), *args],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
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
    s = Server(tmp_path_factory.mktemp("server"))
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


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name,access,budget", [("square", SQUARE, 200), ("hsj", HSJ, 300)])
def test_attack_through_endpoint_matches_server_books(server, tmp_path, name, access, budget):
    plan = _plan(tmp_path, f"endpoint-{name}", *access)
    endpoint = _endpoint_file(tmp_path, server.url, concurrency=2, max_batch=16)
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


def test_rate_limit_holds_within_five_percent(server):
    rate = 20.0  # well below what the server answers on a loaded 2-core machine, so the limiter decides
    model = RemoteModel(EndpointConfig(url=server.url, input_name="x", rate_limit=rate, concurrency=4,
                                       max_batch=1), server.url)
    x = load_builtin_data("digits").x[:80]
    start = len(server.stats()["starts"])
    model(x[:20])
    model(x[20:])
    starts = server.stats()["starts"][start:]
    assert len(starts) == 80
    measured = (len(starts) - 1) / (starts[-1] - starts[0])
    assert abs(measured - rate) / rate <= 0.05, f"{measured:.1f} queries/s against a limit of {rate}"


def test_auth_from_environment_and_retries(tmp_path, monkeypatch):
    token = "s3cret-token-value"
    secured = Server(tmp_path, "--token", token, "--fail-every", "3")
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
    finally:
        secured.stop()


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
    # every answered query is logged, except a request in flight at the kill: answered by the server, lost
    # with the process before its line was written (one request of at most --batch-size 4 inputs)
    assert 0 <= split["rows"] - len(log) <= 4
    first_sent = {r["hash"] for r in log if r["session"] == sessions[0]}
    resent = [r for r in log if r["session"] == sessions[1] and r["hash"] in first_sent]
    assert not resent, f"the resumed run sent {len(resent)} queries the killed run had already sent"
    assert split["rows"] <= whole["rows"]  # (repeated clean predictions are replayed too)
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
