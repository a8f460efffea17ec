"""The attack catalogue: one descriptor per implementation, with the taxonomy cells it realises.

Pure data (no torch). The planner ranks and parameterises from these entries; the executor imports
``implementation`` lazily. Each attack's author flips ``implemented`` to True when the code lands.

Conventions used in every entry:

- ``params`` is the attack's parameter model (taxonomy.params): its field defaults are the attack's
  defaults for images in [0, 1], written nowhere else. Step sizes are relative (``rel_stepsize``:
  step = rel_stepsize * epsilon), so they stay right for any epsilon; the planner replaces
  ``rel_stepsize`` with ``step_size`` in input units. The budget (norm, epsilon, mode) and the rest of
  the threat context go to the plan item's ``context``, not into params.
- ``requires``: what a spec must contain for the attack to be the right tool (see ``fits_purpose``).
- ``cost(params)`` is the expected work per input: forward and backward passes on the model the attack
  optimises against (victim or surrogate) and queries to the victim oracle. ``params`` is the defaults
  merged with the planner's values, so the cost follows the parameters the plan actually uses.
- ``access`` is what the attack touches: "gradients" (white-box module), "scores", "labels" (counted
  oracles) or "surrogate" (a substitute model; the victim gets at most a few verification queries).
- ``atlas`` are MITRE ATLAS technique ids: AML.T0043.000 white-box optimisation, .001 black-box
  optimisation, .002 black-box transfer, AML.T0015 evade AI model, AML.T0040 inference API access,
  AML.T0041 physical environment access, AML.T0044 full model access, AML.T0005 proxy model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taxonomy.axes import CONSEQUENCE_KINDS
from taxonomy.catalog_types import AttackDescriptor, Cost
from taxonomy.params import (
    APGDDLRParams,
    APGDParams,
    APGDTParams,
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


def _p(params: Mapping[str, Any], name: str, default: float) -> float:
    value = params.get(name, default)
    return float(value) if value is not None else float(default)


def _count(params: Mapping[str, Any], name: str) -> float:
    """A parameter that is a list (detector names) or a number, as a count (at least 1)."""
    value = params.get(name, 1)
    return float(max(len(value), 1)) if isinstance(value, (list, tuple)) else float(value or 1)


def _iterative(params: Mapping[str, Any]) -> Cost:
    """steps x restarts gradient steps, plus one clean forward pass."""
    n = _p(params, "steps", 10) * _p(params, "restarts", 1)
    return Cost(forward=n + 1, backward=n)


def _apgd(params: Mapping[str, Any]) -> Cost:
    """steps x restarts (x targets for APGD-T) passes at most: runs stop early per input."""
    runs = _p(params, "restarts", 1) * (_p(params, "n_target_classes", 9) if "n_target_classes" in params else 1)
    steps = _p(params, "steps", 100)
    n = steps * runs * _p(params, "eot_iter", 1)
    keep = _p(params, "keep_targets", 0) if params.get("parallel_targets", True) else 0
    if keep and "n_target_classes" in params:  # the targets beyond ``keep`` stop at the first checkpoint
        first = max(int(0.22 * steps), 1)
        dropped = max(_p(params, "n_target_classes", 9) - keep, 0) * _p(params, "restarts", 1)
        n -= dropped * (steps - first) * _p(params, "eot_iter", 1)
    return Cost(forward=n + runs + 1, backward=n)


def _queries(name: str, default: float) -> Any:
    def cost(params: Mapping[str, Any]) -> Cost:
        return Cost(forward=0.0, backward=0.0, queries=_p(params, name, default))

    return cost


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
        implemented=True,
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
        implemented=True,
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
        implemented=True,
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
        cost=_iterative,
        params=PGDParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=_iterative,
        params=PGDParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        implemented=True,
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
        params=APGDParams,
        strength=9,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        params=APGDDLRParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        params=APGDTParams,
        strength=9,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "binary_search_steps", 9) * _p(params, "steps", 100) + 1,
            backward=_p(params, "binary_search_steps", 9) * _p(params, "steps", 100),
        ),
        params=CWParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "steps", 50) + 1,
            backward=_p(params, "steps", 50) * _p(params, "candidates", 10),
        ),
        params=DeepFoolParams,
        strength=5,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "max_iter", 50) + 1,
            backward=_p(params, "max_iter", 50) * _p(params, "num_classes", 10),
        ),
        params=JSMAParams,
        strength=5,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(forward=_p(params, "steps", 100) + 1, backward=_p(params, "steps", 100)),
        params=FMNParams,
        strength=8,
        atlas=WHITE_BOX_ATLAS,
        backend="foolbox",
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "n_target_classes", 9) * _p(params, "restarts", 1) * (2 * _p(params, "steps", 100) + 1),
            backward=_p(params, "n_target_classes", 9) * _p(params, "restarts", 1) * _p(params, "steps", 100),
        ),
        params=FABTParams,
        strength=7,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "restarts", 1) * (2 * _p(params, "steps", 100)),
            backward=_p(params, "restarts", 1) * _p(params, "steps", 100) * 10,
        ),
        params=FABParams,
        strength=6,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "n_target_classes", 9) * (_p(params, "steps", 100) + 2),
            backward=_p(params, "n_target_classes", 9) * _p(params, "steps", 100),
        ),
        params=FMNTParams,
        strength=7,
        atlas=WHITE_BOX_ATLAS,
        backend="foolbox",
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "binary_search_steps", 5) * _p(params, "max_iter", 100) + 1,
            backward=_p(params, "binary_search_steps", 5) * _p(params, "max_iter", 100),
        ),
        params=LBFGSParams,
        strength=4,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "binary_search_steps", 5) * _p(params, "max_iter", 100) + 1,
            backward=_p(params, "binary_search_steps", 5) * _p(params, "max_iter", 100),
        ),
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
        cost=lambda params: Cost(forward=_p(params, "steps", 100) + 1, backward=_p(params, "steps", 100)),
        params=NewtonFoolParams,
        strength=4,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
        notes="Newton root-finding on the true-class probability; untargeted only.",
    ),
    # ------------------------------------------------------------------ score-based black box
    AttackDescriptor(
        id="square_linf",
        title="Square Attack, Linf",
        implementation="attackgen.run.attacks.square:SquareLinf",
        reference="Andriushchenko, Croce, Flammarion, Hein 2020, arXiv:1912.00049",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:inf"}),
        budget_modes=FIXED,
        access="scores",
        optimizer="evolution",
        gradient_source=None,
        data_bases=ANY_DATA,
        cost=_queries("n_queries", 5000),
        params=SquareLinfParams,
        min_queries=100,
        strength=7,
        atlas=BLACK_BOX_ATLAS,
        notes="Random search over square updates on the objective's score; the gradient-free check of "
        "white-box Linf plans (AutoAttack uses it for that). Dense tasks score through the objective's loss.",
    ),
    AttackDescriptor(
        id="square_l2",
        title="Square Attack, L2",
        implementation="attackgen.run.attacks.square:SquareL2",
        reference="Andriushchenko, Croce, Flammarion, Hein 2020, arXiv:1912.00049",
        tasks=ALL_TASKS,
        consequences=GENERIC_TARGETS,
        scopes=INDIVIDUAL,
        imperceptibility=frozenset({"lp:2"}),
        budget_modes=FIXED,
        access="scores",
        optimizer="evolution",
        gradient_source=None,
        data_bases=ANY_DATA,
        cost=_queries("n_queries", 5000),
        params=SquareL2Params,
        min_queries=100,
        strength=6,
        atlas=BLACK_BOX_ATLAS,
    ),
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
        cost=_queries("max_queries", 10000),
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
        cost=_queries("max_queries", 2000),
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
        cost=lambda params: Cost(queries=_p(params, "popsize", 20) * (_p(params, "maxiter", 150) + 1)),
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
        cost=lambda params: Cost(queries=_p(params, "population", 32) * (_p(params, "generations", 100) + 1)),
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
        cost=_queries("max_queries", 10000),
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
        cost=_queries("max_queries", 5000),
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
        cost=_queries("max_queries", 5000),
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
        cost=lambda params: Cost(
            forward=(_p(params, "steps", 10) + 1) * _p(params, "ensemble", 1),
            backward=_p(params, "steps", 10) * _p(params, "ensemble", 1),
            queries=_p(params, "verify_queries", 1),
        ),
        params=TransferParams,
        min_queries=1,
        strength=5,
        atlas=TRANSFER_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(
            forward=(_p(params, "steps", 10) + 1) * _p(params, "ensemble", 1),
            backward=_p(params, "steps", 10) * _p(params, "ensemble", 1),
            queries=_p(params, "verify_queries", 1),
        ),
        params=DIFGSMParams,
        min_queries=1,
        strength=6,
        atlas=TRANSFER_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(forward=_p(params, "epochs", 5) + 3, backward=_p(params, "epochs", 5)),
        params=UAPParams,
        strength=5,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(forward=_p(params, "epochs", 5) + 3, backward=_p(params, "epochs", 5)),
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
        cost=lambda params: Cost(
            queries=2 * _p(params, "iterations", 300) * _p(params, "batch_size", 32)
            / max(_p(params, "fit_size", 500), 1.0)
        ),
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
        cost=lambda params: Cost(
            forward=_p(params, "steps", 500) * _p(params, "batch_size", 32) * _p(params, "eot_samples", 8)
            / max(_p(params, "fit_size", 500), 1.0) + 1,
            backward=_p(params, "steps", 500) * _p(params, "batch_size", 32) * _p(params, "eot_samples", 8)
            / max(_p(params, "fit_size", 500), 1.0),
        ),
        params=PatchParams,
        requires=frozenset({"spatial:patch"}),
        printable=True,
        views=frozenset({"scenes"}),
        strength=6,
        atlas=PHYSICAL_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(forward=_p(params, "steps", 40) * _p(params, "eot_samples", 8) + 1,
                                 backward=_p(params, "steps", 40) * _p(params, "eot_samples", 8)),
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
        cost=lambda params: Cost(
            forward=_p(params, "steps", 200) * _p(params, "batch_size", 32) * _p(params, "eot_samples", 8)
            / max(_p(params, "fit_size", 500), 1.0) + 1,
            backward=_p(params, "steps", 200) * _p(params, "batch_size", 32) * _p(params, "eot_samples", 8)
            / max(_p(params, "fit_size", 500), 1.0),
        ),
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
        cost=lambda params: Cost(
            forward=_p(params, "steps", 300) * _p(params, "batch_size", 32) * _p(params, "eot_samples", 8)
            / max(_p(params, "fit_size", 500), 1.0) + 1,
            backward=_p(params, "steps", 300) * _p(params, "batch_size", 32) * _p(params, "eot_samples", 8)
            / max(_p(params, "fit_size", 500), 1.0),
        ),
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
        cost=lambda params: Cost(forward=_p(params, "steps", 100) + 1, backward=_p(params, "steps", 100)),
        params=SSIMParams,
        requires=frozenset({"perceptual:ssim"}),
        strength=6,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(forward=_p(params, "steps", 100) + 1, backward=_p(params, "steps", 100)),
        params=WassersteinParams,
        requires=frozenset({"perceptual:wasserstein"}),
        strength=6,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        cost=lambda params: Cost(
            forward=(_p(params, "steps", 100) + 1) * (1 + 3 * _count(params, "detectors")),
            backward=_p(params, "steps", 100) * (1 + 3 * _count(params, "detectors")),
        ),
        params=DetectorAwareParams,
        requires=frozenset({"detector"}),
        strength=7,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        implemented=True,
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
        cost=lambda params: Cost(forward=_p(params, "epochs", 10) + 1, backward=_p(params, "epochs", 10)),
        params=MetzenUAPParams,
        strength=7,
        atlas=WHITE_BOX_ATLAS,
        implemented=True,
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
        implemented=True,
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
        cost=lambda params: Cost(
            forward=_p(params, "steps", 500) * _p(params, "eot_samples", 8) / max(_p(params, "fit_size", 500), 1.0),
            backward=_p(params, "steps", 500) * _p(params, "eot_samples", 8) / max(_p(params, "fit_size", 500), 1.0),
        ),
        params=DetectorPatchParams,
        requires=frozenset({"spatial:patch"}),
        views=frozenset({"scenes"}),
        strength=6,
        atlas=PHYSICAL_ATLAS,
        implemented=True,
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
    cost = descriptor.cost(descriptor.defaults)
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
