"""Adaptive escalation: when a soundness flag fires, run the adaptive counterpart on the survivors.

AutoAttack only flags a model that masks its gradients; Athalye et al. 2018 ("Obfuscated gradients give
a false sense of security", arXiv:1802.00420) and Tramer et al. 2020 ("On adaptive attacks", arXiv:
2002.08347) show what to run instead. After the plan, the run's flags choose typed escalation items:

- saturated logits, probability outputs, zero or non-finite gradients without a located cause: APGD on
  the scale-free DLR loss (and targeted DLR), on log-probabilities when the model outputs probabilities;
- zero gradients with non-differentiable operations located in the forward pass (rounding, floor, sign):
  the same attacks through BPDA, a straight-through estimator (backward pass = identity) applied to those
  operations on the attack's view of the model only;
- randomised outputs: APGD-CE and APGD-DLR with EOT over 20 passes (AutoAttack's rand version);
- a black-box attack beating the white-box ones with nothing located: APGD-DLR with restarts.

Escalation items run on the inputs the plan left unbroken, like plan items, and every success is
verified on the real victim (never the BPDA or log view). Runs of a preset plan (exact AutoAttack) do
not escalate by default, so their figure stays comparable with published ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attackgen.results import EscalatedItem, Escalation, Flag

View = Literal["victim", "bpda", "log_probabilities"]
EOT_SAMPLES = 20  # AutoAttack's rand version
MASKING = ("zero_gradients", "nonfinite_gradients", "probability_outputs")
RANDOM = ("randomized_output",)
BLACK_BOX = ("black_box_beats_white_box",)
TRIGGERS = MASKING + RANDOM + BLACK_BOX
APGD_NORMS = ("inf", "2")
STILL = {
    "zero_gradients": "; the flag remains: gradients are zero even for the margin loss or through BPDA (an "
    "operation it cannot locate)",
    "black_box_beats_white_box": "; the flag remains for the plan's white-box items (the check compares the plan's "
    "items; do not trust white-box results on this model without the escalation)",
}

# Operations whose gradient is zero almost everywhere (or undefined): BPDA replaces their backward pass.
_ZERO_GRAD_NAMES = ("round", "floor", "ceil", "trunc", "sign")
ZERO_GRAD_OPS: dict[Any, str] = {}
for _name in _ZERO_GRAD_NAMES:
    for _owner in (torch, torch.Tensor):
        if hasattr(_owner, _name):
            ZERO_GRAD_OPS[getattr(_owner, _name)] = _name


@dataclass(frozen=True)
class EscalationItem:
    """One plan-like item added at run time: the attack, its params, the view it attacks and why."""

    attack: str  # catalogue id (an APGD variant)
    params: dict[str, Any]
    reasons: tuple[str, ...]  # the flag checks that triggered it
    view: View = "victim"
    why: str = ""


# --------------------------------------------------------------------------- BPDA (straight-through)


class _StraightThrough(torch.autograd.Function):
    """Forward: the operation's exact value; backward: the gradient passes unchanged (identity)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, value: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _ZeroGradOps(TorchFunctionMode):
    """Records the zero-gradient operations a forward pass calls; with ``straight_through`` replaces
    their backward pass by the identity (their forward values stay exact)."""

    def __init__(self, straight_through: bool, where: Callable[[], str]) -> None:
        super().__init__()
        self.straight_through, self.where = straight_through, where
        self.found: dict[str, int] = {}

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = ZERO_GRAD_OPS.get(func)
        if name is None or not args or not isinstance(args[0], Tensor) or not isinstance(out, Tensor):
            return out
        x = args[0]
        if not x.is_floating_point() or out.shape != x.shape:
            return out
        key = f"{name} in {self.where()}"
        self.found[key] = self.found.get(key, 0) + 1
        if self.straight_through and x.requires_grad:
            return _StraightThrough.apply(x, out.detach())
        return out


@contextmanager
def _module_stack(model: nn.Module) -> Iterator[Callable[[], str]]:
    """Tracks which module is running (for naming where an operation sits)."""
    stack: list[str] = []
    handles = []

    def enter(label: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            stack.append(label)

        return hook

    def leave(module: nn.Module, args: Any, output: Any) -> None:  # returns None: the output is kept
        if stack:
            stack.pop()

    for name, module in model.named_modules():
        label = f"{type(module).__name__}" + (f" ({name})" if name else "")
        handles.append(module.register_forward_pre_hook(enter(label)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield lambda: stack[-1] if stack else type(model).__name__
    finally:
        for handle in handles:
            handle.remove()


def locate_nondifferentiable(model: nn.Module, x: Tensor) -> list[str]:
    """The zero-gradient operations (rounding, floor, sign...) one forward pass calls, with the module
    they run in, e.g. ``["round in InputQuantize"]``; empty when there are none."""
    with torch.no_grad(), _module_stack(model) as where, _ZeroGradOps(False, where) as mode:
        model(x)
    return sorted(mode.found)


class BPDA(nn.Module):
    """The attack's view of a model with straight-through gradients through its zero-gradient operations
    (Athalye et al. 2018): same outputs, usable gradients. Never used to verify."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Any:
        with _ZeroGradOps(True, lambda: ""):
            return self.model(x)


class LogProbabilities(nn.Module):
    """The attack's view of a model that outputs probabilities: their logarithm (logits up to a constant)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.log(self.model(x).clamp_min(1e-30))


def attack_view(model: nn.Module, view: View) -> nn.Module:
    """The model an escalation item's gradients come from (verification always uses ``model`` itself)."""
    if view == "bpda":
        return BPDA(model)
    if view == "log_probabilities":
        return LogProbabilities(model)
    return model


# --------------------------------------------------------------------------- choosing the items


@dataclass
class Choice:
    """The items chosen, and the triggering flags that got no counterpart (they remain)."""

    items: list[EscalationItem] = field(default_factory=list)
    located: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _apgd(attack: str, norm: str, eps: float, reasons: tuple[str, ...], view: View, why: str,
          **extra: Any) -> EscalationItem:
    params: dict[str, Any] = {"steps": 100, "restarts": 1, "rho": 0.75, "norm": norm, "mode": "fixed",
                              "epsilon": eps, "target": {"kind": "untargeted"}}
    if attack == "apgd_t":
        params.update(n_target_classes=9, parallel_targets=True)
    params.update(extra)
    return EscalationItem(attack, params, reasons, view, why)


def choose(flags: Sequence[Flag], budgets: Sequence[tuple[str, float]], located: Sequence[str],
           done: Sequence[tuple[str, dict[str, Any]]], num_classes: int | None) -> Choice:
    """Escalation items for the triggering ``flags`` at each (norm, epsilon) of ``budgets``.

    ``located``: the zero-gradient operations found in the model (BPDA applies to them); ``done``: the
    plan's (attack, params), so an item the plan already ran on the victim is not run again.
    """
    fired = list(dict.fromkeys(f.check for f in flags if f.check in TRIGGERS))
    choice = Choice(located=list(located))
    if not fired:
        return choice
    masking = tuple(c for c in fired if c in MASKING)
    random = tuple(c for c in fired if c in RANDOM)
    black = tuple(c for c in fired if c in BLACK_BOX)
    runnable = [(n, e) for n, e in budgets if n in APGD_NORMS]
    if not runnable:
        choice.unanswered = fired
        choice.notes.append("no Linf or L2 budget: the APGD counterparts cannot run")
        return choice
    classes = num_classes or 0
    view: View = "victim"
    if "zero_gradients" in masking and located:
        view = "bpda"
    elif "probability_outputs" in masking:
        view = "log_probabilities"
    for norm, eps in runnable:
        if masking or (black and not random):
            reasons = masking + black
            if view == "bpda":
                why = ("BPDA: straight-through gradients (identity backward) through " + ", ".join(located)
                       + " on the attack's copy of the model; verified on the real model")
                choice.items.append(_apgd("apgd_ce", norm, eps, reasons, view, why, loss="ce"))
                if classes >= 4:
                    choice.items.append(_apgd("apgd_t", norm, eps, reasons, view, why, loss="dlr-targeted"))
            elif classes >= 3:
                why = ("the DLR loss is scale-free: saturated logits or probabilities do not flatten it"
                       + (" (attacking log-probabilities)" if view == "log_probabilities" else ""))
                extra = {"restarts": 3} if not masking else {}
                choice.items.append(_apgd("apgd_dlr", norm, eps, reasons, view, why, loss="dlr", **extra))
                if classes >= 4 and view != "victim":
                    choice.items.append(_apgd("apgd_t", norm, eps, reasons, view, why, loss="dlr-targeted"))
            else:
                choice.notes.append("DLR needs at least 3 classes (rule C18): no margin-loss counterpart")
        if random:
            why = f"EOT: gradients averaged over {EOT_SAMPLES} passes of the randomised model (AutoAttack rand)"
            rview: View = view if masking else "victim"
            reasons = random + masking + black  # on a random model, EOT is also the answer to Square winning
            choice.items.append(_apgd("apgd_ce", norm, eps, reasons, rview, why, loss="ce", eot_iter=EOT_SAMPLES))
            if classes >= 3:
                choice.items.append(_apgd("apgd_dlr", norm, eps, reasons, rview, why, loss="dlr",
                                          eot_iter=EOT_SAMPLES))
    ran = {(a, _key(p)) for a, p in done}
    choice.items = [i for i in choice.items if i.view != "victim" or (i.attack, _key(i.params)) not in ran]
    answered = {r for i in choice.items for r in i.reasons}
    choice.unanswered = [c for c in fired if c not in answered]
    return choice


def _key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    skip = {"target", "mode"}
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k not in skip))


def summarise(choice: Choice, items: Sequence[tuple[EscalationItem, Any]], before: float, after: float,
              flags: list[Flag], still: Sequence[str]) -> Escalation:
    """The results.json record, and each triggering flag's status (escalated, or remains and why)."""
    records = [EscalatedItem(attack=i.attack, view=i.view, reasons=list(i.reasons), why=i.why,
                             epsilon=r.epsilon, n_attacked=r.n_attacked, n_success=r.n_success)
               for i, r in items]
    broke: dict[str, int] = {}
    for item, result in items:
        for reason in item.reasons:
            broke[reason] = broke.get(reason, 0) + result.n_success
    for k, flag in enumerate(flags):
        if flag.check not in TRIGGERS:
            continue
        if flag.check in broke:
            status = f"escalated: {broke[flag.check]} more input(s) broken by its adaptive counterpart"
            if flag.check in still:
                status += STILL.get(flag.check, "; the flag remains")
        else:
            status = "remains: no adaptive counterpart ran for it"
        flags[k] = flag.model_copy(update={"escalation": status})
    return Escalation(ran=bool(items), robust_accuracy_before=before, robust_accuracy_after=after,
                      items=records, located=list(choice.located), remaining=list(choice.unanswered) + list(still),
                      notes=list(choice.notes))


# --------------------------------------------------------------------------- running them


def escalation_setting(options: Any, plan: Any) -> str | None:
    """None when escalation runs; else why not (--no-escalate, or a preset plan run exactly as published)."""
    choice = getattr(options, "escalate", None)
    if choice is False:
        return "turned off (--no-escalate)"
    if choice is None and getattr(plan, "preset", None):
        return (f"off for preset {plan.preset}: it runs exactly as published; pass --escalate to add the "
                "adaptive counterparts after it")
    return None


def run_escalation(ctx: Any, resources: Any, flag_log: Any, clean: Any, states: list[Any], flags: list[Flag],
                   before: Any, started: str, progress: Any, echo: Callable[[str], None],
                   run_steps: Callable[[Any, list[Any], list[Any], Any], None] | None = None,
                   ) -> tuple[Any, list[Any], Any]:
    """Choose and run the escalation items after the plan; returns (context with them, all states, result).

    ``flags`` are the plan's soundness flags (they are annotated in place with what was done about them);
    ``before`` is the plan-only RunResult. The items run through the same step runner as plan items
    (survivors only, verified on ``ctx.model``); they are not checkpointed: a resumed run reruns them.
    ``run_steps(ctx2, new_steps, all_states, clean)`` runs the chosen items instead of this process
    (a torchrun run: every rank calls this with the same flags and hands the chunks out, see
    attackgen.run.distributed); it leaves the merged states in ``all_states``.
    """
    import dataclasses

    from attackgen.audit.soundness import check_black_box_beats_white_box
    from attackgen.plan.document import PlanItem, version_1_item
    from attackgen.run.assemble import assemble
    from attackgen.run.items import resolve_steps
    from attackgen.run.objectives import build_objective
    from attackgen.run.soundness_probe import check_gradients
    from attackgen.run.steps import StepRunner, StepState
    from taxonomy.catalog import CATALOG

    fired = [f for f in flags if f.check in TRIGGERS]
    if not fired:
        return ctx, states, before
    threat = ctx.spec.threat
    if (threat.model_knowledge.kind != "white_box" or ctx.task != "classification"
            or threat.consequence.kind != "untargeted" or threat.scope.kind != "individual"):
        mark_disabled(before, flags, "not available: its counterparts cover untargeted, individual, white-box "
                      "classification")
        return ctx, states, before
    rows = ctx.eval_rows[:64]
    x, y = ctx.inputs(rows)
    located = locate_nondifferentiable(ctx.model, x) if any(f.check == "zero_gradients" for f in fired) else []
    budgets = list(dict.fromkeys((s.norm, s.epsilon) for s in ctx.steps if s.norm and s.epsilon is not None))
    done = [(s.attack, s.params) for s in ctx.steps]
    choice = choose(fired, budgets, located, done, ctx.num_classes)
    fake = type("EscalationPlan", (), {"items": [
        PlanItem.model_validate(version_1_item({"attack": i.attack, "params": dict(i.params), "rationale": i.why}))
        for i in choice.items], "query_budget": None})()
    new = resolve_steps(fake, ctx.spec, CATALOG, "escalation", ctx.tol) if choice.items else []
    for k, (step, item) in enumerate(zip(new, choice.items, strict=True)):
        step.index, step.role = len(ctx.steps) + k, "escalation"
        step.model_view = attack_view(ctx.model, item.view)
    ctx2 = dataclasses.replace(ctx, steps=tuple(ctx.steps) + tuple(new))
    all_states = list(states) + [StepState.empty(ctx.n) for _ in new]
    if new:
        echo(f"escalation: {len(new)} item(s) on the survivors, for "
             + ", ".join(dict.fromkeys(r for i in choice.items for r in i.reasons)))
        torch.manual_seed(ctx.options.seed)
        if run_steps is not None:
            run_steps(ctx2, list(new), all_states, clean)
        else:
            runner = StepRunner(ctx2, resources, flag_log, lambda: None, echo)
            for step in new:
                runner.run(step, all_states, clean, progress)
    result = assemble(ctx2, clean, all_states, flag_log.items, started, True)
    extra = result.items[len(ctx.steps):]
    for result_item, item in zip(extra, choice.items, strict=True):
        result_item.escalated_for, result_item.view = list(item.reasons), item.view
    still: list[str] = []
    bpda = [i for i in choice.items if i.view == "bpda"]
    if bpda:
        view = attack_view(ctx.model, "bpda")
        objective = build_objective(ctx.spec, y, ctx.forward(x))
        if any(f.check == "zero_gradients" for f in check_gradients(view, x, None, objective)):
            still.append("zero_gradients")
    elif any(f.check == "zero_gradients" for f in fired) and isinstance(y, Tensor):
        margin = check_gradients(ctx.model, x, y, None)  # the scale-free margin loss the DLR items follow
        if any(f.check == "zero_gradients" for f in margin):
            still.append("zero_gradients")
    if any(f.check in BLACK_BOX for f in fired) and check_black_box_beats_white_box(result):
        still.append("black_box_beats_white_box")
    result.escalation = summarise(choice, list(zip(choice.items, extra, strict=True)), before.robust_accuracy,
                                  result.robust_accuracy, flags, still)
    return ctx2, all_states, result


def mark_disabled(result: Any, flags: list[Flag], why: str) -> None:
    """Escalation did not run: say so in the result and on each flag that would have triggered it."""
    fired = [f.check for f in flags if f.check in TRIGGERS]
    if not fired:
        return
    for k, flag in enumerate(flags):
        if flag.check in TRIGGERS:
            flags[k] = flag.model_copy(update={"escalation": f"remains: escalation {why}"})
    result.escalation = Escalation(ran=False, robust_accuracy_before=result.robust_accuracy,
                                   robust_accuracy_after=result.robust_accuracy, remaining=list(dict.fromkeys(fired)),
                                   disabled=why)
