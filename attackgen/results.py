"""The results file of a run (results.json): what the audit and the reports read. Pure pydantic, no torch.

Every figure here was measured by re-running the victim on the final, clipped adversarial input;
norms are re-measured on that input. Fields are added, never renamed, within one results_version.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RESULTS_VERSION: Literal[1] = 1


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Norms(Record):
    """Perturbation size of one adversarial input, re-measured after clipping."""

    l0: float
    l1: float
    l2: float
    linf: float
    ssim: float | None = None


class InputResult(Record):
    """One input after one plan item (or after the whole plan, for the worst case)."""

    index: int  # position in the data set
    label: int | None = None
    clean_correct: bool
    success: bool  # verified on the re-run of the clipped input
    within_budget: bool  # perturbation re-measured against epsilon and mask
    norms: Norms | None = None
    queries: int = 0
    adversarial_label: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)  # task-specific (pixel agreement, removal rate...)


class ItemResult(Record):
    """One plan item: an attack with its parameters, run on the inputs still unbroken when it started."""

    attack: str  # catalogue id
    params: dict[str, Any]
    epsilon: float | None = None
    n_attacked: int  # inputs this item ran on (survivors)
    n_success: int  # verified successes among them
    robust_accuracy_after: float  # worst case over the plan up to and including this item
    success_rate: float  # n_success / n_attacked (0 when nothing was attacked)
    median_queries: float | None = None
    time_s: float
    transfer_estimate: bool = False  # full black-box: measured on a surrogate or a proxy, not the victim
    metrics: dict[str, float] = Field(default_factory=dict)
    inputs: list[InputResult] = Field(default_factory=list)
    escalated_for: list[str] = Field(default_factory=list)  # flag checks this run-time item answers (escalation)
    view: str | None = None  # escalation: the model view its gradients came from (victim, bpda, log_probabilities)


class Flag(Record):
    """A soundness warning (Carlini et al. 2019): evidence and the usual fix."""

    check: str
    severity: Literal["info", "warning", "error"] = "warning"
    evidence: str
    fix: str
    escalation: str | None = None  # what the run did about it: "escalated: ..." or "remains: ..."


class EscalatedItem(Record):
    """One escalation item as it ran (also in ``items``, with its per-input results)."""

    attack: str
    view: str  # victim, bpda (straight-through gradients), log_probabilities or surrogate (transfer): what the
    # gradients came from
    reasons: list[str]  # the flag checks that triggered it
    why: str
    epsilon: float | None = None
    n_attacked: int
    n_success: int


class Escalation(Record):
    """Adaptive escalation (attackgen.run.escalate): robust accuracy before and after, and why it ran."""

    ran: bool
    robust_accuracy_before: float  # the plan's items only
    robust_accuracy_after: float  # with the escalation items (equals robust_accuracy)
    items: list[EscalatedItem] = Field(default_factory=list)
    located: list[str] = Field(default_factory=list)  # zero-gradient operations found in the model
    remaining: list[str] = Field(default_factory=list)  # flag checks no counterpart answered, or still firing
    notes: list[str] = Field(default_factory=list)
    disabled: str | None = None  # why it did not run (--no-escalate, a preset plan)
    surrogate: str | None = None  # stage 2: the smooth surrogate the transfer items attacked, how it was found


class RunResult(Record):
    results_version: Literal[1] = RESULTS_VERSION
    attackgen_version: str
    spec: dict[str, Any]  # the AttackSpec, as JSON
    spec_hash: str
    plan_hash: str
    task: str
    model: str
    data: str
    device: str
    seed: int
    versions: dict[str, str]
    started: str
    finished: str | None = None
    complete: bool = False  # False while batches are still running or after Ctrl-C
    n_inputs: int
    clean_accuracy: float
    robust_accuracy: float  # per-input worst case over the whole plan
    curve: list[dict[str, float]] = Field(default_factory=list)  # [{"epsilon": e, "robust_accuracy": a}]
    items: list[ItemResult]
    flags: list[Flag] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    escalation: Escalation | None = None  # None: no soundness flag called for it
    files: dict[str, str] = Field(default_factory=dict)  # what the run wrote besides results.json: name -> contents

    def partial_note(self) -> str | None:
        """For a stopped run, "partial: N of M inputs ..." (what the headline covers); None when complete."""
        if self.complete:
            return None
        n_done = int(self.metrics.get("n_finished", 0))
        items = int(self.metrics.get("items_finished", 0))
        if self.metrics.get("robust_upper_bound"):
            return (f"partial: 0 of {self.n_inputs} inputs finished every attack (the run was stopped); robust "
                    "accuracy is an upper "
                    f"bound from the {items} of {len(self.items)} attacks that finished (resume with --resume)")
        return (f"partial: {n_done} of {self.n_inputs} inputs (the run was stopped); robust accuracy is over those "
                f"{n_done} (resume with --resume)")

    def flagged_attacks(self, attacks: list[str]) -> set[str]:
        """Those of ``attacks`` a soundness flag names in its evidence: the examples a reader should see first."""
        return {a for flag in self.flags if flag.severity != "info" for a in set(attacks) if a in flag.evidence}

    def excluded_note(self) -> str | None:
        """Inputs the consequence does not apply to (a targeted run's inputs already of the target class)."""
        n = int(self.metrics.get("n_not_applicable", 0))
        if not n:
            return None
        consequence = self.spec.get("threat", {}).get("consequence", {})
        target = consequence.get("target_class") if isinstance(consequence, dict) else None
        why = (f"already of the target class {target}" if target is not None
               else "that the consequence does not apply to")
        return (f"{n} of {self.n_inputs} inputs {why} are not attacked and left out of robust accuracy "
                f"(over {self.n_inputs - n})")


def in_turn(attacks: list[str], first: set[str], limit: int) -> list[int]:
    """Positions of examples taken in turn from each attack (those in ``first`` lead), at most ``limit``
    but never fewer than one per attack: one attack's many successes must not hide the others'."""
    order = list(dict.fromkeys(sorted(attacks, key=lambda a: a not in first)))
    queues = {a: [i for i, b in enumerate(attacks) if b == a] for a in order}
    limit = max(limit, len(order))
    chosen: list[int] = []
    while len(chosen) < limit and any(queues.values()):
        for a in order:
            if queues[a] and len(chosen) < limit:
                chosen.append(queues[a].pop(0))
    return chosen
