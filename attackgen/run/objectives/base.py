"""What success means for a task and consequence, as a loss to minimise and a predicate to verify.

Attacks are task-agnostic: a gradient attack minimises ``loss`` on model outputs; a score-based
attack uses ``loss`` on scores; a decision-based attack uses ``success_from_decisions`` on labels. The
executor calls ``success`` on the re-run outputs of the clipped adversarial input to verify.

Beyond the abstract core, an objective declares what else it offers in ``capabilities`` (GOAL: a class
per input; MARGIN: a logit margin; LOSS_CHOICE: ``with_loss`` switches between losses; PROGRESS: a
per-input progress score; CONFIGURE: ``configure`` takes attack parameters). An attack states what it
needs in ``Attack.objective_needs``; the step runner checks the two before the attack runs, so a
mismatch is one message naming the attack and the capability, never an AttributeError mid-run. Methods
that belong to a capability raise MissingCapability on objectives that do not declare it; ``to``,
``with_loss`` and ``configure`` default to "unchanged".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from taxonomy.errors import AttackgenError


class Capability(str, Enum):
    """What an objective offers beyond loss, success and subset."""

    GOAL = "goal"
    MARGIN = "margin"
    LOSS_CHOICE = "loss_choice"
    PROGRESS = "progress"
    CONFIGURE = "configure"


class MissingCapability(AttackgenError):
    """An attack asked an objective for something it does not offer (see Objective.capabilities)."""


class Objective(ABC):
    """Per-batch objective; ``subset(rows)`` restricts it to some inputs (survivors-only execution)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    targeted: bool = False
    output_kind: str = "logits"
    """What ``loss`` and ``success`` read: "logits", or "probabilities" (score oracles give those as they are)."""
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

    def missing(self, needs: frozenset[Capability]) -> list[str]:
        """The capabilities of ``needs`` this objective does not declare, by name."""
        return sorted(c.value for c in needs - self.capabilities)

    def _lacks(self, capability: Capability) -> MissingCapability:
        return MissingCapability(f"the {type(self).__name__} objective has no {capability.value} "
                                 f"(it offers: {', '.join(sorted(c.value for c in self.capabilities)) or 'none'})")

    def goal(self) -> Tensor:
        """The class per input: the target (targeted) or the label to leave (untargeted). GOAL only."""
        raise self._lacks(Capability.GOAL)

    def margin(self, outputs: Tensor) -> Tensor:
        """Per-input logit margin, < 0 once the consequence is realised. MARGIN only."""
        raise self._lacks(Capability.MARGIN)

    def with_loss(self, loss_kind: str) -> Objective:
        """The objective with another loss ("ce" or "margin") under LOSS_CHOICE; otherwise unchanged."""
        return self

    def configure(self, **params: Any) -> Objective:
        """The objective with attack parameters applied under CONFIGURE; otherwise unchanged."""
        return self

    def to(self, device: torch.device | str) -> Objective:
        """The objective with its per-input tensors on ``device`` (unchanged when it holds none)."""
        return self

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
