"""A run whose model, seed or output folder fails says what failed and where, exits 2, and loses
nothing it finished."""

from __future__ import annotations

import os

import pytest
import torch
from test_executor import CATALOG, LIMIT, item, make_plan, spec_data
from torch import nn

from attackgen.cli.main import run_in_process as cli
from attackgen.models.zoo import load_builtin_model
from attackgen.results import RunResult
from attackgen.run.executor import CHECKPOINT, Executor, RunError, RunOptions
from attackgen.run.soundness_probe import FORWARD_PASSES
from taxonomy.spec import parse_spec


class FailsLater(nn.Module):
    """The digits CNN, until it has seen ``after`` inputs; then it raises, or returns a short batch."""

    def __init__(self, after: int, how: str) -> None:
        super().__init__()
        self.inner, self.after, self.how, self.seen = load_builtin_model("digits-cnn"), after, how, 0

    def forward(self, x):
        self.seen += len(x)
        out = self.inner(x)
        if self.seen > self.after:
            if self.how == "raise":
                raise RuntimeError("the remote endpoint closed the connection")
            return out[:-1]
        return out


class NoGradient(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = load_builtin_model("digits-cnn")

    def forward(self, x):
        return self.inner(x).detach()


def run(tmp_path, model, **options):
    options.setdefault("limit", LIMIT)
    options.setdefault("progress", False)
    spec = parse_spec(spec_data())
    ref = "digits-cnn" if model is None else "user-model"
    return Executor(make_plan(spec, [item("TinyPGD")]), ref, "digits", tmp_path / "out",
                    RunOptions(**options), catalog=CATALOG, model=model).run()


@pytest.mark.parametrize("how, expected", [("raise", "RuntimeError: the remote endpoint closed the connection"),
                                           ("short", r"outputs of shape \(\d+, 10\) for a batch of \d+ inputs")])
def test_a_model_that_fails_on_a_later_batch_names_the_inputs_and_keeps_the_finished(tmp_path, how, expected):
    # the randomness probe sees the first 64 inputs 3 times, the clean pass all 48 (4 batches of 12), then the
    # attack's first batch works and a later one fails
    model = FailsLater(after=FORWARD_PASSES * min(LIMIT, 64) + 48 + 12 * 8, how=how)
    with pytest.raises(RunError, match=rf"items\[0\] \(TinyPGD\) failed on inputs \d+\.\.\d+ .*{expected}") as caught:
        run(tmp_path, model, batch_size=12)
    assert "finished batches are saved" in str(caught.value) and "--resume" in str(caught.value)
    saved = RunResult.model_validate_json((tmp_path / "out" / "results.json").read_text())
    assert not saved.complete and saved.items[0].n_attacked >= 1
    assert saved.metrics["n_finished"] >= 12
    assert (tmp_path / "out" / CHECKPOINT).exists()


def test_a_model_that_fails_in_the_clean_pass_names_the_inputs(tmp_path):
    with pytest.raises(RunError, match=r"clean pass failed on inputs \d+\.\.\d+ \(12 inputs.*RuntimeError: the remote"):
        run(tmp_path, FailsLater(after=24, how="raise"), batch_size=12)


def test_a_model_without_gradients_on_a_white_box_plan_is_refused(tmp_path):
    with pytest.raises(RunError, match=r"--model user-model: its outputs carry no gradient .* white-box items"):
        run(tmp_path, NoGradient())


def test_a_full_disk_names_the_path_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    saves = {"n": 0}
    real_save = torch.save

    def full_after_two(obj, path, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] > 2:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1280 vs 1174")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_two)
    with pytest.raises(RunError, match=r"cannot write .*checkpoint.pt: .*is the disk full\?"):
        run(tmp_path, None, batch_size=12)
    out = tmp_path / "out"
    assert not list(out.glob("*.tmp"))
    kept = torch.load(out / CHECKPOINT, weights_only=True)
    assert len(kept["steps"][0]["done"]) == 2  # the two chunks saved before the disk filled
    monkeypatch.setattr(torch, "save", real_save)
    resumed = run(tmp_path, None, batch_size=12, resume=True)
    assert resumed.complete and resumed.n_inputs == LIMIT


def test_a_denied_write_is_a_named_error_that_leaves_no_temporary_file(tmp_path, monkeypatch):
    def denied(obj, path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(RunError, match=r"cannot write .*out/checkpoint.pt: Permission denied; .*writable"):
        run(tmp_path, None, batch_size=12)
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_a_named_error(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(RunError, match=r"cannot write .*ro/checkpoint.pt: Permission denied"):
            Executor(make_plan(parse_spec(spec_data()), [item("TinyPGD")]), "digits-cnn", "digits", out,
                     RunOptions(limit=12, progress=False), catalog=CATALOG).run()
    finally:
        out.chmod(0o700)


def test_a_seed_beyond_64_bits_is_refused_with_exit_2(tmp_path, capsys):
    code = cli(["run", str(tmp_path / "plan.yaml"), "--model", "digits-cnn", "--seed", str(2**70)])
    assert code == 2 and "--seed" in capsys.readouterr().err
    with pytest.raises(RunError, match=r"--seed 1180591620717411303424: expected a whole number"):
        run(tmp_path, None, seed=2**70)


# --------------------------------------------------------------------------- threads


def test_threads_default_to_one_for_small_models_and_say_why(tmp_path, monkeypatch):
    from attackgen.run import threads as threads_module

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads_module, "idle_cores", lambda: 4)
        digits = load_builtin_model("digits-cnn")
        used, why = threads_module.choose_threads(None, digits, (1, 16, 16), torch.device("cpu"))
        assert used == 1 and torch.get_num_threads() == 1 and "0.4 M multiply-accumulates per input" in why
        big = nn.Sequential(nn.Conv2d(3, 256, 3, padding=1), nn.Conv2d(256, 256, 3, padding=1))  # ~640 M MAC
        assert threads_module.choose_threads(None, big, (3, 32, 32), torch.device("cpu"))[0] == 4
        monkeypatch.setattr(threads_module, "idle_cores", lambda: 1)  # a loaded machine: one thread whatever
        assert threads_module.choose_threads(None, big, (3, 32, 32), torch.device("cpu"))[0] == 1
        result = run(tmp_path, None, threads=1, limit=12)
        assert result.versions["threads"] == "1 (--threads)" and result.metrics["threads"] == 1
    finally:
        torch.set_num_threads(before)
