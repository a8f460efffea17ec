"""Objectives per task, and the factory that builds one from a spec's consequence.

``build_objective(spec, labels, clean_outputs)`` dispatches on ``spec.task`` through TASK_OBJECTIVES;
the segmentation and detection modules add their builders with ``register_objective``.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import Tensor

from attackgen.run.objectives.base import Objective
from attackgen.run.objectives.classification import (
    TASK_OBJECTIVES,
    ClassificationObjective,
    register_objective,
)
from taxonomy.errors import AttackgenError

# modules that register builders for the other tasks when imported (written by their owners)
_TASK_MODULES = {
    "segmentation": "attackgen.run.objectives.segmentation",
    "detection": "attackgen.run.objectives.detection",
}


def build_objective(spec: Any, labels: Any, clean_outputs: Tensor | list[Any] | None = None) -> Objective:
    """The objective of spec's task and consequence for one batch (labels, clean model outputs)."""
    task = getattr(spec.task, "value", spec.task)
    if task not in TASK_OBJECTIVES and task in _TASK_MODULES:
        try:
            importlib.import_module(_TASK_MODULES[task])
        except ModuleNotFoundError as error:
            if error.name != _TASK_MODULES[task]:
                raise
    if task not in TASK_OBJECTIVES:
        raise AttackgenError(f"task: no objective is implemented for task {task!r} yet")
    return TASK_OBJECTIVES[task](spec, labels, clean_outputs)


__all__ = ["TASK_OBJECTIVES", "ClassificationObjective", "Objective", "build_objective", "register_objective"]
