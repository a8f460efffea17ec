"""What success means for a task and consequence, as a loss to minimise and a predicate to verify.

Attacks are task-agnostic: a gradient attack minimises ``loss`` on model outputs; a score-based
attack uses ``loss`` on scores; a decision-based attack uses ``success_from_decisions`` on labels. The
executor calls ``success`` on the re-run outputs of the clipped adversarial input to verify.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from torch import Tensor


class Objective(ABC):
    """Per-batch objective; ``subset(rows)`` restricts it to some inputs (survivors-only execution)."""

    targeted: bool = False
    applicable: Tensor | None = None
    """Per input: False where the consequence cannot apply (a class map without the input's class); None: all."""

    @abstractmethod
    def loss(self, outputs: Tensor) -> Tensor:
        """Per-input loss (shape N) that the attacker minimises; outputs are logits or scores."""

    @abstractmethod
    def success(self, outputs: Tensor) -> Tensor:
        """Per-input bool: does this output realise the consequence? (outputs: logits or scores)"""

    @abstractmethod
    def success_from_decisions(self, decisions: Tensor) -> Tensor:
        """Per-input bool from a label oracle's answers (top-1 labels or argmax maps)."""

    @abstractmethod
    def subset(self, rows: Tensor) -> Objective:
        """The same objective for the inputs at ``rows`` only."""

    def progress(self, outputs: Tensor) -> Tensor | None:
        """Per-input score (higher is closer to the consequence) on outputs; None: no such score.

        Attacks that keep iterating past a failure (``attacks.metzen.dense_descent``) return, for an input
        that never succeeded, its iterate with the highest progress instead of the last one. Threshold
        consequences on dense outputs define it (pixel agreement, removal rate...); None keeps the last.
        """
        return None

    def metrics(self, clean_outputs: Tensor, adv_outputs: Tensor) -> dict[str, Tensor]:
        """Task-specific per-input figures (pixel agreement, removal rate...); none by default."""
        return {}

    def example_arrays(self, clean_outputs: Any, adv_outputs: Any) -> dict[str, np.ndarray]:
        """Per-input arrays the report draws for kept examples (label maps, boxes); none by default."""
        return {}
