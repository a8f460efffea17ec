"""Saved models run end to end: TorchScript (scripted, traced) and torch.export (.pt2, static and dynamic
batch) through `attackgen plan` + `attackgen run`, white-box and black-box, with the same verified results
as the built-in model they were saved from. And nothing a file names runs unless the command line allows
it: crafted .pt2 archives are refused before torch unpickles them, entry points in a spec need
--allow-code (or the same reference given as --model), and entry points resolve from the current folder."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from attackgen.cli.main import run_in_process as cli
from attackgen.models.zoo import load_builtin_data, load_builtin_model
from attackgen.plan.document import save_plan
from attackgen.plan.planner import plan as make_plan
from attackgen.results import RunResult
from taxonomy.spec import parse_spec

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

LIMIT = "8"
WHITE = {
    "name": "saved-white", "task": "classification", "classes": [str(i) for i in range(10)],
    "threat": {"consequence": "untargeted", "scope": "individual",
               "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.08}],
               "model_knowledge": "white_box", "data_knowledge": "none", "capability": {"feed": "digital"}},
    "input_space": {"bounds": [0, 1], "layout": "NCHW", "normalization": "inside_model"},
}
BLACK = {
    "name": "saved-square", "task": "classification",
    "threat": {"consequence": "untargeted",
               "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
               "model_knowledge": {"kind": "query_limited", "query_budget": 150, "granularity": "logits"},
               "data_knowledge": "none"},
    "strategy": {"model_basis": "victim", "optimizer": "evolution"},
    "input_space": {"bounds": [0, 1]},
}


def _plan(data: dict, folder: Path, **params: int) -> Path:
    plan = make_plan(parse_spec(data, "test spec"), max_primary=1)
    for item in plan.items:
        for key, value in params.items():
            if key in item.params:
                item.params[key] = value
    return save_plan(plan, folder / f"{data['name']}.yaml")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The digits CNN saved five ways."""
    folder = tmp_path_factory.mktemp("saved")
    model = load_builtin_model("digits-cnn").eval()
    x = load_builtin_data("digits").x[:3]
    torch.jit.script(model).save(str(folder / "scripted.pt"))
    torch.jit.trace(model, x).save(str(folder / "traced.ts"))
    torch.export.save(torch.export.export(model, (x,)), str(folder / "static3.pt2"))  # fixed batch of 3
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=dynamic), str(folder / "dynamic.pt2"))
    return folder


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plans")
    return {"white": _plan(WHITE, folder, steps=10, n_queries=100, restarts=1),
            "black": _plan(BLACK, folder)}


def _run(plan: Path, model: str, out: Path, *extra: str) -> RunResult:
    code = cli("run", plan, "--model", model, "--data", "digits", "--limit", LIMIT, "-q", "-o", out, *extra)
    assert code == 0
    return RunResult.model_validate_json((out / "results.json").read_text())


def _outcome(result: RunResult) -> list[tuple[str, int, int, float]]:
    return [(i.attack, i.n_attacked, i.n_success, round(i.robust_accuracy_after, 6)) for i in result.items]


@pytest.fixture(scope="module")
def reference(plans, tmp_path_factory):
    """The built-in model's own results: a saved copy must give the same."""
    out = tmp_path_factory.mktemp("ref")
    return {kind: _run(plan, "digits-cnn", out / kind) for kind, plan in plans.items()}


@pytest.mark.parametrize("name", ["scripted.pt", "traced.ts", "dynamic.pt2", "static3.pt2"])
def test_saved_model_runs_white_box_like_the_original(saved, plans, reference, tmp_path, name):
    result = _run(plans["white"], str(saved / name), tmp_path / "run")
    assert result.complete and result.clean_accuracy == reference["white"].clean_accuracy
    assert sum(i.n_success for i in result.items) > 0, "the white-box attack must break inputs"
    assert _outcome(result) == _outcome(reference["white"])


@pytest.mark.parametrize("name", ["scripted.pt", "static3.pt2"])
def test_saved_model_runs_black_box_within_budget(saved, plans, reference, tmp_path, name):
    result = _run(plans["black"], str(saved / name), tmp_path / "run")
    assert _outcome(result) == _outcome(reference["black"])
    for item in result.items:
        assert item.median_queries is not None and all(r.queries <= 150 for r in item.inputs)


def _crafted_pt2(source: Path, target: Path, marker: Path) -> None:
    """A real archive whose sample inputs are a pickle that creates ``marker`` when unpickled."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = pickle.dumps(Payload())
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, evil if "/data/sample_inputs/" in info.filename else data)


def test_crafted_pt2_is_refused_before_anything_is_unpickled(saved, plans, tmp_path, capsys):
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pt2"
    _crafted_pt2(saved / "dynamic.pt2", crafted, marker)
    code = cli("run", plans["white"], "--model", crafted, "--data", "digits", "-q", "-o", tmp_path / "out")
    assert code == 2 and not marker.exists()
    err = capsys.readouterr().err
    assert "refused before loading" in err and "sample inputs" in err and "--allow-code" in err
    # the danger is real: torch itself runs the payload (it retries the sample inputs with full unpickling)
    with contextlib.suppress(Exception):
        torch.export.load(str(crafted))
    assert marker.exists()


def test_archive_that_is_not_pt2_names_the_fix(tmp_path, plans, capsys):
    bogus = tmp_path / "model.pt2"
    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(1)}, buffer)
    bogus.write_bytes(buffer.getvalue())  # a torch.save zip, not an export archive
    assert cli("run", plans["white"], "--model", bogus, "--data", "digits", "-q", "-o", tmp_path / "o") == 2
    assert "torch.export.save" in capsys.readouterr().err


MODULE = """
import pathlib
from attackgen.models.zoo import load_builtin_model

def build():
    pathlib.Path({marker!r}).write_text("ran")
    return load_builtin_model("digits-mlp")
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module in the current folder (not on sys.path), which leaves a marker when called."""
    name = f"usermodels_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "called"
    (tmp_path / f"{name}.py").write_text(MODULE.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield f"{name}:build", marker
    sys.modules.pop(name, None)


def test_entry_point_resolves_from_the_current_folder(user_module, plans, tmp_path):
    ref, marker = user_module
    result = _run(plans["white"], ref, tmp_path / "out")
    assert marker.exists() and result.model == ref and result.clean_accuracy > 0.8


def test_entry_point_named_by_a_spec_needs_allow_code(user_module, tmp_path, capsys):
    ref, marker = user_module
    spec = {"name": "spec-names-code", "task": "classification",
            "threat": {"consequence": "untargeted", "imperceptibility": [{"kind": "lp", "norm": "inf",
                                                                         "epsilon": 0.1}],
                       "model_knowledge": "full_black_box", "data_knowledge": "none"},
            "strategy": {"model_basis": {"kind": "surrogate", "source": "pretrained", "model": ref}}}
    plan = _plan(spec, tmp_path, steps=5)
    code = cli("run", plan, "--model", "digits-cnn", "--limit", "4", "-q", "-o", tmp_path / "refused")
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert "strategy.model_basis.model" in err and ref in err and "--allow-code" in err
    assert cli("run", plan, "--model", "digits-cnn", "--limit", "4", "-q", "-o", tmp_path / "allowed",
               "--allow-code") == 0
    assert marker.exists()
    saved_plan = yaml.safe_load(plan.read_text())
    assert saved_plan  # the plan itself is unchanged data; only the command line decides


def _rewrite(source: Path, target: Path, change) -> None:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            name, data = change(info.filename, src.read(info))
            if name is not None:
                dst.writestr(name, data)


@pytest.mark.parametrize("what,change", [
    ("stores", lambda n, d: (n, d.replace(b'"use_pickle": false', b'"use_pickle": true', 1))
     if n.endswith("model_weights_config.json") else (n, d)),
    ("AOTInductor", lambda n, d: (n, d) if not n.endswith("archive_format")
     else (n.rsplit("/", 1)[0] + "/data/aotinductor/model/lib.so", b"\x7fELF")),
    ("names the Python module 'os'", lambda n, d: (n, d.replace(b'"fqn": ""', b'"fqn": "os:system"', 1))
     if n.endswith("models/model.json") else (n, d)),
])
def test_archives_that_would_run_code_are_refused(saved, tmp_path, what, change):
    from attackgen.models.saved import SavedModelError, check_export_archive

    crafted = tmp_path / "crafted.pt2"
    _rewrite(saved / "dynamic.pt2", crafted, change)
    if what == "AOTInductor":  # keep archive_format, add the library beside it
        with zipfile.ZipFile(saved / "dynamic.pt2") as src, zipfile.ZipFile(crafted, "a") as dst:
            name = next(n for n in src.namelist() if n.endswith("archive_format"))
            dst.writestr(name, src.read(name))
    with pytest.raises(SavedModelError, match=what):
        check_export_archive(crafted, "crafted.pt2")
    check_export_archive(saved / "dynamic.pt2", "dynamic.pt2")  # the untouched archive passes
