"""Adaptive escalation: when a soundness flag fires, run the adaptive counterpart on the survivors.

AutoAttack only flags a model that masks its gradients; Athalye et al. 2018 ("Obfuscated gradients give
a false sense of security", arXiv:1802.00420) and Tramer et al. 2020 ("On adaptive attacks", arXiv:
2002.08347) show what to run instead. After the plan, the run's flags choose typed escalation items:

- saturated logits, probability outputs, zero or non-finite gradients without a located cause: APGD on
  the scale-free DLR loss (and targeted DLR), on log-probabilities when the model outputs probabilities;
- zero gradients with non-differentiable operations located in the forward pass (rounding, floor, sign):
  the same attacks through BPDA, a straight-through estimator (backward pass = identity) applied to those
  operations on the attack's view of the model only;
- randomised outputs: APGD-CE and APGD-DLR with EOT (gradients averaged over 5 passes per step, 50 steps:
  a cheaper schedule than AutoAttack's rand version, 20 x 100, as strong on the measured fixture);
- a black-box attack beating the white-box ones with nothing located: APGD-DLR with restarts;
- a flag that the first stage leaves (zero gradients that BPDA could not reach, the black-box check still
  ahead of the white-box items): a second stage transfers from a smooth surrogate (Papernot et al. 2016,
  Athalye et al. 2018 section 5): APGD-CE and APGD-T on the model with its masking layer removed (a
  submodule that decides as the model does and has usable gradients), else on a built-in model of the
  same task and input shape (digits-mlp for the digits), each candidate verified on the real model.

Escalation items run on the inputs the plan left unbroken, like plan items, and every success is
verified on the real victim (never the BPDA, log or surrogate view). They are checkpointed like plan
items: the checkpoint records the escalation plan (``EscalationPlan``) and each item's finished chunks,
so a run stopped during escalation resumes without redoing them. Runs of a preset plan (exact
AutoAttack) do not escalate by default, so their figure stays comparable with published ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attackgen.plan.document import PlanItem, version_1_item
from attackgen.results import EscalatedItem, Escalation, Flag

View = Literal["victim", "bpda", "log_probabilities", "surrogate"]
EOT_SAMPLES = 5
EOT_STEPS = 50
"""The default plan's EOT schedule: gradients averaged over 5 passes per step, 50 steps, each input leaving
once every pass of a step is fooled. AutoAttack's rand version runs 20 x 100 (``--preset autoattack-rand``
does); on the randomised digits CNN (100 inputs) 20 x 100 cost 5.8 CPU s for the whole plan, 5 x 50 2.6 s,
and the final inputs re-measured over 10 passes were as robust within the noise (24.3 % and 25.5 % mean,
20 % and 22 % majority; bench/results/autoattack-randomized.md)."""
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
    stage: int = 1  # 1: the flags' counterparts; 2: transfer, for what stage 1 left
    source: str = ""  # view "surrogate": which model (``submodule:<name>`` or ``builtin:<name>``)

    def plan_item(self) -> PlanItem:
        """The same item as a plan item (threat context and hyperparameters split as plan format 2 does)."""
        return PlanItem.model_validate(version_1_item({"attack": self.attack, "params": dict(self.params),
                                                        "rationale": self.why, "role": "primary"}))

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "params": dict(self.params), "reasons": list(self.reasons),
                "view": self.view, "why": self.why, "stage": self.stage, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EscalationItem:
        return cls(str(data["attack"]), dict(data["params"]), tuple(data["reasons"]), data["view"],
                   str(data.get("why", "")), int(data.get("stage", 1)), str(data.get("source", "")))


@dataclass(frozen=True)
class EscalationPlan:
    """The escalation items of a run as a plan: what ``resolve_steps`` reads (``items``, ``query_budget``)
    and what the checkpoint records, so a resumed run runs the same items (a randomised model may flag
    differently on a second probe)."""

    entries: tuple[EscalationItem, ...] = ()
    located: tuple[str, ...] = ()
    surrogate: str = ""  # how the stage-2 surrogate was found (empty: none ran)

    query_budget: None = None  # escalation items are white-box: no query budget of their own

    @property
    def items(self) -> list[PlanItem]:
        return [entry.plan_item() for entry in self.entries]

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "located": list(self.located),
                "surrogate": self.surrogate}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EscalationPlan:
        return cls(tuple(EscalationItem.from_dict(e) for e in data.get("entries", [])),
                   tuple(data.get("located", [])), str(data.get("surrogate", "")))


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


def attack_view(model: nn.Module, view: View, surrogate: nn.Module | None = None) -> nn.Module:
    """The model an escalation item's gradients come from (verification always uses ``model`` itself)."""
    if view == "bpda":
        return BPDA(model)
    if view == "log_probabilities":
        return LogProbabilities(model)
    if view == "surrogate":
        if surrogate is None:
            raise RuntimeError("a transfer item needs its surrogate model")
        return surrogate
    return model


# --------------------------------------------------------------------------- smooth surrogates

AGREEMENT = 0.9
"""A submodule counts as the model without its masking layer when it decides as the model does on at least
this share of the probed inputs (the quantised fixture's inner CNN: 98% on 64 digits)."""
BUILTIN_AGREEMENT = 0.75
"""A built-in model of the same task is a weaker stand-in; below this agreement it is not worth the time."""


@dataclass(frozen=True)
class Surrogate:
    """A smooth stand-in for a model that masks its gradients, and how it was found."""

    source: str  # submodule:<name> or builtin:<name>
    module: nn.Module
    agreement: float
    description: str


def _smooth(module: nn.Module, x: Tensor, y: Tensor, objective: Any) -> bool:
    """Usable gradients: no zero-gradient operation in its forward pass, no masking flag on the attack loss."""
    from attackgen.run.soundness_probe import check_gradients

    if locate_nondifferentiable(module, x):
        return False
    flags = check_gradients(module, x, y, objective) + check_gradients(module, x, y, None)
    return not any(f.check in ("zero_gradients", "nonfinite_gradients") for f in flags)


def _logits(module: nn.Module, x: Tensor, classes: int) -> Tensor | None:
    try:
        with torch.no_grad():
            out = module(x)
    except Exception:  # a layer that does not take the model's input: not a stand-in
        return None
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape != (x.shape[0], classes):
        return None
    return out


def find_surrogate(model: nn.Module, x: Tensor, y: Tensor, objective: Any, classes: int,
                   builtin: Callable[[tuple[int, ...]], list[tuple[str, nn.Module]]] | None = None) -> Surrogate | None:
    """The model without its masking layer (the shallowest submodule that takes the model's input, outputs
    its logits, decides as it does and has usable gradients), else a built-in model of the same task and
    input shape (``builtin``), else None."""
    torch.manual_seed(0)
    with torch.no_grad():
        decided = model(x).argmax(1)
    def candidates() -> Iterator[tuple[str, nn.Module, float, str]]:
        """The unwrapped model first; the built-ins are loaded only if no submodule will do."""
        for name, module in model.named_modules():
            if name and module is not model:
                yield (f"submodule:{name}", module, AGREEMENT,
                       f"the model without its outer layers: its submodule {name} ({type(module).__name__}), which")
        for label, module in (builtin(tuple(x.shape[1:])) if builtin is not None else []):
            yield (f"builtin:{label}", module, BUILTIN_AGREEMENT,
                   f"the built-in {label} (same task and input shape), which")

    for source, module, needed, what in candidates():
        out = _logits(module, x, classes)
        if out is None:
            continue
        agree = float((out.argmax(1) == decided).float().mean())
        if agree >= needed and _smooth(module, x, y, objective):
            return Surrogate(source, module, agree,
                             f"{what} decides as the model does on {agree:.0%} of {len(x)} inputs")
    return None


def builtin_surrogates(shape: tuple[int, ...]) -> list[tuple[str, nn.Module]]:
    """Built-in classifiers with trained weights for inputs of ``shape`` that mask nothing (no wrappers)."""
    from attackgen.models.zoo import load_builtin_model
    from attackgen.models.zoo.models import MODEL_INFO

    out = []
    for info in MODEL_INFO.values():
        if info.task != "classification" or info.wraps is not None or tuple(info.input_shape) != shape:
            continue
        try:
            out.append((info.name, load_builtin_model(info.name).eval().requires_grad_(False)))
        except Exception:  # weights not shipped in this install
            continue
    return out


def resolve_surrogate(model: nn.Module, source: str) -> nn.Module:
    """The surrogate a checkpointed item names (a resumed run rebuilds it, it is not saved)."""
    kind, _, name = source.partition(":")
    if kind == "submodule":
        return model.get_submodule(name)
    if kind == "builtin":
        from attackgen.models.zoo import load_builtin_model

        return load_builtin_model(name).eval().requires_grad_(False)
    raise RuntimeError(f"unknown surrogate source {source!r}")


def transfer_items(surrogate: Surrogate, budgets: Sequence[tuple[str, float]], reasons: tuple[str, ...],
                   classes: int) -> list[EscalationItem]:
    """Stage 2: APGD-CE and APGD-T (when there are 4 classes) on the surrogate, verified on the model."""
    why = (f"transfer from a smooth surrogate, {surrogate.description}; the candidates are verified on the "
           "real model")
    items = []
    for norm, eps in budgets:
        if norm not in APGD_NORMS:
            continue
        items.append(_apgd("apgd_ce", norm, eps, reasons, "surrogate", why, loss="ce"))
        if classes >= 4:
            items.append(_apgd("apgd_t", norm, eps, reasons, "surrogate", why, loss="dlr-targeted"))
    return [EscalationItem(i.attack, i.params, i.reasons, i.view, i.why, 2, surrogate.source) for i in items]


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
            why = (f"EOT: gradients averaged over {EOT_SAMPLES} passes of the randomised model per step, "
                   f"{EOT_STEPS} steps (AutoAttack's rand version runs 20 x 100: --preset autoattack-rand)")
            rview: View = view if masking else "victim"
            reasons = random + masking + black  # on a random model, EOT is also the answer to Square winning
            choice.items.append(_apgd("apgd_ce", norm, eps, reasons, rview, why, loss="ce", eot_iter=EOT_SAMPLES,
                                      steps=EOT_STEPS))
            if classes >= 3:
                choice.items.append(_apgd("apgd_dlr", norm, eps, reasons, rview, why, loss="dlr",
                                          eot_iter=EOT_SAMPLES, steps=EOT_STEPS))
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
                      items=records, located=list(choice.located),
                      remaining=list(dict.fromkeys([*choice.unanswered, *still])),
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


Save = Callable[[Any, list[Any], EscalationPlan], None]
"""Checkpoints the run with its escalation so far: (context with the escalation steps, all states, plan)."""
RunSteps = Callable[[Any, list[Any], list[Any], Any], None]
"""Runs a stage's steps in place of this process's runner: (context with them, the new steps, all states,
clean pass); a torchrun run hands their chunks out over the ranks and leaves the merged states in place."""


@dataclass
class Resumed:
    """What a checkpoint saved during escalation holds: its escalation plan and the escalation items' states."""

    plan: EscalationPlan
    states: list[Any]


class _Stages:
    """Adds escalation items to a run in stages and runs them like plan items (survivors only, verified on
    the real model, each finished chunk checkpointed with the escalation plan)."""

    def __init__(self, ctx: Any, resources: Any, flag_log: Any, clean: Any, states: list[Any], progress: Any,
                 echo: Callable[[str], None], save: Save | None, resumed: Resumed | None,
                 run_steps: RunSteps | None = None) -> None:
        self.base, self.ctx, self.resources, self.flag_log, self.clean = ctx, ctx, resources, flag_log, clean
        self.states, self.progress, self.echo, self.save = list(states), progress, echo, save
        self.run_steps = run_steps
        self.resumed = resumed
        self.plan = EscalationPlan()
        self.surrogates: dict[str, nn.Module] = {}

    def saved(self, stage: int) -> list[EscalationItem] | None:
        """The items of ``stage`` a resumed checkpoint recorded (None: not resumed, or it had not got there)."""
        if self.resumed is None:
            return None
        items = [e for e in self.resumed.plan.entries if e.stage == stage]
        return items or None

    def add(self, items: Sequence[EscalationItem], located: Sequence[str] = (), surrogate: str = "") -> None:
        from attackgen.run.items import resolve_steps
        from attackgen.run.steps import StepRunner, StepState
        from taxonomy.catalog import CATALOG

        self.plan = EscalationPlan(self.plan.entries + tuple(items), tuple(located) or self.plan.located,
                                   surrogate or self.plan.surrogate)
        if not items:
            return
        first = len(self.ctx.steps)
        new = resolve_steps(EscalationPlan(tuple(items)), self.ctx.spec, CATALOG, "escalation", self.ctx.tol)
        model = self.base.model
        for k, (step, item) in enumerate(zip(new, items, strict=True)):
            step.index, step.role = first + k, "escalation"
            surrogate_model = None
            if item.view == "surrogate":
                if item.source not in self.surrogates:
                    self.surrogates[item.source] = resolve_surrogate(model, item.source)
                surrogate_model = self.surrogates[item.source]
            step.model_view = attack_view(model, item.view, surrogate_model)
        self.ctx = dataclasses.replace(self.ctx, steps=tuple(self.ctx.steps) + tuple(new))
        kept = self.resumed.states if self.resumed is not None else []
        for step in new:
            k = step.index - len(self.base.steps)
            self.states.append(kept[k] if k < len(kept) else StepState.empty(self.ctx.n))
        ctx, states, plan, save = self.ctx, self.states, self.plan, self.save
        if save is not None:
            save(ctx, states, plan)  # the plan is on disk before its first chunk runs
        torch.manual_seed(ctx.options.seed + first)
        if self.run_steps is not None:  # a torchrun run hands the chunks out over the ranks
            self.run_steps(ctx, list(new), self.states, self.clean)
            return
        runner = StepRunner(ctx, self.resources, self.flag_log,
                            (lambda: save(ctx, states, plan)) if save is not None else (lambda: None), self.echo)
        for step in new:
            runner.run(step, self.states, self.clean, self.progress)

    def result(self, started: str) -> Any:
        from attackgen.run.assemble import assemble

        result = assemble(self.ctx, self.clean, self.states, self.flag_log.items, started, True)
        for result_item, item in zip(result.items[len(self.base.steps):], self.plan.entries, strict=True):
            result_item.escalated_for, result_item.view = list(item.reasons), item.view
        return result


def run_escalation(ctx: Any, resources: Any, flag_log: Any, clean: Any, states: list[Any], flags: list[Flag],
                   before: Any, started: str, progress: Any, echo: Callable[[str], None], save: Save | None = None,
                   resumed: Resumed | None = None, run_steps: RunSteps | None = None,
                   ) -> tuple[Any, list[Any], Any]:
    """Choose and run the escalation items after the plan; returns (context with them, all states, result).

    ``flags`` are the plan's soundness flags (they are annotated in place with what was done about them);
    ``before`` is the plan-only RunResult. Stage 1 runs the flags' counterparts; stage 2 transfers from a
    smooth surrogate when stage 1 leaves a flag. ``save`` checkpoints after every finished chunk;
    ``resumed`` (a checkpoint saved during escalation) makes the run use the recorded items and keep their
    finished chunks. ``run_steps`` runs each stage's items instead of this process (see RunSteps).
    """
    from attackgen.audit.soundness import check_black_box_beats_white_box
    from attackgen.run.objectives import build_objective
    from attackgen.run.soundness_probe import check_gradients

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
    stages = _Stages(ctx, resources, flag_log, clean, states, progress, echo, save, resumed, run_steps)
    saved1 = stages.saved(1)
    if resumed is not None:
        located = list(resumed.plan.located)
    else:
        located = locate_nondifferentiable(ctx.model, x) if any(f.check == "zero_gradients" for f in fired) else []
    budgets = list(dict.fromkeys((s.norm, s.epsilon) for s in ctx.steps if s.norm and s.epsilon is not None))
    done = [(s.attack, s.params) for s in ctx.steps]
    choice = choose(fired, budgets, located, done, ctx.num_classes)
    if saved1 is not None:
        choice.items = saved1
    if choice.items:
        echo(f"escalation: {len(choice.items)} item(s) on the survivors, for "
             + ", ".join(dict.fromkeys(r for i in choice.items for r in i.reasons)))
    stages.add(choice.items, located)
    result = stages.result(started)

    def remaining(result: Any) -> list[str]:
        still: list[str] = []
        if any(i.view == "bpda" for i in choice.items):
            objective = build_objective(ctx.spec, y, ctx.forward(x))
            if any(f.check == "zero_gradients" for f in check_gradients(BPDA(ctx.model), x, None, objective)):
                still.append("zero_gradients")
        elif any(f.check == "zero_gradients" for f in fired) and isinstance(y, Tensor):
            margin = check_gradients(ctx.model, x, y, None)  # the scale-free margin loss the DLR items follow
            if any(f.check == "zero_gradients" for f in margin):
                still.append("zero_gradients")
        if any(f.check in BLACK_BOX for f in fired) and check_black_box_beats_white_box(result):
            still.append("black_box_beats_white_box")
        return still

    still = remaining(result)
    left = [c for c in dict.fromkeys([*still, *choice.unanswered]) if c in MASKING + BLACK_BOX]
    saved2 = stages.saved(2)
    if (left or saved2) and result.robust_accuracy > 0 and isinstance(y, Tensor):
        second: list[EscalationItem] = []
        how = ""
        if saved2 is not None:
            second, how = saved2, (resumed.plan.surrogate if resumed is not None else "")
        else:
            objective = build_objective(ctx.spec, y, ctx.forward(x))
            found = find_surrogate(ctx.model, x, y, objective, ctx.num_classes or 0, builtin_surrogates)
            if found is None:
                choice.notes.append("no smooth surrogate found for a transfer (no submodule decides as the model "
                                    "does with usable gradients, no built-in model of the same input shape)")
            else:
                second = transfer_items(found, budgets, tuple(left), ctx.num_classes or 0)
                how = found.description
                stages.surrogates[found.source] = found.module
        if second:
            echo(f"escalation: {len(second)} transfer item(s) from a smooth surrogate, for {', '.join(left)}")
            stages.add(second, surrogate=how)
            result = stages.result(started)
            still = remaining(result)
            answered = {r for i in second for r in i.reasons}
            choice.unanswered = [c for c in choice.unanswered if c not in answered]
    items = list(stages.plan.entries)
    result.escalation = summarise(choice, list(zip(items, result.items[len(ctx.steps):], strict=True)),
                                  before.robust_accuracy, result.robust_accuracy, flags, still)
    result.escalation.surrogate = stages.plan.surrogate or None
    return stages.ctx, stages.states, result


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
