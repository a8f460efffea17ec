"""The constraint rules of the threat-model taxonomy: what they say, and how each one is encoded.

Every rule has an id (what a user sees), a family (taxonomy-notes §3: A knowledge/basis/optimiser,
B data/scope, C consequence/task, D imperceptibility, E capability, F scope/consequence/detectability,
G verification, I input space), a severity, a one-line reason, a fix hint and a source (a paper with
its arXiv id, or the argument).

A rule is encoded in exactly one of four ways:

- **edges** (``EDGES``): hard requires / excludes relations between axis values, capabilities and
  strategy choices. ``taxonomy.graph`` puts them into the networkx constraint graph and evaluates them
  from there. ``requires`` edges that share a source and a rule form a disjunction ("one of").
- **predicates** (``PREDICATES``): small functions over the facts of a spec, for rules that need
  parameters (epsilons, budgets, class names).
- **descriptor checks** (``DESCRIPTOR_CHECKS``): functions over (facts, attack descriptor), for rules
  an implementation breaks under a spec (query budget, norm support, ...).
- **planner** rules: the planner applies them (a white-box plan schedules a gradient-free check); the
  Rule object exists so the plan can cite it.
- **schema** rules (family S): values no threat model can have (an Linf epsilon above the input range, an
  empty detector list, a static target without exactly one artefact, a query budget of 0). They stay in
  the pydantic schema, so the file is rejected as malformed (exit 2) before any rule runs, but the error
  names the rule id (``taxonomy.errors.SCHEMA_RULES`` and the validators' messages) and the rule has a
  reason, fix and source here like every other.

``validate``, ``realises`` and ``descriptor_violations`` live in ``taxonomy.graph`` (which imports this
module; nothing here imports the graph): ``from taxonomy.graph import validate``.

Size (about 1,000 lines): it is the rule table itself, 60-odd rules each with reason, fix, source and
its encoding next to it, so a reader checks a rule against its encoding in one place. Pure data and
small predicates; the evaluation is in taxonomy.graph.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from taxonomy.atoms import Facts
    from taxonomy.catalog_types import AttackDescriptor

Severity = Literal["error", "warning"]
Level = Literal["spec", "descriptor", "planner", "schema"]

FAMILIES: dict[str, str] = {
    "A": "model knowledge, model basis and optimiser",
    "B": "data knowledge, data basis and scope",
    "C": "consequence and task",
    "D": "imperceptibility",
    "E": "adversary capability (digital, physical, spatial)",
    "F": "scope, consequence and detectability",
    "G": "execution and verification",
    "I": "input-space contract",
    "S": "schema: a value the file cannot state (exit 2, checked while the file is read)",
}


@dataclass(frozen=True)
class Rule:
    """One constraint of the taxonomy, shown to the user by ``id``."""

    id: str
    family: str
    severity: Severity
    reason: str
    fix: str
    source: str
    level: Level = "spec"  # where it is checked: validate(), descriptor_violations(), or the planner

    @property
    def short(self) -> str:
        """'A1' for 'A1-victim-gradients-need-white-box'."""
        return self.id.split("-", 1)[0]


def _r(id: str, severity: Severity, reason: str, fix: str, source: str, level: Level = "spec") -> Rule:
    return Rule(id=id, family=id[0], severity=severity, reason=reason, fix=fix, source=source, level=level)


E: Severity = "error"
W: Severity = "warning"

# Sources cited more than once.
BRENDEL = "Brendel, Rauber, Bethge 2018, Decision-based adversarial attacks, arXiv:1712.04248"
ILYAS = "Ilyas, Engstrom, Athalye, Lin 2018, Black-box adversarial attacks with limited queries, arXiv:1804.08598"
PAPERNOT = "Papernot et al. 2017, Practical black-box attacks, arXiv:1602.02697"
ATLAS = "MITRE ATLAS"
METZEN = "Metzen, Kumar, Brox, Fischer 2017, Universal adversarial perturbations against segmentation, arXiv:1704.05712"
UAP = "Moosavi-Dezfooli et al. 2017, Universal adversarial perturbations, arXiv:1610.08401"
GDUAP = "Mopuri, Ganeshan, Babu 2018, GD-UAP (data-free), arXiv:1801.08092"
EOT = "Athalye, Engstrom, Ilyas, Kwok 2018, Synthesizing robust adversarial examples (EOT), arXiv:1707.07397"
PATCH = "Brown, Mane, Roy, Abadi, Gilmer 2017, Adversarial patch, arXiv:1712.09665"
RP2 = "Eykholt et al. 2018, Robust physical-world attacks (RP2), arXiv:1707.08945"
TOG = "Chow et al. 2020, Adversarial objectness gradient attacks (TOG), arXiv:2004.04320"
CARLINI_EVAL = "Carlini et al. 2019, On evaluating adversarial robustness, arXiv:1902.06705"
CW_DETECT = "Carlini & Wagner 2017, Adversarial examples are not easily detected, arXiv:1705.07263"
AUTOATTACK = "Croce & Hein 2020, AutoAttack, arXiv:2003.01690"
KURAKIN_PHYSICAL = "Kurakin, Goodfellow, Bengio 2016, Adversarial examples in the physical world, arXiv:1607.02533"
LENS = "Li, Schmidt, Kolter 2019, Adversarial camera stickers, arXiv:1904.00759"
SHARIF = "Sharif, Bhagavatula, Bauer, Reiter 2016, Accessorize to a crime (CCS), doi:10.1145/2976749.2978392"
ARGUMENT = "argument"

_RULE_LIST: list[Rule] = [
    # ------------------------------------------------------------------ A: knowledge, basis, optimiser
    _r("A1-victim-gradients-need-white-box", E,
       "Analytic gradients (or Hessian-vector products) of the victim need white-box access to it.",
       "Set model_knowledge to white_box, or use gradient_source estimated_scores/estimated_decisions, "
       "an evolution optimiser, or a surrogate model_basis.",
       f"{BRENDEL}; {ATLAS} AML.T0043.000 / AML.T0044"),
    _r("A2-estimating-gradients-you-have", W,
       "With white-box access, estimating the victim's gradients from queries costs orders of magnitude "
       "more passes and finds weaker attacks.",
       "Use gradient_source analytic; keep estimated gradients for the gradient-masking check (G2).",
       f"{ILYAS}; {CARLINI_EVAL}"),
    _r("A3-label-only-needs-decision-based", E,
       "Label-only access returns no scores: score-based attacks (Square, SimBA, ZOO, NES, DE) have no "
       "fitness; only decision-based attacks (Boundary, HopSkipJump) or a surrogate work.",
       "Use a decision-based attack (gradient_source estimated_decisions) or a surrogate model_basis, "
       "or grant score access (output_transparent / query_limited).",
       f"{BRENDEL}; {ILYAS}"),
    _r("A5-full-black-box-needs-surrogate", E,
       "Full black-box means no access to the victim at all: the attack must be computed on a surrogate "
       "model with zero victim queries.",
       "Set strategy.model_basis to surrogate, or grant query access in model_knowledge.",
       f"{ATLAS} AML.T0043.002 (black-box transfer); {PAPERNOT}"),
    _r("A7-trained-surrogate-needs-data", E,
       "A surrogate trained on data needs data: the training set or a surrogate data set.",
       "Set data_knowledge to training or surrogate, or use a pretrained or query-distilled surrogate.",
       f"{ATLAS} AML.T0005.000; {PAPERNOT}"),
    _r("A8-query-budget-covers-attack", E,
       "A query-limited adversary cannot run an attack below its minimum useful query count per input (the "
       "descriptor's min_queries, checked before the planner shrinks iterations to fit the budget), nor a "
       "plan item whose parameters expect more queries than the budget.",
       "Raise query_budget to the attack's minimum, or prefer query-efficient attacks (Square, SimBA) or "
       "transfer with a few verification queries.",
       f"{ILYAS}; Andriushchenko et al. 2020, Square attack, arXiv:1912.00049; {BRENDEL} (10^3+ queries)",
       level="descriptor"),
    _r("A9-top-k-may-hide-the-target", W,
       "Top-k scores do not show the target class until it enters the top k; the margin to it is unknown.",
       "Use granularity probabilities or logits, or start from an input of the target class "
       "(partial-information attack).",
       ILYAS),
    _r("A10-second-order-needs-gradients-or-scores", E,
       "Second-order information on the victim needs double back-propagation (white-box) or "
       "finite-difference curvature from scores (ZOO-Newton); labels alone give neither.",
       "Use a first-order or evolution optimiser, or grant white-box or score access.",
       "Chen et al. 2017, ZOO, arXiv:1708.03999; Szegedy et al. 2014 (L-BFGS), arXiv:1312.6199"),
    _r("A11-gradient-free-on-white-box", W,
       "With white-box access, gradient-free search on the victim is weaker than gradient attacks; it "
       "belongs in the plan as the gradient-masking check, not as the main attack.",
       "Use a first-order optimiser with analytic gradients (the planner adds a gradient-free check).",
       f"{AUTOATTACK}; {CARLINI_EVAL}"),
    _r("A16-evolution-has-no-analytic-gradient", E,
       "Evolution and random-search optimisers do not use analytic gradients; the strategy contradicts itself.",
       "Use optimizer first_order (or second_order) with analytic gradients, or drop gradient_source.",
       ARGUMENT + ": an evolution optimiser is by definition gradient-free"),
    _r("A17-surrogate-gradients-are-analytic", W,
       "A surrogate is your own model: its gradients are exact and free, estimating them from queries "
       "only adds noise and cost.",
       "Use gradient_source analytic with a surrogate model_basis.",
       f"{PAPERNOT}; Liu et al. 2017, Delving into transferable adversarial examples, arXiv:1611.02770"),
    _r("A18-white-box-transfer-underestimates", W,
       "With white-box access to the victim, a transfer attack from a surrogate underestimates the "
       "victim's vulnerability.",
       "Use model_basis victim, or lower model_knowledge if the adversary really has no victim access.",
       f"{CARLINI_EVAL}; {ATLAS} AML.T0043.000 vs .002"),
    _r("A19-distilled-surrogate-needs-queries", E,
       "A surrogate distilled from the victim's answers needs at least label queries to the victim.",
       "Use a surrogate trained on data or a pretrained one, or grant label_only (or richer) access.",
       f"{PAPERNOT}; {ATLAS} AML.T0005.001"),
    _r("A20-pretrained-surrogate-needs-a-model", E,
       "A pretrained surrogate has to be named: the planner cannot invent a public model.",
       "Set strategy.model_basis.model to a built-in name or a module:function entry point.",
       f"{ATLAS} AML.T0005.002 / AML.T0002.001"),
    _r("A21-query-budget-too-small", W,
       "Fewer than 100 queries per input is below what any score- or decision-based attack needs; only "
       "transfer plus verification fits.",
       "Raise query_budget, or plan a transfer attack from a surrogate (the budget then verifies it).",
       f"{ILYAS}; Guo et al. 2019, SimBA, arXiv:1905.07121"),
    _r("A22-top-k-exceeds-classes", E,
       "Top-k with k larger than the number of classes is impossible.",
       "Lower k to at most len(classes), or use granularity probabilities.",
       ARGUMENT + ": a model with n classes returns at most n scores"),
    # ------------------------------------------------------------------ B: data, scope
    _r("B1-training-basis-needs-training-data", E,
       "The optimisation cannot run over the training data if the adversary does not have it.",
       "Set data_knowledge to training, or use data_basis surrogate or none.",
       ARGUMENT + " (taxonomy-notes B1); " + METZEN),
    _r("B2-surrogate-basis-needs-data", E,
       "A surrogate data basis needs surrogate (or training) data knowledge.",
       "Set data_knowledge to surrogate or training, or use data_basis none.",
       ARGUMENT + " (taxonomy-notes B2)"),
    _r("B3-universal-needs-data-or-activations", E,
       "A universal perturbation is fitted over many inputs; without data only a data-free method on "
       "white-box activations (FFF, GD-UAP) or a named pretrained surrogate remains.",
       "Give data_knowledge training or surrogate, grant white_box knowledge, or scope individual.",
       f"{UAP}; {GDUAP}"),
    _r("B4-contextual-needs-context-data", E,
       "A contextual perturbation is fitted over the inputs of its context: it needs a data basis that "
       "contains them.",
       "Give data_knowledge training or surrogate (and data_basis not none), or scope individual.",
       f"Assion et al. 2019, The attack generator, arXiv:1906.07077; {METZEN}"),
    _r("B5-heldout-split-too-large", W,
       "With more than half of the data held out, the image-agnostic perturbation is fitted on little data.",
       "Lower heldout_fraction (0.2 to 0.3 is usual).",
       f"{UAP} (fooling rate measured on held-out images)"),
    _r("B6-reference-output-needs-access", E,
       "Dynamic and confusing targets (and untargeted against the clean prediction) are built from the "
       "clean output: it needs label access to the victim, or a surrogate's prediction.",
       "Grant label_only (or richer) access, use a surrogate model_basis, or measure against ground truth.",
       f"{METZEN} (dynamic target from the clean prediction)"),
    _r("B8-black-box-without-data-needs-pretrained", E,
       "Full black-box without data leaves no way to build a surrogate except a public pretrained model.",
       "Set strategy.model_basis {kind: surrogate, source: pretrained, model: ...} or give data knowledge.",
       f"{BRENDEL} (transfer attacks need substitute models, which need data); {ATLAS} AML.T0005.002"),
    _r("B9-data-free-universal-is-weaker", W,
       "A data-free universal perturbation (activation objectives and priors) fools far less than one "
       "fitted on data.",
       "Give data_knowledge training or surrogate if the adversary can collect images.",
       GDUAP),
    _r("B10-attack-needs-data", E,
       "This attack is fitted on a data set (universal, contextual, patch) and the spec grants none.",
       "Give data_knowledge training or surrogate (and a data_basis that is not none).",
       UAP, level="descriptor"),
    _r("B11-context-classes-must-exist", E,
       "A context predicate over 'label' must name classes of the model's output.",
       "Use class names from `classes` (or indices below len(classes)), or add `classes` to the spec.",
       ARGUMENT + ": the context selects inputs by their label"),
    # ------------------------------------------------------------------ C: consequence, task
    _r("C1-confusing-needs-spatial-output", E,
       "Moving or resizing objects needs spatial outputs: segmentation or detection.",
       "Use task segmentation or detection, or another consequence.",
       "Assion et al. 2019, arXiv:1906.07077 (confusing target)"),
    _r("C2-remove-classes-on-classification", W,
       "'Remove a class, keep the rest' has no meaning for one label per image.",
       "Use rule least_likely or class_map (a per-input target), or a static target.",
       "Kurakin et al. 2017, ILLC, arXiv:1607.02533; " + METZEN),
    _r("C3-target-artefact-matches-task", E,
       "A static target needs an artefact of the task's output type: target_class for classification, "
       "target_map for segmentation, target_boxes for detection.",
       "Give the artefact that matches the task.",
       METZEN),
    _r("C5-class-names-need-classes", E,
       "Classes are named but the spec has no `classes` list to resolve them against.",
       "Add `classes` (the model's class names in output order) or refer to classes by index.",
       f"{ATLAS} AML.T0013 (discover model ontology)"),
    _r("C6-targeted-decision-based-needs-start", E,
       "A targeted decision-based attack starts from an input already classified as the target, taken "
       "from the data basis.",
       "Give data_knowledge training or surrogate, use an untargeted consequence, or a score-based attack.",
       BRENDEL + "; foolbox BoundaryAttack starting_points", level="descriptor"),
    _r("C7-attack-supports-task", E,
       "The implementation does not handle this task's outputs (plain classification code takes "
       "argmax over the last axis).",
       "Choose an attack catalogued for the task, or change the task.",
       "foolbox / torchattacks classification criteria (taxonomy-notes C7)", level="descriptor"),
    _r("C8-unknown-class-name", E,
       "A class name used in the spec is not in `classes`.",
       "Use one of the names in `classes` (spelling counts).",
       ARGUMENT + ": targets must resolve to output indices"),
    _r("C9-class-index-out-of-range", E,
       "A class index is outside the model's output (0 .. len(classes)-1).",
       "Use an index below len(classes), or a class name.",
       ARGUMENT + ": targets must resolve to output indices"),
    _r("C10-detector-consequence-needs-detection", E,
       "Vanishing, fabrication and mislabel are consequences for object detectors (boxes appear, "
       "disappear or change class).",
       "Use task detection, or untargeted / static / dynamic targets.",
       TOG),
    _r("C13-mislabel-to-its-own-class", E,
       "Mislabelling a class as itself changes nothing.",
       "Remove to_class from from_classes, or pick another to_class.",
       ARGUMENT + ": the mislabel objective asks for the class the object already has"),
    _r("C14-least-likely-needs-full-scores", E,
       "The least-likely class is the bottom of the score ranking: it needs full scores (white-box, "
       "logits or probabilities) or a surrogate's scores.",
       "Grant white_box or output_transparent with probabilities, use a surrogate, or rule class_map.",
       "Kurakin et al. 2017, ILLC, arXiv:1607.02533"),
    _r("C15-remove-classes-on-detection-is-vanishing", W,
       "On a detector, removing classes is the vanishing consequence, whose losses act on objectness "
       "and class scores before NMS.",
       "Use consequence vanishing with the same classes.",
       TOG),
    _r("C16-class-map-maps-to-itself", W,
       "A class_map entry maps a class to itself: those inputs are left untouched.",
       "Map each source class to a different target class.",
       ARGUMENT + ": a self-mapping makes the per-input target equal to the clean label"),
    _r("C17-detector-dynamic-target-removes-classes", E,
       "On a detector a dynamic target is the vanishing of remove_classes; least_likely and class_map are "
       "per-input (classification) or per-pixel (segmentation) targets with no per-box objective.",
       "Use rule remove_classes (or consequence vanishing), mislabel (from_classes -> to_class) for a class "
       "mapping, or a static target with target_boxes.",
       TOG + "; " + ARGUMENT + ": attackgen.run.objectives.detection builds only DetVanishing for dynamic targets"),
    _r("C18-dlr-needs-enough-classes", E,
       "The DLR loss divides the margin by the spread of the top logits: untargeted it reads the 3 largest "
       "logits, targeted (APGD-T) the 4 largest, so a model with fewer classes has no DLR loss.",
       "Use a cross-entropy attack (apgd_ce, pgd_linf), or the autoattack presets on a model with at least "
       "4 classes (3 for apgd_dlr).",
       AUTOATTACK + "; fra31/auto-attack issues #70 and #76 (crashes on 2-class models)", level="descriptor"),
    # ------------------------------------------------------------------ D: imperceptibility
    _r("D1-attack-supports-norm", E,
       "The implementation optimises another Lp norm than the spec bounds (FGSM/PGD Linf or L2, C&W "
       "L2, JSMA L0, EAD L1).",
       "Choose an attack catalogued for the norm, or change the norm.",
       "foolbox / torchattacks / ART norm-specific classes (taxonomy-notes D1)", level="descriptor"),
    _r("D2a-pixel-255-epsilon-below-one", W,
       "An epsilon below 1 on a 0..255 scale is a fraction of one grey level: probably meant in input "
       "units.",
       "Use epsilon_units input_scale, or write the epsilon in grey levels (e.g. 8).",
       CARLINI_EVAL + " (state epsilon with its units)"),
    _r("D2b-normalization-in-data", E,
       "Data that is already mean/std-normalised puts epsilons and bounds in the wrong units and breaks "
       "clipping.",
       "Feed unnormalised inputs and put normalisation inside the model (normalization: inside_model).",
       CARLINI_EVAL + " (double normalisation is a common evaluation bug)"),
    _r("D2c-grey-level-bounds-with-unit-epsilon", W,
       "On inputs in 0..255 an Linf epsilon below 1 (input units) is below one grey level: probably a "
       "0..1 epsilon.",
       "Write the epsilon in grey levels, or set epsilon_units pixel_255 with the value on that scale.",
       CARLINI_EVAL),
    _r("D3-perceptual-bound-without-projection", W,
       "SSIM, LPIPS and Wasserstein balls have no cheap projection; a second-order method handles them only "
       "in penalty form (lbfgs_ssim for an SSIM floor), which is weaker than a first-order Lagrangian.",
       "Use a first-order optimiser with a penalty or Lagrangian (or projected Sinkhorn), or evolution; keep "
       "second order for the penalty-form L-BFGS under an SSIM floor.",
       "Wong, Schmidt, Kolter 2019, Wasserstein adversarial examples, arXiv:1902.07906; "
       "Laidlaw et al. 2021, Perceptual adversarial robustness, arXiv:2006.12655"),
    _r("D4-black-box-detector-is-not-adaptive", W,
       "Without gradients of a detector the attack cannot model it; evading it is a transfer hope, not "
       "an adaptive attack.",
       "Give the detector white_box access, or report detection rates as measured, not optimised.",
       CW_DETECT),
    _r("D5-plausible-output-needs-targeted-consequence", W,
       "Untargeted attacks produce noisy, implausible outputs; a plausible output needs a dynamic or "
       "confusing target (or a fitting static one).",
       "Use consequence dynamic_target (nearest fill) or confusing_target, or drop the output criterion.",
       METZEN),
    _r("D6-duplicate-norm", W,
       "Two Lp items bound the same norm; only the tighter one matters.",
       "Keep one item per norm (use an epsilon list for a robustness curve).",
       ARGUMENT + ": the feasible set is the intersection of the balls, so the larger one is inert"),
    _r("D7-physical-small-lp", W,
       "Printing, viewing geometry and the camera destroy or rescale small pixel perturbations; a "
       "pre-print Lp bound does not measure the perceived change.",
       "Bound a patch or texture region instead (spatial constraint, epsilon the full range) with EOT.",
       f"Kurakin et al. 2016, arXiv:1607.02533; {EOT}; {PATCH}"),
    _r("D8-small-region-small-epsilon", W,
       "A small region needs large changes; a small Linf epsilon inside a patch or mask rarely succeeds.",
       "Set the Linf epsilon to the full input range inside the region, or enlarge the region.",
       PATCH),
    _r("D9-epsilon-huge", W,
       "An Linf epsilon above a quarter of the input range is clearly visible: the result is not "
       "imperceptible.",
       "Use a smaller epsilon (8/255 is usual on natural images), or a spatial constraint for visible "
       "patches.",
       "Madry et al. 2018, arXiv:1706.06083; " + CARLINI_EVAL),
    _r("D10-plausible-output-on-classification", W,
       "Output plausibility is about dense outputs (no holes, consistent maps); one label is always "
       "'plausible'.",
       "Drop the output criterion, or use task segmentation or detection.",
       METZEN),
    _r("D11-epsilon-tiny", W,
       "An Linf epsilon below half a grey level (0.5/255 of the range) is lost when the input is stored "
       "in 8 bits and is rarely meaningful.",
       "Use an epsilon of at least 1/255 of the range; check epsilon_units.",
       CARLINI_EVAL),
    _r("D12-attack-supports-budget-mode", E,
       "The implementation does not work in the spec's budget mode (fixed epsilon vs minimal norm).",
       "Choose a minimal-norm attack (C&W, DeepFool, FMN, Boundary, HSJ) for mode minimal, or a "
       "fixed-epsilon one for mode fixed.",
       "foolbox FixedEpsilonAttack vs MinimizationAttack (taxonomy-notes G3)", level="descriptor"),
    _r("D13-ssim-floor-low", W,
       "An SSIM floor below 0.5 allows clearly visible distortion.",
       "Use an SSIM floor of 0.9 or more.",
       "Wang et al. 2004, SSIM (IEEE TIP 13(4)); Laidlaw et al. 2021, arXiv:2006.12655"),
    _r("D14-attack-supports-perceptual-bound", E,
       "The implementation cannot enforce a perceptual, output-plausibility or detector criterion of the "
       "spec.",
       "Choose an attack catalogued for the criterion, or drop it.",
       "taxonomy-notes D3 / D4 / D5", level="descriptor"),
    # ------------------------------------------------------------------ E: capability
    _r("E1-physical-needs-transformations", E,
       "A physical artefact is seen under many viewpoints, scales and lightings: it must be optimised in "
       "expectation over a transformation set (EOT).",
       "Add capability.transformations (rotation, scale, translate, brightness, noise).",
       EOT),
    _r("E2-physical-needs-scene-artefact", E,
       "A physical adversary changes the world, not sensor pixels: the perturbation must be a patch or sticker "
       "in a region, an image printed whole (a printed photo, an object's texture), or a layer over the lens, "
       "and it is seen under EOT.",
       "Add capability.spatial (kind patch or box), or state capability.placement everywhere (a printed image) "
       "or overlay (a lens sticker).",
       f"{ATLAS} AML.T0041; {PATCH}; {KURAKIN_PHYSICAL}; {LENS}"),
    _r("E3-physical-needs-shared-artefact", E,
       "An artefact seen in many scenes (views: scenes: a patch placed into scenes, a layer over the lens) is one "
       "artefact for every capture: it is shared (universal or contextual). Only an artefact seen as one object's "
       "views (views: object: an image printed whole, a sticker on one object) may be fitted to one input, under "
       "EOT over that object's views.",
       "Use scope contextual or universal, or views object (placement everywhere / box) for one object.",
       f"{EOT}; {RP2}; {LENS}; {KURAKIN_PHYSICAL}"),
    _r("E13-attack-enforces-printability", E,
       "The spec states printability as bounds (a non-printability score against a colour set, a total "
       "variation); the implementation has no printability term or projection, so its artefacts would break them.",
       "Choose an attack that enforces printability (patch_eot, sticker_box, eot_pgd), or state printability: "
       "true (penalty only) or drop the bounds.",
       f"{SHARIF}; {RP2}", level="descriptor"),
    _r("E15-lens-layer-sees-every-scene", E,
       "A layer on the camera lens is in front of every frame the camera takes: its views are scenes, not one "
       "object's views.",
       "Use views scenes (or leave views out) with placement overlay, or another placement for one object.",
       LENS),
    _r("E16-views-without-physical-feed", W,
       "How views arise (one object under EOT, or many scenes) matters only for an artefact in the physical "
       "world; on a digital feed each input is seen once.",
       "Remove capability.views, or set feed physical with capability.transformations.",
       f"{EOT}; {KURAKIN_PHYSICAL}"),
    _r("E17-attack-fits-views", E,
       "The implementation optimises over one kind of view set: EOT-PGD over one input's views (object), a "
       "patch or lens layer over many scenes; the spec states the other.",
       "Choose an attack catalogued for the views (object: eot_pgd, sticker_box; scenes: patch_eot, lens_overlay, "
       "sticker_box, det_patch), or change capability.views.",
       f"{EOT}; {PATCH}; {LENS}", level="descriptor"),
    _r("E4-physical-printability", W,
       "Printers cannot reproduce every colour and cameras smooth fine detail; without a non-printability "
       "term the artefact degrades when printed.",
       "Set capability.printability: true (non-printability score and total variation).",
       f"Sharif et al. 2016, Accessorize to a crime (CCS); {RP2}"),
    _r("E5-physical-queries-are-captures", W,
       "On a physical feed every victim query is a physical capture; query-based attacks are usually run "
       "on a simulated digital stage and transferred.",
       "Use a white-box or surrogate basis with EOT, or accept the cost of physical queries.",
       "Feng et al. 2022, GRAPHITE, arXiv:2002.07088"),
    _r("E6-quantized-epsilon-below-grey-level", W,
       "The spec verifies after 8-bit rounding; an Linf epsilon below one grey level mostly rounds away.",
       "Use an epsilon of at least 1/255 of the range, or set quantize: false.",
       CARLINI_EVAL),
    _r("E8-attack-supports-spatial-constraint", E,
       "The implementation cannot confine its perturbation to a mask or patch region.",
       "Choose an attack that supports a spatial constraint, or drop capability.spatial.",
       "taxonomy-notes E8", level="descriptor"),
    _r("E10-transformations-without-physical-feed", W,
       "The transformation set is used only for a physical feed; on a digital feed it is ignored.",
       "Remove capability.transformations, or set feed physical.",
       EOT),
    _r("E11-printability-without-physical-feed", W,
       "The printability term is used only for a physical feed; on a digital feed it is ignored.",
       "Remove capability.printability, or set feed physical.",
       RP2),
    _r("E12-region-is-whole-input", W,
       "The spatial region covers the whole input: it constrains nothing.",
       "Drop capability.spatial, or give a smaller region.",
       ARGUMENT + ": a mask of ones leaves every pixel free, as without a mask"),
    # ------------------------------------------------------------------ F: scope, consequence, detectability
    _r("F3-shared-perturbation-is-detectable", W,
       "A perturbation shared across inputs (universal, contextual) is detectable by differencing frames "
       "or matching a database of known patterns.",
       "Expect detection; use scope individual for detector evasion, or test the detector explicitly.",
       "Volkswagen patent US 2022/0266854 (frame database); " + CW_DETECT),
    _r("F4-transfer-needs-boosters", W,
       "Per-input examples from a single surrogate transfer poorly without momentum, input diversity or an "
       "ensemble.",
       "Use ensemble > 1 in strategy.model_basis, or an MI-FGSM / DI-FGSM transfer attack.",
       "Dong et al. 2018, MI-FGSM, arXiv:1710.06081; Liu et al. 2017, arXiv:1611.02770"),
    _r("F5-shared-perturbation-needs-fixed-budget", W,
       "Minimal-norm mode is defined per input; a universal or contextual perturbation is fitted at a "
       "fixed epsilon for a target fooling rate.",
       "Use mode fixed with an epsilon.",
       UAP),
    _r("F6-context-already-has-target", W,
       "The context selects inputs whose label is the static target class: there is nothing to change.",
       "Pick a target class outside the context, or another context.",
       ARGUMENT + ": the target label is already the clean label for every input of the context"),
    # ------------------------------------------------------------------ G: verification
    _r("G1-black-box-results-are-transfer-estimates", W,
       "Without any access to the victim, success cannot be verified before deployment: the results are "
       "transfer estimates measured on proxies.",
       "Grant label_only access (even budgeted) to verify, or report the figures as transfer estimates.",
       f"{ATLAS} AML.T0042 (verify attack needs an inference API or an offline copy)"),
    _r("G2-white-box-plan-needs-gradient-free-check", W,
       "Gradient attacks can fail because gradients are masked, not because the model is robust; a "
       "white-box plan schedules a gradient-free attack as a check.",
       "Keep the gradient-free check the planner adds (Square, HopSkipJump); investigate if it finds more.",
       f"{AUTOATTACK}; Athalye, Carlini, Wagner 2018, Obfuscated gradients, arXiv:1802.00420",
       level="planner"),
    _r("G3-preset-fits-threat-model", E,
       "A named evaluation preset reproduces a published protocol on the threat model it was defined for "
       "(AutoAttack: white-box, untargeted, individual inputs, a fixed Linf or L2 epsilon, classification); "
       "on another threat model its figures would not be the protocol's.",
       "Use the preset the detail names, or plan without --preset (the planner covers every feasible cell).",
       AUTOATTACK + "; RobustBench, Croce et al. 2021, arXiv:2010.09670", level="planner"),
    # ------------------------------------------------------------------ I: input space
    _r("I1-negative-bounds-suggest-normalized", W,
       "Input bounds below 0 usually mean normalised inputs; epsilons then apply in normalised units.",
       "Use bounds [0, 1] with normalisation inside the model, or state epsilons in these units on purpose.",
       CARLINI_EVAL),
    # ------------------------------------------------------------------ S: schema (exit 2; id in the error)
    _r("S1-linf-epsilon-exceeds-input-range", E,
       "An Linf epsilon larger than the input range allows every input in the box: it bounds nothing and is "
       "almost always an epsilon in the wrong units (8 meant as 8/255).",
       "Write the epsilon in input units (8/255 = 0.0314 for [0, 1]) or set input_space.epsilon_units: "
       "pixel_255.",
       CARLINI_EVAL + " (state epsilon with its units)", level="schema"),
    _r("S2-detector-list-empty", E,
       "A detector-evasion bound names the detectors that must not fire; with none it constrains nothing and "
       "no adaptive attack can model it.",
       "Name at least one detector (e.g. feature_squeezing), or drop the detector item.",
       CW_DETECT, level="schema"),
    _r("S3-static-target-needs-one-artefact", E,
       "A static target is one fixed output for every input: exactly one artefact (a class, a label map or "
       "boxes) states it.",
       "Give exactly one of target_class, target_map or target_boxes (rule C3 then checks it fits the task).",
       METZEN, level="schema"),
    _r("S4-query-budget-positive", E,
       "A query budget counts victim queries per input; zero queries is not a query-limited adversary but a "
       "full black-box one.",
       "Give a budget of at least 1 (100+ for a query attack, rule A21), or model_knowledge full_black_box.",
       f"{ILYAS}; {ATLAS} AML.T0043.002", level="schema"),
    _r("S5-placement-fits-spatial", E,
       "A placement states where the change sits: a patch needs a patch region, a box sticker a box or mask, and "
       "a change everywhere or a lens overlay has no region.",
       "Make capability.placement and capability.spatial agree, or leave placement out (it follows spatial).",
       f"{PATCH}; {RP2}; {KURAKIN_PHYSICAL}; {LENS}", level="schema"),
    _r("S7-printability-states-a-bound", E,
       "Printability as bounds names what is bounded: a non-printability score against the printer's colours, a "
       "total variation, or both; colours need one value per channel each.",
       "Give max_nps and/or max_tv (0 for max_nps: every printed pixel a printer colour), or write printability: "
       "true for the penalty terms alone.",
       f"{SHARIF}; {RP2}", level="schema"),
    _r("S6-oracle-matches-gradient-source", E,
       "A score-based search reads scores and a decision-based walk reads decisions; a gradient estimated from "
       "the other answer, or an analytic gradient, contradicts the oracle.",
       "Leave out strategy.optimizer.oracle or gradient_source, or make them agree (estimated_scores with "
       "scores, estimated_decisions with decisions).",
       f"{BRENDEL}; Andriushchenko et al. 2020, Square attack, arXiv:1912.00049", level="schema"),
]

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULE_LIST}
"""Every rule, by id, in family order."""

if len(RULES) != len(_RULE_LIST):  # pragma: no cover
    raise RuntimeError("duplicate rule id")

_BY_SHORT: dict[str, Rule] = {rule.short: rule for rule in _RULE_LIST}


def rule(key: str) -> Rule:
    """A rule by full id ('A1-victim-gradients-need-white-box') or short id ('A1')."""
    if key in RULES:
        return RULES[key]
    if key in _BY_SHORT:
        return _BY_SHORT[key]
    hint = difflib.get_close_matches(key, list(RULES) + list(_BY_SHORT), n=1)
    raise KeyError(f"unknown rule {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


# =========================================================================== edges (hard relations)


@dataclass(frozen=True)
class Edge:
    """One relation of the constraint graph.

    requires: when ``src`` holds, one of the targets of the edges with the same (src, rule) must hold.
    excludes: ``src`` and ``dst`` must not hold together.
    grants:   ``src`` gives ``dst`` (knowledge grants capabilities); ``unless_set`` names a strategy axis
              whose explicit choice overrides the grant (data knowledge grants a data basis only while
              strategy.data_basis is left to the planner).

    ``field``: the spec path to blame (default: the path of ``src``). ``spec_only``: the rule judges a
    strategy the user chose, not one the planner fills from an attack (no warning for the planner's own
    gradient-free check).
    """

    relation: Literal["requires", "excludes", "grants"]
    src: str
    dst: str
    rule: str | None = None
    field: str | None = None
    spec_only: bool = False
    unless_set: str | None = None


def _requires(rule_id: str, src: str, *targets: str, **kw: Any) -> list[Edge]:
    return [Edge("requires", src, t, rule_id, **kw) for t in targets]


def _excludes(rule_id: str, src: str, *others: str, **kw: Any) -> list[Edge]:
    return [Edge("excludes", src, o, rule_id, **kw) for o in others]


def _grants(src: str, *targets: str, unless_set: str | None = None) -> list[Edge]:
    return [Edge("grants", src, t, unless_set=unless_set) for t in targets]


PERCEPTUAL = ("imperceptibility:perceptual:ssim", "imperceptibility:perceptual:wasserstein",
              "imperceptibility:perceptual:lpips")

EDGES: list[Edge] = [
    # capabilities granted by model knowledge (the access hierarchy)
    *_grants("knowledge:white_box", "capability:gradients", "capability:full_scores", "capability:scores",
             "capability:labels"),
    *_grants("knowledge:output_transparent", "capability:scores", "capability:labels"),
    *_grants("knowledge:query_limited", "capability:scores", "capability:labels"),
    *_grants("knowledge:label_only", "capability:labels"),
    *_grants("granularity:logits", "capability:full_scores"),
    *_grants("granularity:probabilities", "capability:full_scores"),
    # a data set to optimise over: from data knowledge while the data basis is open, else from the basis
    *_grants("data_knowledge:training", "capability:data", unless_set="data_basis"),
    *_grants("data_knowledge:surrogate", "capability:data", unless_set="data_basis"),
    *_grants("data_basis:training", "capability:data"),
    *_grants("data_basis:surrogate", "capability:data"),
    # consequences that are defined relative to the clean output
    *_grants("consequence:dynamic_target", "reference:clean_prediction"),
    *_grants("consequence:confusing_target", "reference:clean_prediction"),
    *_grants("untargeted_reference:clean_prediction", "reference:clean_prediction"),
    # A: knowledge, basis, optimiser
    *_requires("A1-victim-gradients-need-white-box", "victim.gradient:analytic", "capability:gradients"),
    *_requires("A1-victim-gradients-need-white-box", "victim.access:gradients", "capability:gradients"),
    *_excludes("A2-estimating-gradients-you-have", "victim.gradient:estimated_scores", "knowledge:white_box",
               spec_only=True),
    *_excludes("A2-estimating-gradients-you-have", "victim.gradient:estimated_decisions", "knowledge:white_box",
               spec_only=True),
    *_requires("A3-label-only-needs-decision-based", "victim.gradient:estimated_scores", "capability:scores"),
    *_requires("A3-label-only-needs-decision-based", "victim.access:scores", "capability:scores"),
    *_requires("A3-label-only-needs-decision-based", "oracle:scores", "capability:scores",
               field="strategy.optimizer.oracle"),
    *_requires("A5-full-black-box-needs-surrogate", "oracle:decisions", "capability:labels",
               field="strategy.optimizer.oracle"),
    *_excludes("A5-full-black-box-needs-surrogate", "knowledge:full_black_box", "basis:victim",
               field="strategy.model_basis"),
    *_requires("A7-trained-surrogate-needs-data", "surrogate_source:trained_on_data", "data_knowledge:training",
               "data_knowledge:surrogate"),
    *_excludes("A9-top-k-may-hide-the-target", "granularity:top_k", "consequence:static_target"),
    *_requires("A10-second-order-needs-gradients-or-scores", "victim.optimizer:second_order",
               "capability:gradients", "capability:scores"),
    *_excludes("A11-gradient-free-on-white-box", "victim.optimizer:evolution", "knowledge:white_box",
               spec_only=True),
    *_excludes("A16-evolution-has-no-analytic-gradient", "optimizer:evolution", "gradient:analytic",
               field="strategy.optimizer.gradient_source"),
    *_excludes("A17-surrogate-gradients-are-analytic", "basis:surrogate", "gradient:estimated_scores",
               "gradient:estimated_decisions", field="strategy.optimizer.gradient_source", spec_only=True),
    *_excludes("A18-white-box-transfer-underestimates", "basis:surrogate", "knowledge:white_box", spec_only=True),
    *_requires("A19-distilled-surrogate-needs-queries", "surrogate_source:distilled_from_queries",
               "capability:labels"),
    # B: data, scope
    *_requires("B1-training-basis-needs-training-data", "data_basis:training", "data_knowledge:training"),
    *_requires("B2-surrogate-basis-needs-data", "data_basis:surrogate", "data_knowledge:training",
               "data_knowledge:surrogate"),
    *_requires("B3-universal-needs-data-or-activations", "scope:universal", "capability:data",
               "capability:gradients", "surrogate_source:pretrained"),
    *_requires("B4-contextual-needs-context-data", "scope:contextual", "capability:data"),
    *_requires("B6-reference-output-needs-access", "reference:clean_prediction", "capability:labels",
               "basis:surrogate"),
    *_requires("B8-black-box-without-data-needs-pretrained", "knowledge:full_black_box",
               "data_knowledge:training", "data_knowledge:surrogate", "surrogate_source:pretrained",
               field="threat.data_knowledge"),
    *_requires("B9-data-free-universal-is-weaker", "scope:universal", "capability:data"),
    # C: consequence, task
    *_requires("C1-confusing-needs-spatial-output", "consequence:confusing_target", "task:segmentation",
               "task:detection"),
    *_excludes("C2-remove-classes-on-classification", "dynamic_rule:remove_classes", "task:classification"),
    *_requires("C3-target-artefact-matches-task", "target_artefact:target_class", "task:classification"),
    *_requires("C3-target-artefact-matches-task", "target_artefact:target_map", "task:segmentation"),
    *_requires("C3-target-artefact-matches-task", "target_artefact:target_boxes", "task:detection"),
    *_requires("C10-detector-consequence-needs-detection", "consequence:vanishing", "task:detection"),
    *_requires("C10-detector-consequence-needs-detection", "consequence:fabrication", "task:detection"),
    *_requires("C10-detector-consequence-needs-detection", "consequence:mislabel", "task:detection"),
    *_requires("C14-least-likely-needs-full-scores", "dynamic_rule:least_likely", "capability:full_scores",
               "basis:surrogate"),
    *_excludes("C15-remove-classes-on-detection-is-vanishing", "dynamic_rule:remove_classes", "task:detection"),
    *_excludes("C17-detector-dynamic-target-removes-classes", "dynamic_rule:least_likely", "task:detection"),
    *_excludes("C17-detector-dynamic-target-removes-classes", "dynamic_rule:class_map", "task:detection"),
    # D: imperceptibility
    *[e for p in PERCEPTUAL for e in _excludes("D3-perceptual-bound-without-projection", p,
                                                "optimizer:second_order")],
    *_excludes("D5-plausible-output-needs-targeted-consequence", "imperceptibility:output",
               "consequence:untargeted"),
    *_excludes("D10-plausible-output-on-classification", "imperceptibility:output", "task:classification"),
    # E: capability
    *_requires("E1-physical-needs-transformations", "feed:physical", "eot:transformations",
               field="threat.capability.transformations"),
    *_requires("E2-physical-needs-scene-artefact", "feed:physical", "spatial:region", "placement:everywhere",
               "placement:overlay", field="threat.capability.spatial"),
    *_excludes("E3-physical-needs-shared-artefact", "physical_artefact:shared", "scope:individual",
               field="threat.scope"),
    *_requires("E4-physical-printability", "feed:physical", "printability:on",
               field="threat.capability.printability"),
    *_excludes("E5-physical-queries-are-captures", "feed:physical", "victim.access:scores",
               "victim.access:labels", "victim.gradient:estimated_scores", "victim.gradient:estimated_decisions",
               "victim.optimizer:evolution"),
    *_excludes("E15-lens-layer-sees-every-scene", "views:object", "placement:overlay",
               field="threat.capability.views"),
    *_requires("E16-views-without-physical-feed", "views:object", "feed:physical", field="threat.capability.views"),
    *_requires("E16-views-without-physical-feed", "views:scenes", "feed:physical", field="threat.capability.views"),
    *_requires("E10-transformations-without-physical-feed", "eot:transformations", "feed:physical"),
    *_requires("E11-printability-without-physical-feed", "printability:on", "feed:physical"),
    # F: scope vs consequence and detectability
    *_excludes("F3-shared-perturbation-is-detectable", "imperceptibility:detector", "scope:universal",
               "scope:contextual"),
    *_excludes("F5-shared-perturbation-needs-fixed-budget", "budget_mode:minimal", "scope:universal",
               "scope:contextual"),
    # G: verification
    *_requires("G1-black-box-results-are-transfer-estimates", "knowledge:full_black_box", "capability:labels"),
]


# =========================================================================== predicates (parameters)

Finding = tuple[str, str]
"""(field path, detail) of one violation found by a predicate."""

Predicate = Callable[["Facts"], Iterable[Finding]]
DescriptorCheck = Callable[["Facts", "AttackDescriptor", Mapping[str, Any]], Iterable[Finding]]


@dataclass(frozen=True)
class RegisteredPredicate:
    rule: str
    fn: Predicate
    reads: frozenset[str]  # the Facts slots the predicate reads (checked by a test that records reads)


@dataclass(frozen=True)
class RegisteredCheck:
    rule: str
    fn: DescriptorCheck


PREDICATES: list[RegisteredPredicate] = []
DESCRIPTOR_CHECKS: list[RegisteredCheck] = []


def predicate(rule_id: str, reads: tuple[str, ...]) -> Callable[[Predicate], Predicate]:
    """Register a spec-level predicate for a rule; ``reads`` names the Facts slots it looks at (the
    threat-space tables use it to know which cell axes the predicate depends on)."""
    if rule_id not in RULES:  # pragma: no cover - guarded at import
        raise KeyError(rule_id)

    def register(fn: Predicate) -> Predicate:
        PREDICATES.append(RegisteredPredicate(rule_id, fn, frozenset(reads)))
        return fn

    return register


def descriptor_check(rule_id: str) -> Callable[[DescriptorCheck], DescriptorCheck]:
    """Register a check of an attack implementation under a spec."""
    if rule_id not in RULES:  # pragma: no cover
        raise KeyError(rule_id)

    def register(fn: DescriptorCheck) -> DescriptorCheck:
        DESCRIPTOR_CHECKS.append(RegisteredCheck(rule_id, fn))
        return fn

    return register


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _linf(f: Facts) -> Iterator[tuple[str, float, float]]:
    """(path, raw epsilon, epsilon in input units) of every fixed Linf epsilon."""
    for path, norm, eps, _mode in f.lp:
        if norm == "inf":
            for e in eps:
                yield path, e, f.to_input(e)


def _index_text(ref: Any) -> bool:
    """A class reference written as an index ("3"): ASCII digits, short enough to convert (a 5,000-digit
    string, or a digit like "³" that int() refuses, is a name that matches no class)."""
    return isinstance(ref, str) and ref.isascii() and ref.isdigit() and len(ref) <= 18


def _name_ref(ref: Any) -> bool:
    return isinstance(ref, str) and not _index_text(ref)


def _index_of(f: Facts, ref: Any) -> int | None:
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return ref
    if _index_text(ref):
        return int(ref)
    if f.classes and ref in f.classes:
        return f.classes.index(ref)
    return None


@predicate("A20-pretrained-surrogate-needs-a-model", reads=('surrogate',))
def _pretrained_model(f: Facts) -> Iterator[Finding]:
    if f.surrogate is not None and f.surrogate[0] == "pretrained" and not f.surrogate[1]:
        yield "strategy.model_basis.model", "source pretrained without a model name"


@predicate("A21-query-budget-too-small", reads=('query_budget',))
def _small_budget(f: Facts) -> Iterator[Finding]:
    if f.query_budget is not None and f.query_budget < 100:
        yield "threat.model_knowledge.query_budget", f"query_budget {f.query_budget} < 100"


@predicate("A22-top-k-exceeds-classes", reads=('k', 'granularity', 'classes'))
def _top_k(f: Facts) -> Iterator[Finding]:
    if f.k is not None and f.granularity == "top_k" and f.classes is not None and f.k > len(f.classes):
        yield "threat.model_knowledge.k", f"k = {f.k} but the model has {len(f.classes)} classes"


@predicate("B5-heldout-split-too-large", reads=('heldout',))
def _heldout(f: Facts) -> Iterator[Finding]:
    if f.heldout is not None and f.heldout > 0.5:
        yield "threat.scope.heldout_fraction", f"heldout_fraction {f.heldout} > 0.5"


@predicate("B11-context-classes-must-exist", reads=('context', 'classes'))
def _context_classes(f: Facts) -> Iterator[Finding]:
    if f.context is None or f.context[1] != "label":
        return
    path, _, values = f.context
    for value in values:
        if _name_ref(value):
            if f.classes is None:
                yield path, f"context label {value!r} is a name but the spec has no classes"
            elif value not in f.classes:
                yield path, f"context label {value!r} is not in classes{_did_you_mean(value, f.classes)}"
        elif isinstance(value, int) and not isinstance(value, bool) and f.classes is not None \
                and not 0 <= value < len(f.classes):
            yield path, f"context label index {value} outside 0..{len(f.classes) - 1}"


def _did_you_mean(value: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


@predicate("C5-class-names-need-classes", reads=('classes', 'class_refs'))
def _names_need_classes(f: Facts) -> Iterator[Finding]:
    if f.classes is None:
        for path, ref in f.class_refs:
            if _name_ref(ref):
                yield path, f"class {ref!r} is named but `classes` is not given"


@predicate("C8-unknown-class-name", reads=('classes', 'class_refs'))
def _unknown_names(f: Facts) -> Iterator[Finding]:
    if f.classes is not None:
        for path, ref in f.class_refs:
            if _name_ref(ref) and ref not in f.classes:
                yield path, f"class {ref!r} is not in classes{_did_you_mean(ref, f.classes)}"


@predicate("C9-class-index-out-of-range", reads=('classes', 'class_refs'))
def _index_range(f: Facts) -> Iterator[Finding]:
    for path, ref in f.class_refs:
        index = _index_of(f, ref) if not _name_ref(ref) else None
        if index is None:
            continue
        if index < 0 or (f.classes is not None and index >= len(f.classes)):
            upper = f"0..{len(f.classes) - 1}" if f.classes is not None else "0.."
            yield path, f"class index {index} outside {upper}"


@predicate("C13-mislabel-to-its-own-class", reads=('mislabel', 'classes'))
def _mislabel_self(f: Facts) -> Iterator[Finding]:
    if f.mislabel is None:
        return
    sources, target = f.mislabel
    t = _index_of(f, target)
    for s in sources:
        si = _index_of(f, s)
        if s == target or (si is not None and si == t):
            yield "threat.consequence.to_class", f"to_class {target!r} is also in from_classes"
            return


@predicate("C16-class-map-maps-to-itself", reads=('class_map', 'classes'))
def _class_map_self(f: Facts) -> Iterator[Finding]:
    for src, dst in f.class_map:
        si, di = _index_of(f, src), _index_of(f, dst)
        if src == dst or str(src) == str(dst) or (si is not None and si == di):
            yield f"threat.consequence.class_map.{src}", f"class {src!r} maps to itself"


@predicate("D2a-pixel-255-epsilon-below-one", reads=('units', 'lp'))
def _pixel_units(f: Facts) -> Iterator[Finding]:
    if f.units != "pixel_255":
        return
    for path, _norm, eps, _mode in f.lp:
        small = [e for e in eps if e < 1.0]
        if small:
            yield f"{path}.epsilon", f"epsilon {_fmt(small[0])} on the 0..255 scale is below one grey level"


@predicate("D2b-normalization-in-data", reads=('normalization',))
def _normalized(f: Facts) -> Iterator[Finding]:
    if f.normalization == "in_data":
        yield "input_space.normalization", "normalization: in_data"


@predicate("D2c-grey-level-bounds-with-unit-epsilon", reads=('units', 'span', 'lp', 'bounds'))
def _grey_bounds(f: Facts) -> Iterator[Finding]:
    if f.units == "input_scale" and f.span >= 2.0:
        for path, raw, _eps in _linf(f):
            if raw < 1.0:
                yield f"{path}.epsilon", (f"Linf epsilon {_fmt(raw)} on inputs in {f.bounds} is below one "
                                          "grey level")
                return


@predicate("D4-black-box-detector-is-not-adaptive", reads=('detectors',))
def _black_box_detector(f: Facts) -> Iterator[Finding]:
    for path, access in f.detectors:
        if access == "black_box":
            yield f"{path}.access", "detector access black_box"


@predicate("D6-duplicate-norm", reads=('lp',))
def _duplicate_norm(f: Facts) -> Iterator[Finding]:
    seen: set[str] = set()
    for path, norm, _eps, _mode in f.lp:
        if norm in seen:
            yield path, f"a second item bounds the L{norm} norm"
        seen.add(norm)


@predicate("D7-physical-small-lp", reads=('feed', 'lp', 'units', 'span'))
def _physical_lp(f: Facts) -> Iterator[Finding]:
    if f.feed != "physical":
        return
    for path, norm, eps, _mode in f.lp:
        if norm != "inf":
            yield path, f"an L{norm} bound on a physical feed"
            return
        small = [e for e in eps if f.to_input(e) < 16 / 255 * f.span]
        if small or not eps:
            yield path, "a small Linf bound on a physical feed"
            return


@predicate("D8-small-region-small-epsilon", reads=('spatial', 'lp', 'units', 'span'))
def _region_eps(f: Facts) -> Iterator[Finding]:
    if f.spatial is None:
        return
    _kind, area = f.spatial
    if area is not None and area > 0.25:
        return
    region = f"a {_kind} region of {area:.2g} of the input" if area is not None else f"a {_kind} region"
    for path, raw, eps in _linf(f):
        if eps < 0.25 * f.span:
            yield f"{path}.epsilon", f"Linf epsilon {_fmt(raw)} inside {region}"
            return


@predicate("D9-epsilon-huge", reads=('spatial', 'lp', 'units', 'span', 'bounds'))
def _huge(f: Facts) -> Iterator[Finding]:
    if f.spatial is not None:
        return
    for path, raw, eps in _linf(f):
        if eps > 0.25 * f.span:
            yield f"{path}.epsilon", f"Linf epsilon {_fmt(raw)} is over a quarter of the range {f.bounds}"
            return


@predicate("D11-epsilon-tiny", reads=('lp', 'units', 'span'))
def _tiny(f: Facts) -> Iterator[Finding]:
    for path, raw, eps in _linf(f):
        if eps < 0.5 / 255 * f.span:
            yield f"{path}.epsilon", f"Linf epsilon {_fmt(raw)} is below half a grey level"
            return


@predicate("D13-ssim-floor-low", reads=('perceptual',))
def _ssim_low(f: Facts) -> Iterator[Finding]:
    for path, metric, threshold in f.perceptual:
        if metric == "ssim" and threshold < 0.5:
            yield f"{path}.threshold", f"SSIM floor {threshold}"


@predicate("E6-quantized-epsilon-below-grey-level", reads=('quantize', 'lp', 'units', 'span'))
def _quantized(f: Facts) -> Iterator[Finding]:
    if not f.quantize:
        return
    for path, raw, eps in _linf(f):
        if 0.5 / 255 * f.span <= eps < 1 / 255 * f.span:
            yield f"{path}.epsilon", f"Linf epsilon {_fmt(raw)} is below one grey level and quantize is on"
            return


@predicate("E12-region-is-whole-input", reads=('spatial',))
def _whole_region(f: Facts) -> Iterator[Finding]:
    if f.spatial is not None and f.spatial[1] is not None and f.spatial[1] >= 0.999:
        yield "threat.capability.spatial", "the region covers the whole input"


@predicate("F4-transfer-needs-boosters", reads=('surrogate', 'scope'))
def _boosters(f: Facts) -> Iterator[Finding]:
    if f.surrogate is not None and f.surrogate[2] == 1 and f.scope == "individual":
        yield "strategy.model_basis.ensemble", "one surrogate, per-input scope"


@predicate("F6-context-already-has-target", reads=('context', 'static_class', 'classes'))
def _context_target(f: Facts) -> Iterator[Finding]:
    if f.context is None or f.context[1] != "label" or f.static_class is None:
        return
    target = _index_of(f, f.static_class)
    for value in f.context[2]:
        if value == f.static_class or (target is not None and _index_of(f, value) == target):
            yield "threat.scope.context", f"the context selects label {value!r}, the static target"
            return


@predicate("I1-negative-bounds-suggest-normalized", reads=('bounds',))
def _negative_bounds(f: Facts) -> Iterator[Finding]:
    if f.bounds[0] < 0:
        yield "input_space.bounds", f"bounds {f.bounds}"


# =========================================================================== descriptor checks

TARGETED = frozenset({"static_target", "dynamic_target", "confusing_target", "fabrication", "mislabel"})
"""Consequences whose decision-based attack needs a start input that already shows the target."""


def _queries_of(d: AttackDescriptor, params: Mapping[str, Any]) -> float:
    try:
        return float(d.expected_cost(params).queries)
    except Exception:  # a cost model that cannot price these params: treat as unknown
        return math.nan


@descriptor_check("A8-query-budget-covers-attack")
def _budget(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    """The attack's minimum useful budget (always), and the expected queries of concrete plan parameters
    (``params`` other than the descriptor's own defaults, which the planner shrinks before running)."""
    if f.query_budget is None:
        return
    if d.min_queries > f.query_budget:
        yield ("threat.model_knowledge.query_budget",
               f"{d.id} needs at least {d.min_queries} queries per input; the budget is {f.query_budget}")
        return
    if params is d.defaults:
        return
    queries = _queries_of(d, params)
    if queries > f.query_budget:
        yield ("threat.model_knowledge.query_budget",
               f"{d.id} expects {queries:.0f} queries per input; the budget is {f.query_budget}")


@descriptor_check("B10-attack-needs-data")
def _needs_data(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    if "none" not in d.data_bases and not (f.available_data & d.data_bases):
        yield "threat.data_knowledge", (f"{d.id} needs data ({', '.join(sorted(d.data_bases))}); the spec "
                                        f"grants {', '.join(sorted(f.available_data)) or 'none'}")


@descriptor_check("C6-targeted-decision-based-needs-start")
def _decision_start(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    if d.access == "labels" and f.consequence in TARGETED and not f.available_data:
        yield "threat.consequence", f"{d.id} is decision-based and the {f.consequence} needs a start input"


@descriptor_check("C7-attack-supports-task")
def _task(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    if f.task not in d.tasks:
        yield "task", f"{d.id} handles {', '.join(sorted(d.tasks))}, not {f.task}"


@descriptor_check("D1-attack-supports-norm")
def _norm(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    for path, norm, _eps, _mode in f.lp:
        if f"lp:{norm}" not in d.imperceptibility:
            yield path, f"{d.id} does not bound the L{norm} norm"


@descriptor_check("D12-attack-supports-budget-mode")
def _mode(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    for path, _norm, _eps, mode in f.lp:
        if mode not in d.budget_modes:
            yield f"{path}.mode", f"{d.id} does not run in mode {mode}"


@descriptor_check("D14-attack-supports-perceptual-bound")
def _perceptual(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    for path, key in f.other_bounds:
        if key not in d.imperceptibility:
            yield path, f"{d.id} cannot enforce {key}"


@descriptor_check("E2-physical-needs-scene-artefact")
def _physical(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    if f.feed not in d.feeds:
        yield "threat.capability.feed", f"{d.id} produces a {'/'.join(sorted(d.feeds))} perturbation, " \
                                        f"not a {f.feed} artefact"


@descriptor_check("E13-attack-enforces-printability")
def _printable(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    if "printability:bounds" in f.atoms and not d.printable:
        yield "threat.capability.printability", f"{d.id} cannot enforce printability bounds"


@descriptor_check("E17-attack-fits-views")
def _views(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    for views in ("object", "scenes"):
        if f"views:{views}" in f.atoms and d.views and views not in d.views:
            yield "threat.capability.views", f"{d.id} optimises over {'/'.join(sorted(d.views))} views, not {views}"


@descriptor_check("E8-attack-supports-spatial-constraint")
def _spatial(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    if f.spatial is not None and not d.spatial:
        yield "threat.capability.spatial", f"{d.id} cannot be confined to a region"


DLR_LOSSES = {"dlr": 3, "dlr-targeted": 4}
"""Classes each DLR loss reads (the untargeted one the 3 largest logits, the targeted one the 4 largest)."""


@descriptor_check("C18-dlr-needs-enough-classes")
def _dlr_classes(f: Facts, d: AttackDescriptor, params: Mapping[str, Any]) -> Iterator[Finding]:
    loss = str(params.get("loss", d.defaults.get("loss", "")))
    need = DLR_LOSSES.get(loss)
    if need is not None and f.classes is not None and len(f.classes) < need:
        yield "classes", (f"{d.id} uses the {loss} loss, which needs {need} classes; the spec lists "
                          f"{len(f.classes)}")


# =========================================================================== consistency and re-exports


def _check_encoding() -> None:
    """Every rule is encoded somewhere; every edge and predicate names a known rule."""
    encoded = {e.rule for e in EDGES if e.rule} | {p.rule for p in PREDICATES} | {c.rule for c in DESCRIPTOR_CHECKS}
    encoded |= {r.id for r in RULES.values() if r.level in ("planner", "schema")}
    unknown = {e for e in encoded if e not in RULES}
    missing = set(RULES) - encoded
    if unknown or missing:  # pragma: no cover - a programming error caught at import
        raise RuntimeError(f"rule encoding: unknown {sorted(unknown)}, not encoded {sorted(missing)}")


_check_encoding()
