"""Executor follow-ups: detector imperceptibility verified during a run, patch sides that never exceed
the area budget, and a fixed patch location."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attackgen.executor import Executor, RunError, RunOptions
from attackgen.plan import Plan, PlanItem
from taxonomy.spec import parse_spec

DETECTOR = {"kind": "detector", "detectors": ["feature_squeezing"], "access": "white_box", "max_detection_rate": 0.1}
LINF = {"kind": "lp", "norm": "inf", "epsilon": 0.1}


def spec_for(imperceptibility: list[dict], **threat: object):
    data = {"name": "followups", "task": "classification", "classes": [str(i) for i in range(10)],
            "threat": {"consequence": "untargeted", "imperceptibility": imperceptibility,
                       "model_knowledge": "white_box", **threat}}
    return parse_spec(data)


def executor(tmp_path, spec, items: list[PlanItem], limit: int = 48, folder: str = "out") -> Executor:
    plan = Plan(spec_name=spec.name, spec_hash=spec.spec_hash(), spec=spec.model_dump(mode="json"),
                epsilons=[], items=items)
    return Executor(plan, "digits-cnn", "digits", tmp_path / folder, RunOptions(limit=limit, progress=False))


def pgd(name: str, **params: object) -> PlanItem:
    return PlanItem(attack=name, epsilon=0.1, params={"norm": "inf", "epsilon": 0.1, "steps": 40, **params})


def test_detector_flags_count_as_failures_and_the_aware_attack_is_detected_less(tmp_path):
    spec = spec_for([DETECTOR, LINF])
    items = [pgd("pgd_linf", step_size=0.01),
             pgd("detector_aware_pgd", step_size=0.005, detectors=["feature_squeezing"])]
    run = executor(tmp_path, spec, items)
    result = run.run()
    plain, aware = result.items
    # plain PGD fools the model on nearly every input, but the detector flags most of those candidates
    assert plain.metrics["detected_rate"] > 0.5
    assert run.states[0].counts["detected"] > 0
    # no flagged candidate is a success: the kept successes, re-checked by the verifier's own detector
    detector = run._verifying_detectors()[0]
    with np.load(tmp_path / "out" / "examples.npz") as examples:
        adversarial = torch.as_tensor(examples["adversarial"])
    assert len(adversarial) > 0 and not bool(detector.detect(adversarial).any())
    assert all(r.metrics.get("detected") == 0.0 for item in (plain, aware) for r in item.inputs if r.success)
    fooled = sum(1 for r in plain.inputs if r.metrics.get("detected") is not None)
    assert plain.n_success == fooled - run.states[0].counts["detected"]
    assert aware.metrics["detected_rate"] < plain.metrics["detected_rate"]
    assert aware.n_success > plain.n_success
    assert any(f.check == "verification.detected" for f in result.flags)


def test_unknown_detector_names_the_field(tmp_path):
    spec = spec_for([{**DETECTOR, "detectors": ["feature_squeezing", "magnet"]}, LINF])
    with pytest.raises(RunError, match=r"threat\.imperceptibility\[0\]\.detectors\[1\]: unknown detector 'magnet'"):
        executor(tmp_path, spec, [pgd("pgd_linf")])
