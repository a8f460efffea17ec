"""MITRE ATLAS techniques a threat cell exercises, and the Navigator layer of an audit (no torch).

IDs are stable across ATLAS releases (names are not: "ML" became "AI" in v5). A layer is the ATT&CK
Navigator layer format with domain ``atlas-atlas``, so it opens in the ATLAS Navigator; the score of a
technique is the share of the feasible cells exercising it that the suite covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ATLAS_VERSION = "5.6.0"
LAYER_VERSION = "4.5"
NAVIGATOR_VERSION = "4.9.1"


@dataclass(frozen=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]
    meaning: str  # what exercising it means in attackgen's terms

    @property
    def parent(self) -> str | None:
        return self.id.rsplit(".", 1)[0] if self.id.count(".") == 2 else None


TECHNIQUES: dict[str, Technique] = {
    t.id: t
    for t in (
        Technique("AML.T0043", "Craft Adversarial Data", ("AI Attack Staging",), "any adversarial example"),
        Technique("AML.T0043.000", "White-Box Optimization", ("AI Attack Staging",),
                  "optimised with the victim's gradients (white-box knowledge)"),
        Technique("AML.T0043.001", "Black-Box Optimization", ("AI Attack Staging",),
                  "optimised through queries to the victim (scores or labels)"),
        Technique("AML.T0043.002", "Black-Box Transfer", ("AI Attack Staging",),
                  "optimised on a surrogate model and transferred"),
        Technique("AML.T0005", "Create Proxy AI Model", ("AI Attack Staging",),
                  "a surrogate model trained, distilled or downloaded"),
        Technique("AML.T0015", "Evade AI Model", ("Initial Access", "Defense Evasion", "Impact"),
                  "an evasion attack at inference time"),
        Technique("AML.T0040", "AI Model Inference API Access", ("AI Model Access",),
                  "query access to the victim (output-transparent, query-limited or label-only)"),
        Technique("AML.T0041", "Physical Environment Access", ("AI Model Access",),
                  "a physical data feed: patches or objects in the scene"),
        Technique("AML.T0044", "Full AI Model Access", ("AI Model Access",),
                  "white-box knowledge: architecture, weights, gradients"),
    )
}

_BY_KNOWLEDGE: dict[str, tuple[str, ...]] = {
    "white_box": ("AML.T0044", "AML.T0043.000"),
    "output_transparent": ("AML.T0040", "AML.T0043.001"),
    "query_limited": ("AML.T0040", "AML.T0043.001"),
    "label_only": ("AML.T0040", "AML.T0043.001"),
    "full_black_box": ("AML.T0043.002", "AML.T0005"),
}


def techniques_for(knowledge: str, feed: str) -> tuple[str, ...]:
    """The techniques every attack in a cell with this knowledge and feed exercises."""
    ids = ["AML.T0015", "AML.T0043", *_BY_KNOWLEDGE.get(knowledge, ())]
    if feed == "physical":
        ids.append("AML.T0041")
    return tuple(ids)


def techniques_for_cell(cell: Any) -> tuple[str, ...]:
    """The techniques a threat cell exercises (by its knowledge and feed axes)."""
    return techniques_for(str(getattr(cell, "knowledge", "")), str(getattr(cell, "feed", "digital")))


@dataclass
class TechniqueCoverage:
    """Coverage of one technique: covered and feasible cells that exercise it, and the runs behind them."""

    id: str
    covered: int = 0
    feasible: int = 0
    runs: int = 0
    specs: int = 0
    weakest: tuple[float, str] | None = None  # (robust accuracy, which run)

    @property
    def score(self) -> float:
        """Percent of the feasible cells covered, one decimal; at least 0.1 when any is covered."""
        if not self.feasible:
            return 0.0
        share = round(100 * self.covered / self.feasible, 1)
        return max(share, 0.1) if self.covered else 0.0

    def comment(self) -> str:
        text = f"{self.covered} of {self.feasible} feasible threat cells covered ({self.score:g}%)"
        text += f" by {self.specs} spec(s) and {self.runs} run(s)"
        if self.weakest is not None:
            text += f"; weakest robust accuracy {self.weakest[0]:.3f} ({self.weakest[1]})"
        return text


def navigator_layer(
    coverage: Iterable[TechniqueCoverage],
    name: str = "attackgen threat coverage",
    description: str = "",
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An ATLAS Navigator layer (layer format 4.5, domain atlas-atlas) scoring techniques by coverage.

    The colour scale runs from 0 to the best-covered technique's score, so small suites still show
    which techniques they exercise most.
    """
    coverage = sorted(coverage, key=lambda c: c.id)
    top = max([c.score for c in coverage] + [1.0])
    techniques = []
    for entry in coverage:
        technique = TECHNIQUES.get(entry.id)
        techniques.append({
            "techniqueID": entry.id,
            "score": entry.score,
            "comment": entry.comment(),
            "enabled": True,
            "showSubtechniques": technique is not None and technique.parent is None and entry.id == "AML.T0043",
            "metadata": [
                {"name": "covered cells", "value": str(entry.covered)},
                {"name": "feasible cells", "value": str(entry.feasible)},
                {"name": "runs", "value": str(entry.runs)},
            ],
        })
    meta = {"generated by": "attackgen audit", "ATLAS version": ATLAS_VERSION, **(metadata or {})}
    return {
        "name": name,
        "versions": {"attack": ATLAS_VERSION, "navigator": NAVIGATOR_VERSION, "layer": LAYER_VERSION},
        "domain": "atlas-atlas",
        "description": description or "Share of the feasible threat cells exercising each technique that "
        "the audited suite covers (score in percent).",
        "sorting": 3,
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": {"colors": ["#ffe766", "#8ec843"], "minValue": 0, "maxValue": top},
        "legendItems": [
            {"label": "no feasible cell covered", "color": "#ffe766"},
            {"label": f"{top:g}% of the feasible cells covered (the best-covered technique)", "color": "#8ec843"},
        ],
        "metadata": [{"name": k, "value": v} for k, v in meta.items()],
        "showTacticRowBackground": False,
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
    }
