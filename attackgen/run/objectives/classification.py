"""Classification objectives: untargeted, static target (one class) and dynamic target (per-input rule).

One class covers all three. ``targets`` is None for an untargeted objective (move away from
``labels``) and a per-input class tensor otherwise. Inputs a dynamic rule does not apply to (a
class_map without their class, remove_classes not naming it) have ``applicable`` False: their loss is
0 and they never count as a success, so the executor can leave them out.

Losses (per input, minimised): "ce" is -CE(labels) untargeted and CE(targets) targeted; "margin" is
the logit margin, negative exactly when the input is misclassified (towards the target); "dlr" is the
Difference of Logits Ratio (Croce & Hein 2020): the margin divided by the spread of the top logits, so it
does not change when the logits are rescaled (saturated or temperature-scaled models). Untargeted DLR
reads the third-largest logit and needs 3 classes, targeted DLR the fourth and needs 4 (rule
C18-dlr-needs-enough-classes). Outputs may be
logits (default) or probabilities (``for_outputs("probabilities")``, for score oracles): probabilities
are turned into log-probabilities, on which both losses equal their logit versions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attackgen.run.objectives.base import Capability, Objective
from taxonomy.axes import DynamicTarget, StaticTarget, Untargeted
from taxonomy.errors import AttackgenError

LOSS_KINDS = ("ce", "margin", "dlr")
DLR_RULE = "C18-dlr-needs-enough-classes"
OUTPUT_KINDS = ("logits", "probabilities")


class ClassificationObjective(Objective):
    """Untargeted when ``targets`` is None, else targeted towards ``targets`` (one class per input)."""

    capabilities = frozenset({Capability.GOAL, Capability.MARGIN, Capability.LOSS_CHOICE})

    def __init__(
        self,
        labels: Tensor,
        targets: Tensor | None = None,
        loss_kind: str = "ce",
        output_kind: str = "logits",
        applicable: Tensor | None = None,
        consequence: str | None = None,
    ) -> None:
        if loss_kind not in LOSS_KINDS:
            raise AttackgenError(f"unknown loss {loss_kind!r}; expected one of {', '.join(LOSS_KINDS)}")
        if output_kind not in OUTPUT_KINDS:
            raise AttackgenError(f"unknown output kind {output_kind!r}; expected one of {', '.join(OUTPUT_KINDS)}")
        self.labels = labels.long()
        self.targets = targets.long() if targets is not None else None
        self.targeted = targets is not None
        self.loss_kind = loss_kind
        self.output_kind = output_kind
        self.applicable = applicable
        self.consequence = consequence or ("targeted" if self.targeted else "untargeted")
        # the class each input's loss is taken against; -1 rows (not applicable) are clamped to 0
        self._goal = (self.labels if self.targets is None else self.targets).clamp_min(0)

    # ------------------------------------------------------------------ copies

    def _copy(self, **changes: Any) -> ClassificationObjective:
        fields: dict[str, Any] = dict(labels=self.labels, targets=self.targets, loss_kind=self.loss_kind,
                      output_kind=self.output_kind, applicable=self.applicable, consequence=self.consequence)
        fields.update(changes)
        return ClassificationObjective(**fields)

    def with_loss(self, loss_kind: str) -> ClassificationObjective:
        """The same objective with another loss ("ce", "margin" or "dlr")."""
        return self if loss_kind == self.loss_kind else self._copy(loss_kind=loss_kind)

    def towards(self, targets: Tensor, loss_kind: str | None = None) -> ClassificationObjective:
        """The same inputs and labels aimed at ``targets`` (one class per input): the sub-objective of a
        target sweep (APGD-T, the targeted FMN sweep), whose success the caller still judges untargeted."""
        return self._copy(targets=targets, loss_kind=loss_kind or self.loss_kind)

    def for_outputs(self, output_kind: str) -> ClassificationObjective:
        """The same objective reading "logits" or "probabilities"."""
        return self if output_kind == self.output_kind else self._copy(output_kind=output_kind)

    def to(self, device: torch.device | str) -> ClassificationObjective:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return self._copy(labels=self.labels.to(device), targets=move(self.targets),
                          applicable=move(self.applicable))

    def subset(self, rows: Tensor) -> ClassificationObjective:
        pick = lambda t: None if t is None else t[rows.to(t.device)]  # noqa: E731
        return self._copy(labels=pick(self.labels), targets=pick(self.targets), applicable=pick(self.applicable))

    # ------------------------------------------------------------------ losses and predicates

    def _logits(self, outputs: Tensor) -> Tensor:
        if self.output_kind == "probabilities":
            return outputs.clamp_min(1e-30).log()
        return outputs

    def goal(self) -> Tensor:
        """The class per input: the target (targeted) or the label to leave (untargeted)."""
        return self._goal

    def margin(self, outputs: Tensor) -> Tensor:
        """Per-input logit margin; < 0 when the input is misclassified (as the target, if targeted)."""
        z = self._logits(outputs)
        goal = self._goal.view(-1, 1)
        z_goal = z.gather(1, goal).squeeze(1)
        z_other = z.scatter(1, goal, float("-inf")).amax(dim=1)
        return z_other - z_goal if self.targeted else z_goal - z_other

    def dlr_classes_needed(self) -> int:
        """Classes the DLR loss reads: the top 3 logits untargeted, the top 4 targeted."""
        return 4 if self.targeted else 3

    def dlr(self, outputs: Tensor) -> Tensor:
        """Per-input DLR loss (minimised): the margin over the spread of the top logits (scale-free)."""
        z = self._logits(outputs)
        need = self.dlr_classes_needed()
        if z.shape[1] < need:
            kind = "targeted " if self.targeted else ""
            raise AttackgenError(
                f"{DLR_RULE}: the {kind}DLR loss reads the {need} largest logits, and the model has "
                f"{z.shape[1]} classes; use a cross-entropy attack (apgd_ce, pgd_linf) on this model")
        top = z.topk(need, dim=1).values
        labels = self.labels.clamp_min(0).view(-1, 1)
        z_label = z.gather(1, labels).squeeze(1)
        if self.targeted:
            z_target = z.gather(1, self._goal.view(-1, 1)).squeeze(1)
            return (z_label - z_target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)
        z_other = z.scatter(1, labels, float("-inf")).amax(dim=1)
        return (z_label - z_other) / (top[:, 0] - top[:, 2] + 1e-12)

    def loss(self, outputs: Tensor) -> Tensor:
        if self.loss_kind == "margin":
            value = self.margin(outputs)
        elif self.loss_kind == "dlr":
            value = self.dlr(outputs)
        else:
            ce = F.cross_entropy(self._logits(outputs), self._goal, reduction="none")
            value = ce if self.targeted else -ce
        if self.applicable is not None:
            value = value * self.applicable
        return value

    def success_from_decisions(self, decisions: Tensor) -> Tensor:
        decisions = decisions.long()
        hit = decisions != self.labels if self.targets is None else decisions == self.targets
        if self.applicable is not None:
            hit = hit & self.applicable
        return hit

    def success(self, outputs: Tensor) -> Tensor:
        return self.success_from_decisions(outputs.argmax(dim=1))

    def metrics(self, clean_outputs: Tensor, adv_outputs: Tensor) -> dict[str, Tensor]:
        """Confidence in the adversarial decision and the margin change (clean - adversarial)."""
        probs = self._logits(adv_outputs).softmax(dim=1)
        return {
            "adv_confidence": probs.amax(dim=1),
            "margin_drop": self.margin(clean_outputs) - self.margin(adv_outputs),
        }


# ---------------------------------------------------------------------------- factory

Builder = Callable[..., Objective]  # (spec, labels, clean_outputs: a tensor, or per-image lists for detection)
TASK_OBJECTIVES: dict[str, Builder] = {}
"""task name -> builder(spec, labels, clean_outputs); segmentation and detection register here."""


def register_objective(task: str, builder: Builder) -> Builder:
    TASK_OBJECTIVES[task] = builder
    return builder


def _num_classes(spec: Any, clean_outputs: Tensor | None) -> int | None:
    if clean_outputs is not None:
        return int(clean_outputs.shape[1])
    return len(spec.classes) if spec.classes else None


def _resolve(spec: Any, ref: Any, field: str, num_classes: int | None) -> int:
    """A class reference as an output index, or an AttackgenError naming the spec field."""
    index = spec.class_index(ref)
    if index is None:
        known = f"; known classes: {', '.join(spec.classes)}" if spec.classes else (
            "; the spec has no 'classes' list, so classes must be given as indices")
        raise AttackgenError(f"{field}: unknown class {ref!r}{known}")
    if index < 0 or (num_classes is not None and index >= num_classes):
        raise AttackgenError(f"{field}: class index {index} is outside the model's {num_classes} classes")
    return index


def _resolve_all(spec: Any, refs: Sequence[Any], field: str, num_classes: int | None) -> list[int]:
    return [_resolve(spec, ref, f"{field}[{i}]", num_classes) for i, ref in enumerate(refs)]


def build_classification_objective(spec: Any, labels: Tensor, clean_outputs: Tensor | None) -> Objective:
    """The objective for a classification spec's consequence, on one batch (labels, clean logits)."""
    consequence = spec.threat.consequence
    labels = torch.as_tensor(labels).long()
    n_classes = _num_classes(spec, clean_outputs)
    where = "threat.consequence"
    if isinstance(consequence, Untargeted):
        if consequence.reference == "clean_prediction":
            if clean_outputs is None:
                raise AttackgenError(f"{where}.reference: clean_prediction needs the clean outputs")
            labels = clean_outputs.argmax(dim=1).to(labels.device)
        return ClassificationObjective(labels, consequence="untargeted")
    if isinstance(consequence, StaticTarget):
        if consequence.target_class is None:
            given = "target_map" if consequence.target_map is not None else "target_boxes"
            raise AttackgenError(
                f"{where}.{given}: a classification static target needs target_class, not {given}"
            )
        target = _resolve(spec, consequence.target_class, f"{where}.target_class", n_classes)
        targets = torch.full_like(labels, target)
        # an input already of the target class has nothing to attack: not applicable, never a success
        return ClassificationObjective(labels, targets, applicable=labels != target, consequence="static_target")
    if isinstance(consequence, DynamicTarget):
        if consequence.rule == "least_likely":
            if clean_outputs is None:
                raise AttackgenError(f"{where}.rule: least_likely needs the clean outputs")
            targets = clean_outputs.argmin(dim=1).to(labels.device)
            return ClassificationObjective(labels, targets, consequence="dynamic_target:least_likely")
        if consequence.rule == "class_map":
            mapping = {
                _resolve(spec, src, f"{where}.class_map.{src}", n_classes):
                    _resolve(spec, dst, f"{where}.class_map.{src}", n_classes)
                for src, dst in consequence.class_map.items()
            }
            size = max([*mapping, int(labels.max()) if labels.numel() else 0]) + 1
            lookup = torch.full((size,), -1, dtype=torch.long)
            for src, dst in mapping.items():
                lookup[src] = dst
            targets = lookup.to(labels.device)[labels.clamp_min(0)]
            applicable = targets >= 0
            return ClassificationObjective(labels, targets, applicable=applicable,
                                           consequence="dynamic_target:class_map")
        # remove_classes: inputs of those classes must get any other class
        removed = _resolve_all(spec, consequence.remove_classes, f"{where}.remove_classes", n_classes)
        applicable = torch.isin(labels, torch.tensor(removed, device=labels.device))
        return ClassificationObjective(labels, applicable=applicable, consequence="dynamic_target:remove_classes")
    raise AttackgenError(
        f"{where}.kind: '{consequence.kind}' needs spatial outputs (detection or segmentation); "
        "classification supports untargeted, static_target and dynamic_target"
    )


register_objective("classification", build_classification_objective)
