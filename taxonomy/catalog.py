"""The attack catalogue: one descriptor per implementation, with the taxonomy cells it realises.

Pure data (no torch). The planner ranks and parameterises from these entries; the executor imports
``implementation`` lazily. ``implemented`` defaults to True (every entry's code has landed); an entry
catalogued ahead of its code sets it to False.

Conventions used in every entry:

- ``params`` is the attack's parameter model (taxonomy.params): its field defaults are the attack's
  defaults for images in [0, 1], written nowhere else. Step sizes are relative (``rel_stepsize``:
  step = rel_stepsize * epsilon), so they stay right for any epsilon; the planner replaces
  ``rel_stepsize`` with ``step_size`` in input units. The budget (norm, epsilon, mode) and the rest of
  the threat context go to the plan item's ``context``, not into params.
- ``requires``: what a spec must contain for the attack to be the right tool (see ``fits_purpose``).
- ``cost(p)`` is the expected work per input: forward and backward passes on the model the attack
  optimises against (victim or surrogate) and queries to the victim oracle. ``p`` is the attack's
  validated parameter instance (``descriptor.params``), so the cost follows the parameters the plan
  actually uses and a parameter left out is priced at the model's default, never a second copy of it.
  Callers use ``descriptor.expected_cost(params)`` (a plan's mapping; a surrogate ensemble multiplies
  the passes).
- ``access`` is what the attack touches: "gradients" (white-box module), "scores", "labels" (counted
  oracles) or "surrogate" (a substitute model; the victim gets at most a few verification queries).
- ``atlas`` are MITRE ATLAS technique ids: AML.T0043.000 white-box optimisation, .001 black-box
  optimisation, .002 black-box transfer, AML.T0015 evade AI model, AML.T0040 inference API access,
  AML.T0041 physical environment access, AML.T0044 full model access, AML.T0005 proxy model.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from taxonomy.axes import CONSEQUENCE_KINDS, Transformations
from taxonomy.catalog_types import AttackDescriptor, Cost, CostFn
from taxonomy.params import (
    APGDDLRParams,
    APGDParams,
    APGDTParams,
    AttackParams,
    BIMParams,
    BoundaryParams,
    CPPNParams,
    CWParams,
    DeepFoolParams,
    DenseBoundaryParams,
    DetectionParams,
    DetectorAwareParams,
    DetectorPatchParams,
    DIFGSMParams,
    EOTPGDParams,
    EvolutionParams,
    FABParams,
    FABTParams,
    FGSMParams,
    FMNParams,
    FMNTParams,
    HopSkipJumpParams,
    JSMAParams,
    LBFGSParams,
    LBFGSSSIMParams,
    LensParams,
    MetzenParams,
    MetzenUAPParams,
    MIFGSMParams,
    NewtonFoolParams,
    PatchParams,
    PGDParams,
    ScoreUAPParams,
    SimBAParams,
    SquareL1Params,
    SquareL2Params,
    SquareLinfParams,
    SSIMParams,
    StickerParams,
    TransferParams,
    UAPParams,
    WassersteinParams,
    ZOONewtonParams,
)

ALL_TASKS = frozenset({"classification", "segmentation", "detection"})
CLS = frozenset({"classification"})
SEG = frozenset({"segmentation"})
DET = frozenset({"detection"})
ANY_DATA = frozenset({"none", "training", "surrogate"})
WITH_DATA = frozenset({"training", "surrogate"})
INDIVIDUAL = frozenset({"individual"})
IMAGE_AGNOSTIC = frozenset({"contextual", "universal"})
FIXED = frozenset({"fixed"})
BOTH_MODES = frozenset({"fixed", "minimal"})
MINIMAL_FIRST = BOTH_MODES  # minimal-norm attacks also answer fixed-epsilon questions: success iff norm <= eps
GENERIC_TARGETS = frozenset({"untargeted", "static_target", "dynamic_target"})

WHITE_BOX_ATLAS = ("AML.T0043.000", "AML.T0044", "AML.T0015")
BLACK_BOX_ATLAS = ("AML.T0043.001", "AML.T0040", "AML.T0015")
TRANSFER_ATLAS = ("AML.T0043.002", "AML.T0005", "AML.T0015")
PHYSICAL_ATLAS = ("AML.T0043.000", "AML.T0044", "AML.T0041", "AML.T0015")


class _Steps(Protocol):
    @property
    def steps(self) -> int: ...


class _EOT(Protocol):
    @property
    def eot_samples(self) -> int | None: ...
    @property
    def transformations(self) -> dict[str, Any] | None: ...


class _Amortised(_EOT, Protocol):
    """An image-agnostic attack's fit: ``steps`` batches of ``batch_size`` inputs under ``eot_samples``
    transformations each, spread over the ``fit_size`` inputs it is fitted for."""

    @property
    def steps(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def fit_size(self) -> int: ...


_EOT_SAMPLES = Transformations.model_fields["samples"].default


def _eot(p: _EOT) -> int:
    """Transformations per input and step: the attack's ``eot_samples``, else its set's ``samples``
    (what the attack modules draw)."""
    if p.eot_samples is not None:
        return p.eot_samples
    return int((p.transformations or {}).get("samples") or _EOT_SAMPLES)


def _iterative(p: _Steps) -> Cost:
    """steps gradient steps, plus one clean forward pass."""
    return Cost(forward=p.steps + 1, backward=p.steps)


def _restarted(p: PGDParams) -> Cost:
    """steps x restarts gradient steps, plus one clean forward pass."""
    n = p.steps * p.restarts
    return Cost(forward=n + 1, backward=n)


def _l1_stages(steps: int) -> list[int]:
    """The step counts of APGD's L1 stages at radii 3, 2, 1 x epsilon (attackgen.run.attacks.apgd)."""
    first = math.ceil(0.3 * steps)
    return [c for c in (first, first, steps - 2 * first) if c > 0]


def _apgd(p: APGDParams, norm: str | None = None) -> Cost:
    """Passes per input at most (runs stop early per input): restarts (x targets for APGD-T) runs, each a
    starting gradient pass, then one per step; on L1 with ``large_eps`` three stages, each with its own start.
    Every pass is eot_iter gradient passes; APGD-T's ``keep_targets`` stops the targets beyond it after the
    first checkpoint (22% of the steps), before the stages that start later. Forward passes without a gradient
    on top: APGD-T's clean pass per batch of targets (per run one after the other), one otherwise."""
    targets = p.n_target_classes if isinstance(p, APGDTParams) else 1
    runs = p.restarts * targets
    stages = _l1_stages(p.steps) if norm == "1" and p.large_eps else [p.steps]
    per_run = sum(stages) + len(stages)
    n = per_run * runs
    keep = p.keep_targets if isinstance(p, APGDTParams) and p.parallel_targets else 0
    if keep and keep < targets:  # the targets beyond ``keep`` stop at the first checkpoint
        first = max(int(0.22 * p.steps), 1)
        starts = sum(1 for i in range(len(stages)) if sum(stages[:i]) < first)
        n -= (targets - keep) * p.restarts * (per_run - first - starts)
    n *= p.eot_iter
    clean = (p.restarts if p.parallel_targets else runs) if isinstance(p, APGDTParams) else 1
    return Cost(forward=n + clean, backward=n)


def _queries(name: str) -> CostFn:
    """A query attack's budget parameter, spent in full at most."""

    def cost(p: AttackParams) -> Cost:
        return Cost(queries=float(getattr(p, name)))

    return cost


def _binary_search(p: CWParams | LBFGSParams) -> Cost:
    """binary_search_steps searches over the trade-off constant, each a full optimisation."""
    n = p.binary_search_steps * (p.steps if isinstance(p, CWParams) else p.max_iter)
    return Cost(forward=n + 1, backward=n)


def _transfer(p: TransferParams) -> Cost:
    """steps on the surrogate (per ensemble member: AttackDescriptor.expected_cost), then the victim's check."""
    return Cost(forward=p.steps + 1, backward=p.steps, queries=p.verify_queries)


def _amortised(p: _Amortised) -> Cost:
    """The fit's passes per input it is fitted for, plus the input's own forward pass."""
    n = p.steps * p.batch_size * _eot(p) / p.fit_size
    return Cost(forward=n + 1, backward=n)


def _uap(p: UAPParams) -> Cost:
    """A pass per epoch and input it is fitted on, plus the clean, the fit's check and the final pass."""
    return Cost(forward=p.epochs + 3, backward=p.epochs)


def _metzen_uap(p: MetzenUAPParams) -> Cost:
    return Cost(forward=p.epochs + 1, backward=p.epochs)


def _deepfool(p: DeepFoolParams) -> Cost:
    """A gradient per candidate class per step."""
    return Cost(forward=p.steps + 1, backward=p.steps * p.candidates)


_JSMA_CLASSES = 10
"""JSMA takes a gradient per class per iteration; the catalogue does not know the model's classes, so it
prices ten (the built-in models')."""


def _jsma(p: JSMAParams) -> Cost:
    return Cost(forward=p.max_iter + 1, backward=p.max_iter * _JSMA_CLASSES)


def _fab(p: FABParams) -> Cost:
    """Two forward passes per step; the Jacobian of the top-10 classes per step (the reference's)."""
    return Cost(forward=p.restarts * 2 * p.steps, backward=p.restarts * p.steps * 10)


def _fab_t(p: FABTParams) -> Cost:
    runs = p.n_target_classes * p.restarts
    return Cost(forward=runs * (2 * p.steps + 1), backward=runs * p.steps)


def _fmn_t(p: FMNTParams) -> Cost:
    return Cost(forward=p.n_target_classes * (p.steps + 2), backward=p.n_target_classes * p.steps)


def _evolution(p: EvolutionParams) -> Cost:
    """A population scored per generation, plus the initial one."""
    return Cost(queries=p.popsize * (p.maxiter + 1))


def _cppn(p: CPPNParams) -> Cost:
    return Cost(queries=p.population * (p.generations + 1))


def _score_uap(p: ScoreUAPParams) -> Cost:
    """Two score queries per iteration and batch input, spread over the inputs it is fitted for."""
    return Cost(queries=2 * p.iterations * p.batch_size / p.fit_size)


def _eot_pgd(p: EOTPGDParams) -> Cost:
    n = p.steps * _eot(p)
    return Cost(forward=n + 1, backward=n)


def _detector_aware(p: DetectorAwareParams) -> Cost:
    """Each step also runs the detectors (three passes each); feature squeezing when none are named."""
    per_step = 1 + 3 * max(len(p.detectors or ()), 1)
    return Cost(forward=(p.steps + 1) * per_step, backward=p.steps * per_step)


def _detector_patch(p: DetectorPatchParams) -> Cost:
    n = p.steps * _eot(p) / p.fit_size
    return Cost(forward=n, backward=n)


def _square(lp: str, name: str, params: type[AttackParams], strength: int, notes: str = "",
            reference: str = "Andriushchenko, Croce, Flammarion, Hein 2020, arXiv:1912.00049") -> AttackDescriptor:
    """A Square Attack entry: the three norms differ only in their budget, parameters and strength."""
    return AttackDescriptor(
        id=f"square_{name.lower()}",
        title=f"Square Attack, {name}",
        implementation=f"attackgen.run.attacks.square:Square{name}",
        reference=reference,
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({f"lp:{lp}"}),
        budget_modes=FIXED,
        access="scores",
        optimizer="evolution",
        gradient_source=None,
        data_bases=ANY_DATA,
        cost=_queries("n_queries"),
        params=params,
        min_queries=100,
        strength=strength,
        atlas=BLACK_BOX_ATLAS,
        notes=notes,
    )


_ENTRIES: list[AttackDescriptor] = [
    # ------------------------------------------------------------------ white-box, fixed epsilon
    AttackDescriptor(
        id="fgsm",
        title="Fast Gradient Sign Method (FGM for L2)",
        implementation="attackgen.run.attacks.fgsm:FGSM",
        reference="Goodfellow, Shlens, Szegedy 2015, arXiv:1412.6572",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=lambda params: Cost(forward=2, backward=1),
        params=FGSMParams,
        single_step=True,
        strength=2,
        atlas=WHITE_BOX_ATLAS,
        notes="One step of size epsilon; a weak baseline, cheap enough to run first.",
    ),
    AttackDescriptor(
        id="bim",
        title="Basic Iterative Method (iterative FGSM)",
        implementation="attackgen.run.attacks.bim:BIM",
        reference="Kurakin, Goodfellow, Bengio 2017, arXiv:1607.02533",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=BIMParams,
        strength=4,
        atlas=WHITE_BOX_ATLAS,
    ),
    AttackDescriptor(
        id="illc",
        title="Iterative Least-Likely Class method",
        implementation="attackgen.run.attacks.bim:ILLC",
        reference="Kurakin, Goodfellow, Bengio 2017, arXiv:1607.02533",
        tasks=CLS,
        consequences=frozenset({"dynamic_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=BIMParams,
        strength=5,
        atlas=WHITE_BOX_ATLAS,
        notes="Per-input target: the clean prediction's least-likely class (dynamic target, rule least_likely).",
    ),
    AttackDescriptor(
        id="pgd_linf",
        title="Projected Gradient Descent, Linf",
        implementation="attackgen.run.attacks.pgd:LinfPGD",
        reference="Madry, Makelov, Schmidt, Tsipras, Vladu 2018, arXiv:1706.06083",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_restarted,
        params=PGDParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        notes="The reference first-order attack; step = 2.5 * epsilon / steps, random start in the ball.",
    ),
    AttackDescriptor(
        id="pgd_l2",
        title="Projected Gradient Descent, L2",
        implementation="attackgen.run.attacks.pgd:L2PGD",
        reference="Madry, Makelov, Schmidt, Tsipras, Vladu 2018, arXiv:1706.06083",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_restarted,
        params=PGDParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
    ),
    AttackDescriptor(
        id="mifgsm",
        title="Momentum Iterative FGSM",
        implementation="attackgen.run.attacks.mifgsm:MIFGSM",
        reference="Dong, Liao, Pang, Su, Zhu, Hu, Li 2018, arXiv:1710.06081",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=MIFGSMParams,
        strength=6,
        atlas=WHITE_BOX_ATLAS,
    ),
    AttackDescriptor(
        id="apgd_ce",
        title="Auto-PGD on the cross-entropy (APGD-CE)",
        implementation="attackgen.run.attacks.apgd:APGDCE",
        reference="Croce, Hein 2020, arXiv:2003.01690",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2", "lp:1"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_apgd,
        norm_cost=_apgd,
        params=APGDParams,
        strength=9,
        atlas=WHITE_BOX_ATLAS,
        notes="AutoAttack's first attack: step 2*epsilon halved at checkpoints, momentum 0.75, restarts and "
        "steps only on unbroken inputs; L1 as in Croce & Hein 2021 (sparse steps, exact L1-and-box projection, "
        "radii 3/2/1 x epsilon). Same robust accuracy as the reference on digits-cnn (bench/bench_apgd.py, "
        "tests/test_apgd_crosscheck.py).",
    ),
    AttackDescriptor(
        id="apgd_dlr",
        title="Auto-PGD on the DLR loss (APGD-DLR)",
        implementation="attackgen.run.attacks.apgd:APGDDLR",
        reference="Croce, Hein 2020, arXiv:2003.01690",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2", "lp:1"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_apgd,
        norm_cost=_apgd,
        params=APGDDLRParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        notes="DLR is invariant to rescaled logits (saturated softmax); needs 3 classes (rule C18).",
    ),
    AttackDescriptor(
        id="apgd_t",
        title="Targeted Auto-PGD on the DLR loss over the top-k classes (APGD-T)",
        implementation="attackgen.run.attacks.apgd:APGDT",
        reference="Croce, Hein 2020, arXiv:2003.01690",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2", "lp:1"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_apgd,
        norm_cost=_apgd,
        params=APGDTParams,
        strength=9,
        atlas=WHITE_BOX_ATLAS,
        notes="Untargeted specs: targeted DLR towards the clean prediction's top-k other classes, side by side in "
        "one batch (parallel_targets; false: one after the other as in AutoAttack), an input leaving at its first "
        "success; targeted specs: towards their target. Needs 4 classes (rule C18).",
    ),
    # ------------------------------------------------------------------ white-box, minimal norm
    AttackDescriptor(
        id="cw_l2",
        title="Carlini & Wagner L2",
        implementation="attackgen.run.attacks.cw:CarliniWagnerL2",
        reference="Carlini, Wagner 2017, arXiv:1608.04644",
        tasks=CLS,
        consequences=frozenset({"untargeted", "static_target", "dynamic_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2"}),
        budget_modes=MINIMAL_FIRST,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_binary_search,
        params=CWParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        notes="Margin loss on logits with tanh box; in fixed mode success means L2 norm <= epsilon.",
    ),
    AttackDescriptor(
        id="deepfool",
        title="DeepFool",
        implementation="attackgen.run.attacks.deepfool:DeepFool",
        reference="Moosavi-Dezfooli, Fawzi, Frossard 2016, arXiv:1511.04599",
        tasks=CLS,
        consequences=frozenset({"untargeted"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2", "lp:inf"}),
        budget_modes=MINIMAL_FIRST,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_deepfool,
        params=DeepFoolParams,
        strength=5,
        atlas=WHITE_BOX_ATLAS,
        notes="Untargeted by construction: steps to the nearest linearised decision boundary.",
    ),
    AttackDescriptor(
        id="jsma",
        title="Jacobian-based Saliency Map Attack",
        implementation="attackgen.run.attacks.jsma:JSMA",
        reference="Papernot, McDaniel, Jha, Fredrikson, Celik, Swami 2016, arXiv:1511.07528",
        tasks=CLS,
        consequences=frozenset({"static_target", "dynamic_target", "untargeted"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:0"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_jsma,
        params=JSMAParams,
        strength=5,
        atlas=WHITE_BOX_ATLAS,
        notes="Greedy saliency over feature pairs; an L0 epsilon is the number of features it may change.",
    ),
    AttackDescriptor(
        id="fmn",
        title="Fast Minimum-Norm attack (foolbox)",
        implementation="attackgen.run.attacks.fmn:FMN",
        reference="Pintor, Roli, Brendel, Biggio 2021, arXiv:2102.12827",
        tasks=CLS,
        consequences=frozenset({"untargeted", "static_target", "dynamic_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:0", "lp:1", "lp:2", "lp:inf"}),
        budget_modes=MINIMAL_FIRST,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=FMNParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        backend="foolbox",
        notes="Minimal-norm in L0, L1, L2, Linf; in fixed mode success means norm <= epsilon.",
    ),
    AttackDescriptor(
        id="fab_t",
        title="Targeted Fast Adaptive Boundary attack over the top-k classes (FAB-T)",
        implementation="attackgen.run.attacks.fab:FABT",
        reference="Croce, Hein 2020, arXiv:1907.02044",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:1", "lp:2", "lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_fab_t,
        params=FABTParams,
        strength=7,
        atlas=WHITE_BOX_ATLAS,
        notes="AutoAttack's third attack, ported from the reference: linearised boundary towards each of the top-k "
        "other classes in turn, exact projections onto hyperplane and box, survivors only, an input leaving at its "
        "first adversarial point within epsilon.",
    ),
    AttackDescriptor(
        id="fab",
        title="Fast Adaptive Boundary attack (FAB, untargeted)",
        implementation="attackgen.run.attacks.fab:FAB",
        reference="Croce, Hein 2020, arXiv:1907.02044",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:1", "lp:2", "lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_fab,
        params=FABParams,
        strength=6,
        atlas=WHITE_BOX_ATLAS,
        notes="The nearest linearised boundary among all classes: one backward pass per class and step (costed for "
        "10 classes); AutoAttack plus runs it with 5 restarts.",
    ),
    AttackDescriptor(
        id="fmn_t",
        title="Targeted FMN over the top-k classes (FAB-T's role in AutoAttack)",
        implementation="attackgen.run.attacks.fmn_t:TargetedFMNSweep",
        reference="Pintor, Roli, Brendel, Biggio 2021, arXiv:2102.12827 (in place of FAB-T, arXiv:1907.02044)",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:1", "lp:2", "lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_fmn_t,
        params=FMNTParams,
        strength=7,
        atlas=WHITE_BOX_ATLAS,
        backend="foolbox",
        notes="Minimal-norm targeted FMN towards each of the top-k other classes, survivors only; fills FAB-T's "
        "place in the AutoAttack presets (why FMN and not a FAB port: attackgen/run/attacks/fmn_t.py).",
    ),
    AttackDescriptor(
        id="lbfgs",
        title="Box-constrained L-BFGS (Szegedy et al.)",
        implementation="attackgen.run.attacks.lbfgs:LBFGS",
        reference="Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow, Fergus 2014, arXiv:1312.6199",
        tasks=CLS,
        consequences=frozenset({"static_target", "dynamic_target", "untargeted"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2", "lp:inf"}),
        budget_modes=MINIMAL_FIRST,
        access="gradients",
        optimizer="second_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_binary_search,
        params=LBFGSParams,
        strength=4,
        atlas=WHITE_BOX_ATLAS,
        notes="Quasi-Newton (SciPy L-BFGS-B, curvature from gradient history) on c*||r||^2 + loss with a "
        "bisection on c; its exact bounds hold the input box, a mask and a fixed Linf ball.",
    ),
    AttackDescriptor(
        id="lbfgs_ssim",
        title="L-BFGS in penalty form under an SSIM floor",
        implementation="attackgen.run.attacks.lbfgs:SSIMLBFGS",
        reference="Szegedy et al. 2014, arXiv:1312.6199; Wang, Bovik, Sheikh, Simoncelli 2004 (SSIM)",
        tasks=CLS,
        consequences=frozenset({"static_target", "dynamic_target", "untargeted"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"perceptual:ssim", "lp:2", "lp:inf"}),
        budget_modes=MINIMAL_FIRST,
        access="gradients",
        optimizer="second_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_binary_search,
        params=LBFGSSSIMParams,
        requires=frozenset({"perceptual:ssim"}),
        strength=3,
        atlas=WHITE_BOX_ATLAS,
        notes="The lbfgs inner problem plus ssim_penalty * max(0, floor + margin - SSIM) (SSIM has no projection, "
        "rule D3: penalty form); a candidate counts only when its re-measured SSIM meets the floor. Digits CNN, 8 "
        "inputs, SSIM floor 0.97: 7 fooled within the floor (plain lbfgs: 3).",
    ),
    AttackDescriptor(
        id="newtonfool",
        title="NewtonFool",
        implementation="attackgen.run.attacks.newtonfool:NewtonFool",
        reference="Jang, Wu, Jha 2017, ACSAC, doi:10.1145/3134600.3134635",
        tasks=CLS,
        consequences=frozenset({"untargeted"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2"}),
        budget_modes=MINIMAL_FIRST,
        access="gradients",
        optimizer="second_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=NewtonFoolParams,
        strength=4,
        atlas=WHITE_BOX_ATLAS,
        notes="Newton root-finding on the true-class probability; untargeted only.",
    ),
    # ------------------------------------------------------------------ score-based black box
    _square("inf", "Linf", SquareLinfParams, strength=7,
            notes="Random search over square updates on the objective's score; the gradient-free check of "
            "white-box Linf plans (AutoAttack uses it for that). Dense tasks score through the objective's loss."),
    _square("2", "L2", SquareL2Params, strength=6),
    _square("1", "L1", SquareL1Params, strength=6,
            reference="Croce, Singh, Hein 2022 (Mind the box, arXiv:2103.01208); fra31/auto-attack square.py, norm L1",
            notes="AutoAttack's L1 Square; by default per-input draws on the reference's unstretched schedule "
            "(the AutoAttack presets set the reference's draws)."),
    AttackDescriptor(
        id="simba",
        title="Simple Black-box Attack (DCT or pixel basis)",
        implementation="attackgen.run.attacks.simba:SimBA",
        reference="Guo, Gardner, You, Wilson, Weinberger 2019, arXiv:1905.07121",
        tasks=CLS,
        consequences=frozenset({"untargeted", "static_target", "dynamic_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2"}),
        budget_modes=FIXED,
        access="scores",
        optimizer="evolution",
        gradient_source=None,
        data_bases=ANY_DATA,
        cost=_queries("max_queries"),
        params=SimBAParams,
        min_queries=100,
        strength=5,
        atlas=BLACK_BOX_ATLAS,
        notes="Tries +-step along one basis vector per iteration (at most two queries), step = rel_stepsize * "
        "epsilon; candidates leaving the Lp ball are projected back. DCT: low frequencies first (freq_dims, "
        "default a quarter of the side).",
    ),
    AttackDescriptor(
        id="zoo_newton",
        title="ZOO-Newton (zeroth-order coordinate-wise Newton from scores)",
        implementation="attackgen.run.attacks.zoo_newton:ZOONewton",
        reference="Chen, Zhang, Sharma, Yi, Hsieh 2017, ZOO, arXiv:1708.03999",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="scores",
        optimizer="second_order",
        gradient_source="estimated_scores",
        data_bases=ANY_DATA,
        cost=_queries("max_queries"),
        params=ZOONewtonParams,
        min_queries=100,
        strength=4,
        atlas=BLACK_BOX_ATLAS,
        notes="Symmetric finite differences give each chosen coordinate's first and second derivative of the margin "
        "loss (2 queries per coordinate, 16 coordinates per step, one query to score the step); Newton step "
        "-g/h where h > 0, else -g, clipped and projected. The second-order optimiser from scores of rule A10. "
        "Digits CNN, 16 inputs: Linf 0.2 fools 16/16 within 400 queries, L2 1.5 fools 15/16 with 1000.",
    ),
    AttackDescriptor(
        id="differential_evolution",
        title="One-pixel attack (differential evolution)",
        implementation="attackgen.run.attacks.evolution:DifferentialEvolution",
        reference="Su, Vargas, Sakurai 2019, arXiv:1710.08864",
        tasks=CLS,
        consequences=frozenset({"untargeted", "static_target", "dynamic_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:0"}),
        budget_modes=FIXED,
        access="scores",
        optimizer="evolution",
        gradient_source=None,
        data_bases=ANY_DATA,
        cost=_evolution,
        params=EvolutionParams,
        min_queries=500,
        strength=3,
        atlas=BLACK_BOX_ATLAS,
        notes="Evolves (row, column, value) of a few pixels (DE/rand/1, F 0.5, no crossover). An L0 epsilon "
        "counts changed elements as the executor measures them, so a pixel of C channels costs C; a spatial "
        "mask confines the pixels to it.",
    ),
    AttackDescriptor(
        id="cppn_ea_fool",
        title="CPPN EA Fool (unrecognisable images)",
        implementation="attackgen.run.attacks.cppn:CPPNEAFool",
        reference="Nguyen, Yosinski, Clune 2015, arXiv:1412.1897",
        tasks=CLS,
        consequences=frozenset({"static_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"unrestricted"}),
        budget_modes=FIXED,
        access="scores",
        optimizer="evolution",
        gradient_source=None,
        data_bases=ANY_DATA,
        spatial=False,
        cost=_cppn,
        params=CPPNParams,
        min_queries=500,
        strength=2,
        atlas=BLACK_BOX_ATLAS,
        notes="Synthesises images (no source input, no perturbation bound) that the model labels as the target "
        "class with high confidence; realises only specs without a perturbation bound.",
    ),
    # ------------------------------------------------------------------ decision-based black box
    AttackDescriptor(
        id="boundary",
        title="Boundary Attack",
        implementation="attackgen.run.attacks.boundary:BoundaryAttack",
        reference="Brendel, Rauber, Bethge 2018, arXiv:1712.04248",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2"}),
        budget_modes=MINIMAL_FIRST,
        access="labels",
        optimizer="evolution",
        gradient_source=None,
        data_bases=ANY_DATA,
        spatial=False,
        cost=_queries("max_queries"),
        params=BoundaryParams,
        min_queries=1000,
        strength=4,
        atlas=BLACK_BOX_ATLAS,
        notes="Random walk along the decision boundary from an adversarial start; targeted needs a start "
        "input of the target class from the data basis (rule C6). Needs 10^4+ queries.",
    ),
    AttackDescriptor(
        id="hopskipjump",
        title="HopSkipJump",
        implementation="attackgen.run.attacks.hopskipjump:HopSkipJump",
        reference="Chen, Jordan, Wainwright 2020, arXiv:1904.02144",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2", "lp:inf"}),
        budget_modes=MINIMAL_FIRST,
        access="labels",
        optimizer="first_order",
        gradient_source="estimated_decisions",
        data_bases=ANY_DATA,
        spatial=False,
        cost=_queries("max_queries"),
        params=HopSkipJumpParams,
        min_queries=200,
        strength=7,
        atlas=BLACK_BOX_ATLAS,
        notes="Estimates the boundary gradient's sign from label queries; targeted needs a target-class start.",
    ),
    AttackDescriptor(
        id="dense_boundary",
        title="Boundary Attack on dense decisions (segmentation maps, detections) from a blank start",
        implementation="attackgen.run.attacks.dense_boundary:DenseBoundary",
        reference="Brendel, Rauber, Bethge 2018, arXiv:1712.04248 (decision-based; here on dense decisions)",
        tasks=frozenset({"segmentation", "detection"}),
        consequences=frozenset({"untargeted", "vanishing", "dynamic_target", "static_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2"}),
        budget_modes=MINIMAL_FIRST,
        access="labels",
        optimizer="evolution",
        gradient_source=None,
        data_bases=ANY_DATA,
        spatial=False,
        cost=_queries("max_queries"),
        params=DenseBoundaryParams,
        min_queries=500,
        strength=5,
        atlas=BLACK_BOX_ATLAS,
        notes="The decision is the task's own success criterion read from what the system shows (argmax map; boxes "
        "and labels at the threshold, no confidences). Starts from the scene blurred or flattened to its mean colour "
        "(nothing left to segment or detect: vanishing and untargeted need no data basis), then walks towards the "
        "clean scene while the decision holds. Targeted (static, dynamic) starts come from the data basis (rule C6).",
    ),
    # ------------------------------------------------------------------ transfer (surrogate basis)
    AttackDescriptor(
        id="transfer_mifgsm",
        title="Transfer through a surrogate: MI-FGSM",
        implementation="attackgen.run.attacks.transfer:TransferMIFGSM",
        reference="Dong et al. 2018, arXiv:1710.06081; Papernot et al. 2017, arXiv:1602.02697",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="surrogate",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_transfer,
        params=TransferParams,
        min_queries=1,
        strength=5,
        atlas=TRANSFER_ATLAS,
        notes="White-box MI-FGSM on one surrogate (momentum transfers better, rule F4); the candidate is the final "
        "iterate, pushed past the surrogate's boundary. One verification query on the victim (none under full "
        "black-box: a transfer estimate). digits-mlp -> digits-cnn: 0.49 at Linf 0.1, 0.96 at 0.2.",
    ),
    AttackDescriptor(
        id="transfer_difgsm",
        title="Transfer through a surrogate: DI-FGSM (input diversity)",
        implementation="attackgen.run.attacks.transfer:TransferDIFGSM",
        reference="Xie, Zhang, Zhou, Bai, Wang, Ren, Yuille 2019, arXiv:1803.06978",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf"}),
        budget_modes=FIXED,
        access="surrogate",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_transfer,
        params=DIFGSMParams,
        min_queries=1,
        strength=6,
        atlas=TRANSFER_ATLAS,
        notes="MI-FGSM with a random shrink-and-pad of the input at each step (Xie et al.); on 16x16 digits it "
        "transfers less than MI-FGSM (0.36 vs 0.49 at Linf 0.1), on larger images it usually transfers more.",
    ),
    # ------------------------------------------------------------------ image-agnostic (fit then apply)
    AttackDescriptor(
        id="uap",
        title="Universal Adversarial Perturbation",
        implementation="attackgen.run.attacks.universal:UniversalPerturbation",
        reference="Moosavi-Dezfooli, Fawzi, Fawzi, Frossard 2017, arXiv:1610.08401",
        tasks=CLS,
        consequences=frozenset({"untargeted", "static_target"}),
        scopes=IMAGE_AGNOSTIC,
        imperceptibility=frozenset({"lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=WITH_DATA,
        cost=_uap,
        params=UAPParams,
        strength=5,
        atlas=WHITE_BOX_ATLAS,
        notes="Moosavi-Dezfooli's loop with a projected sign-gradient inner step over batches of the data basis, "
        "only on inputs not yet fooled; targeted with a static target. Cost is per fitting input (one pass per "
        "epoch, plus the checks); applying it costs one pass. Digits CNN, Linf 0.2: 0.84 of held-out inputs fooled.",
    ),
    AttackDescriptor(
        id="transfer_uap",
        title="Universal perturbation fitted on a surrogate, evaluated by transfer",
        implementation="attackgen.run.attacks.universal:TransferUniversalPerturbation",
        reference="Moosavi-Dezfooli, Fawzi, Fawzi, Frossard 2017, arXiv:1610.08401 (cross-model transfer); "
        "Papernot et al. 2017, arXiv:1602.02697",
        tasks=CLS,
        consequences=frozenset({"untargeted", "static_target"}),
        scopes=IMAGE_AGNOSTIC,
        imperceptibility=frozenset({"lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="surrogate",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=WITH_DATA,
        cost=_uap,
        params=UAPParams,
        strength=4,
        atlas=TRANSFER_ATLAS,
        notes="The uap fit on the surrogate the model basis names (trained on the data basis, distilled or "
        "pretrained); no victim query while fitting. digits-mlp -> digits-cnn, 1000 fitting digits: Linf 0.2 fools "
        "0.71 of held-out digits (random stripes 0.03), 0.46 at 0.15.",
    ),
    AttackDescriptor(
        id="score_uap",
        title="Universal perturbation by random search from scores",
        implementation="attackgen.run.attacks.score_universal:ScoreUniversal",
        reference="Co, Munoz-Gonzalez, de Maupeou, Lupu 2019, Procedural noise UAPs, arXiv:1810.00470; "
        "Andriushchenko et al. 2020, Square attack, arXiv:1912.00049",
        tasks=CLS,
        consequences=frozenset({"untargeted", "static_target"}),
        scopes=IMAGE_AGNOSTIC,
        imperceptibility=frozenset({"lp:inf"}),
        budget_modes=FIXED,
        access="scores",
        optimizer="evolution",
        gradient_source=None,
        data_bases=WITH_DATA,
        cost=_score_uap,
        params=ScoreUAPParams,
        min_queries=20,
        strength=4,
        atlas=BLACK_BOX_ATLAS,
        notes="One Linf delta shared by all inputs, improved by Square-style window re-draws that are kept when the "
        "mean margin loss over a batch of fitting inputs drops (2 score queries per batch input); cost is per "
        "fitting input. Digits CNN, 300 fitting inputs, 100 queries each: Linf 0.2 fools 0.84 of held-out digits "
        "(random stripes: 0.03).",
    ),
    AttackDescriptor(
        id="patch_eot",
        title="Adversarial patch with Expectation over Transformation",
        implementation="attackgen.run.attacks.patch:AdversarialPatch",
        reference="Brown, Mane, Roy, Abadi, Gilmer 2017, arXiv:1712.09665; Athalye et al. 2018, "
        "arXiv:1707.07397",
        tasks=frozenset({"classification", "segmentation"}),
        consequences=frozenset({"static_target", "untargeted"}),
        scopes=IMAGE_AGNOSTIC,
        imperceptibility=frozenset({"unrestricted", "lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=WITH_DATA,
        feeds=frozenset({"digital", "physical"}),
        spatial=True,
        cost=_amortised,
        params=PatchParams,
        requires=frozenset({"spatial:patch"}),
        printable=True,
        views=frozenset({"scenes"}),
        strength=6,
        atlas=PHYSICAL_ATLAS,
        notes="Replaces pixels in the patch region (visible by design, rule D8) and optimises the expected loss "
        "over placement, rotation, scale, brightness and noise (transformations: the spec's EOT set; None: a "
        "digital patch), with total variation and optional non-printability; applied inside the executor's "
        "patch squares. Cost amortises the fit over fit_size inputs. Digits CNN, 5x5 patch (9.8 %) at a fixed "
        "place: 0.61 of held-out digits become the target class.",
    ),
    AttackDescriptor(
        id="eot_pgd",
        title="EOT-PGD: one input made robust to its views (printed photo, object seen by a camera)",
        implementation="attackgen.run.attacks.eot_pgd:EOTPGD",
        reference="Athalye, Engstrom, Ilyas, Kwok 2018, arXiv:1707.07397; Kurakin, Goodfellow, Bengio 2016, "
        "arXiv:1607.02533",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS | {"vanishing"},
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        feeds=frozenset({"digital", "physical"}),
        spatial=True,
        cost=_eot_pgd,
        params=EOTPGDParams,
        requires=frozenset({"feed:physical"}),
        printable=True,
        views=frozenset({"object"}),
        strength=7,
        atlas=PHYSICAL_ATLAS,
        notes="PGD on the mean loss over the spec's transformation set applied to the whole perturbed image "
        "(placement everywhere: the printed photo; with a box or mask, a sticker fitted to one object's views). "
        "Digits CNN, 48 inputs, Linf 0.1, views rotation +-10, scale 0.95-1, shift 0.05, noise 0.02: 0.82 of fresh "
        "views fooled (plain PGD's adversarials under the same views: 0.22).",
    ),
    AttackDescriptor(
        id="lens_overlay",
        title="Lens sticker: a translucent universal layer in front of the camera, fitted with EOT",
        implementation="attackgen.run.attacks.lens:LensOverlay",
        reference="Li, Schmidt, Kolter 2019, Adversarial camera stickers, arXiv:1904.00759",
        tasks=ALL_TASKS,
        consequences=frozenset({"untargeted", "static_target", "vanishing"}),
        scopes=IMAGE_AGNOSTIC,
        imperceptibility=frozenset({"lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=WITH_DATA,
        feeds=frozenset({"digital", "physical"}),
        spatial=False,
        cost=_amortised,
        params=LensParams,
        requires=frozenset({"placement:overlay"}),
        views=frozenset({"scenes"}),
        strength=6,
        atlas=PHYSICAL_ATLAS,
        notes="One Linf layer added after each scene's transformation (the scene moves, the lens does not), fitted by "
        "sign-gradient steps over the data basis (placement overlay). Digits CNN, Linf 0.2, 400 fitting digits: "
        "0.88 of held-out digits under fresh views fooled (random stripes of the same size: 0.12).",
    ),
    AttackDescriptor(
        id="sticker_box",
        title="Sticker in a fixed box with EOT (RP2-style masked perturbation)",
        implementation="attackgen.run.attacks.sticker:BoxSticker",
        reference="Eykholt, Evtimov, Fernandes, Li, Rahmati, Xiao, Prakash, Kohno, Song 2018, RP2, arXiv:1707.08945",
        tasks=CLS,
        consequences=frozenset({"static_target", "untargeted"}),
        scopes=IMAGE_AGNOSTIC,
        imperceptibility=frozenset({"unrestricted", "lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=WITH_DATA,
        feeds=frozenset({"digital", "physical"}),
        spatial=True,
        cost=_amortised,
        params=StickerParams,
        requires=frozenset({"spatial:box"}),
        printable=True,
        views=frozenset({"object", "scenes"}),
        strength=6,
        atlas=PHYSICAL_ATLAS,
        notes="Adds one perturbation to the object's own pixels inside the spec's box (capability.spatial kind box), "
        "fitted over the data basis with whole-image EOT (the camera sees the sticker move with the object), total "
        "variation and optional non-printability; applied at its place. Digits CNN, 6x6 box (14 %) at (2, 2): 0.56 "
        "of held-out digits become 3 (0.52 under fresh transformations; a random sticker 0.002).",
    ),
    # ------------------------------------------------------------------ perceptual and detector-aware
    AttackDescriptor(
        id="ssim_pgd",
        title="SSIM-constrained PGD (Lagrangian penalty)",
        implementation="attackgen.run.attacks.ssim:SSIMConstrainedPGD",
        reference="Laidlaw, Singla, Feizi 2021, arXiv:2006.12655 (perceptual constraints); Wang, Bovik, Sheikh, "
        "Simoncelli 2004 (SSIM)",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"perceptual:ssim", "lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=SSIMParams,
        requires=frozenset({"perceptual:ssim"}),
        strength=6,
        atlas=WHITE_BOX_ATLAS,
        notes="PGD on task loss + penalty * max(0, floor - SSIM) with a backtracking step that keeps every iterate "
        "at SSIM >= floor; the result is re-measured and kept only if it holds. An Lp bound, when given, is "
        "enforced by projection (without one, max_linf bounds each pixel).",
    ),
    AttackDescriptor(
        id="wasserstein_pgd",
        title="Wasserstein PGD (projected Sinkhorn)",
        implementation="attackgen.run.attacks.wasserstein:WassersteinPGD",
        reference="Wong, Schmidt, Kolter 2019, Wasserstein adversarial examples via projected Sinkhorn "
        "iterations, arXiv:1902.07906",
        tasks=CLS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"perceptual:wasserstein"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=WassersteinParams,
        requires=frozenset({"perceptual:wasserstein"}),
        strength=6,
        atlas=WHITE_BOX_ATLAS,
        notes="Sign steps projected onto the Wasserstein ball (mass moved at most kernel // 2 pixels, cost "
        "||move||_2 ** p on intensity normalised to 1); every candidate re-measured by the exact transport "
        "linear program and pulled back towards x if clipping left it outside. Classification only: the exact "
        "check costs a linear program per input (about 0.05 s on 16x16 digits).",
    ),
    AttackDescriptor(
        id="detector_aware_pgd",
        title="Detector-aware PGD (adaptive attack on named detectors)",
        implementation="attackgen.run.attacks.detector_evasion:DetectorAwarePGD",
        reference="Carlini, Wagner 2017, arXiv:1705.07263",
        tasks=ALL_TASKS,
        consequences=frozenset(CONSEQUENCE_KINDS),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"detector", "lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_detector_aware,
        params=DetectorAwareParams,
        requires=frozenset({"detector"}),
        strength=7,
        atlas=WHITE_BOX_ATLAS,
        notes="Adds each detector's score (over its threshold) to the task objective's loss, with a per-input weight "
        "that grows while a detector catches a success (white-box detectors; black-box ones only transfer, rule "
        "D4). Built-in detector: feature squeezing (attackgen.run.detectors, 3 passes per step), on class scores, "
        "score maps or detection profiles. Digits, Linf 0.1: share of successes flagged 0.86 (PGD) -> 0.04.",
    ),
    # ------------------------------------------------------------------ segmentation (Metzen et al. 2017)
    AttackDescriptor(
        id="metzen_seg",
        title="Metzen iterative targeted attack on segmentation (static, dynamic, confusing)",
        implementation="attackgen.run.attacks.metzen:MetzenIterative",
        reference="Metzen, Kumar, Brox, Fischer 2017, arXiv:1704.05712",
        tasks=SEG,
        consequences=frozenset({"untargeted", "static_target", "dynamic_target", "confusing_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "output"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=MetzenParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        notes="Targeted sign steps toward a target label map: a fixed map (static), the clean prediction with "
        "target classes filled by their nearest other label (dynamic), or shifted/scaled objects (confusing).",
    ),
    AttackDescriptor(
        id="metzen_uap",
        title="Metzen universal perturbation for segmentation",
        implementation="attackgen.run.attacks.metzen:MetzenUniversal",
        reference="Metzen, Kumar, Brox, Fischer 2017, arXiv:1704.05712",
        tasks=SEG,
        consequences=frozenset({"static_target", "dynamic_target", "untargeted"}),
        scopes=IMAGE_AGNOSTIC,
        imperceptibility=frozenset({"lp:inf", "output"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=WITH_DATA,
        cost=_metzen_uap,
        params=MetzenUAPParams,
        strength=7,
        atlas=WHITE_BOX_ATLAS,
        notes="Accumulates sign gradients of the targeted loss over the data basis (dynamic targets are rebuilt "
        "per image from its own clean prediction, rule F1); cost is per fitting input and epoch.",
    ),
    # ------------------------------------------------------------------ detection
    AttackDescriptor(
        id="det_vanishing",
        title="Detection PGD: vanishing, fabrication, mislabelling, untargeted (TOG-style)",
        implementation="attackgen.run.attacks.detection:DetectionPGD",
        reference="Chow, Liu, Loper, Bae, Gursoy, Truex, Wei, Wu 2020, arXiv:2004.04320",
        tasks=DET,
        consequences=frozenset({"vanishing", "fabrication", "mislabel", "untargeted", "static_target",
                              "dynamic_target", "confusing_target"}),
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf", "lp:2"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=ANY_DATA,
        cost=_iterative,
        params=DetectionParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        notes="Gradient steps on the detector's objectness and class scores before NMS.",
    ),
    AttackDescriptor(
        id="det_patch",
        title="Detector patch with EOT (vanishing / fabrication)",
        implementation="attackgen.run.attacks.detection:DetectorPatch",
        reference="Thys, Van Ranst, Goedeme 2019, arXiv:1904.08653; Liu et al. 2019 (DPatch), arXiv:1806.02299",
        tasks=DET,
        consequences=frozenset({"vanishing", "fabrication", "untargeted"}),
        scopes=IMAGE_AGNOSTIC,
        imperceptibility=frozenset({"unrestricted", "lp:inf"}),
        budget_modes=FIXED,
        access="gradients",
        optimizer="first_order",
        gradient_source="analytic",
        data_bases=WITH_DATA,
        feeds=frozenset({"digital", "physical"}),
        spatial=True,
        cost=_detector_patch,
        params=DetectorPatchParams,
        requires=frozenset({"spatial:patch"}),
        views=frozenset({"scenes"}),
        strength=6,
        atlas=PHYSICAL_ATLAS,
        notes="A printable patch that suppresses (or creates) detections over random placements.",
    ),
]

CATALOG: dict[str, AttackDescriptor] = {d.id: d for d in _ENTRIES}
"""Every catalogued attack implementation, by id."""

REQUIRES: dict[str, frozenset[str]] = {d.id: d.requires for d in _ENTRIES if d.requires}
"""A view of each entry's ``requires`` (kept for callers of the old table; the entries are the source):
what a spec must contain for the attack to be the right tool, beyond what it supports. Keys: an
imperceptibility key ("detector", "perceptual:ssim"), "spatial:<kind>", "placement:<placement>" or
"feed:<feed>"."""


def spec_features(spec: Any) -> frozenset[str]:
    """A spec's imperceptibility keys and spatial kind, in the vocabulary of ``AttackDescriptor.requires``."""
    keys = set()
    for item in spec.threat.imperceptibility:
        keys.add(f"lp:{item.norm}" if item.kind == "lp" else f"perceptual:{item.metric}"
                 if item.kind == "perceptual" else item.kind)
    spatial = spec.threat.capability.spatial
    if spatial is not None:
        keys.add(f"spatial:{spatial.kind}")
    keys.add(f"feed:{spec.threat.capability.feed}")
    placement = spec.threat.capability.resolved_placement
    if placement is not None:
        keys.add(f"placement:{placement}")
    return frozenset(keys)


def cell_features(cell: Any) -> frozenset[str]:
    """The same for an abstract cell of taxonomy.space (its representative spec's spatial constraint is
    a patch)."""
    region = ("spatial:patch", "placement:patch") if cell.spatial else ()
    return frozenset({cell.imperceptibility, f"feed:{cell.feed}", *region})


def fits_purpose(features: frozenset[str], descriptor: AttackDescriptor) -> bool:
    """Does the spec (or cell) contain what the attack is for (``descriptor.requires``)? Used by the planner
    and the audit, so both pick attacks for the same cells."""
    return descriptor.requires <= features


if len(CATALOG) != len(_ENTRIES):  # pragma: no cover - guarded by tests too
    raise RuntimeError("duplicate attack id in the catalogue")


def register(descriptor: AttackDescriptor) -> AttackDescriptor:
    """Add an entry at run time (an attack kept outside this file, or a test's toy attack).

    Built-in attacks are entries of ``_ENTRIES`` above; this is for code that imports attackgen as a
    library. The planner, ``load_plan`` and the executor read CATALOG, so a registered attack is planned,
    validated and run like a built-in one.
    """
    if descriptor.id in CATALOG:
        raise ValueError(f"attack id {descriptor.id!r} is already catalogued")
    CATALOG[descriptor.id] = descriptor
    return descriptor


def unregister(attack_id: str) -> None:
    """Remove an entry added by ``register`` (tests clean up with this)."""
    if any(d.id == attack_id for d in _ENTRIES):
        raise ValueError(f"{attack_id!r} is a built-in entry; edit taxonomy/catalog.py instead")
    CATALOG.pop(attack_id, None)


def implemented() -> dict[str, AttackDescriptor]:
    """The entries whose code has landed (the planner emits only these as runnable items)."""
    return {key: d for key, d in CATALOG.items() if d.implemented}


def describe(descriptor: AttackDescriptor) -> dict[str, Any]:
    """A JSON-friendly view of one descriptor (the cost model shown at the default parameters)."""
    cost = descriptor.expected_cost(descriptor.defaults)
    return {
        "id": descriptor.id,
        "title": descriptor.title,
        "implementation": descriptor.implementation,
        "implemented": descriptor.implemented,
        "backend": descriptor.backend,
        "reference": descriptor.reference,
        "tasks": sorted(descriptor.tasks),
        "consequences": sorted(descriptor.consequences),
        "scopes": sorted(descriptor.scopes),
        "imperceptibility": sorted(descriptor.imperceptibility),
        "budget_modes": sorted(descriptor.budget_modes),
        "access": descriptor.access,
        "optimizer": descriptor.optimizer,
        "gradient_source": descriptor.gradient_source,
        "data_bases": sorted(descriptor.data_bases),
        "feeds": sorted(descriptor.feeds),
        "spatial": descriptor.spatial,
        "defaults": {k: list(v) if isinstance(v, tuple) else v for k, v in descriptor.defaults.items()},
        "params": descriptor.params.model_json_schema().get("properties", {}),  # type, range, default per name
        "cost_at_defaults": {"forward": cost.forward, "backward": cost.backward, "queries": cost.queries},
        "strength": descriptor.strength,
        "atlas": list(descriptor.atlas),
        "notes": descriptor.notes,
    }
