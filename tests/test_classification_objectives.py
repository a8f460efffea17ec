"""Classification objectives from specs: untargeted, static and dynamic targets, errors naming fields."""

from __future__ import annotations

import pytest
import torch

from attackgen.run.objectives import build_objective
from attackgen.run.objectives.classification import ClassificationObjective
from taxonomy.errors import AttackgenError
from taxonomy.spec import parse_spec


def spec(consequence, classes=None):
    doc = {
        "name": "t",
        "task": "classification",
        "threat": {
            "consequence": consequence,
            "imperceptibility": [{"kind": "lp", "norm": "inf", "epsilon": 0.1}],
            "model_knowledge": "white_box",
        },
    }
    if classes:
        doc["classes"] = classes
    return parse_spec(doc)


LOGITS = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, -1.0], [0.5, 0.2, 4.0]])
LABELS = torch.tensor([0, 1, 1])


def test_untargeted():
    obj = build_objective(spec("untargeted"), LABELS, LOGITS)
    assert not obj.targeted
    assert obj.success(LOGITS).tolist() == [False, False, True]
    assert torch.allclose(obj.with_loss("margin").loss(LOGITS), torch.tensor([2.0, 2.0, -3.8]))
    assert torch.allclose(obj.loss(LOGITS), -torch.nn.functional.cross_entropy(LOGITS, LABELS, reduction="none"))
    assert obj.success_from_decisions(torch.tensor([1, 1, 0])).tolist() == [True, False, True]
    clean_ref = build_objective(spec({"kind": "untargeted", "reference": "clean_prediction"}), LABELS, LOGITS)
    assert clean_ref.labels.tolist() == [0, 1, 2]


def test_static_target_by_name_and_index():
    obj = build_objective(spec({"kind": "static_target", "target_class": "c"}, ["a", "b", "c"]), LABELS, LOGITS)
    assert obj.targeted and obj.targets.tolist() == [2, 2, 2]
    assert obj.success(LOGITS).tolist() == [False, False, True]
    assert obj.with_loss("margin").margin(LOGITS)[2] < 0
    assert build_objective(spec({"kind": "static_target", "target_class": 1}), LABELS, LOGITS).targets[0] == 1


def test_unknown_class_names_the_field():
    with pytest.raises(AttackgenError, match=r"threat.consequence.target_class: unknown class 'dog'"):
        build_objective(spec({"kind": "static_target", "target_class": "dog"}, ["a", "b", "c"]), LABELS, LOGITS)
    with pytest.raises(AttackgenError, match="outside the model's 3 classes"):
        build_objective(spec({"kind": "static_target", "target_class": 7}), LABELS, LOGITS)


def test_least_likely_and_class_map():
    obj = build_objective(spec({"kind": "dynamic_target", "rule": "least_likely"}), LABELS, LOGITS)
    assert obj.targets.tolist() == [2, 2, 1]
    mapped = build_objective(spec({"kind": "dynamic_target", "rule": "class_map", "class_map": {"b": "c"}},
                                  ["a", "b", "c"]), LABELS, LOGITS)
    assert mapped.applicable.tolist() == [False, True, True]
    assert mapped.success(LOGITS).tolist() == [False, False, True]
    assert mapped.loss(LOGITS)[0] == 0
    removed = build_objective(spec({"kind": "dynamic_target", "remove_classes": [1]}), LABELS, LOGITS)
    assert removed.success(LOGITS).tolist() == [False, False, True]


def test_subset_and_probabilities():
    obj = ClassificationObjective(LABELS, torch.tensor([1, 0, 2]))
    sub = obj.subset(torch.tensor([2]))
    assert sub.targets.tolist() == [2] and sub.labels.tolist() == [1]
    probs = LOGITS.softmax(1)
    for kind in ("ce", "margin"):
        a = obj.with_loss(kind).loss(LOGITS)
        b = obj.with_loss(kind).for_outputs("probabilities").loss(probs)
        assert torch.allclose(a, b, atol=1e-5)


def test_spatial_consequences_are_rejected():
    with pytest.raises(AttackgenError, match="spatial outputs"):
        build_objective(spec({"kind": "vanishing"}), LABELS, LOGITS)
