"""The surrogate a spec's model basis describes, built at run time: named, trained, distilled, ensembled.

``strategy.model_basis`` (taxonomy.axes.SurrogateBasis) says where the surrogate comes from:

- ``trained_on_data``: named models are used as they are (the built-in ``digits-mlp``, trained on the
  digits training split, is the default first member for 1x16x16 inputs); every further member is
  trained here on the data basis with attackgen.run.attacks.transfer.train_surrogate, architectures
  alternating 'cnn' / 'mlp', each with its own seed derived from the run seed.
- ``distilled_from_queries``: the members are trained on the victim's answers (labels from a label
  oracle, the top-1 of a score oracle), asked through the budgeted oracle of attackgen.run.access. With a
  data basis, each basis input is asked once. Without one, the attacked inputs are asked, then grown
  by Jacobian-based augmentation (Papernot et al. 2017, arXiv:1602.02697): each round adds
  ``x + lambda * sign(grad_x F_y(x))`` for every labelled point x (F the surrogate being trained, y the
  victim's label, lambda the spec's Linf epsilon, its sign flipped every 3 rounds), so every round
  doubles the set and the queries charged to the attacked input each point descends from. The rounds
  stop where the spec's per-input query budget would be exceeded, at 5 rounds (32 queries per input)
  or at 4096 labelled points, whichever comes first (512 attacked inputs: 3 rounds, 8 queries each).
- ``pretrained``: the named models only.

An ensemble averages its members' logits (Liu et al. 2017, arXiv:1611.02770; Dong et al. 2018,
arXiv:1710.06081), so one gradient step attacks all members at once. ``BuiltSurrogate.describe()`` is
what the run records (results.json, item params ``surrogate_built``): members, how each was obtained,
victim queries spent.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attackgen.run.access import Access, LabelOracle, ScoreOracle
from taxonomy.errors import AttackgenError

TRAINED_ARCHITECTURES = ("cnn", "mlp")
"""Names in ``model`` that stand for an architecture trained at run time, not a model to load."""

DEFAULT_MODELS: dict[tuple[int, ...], str] = {(1, 16, 16): "digits-mlp"}
"""The built-in pretrained surrogate per input shape (used when no model is named)."""

EPOCHS = {"cnn": 10, "mlp": 20}  # digits: about 3 s (cnn) and 1 s (mlp) on one CPU thread, >= 0.98 accuracy
MAX_ROUNDS = 5  # Jacobian augmentation: 2**5 = 32 queries per attacked input
MAX_DISTILLED_POINTS = 1 << 12  # bounds the training: a 512-input run asks 8 per input
SIGN_PERIOD = 3  # tau of Papernot et al.: the augmentation step flips its sign every tau rounds


class SurrogateError(AttackgenError):
    """The model basis cannot be built as the spec describes it."""


class LogitEnsemble(nn.Module):
    """The mean of the members' logits: one differentiable model for the transfer attacks."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


@dataclass(frozen=True)
class SurrogateRequest:
    """A model basis resolved from the plan item, the plan or the spec."""

    source: str
    names: tuple[str, ...]
    ensemble: int
    defaulted: bool = False  # no model basis in the spec: the planner's (or the executor's) default

    @classmethod
    def resolve(cls, *candidates: Any, default_source: str = "trained_on_data",
                defaulted: bool = False) -> SurrogateRequest:
        """The first candidate that says anything: a dict or a SurrogateBasis (item, plan, spec order).

        ``defaulted``: the spec has no model basis, so what the plan says is the planner's default and a
        nameless pretrained surrogate may fall back to the built-in one for the input shape.
        """
        for candidate in candidates:
            if candidate is None:
                continue
            data = candidate if isinstance(candidate, Mapping) else candidate.model_dump(mode="json")
            if data.get("kind", "surrogate") != "surrogate":
                continue
            model = data.get("model")
            names = tuple(model) if isinstance(model, (list, tuple)) else (() if model is None else (str(model),))
            ensemble = int(data.get("ensemble") or max(len(names), 1))
            if ensemble < len(names):
                raise SurrogateError(
                    f"strategy.model_basis.ensemble: {ensemble} is smaller than the {len(names)} models named "
                    "in strategy.model_basis.model; expected at least that many members"
                )
            return cls(str(data.get("source") or default_source), names, ensemble, defaulted)
        return cls(default_source, (), 1, defaulted=True)

    def key(self) -> str:
        return f"{self.source}|{','.join(self.names)}|{self.ensemble}"


@dataclass
class Member:
    name: str
    how: str


@dataclass
class BuiltSurrogate:
    """The surrogate and how it came to be: what the run reports."""

    model: nn.Module
    source: str
    members: list[Member]
    victim_queries: int = 0
    queries_per_input: int = 0  # the most charged to one input (attacked or basis input)
    queried: str = ""  # what was asked
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "ensemble": len(self.members),
            "combine": "mean of logits" if len(self.members) > 1 else "single model",
            "members": [{"name": m.name, "how": m.how} for m in self.members],
            "victim_queries": self.victim_queries,
        }
        if self.source == "distilled_from_queries":
            out["victim_queries_per_input"] = self.queries_per_input
            out["queried"] = self.queried
        return out

    def summary(self) -> str:
        members = "; ".join(f"{m.name} ({m.how})" for m in self.members)
        kind = f"an ensemble of {len(self.members)} (logits averaged)" if len(self.members) > 1 else "one model"
        text = f"surrogate ({self.source}): {kind}: {members}"
        if self.source == "distilled_from_queries":
            text += f"; {self.victim_queries} victim queries, at most {self.queries_per_input} per input"
        return text


def member_seed(seed: int, index: int) -> int:
    """A seed per trained member, derived from the run seed, independent of what else was built."""
    digest = hashlib.sha256(f"{seed}:surrogate:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def trained_architectures(count: int, input_shape: tuple[int, ...]) -> list[str]:
    """'cnn', 'mlp', 'cnn', ... ('mlp' only where the small CNN does not take the inputs)."""
    channels, height, width = (*input_shape, 1, 1, 1)[:3]
    cnn_fits = channels == 1 and height == width and height % 4 == 0
    return [("cnn" if i % 2 == 0 and cnn_fits else "mlp") for i in range(count)]


def victim_oracle(victim: nn.Module, knowledge: Any, n: int, budget: int | None, device: Any) -> Access:
    """The oracle the threat model grants for distillation: labels, or scores whose top-1 is the label."""
    kind = getattr(knowledge, "kind", str(knowledge))
    if kind == "label_only":
        return LabelOracle(victim, n, budget, device)
    if kind in ("output_transparent", "query_limited", "white_box"):
        return ScoreOracle(victim, n, getattr(knowledge, "granularity", "logits"), getattr(knowledge, "k", None),
                           budget, device)
    raise SurrogateError(
        f"strategy.model_basis.source: distilled_from_queries needs answers from the victim, but "
        f"threat.model_knowledge is {kind}; grant label_only (or richer) access or use a trained or "
        "pretrained surrogate"
    )


def ask(oracle: Access, x: Tensor, rows: Tensor, batch: int = 1024) -> Tensor:
    """The victim's top-1 labels for x, each query charged to its row (QueryBudgetExceeded past the budget)."""
    labels = []
    for start in range(0, x.shape[0], batch):
        answer = oracle(x[start : start + batch], rows[start : start + batch])
        labels.append(answer.argmax(dim=1) if answer.dim() == 2 else answer)
    return torch.cat(labels).long()


def distill_rounds(n_inputs: int, per_input: int | None) -> int:
    """Jacobian augmentation rounds: 2**rounds queries per input within the budget, points capped."""
    rounds = MAX_ROUNDS if per_input is None else min(MAX_ROUNDS, math.floor(math.log2(per_input)))
    while rounds > 0 and n_inputs * 2**rounds > MAX_DISTILLED_POINTS:
        rounds -= 1
    return rounds


def jacobian_augmentation(
    oracle: Access,
    x: Tensor,
    first: nn.Module | str,
    classes: int,
    rounds: int,
    step: float,
    bounds: tuple[float, float],
    seed: int,
    epochs: int | None = None,
) -> tuple[nn.Module, Tensor, Tensor]:
    """Papernot et al.'s substitute training: label, train, add x + lambda sign(grad F_y), repeat.

    Every input of x is asked once per round for itself and each point descended from it (charged to
    its row of ``oracle``), so one input costs 2**rounds queries in all. Returns the substitute (trained
    on the final set), the labelled points and their labels.
    """
    from attackgen.run.attacks.transfer import train_surrogate

    points = x.detach()
    owners = torch.arange(x.shape[0], device=x.device)
    labels = ask(oracle, points, owners)
    model: nn.Module | str = first
    arch = first if isinstance(first, str) else "mlp"
    for r in range(rounds + 1):
        last = r == rounds
        model = train_surrogate(points, labels, model, epochs=epochs or (EPOCHS[arch] if last else 5),
                                seed=seed + r, classes=classes)
        if last:
            break
        new = []
        sign = -1.0 if (r // SIGN_PERIOD) % 2 else 1.0
        for part in torch.split(torch.arange(points.shape[0], device=points.device), 1024):
            p = points[part].clone().requires_grad_(True)
            score = model(p).gather(1, labels[part, None]).sum()
            (grad,) = torch.autograd.grad(score, p)
            new.append((points[part] + sign * step * grad.sign()).clamp(*bounds).detach())
        grown = torch.cat(new)
        labels = torch.cat([labels, ask(oracle, grown, owners)])
        points, owners = torch.cat([points, grown]), torch.cat([owners, owners])
    assert isinstance(model, nn.Module)
    return model, points, labels


def _load(name: str, layout: str) -> nn.Module:
    from attackgen.models.loading import load_model

    return load_model(name, layout, "strategy.model_basis.model (the surrogate)")


def build_surrogate(
    request: SurrogateRequest,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    layout: str = "NCHW",
    basis: tuple[Tensor, Any] | None = None,
    victim: nn.Module | None = None,
    knowledge: Any = None,
    inputs: Tensor | None = None,
    query_budget: int | None = None,
    step: float | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> BuiltSurrogate:
    """Build the surrogate ``request`` describes.

    ``basis`` is the data basis (inputs, labels) or None; ``victim``, ``knowledge`` and ``query_budget``
    (per input, what is left for distillation) give the oracle a distilled surrogate is trained from;
    ``inputs`` are the attacked inputs (the distillation seeds when there is no data basis); ``step`` is
    the Jacobian augmentation step (default: a tenth of the input range, Papernot et al.'s 0.1).
    """
    from attackgen.run.attacks.transfer import train_surrogate

    source, names, size = request.source, list(request.names), request.ensemble
    if source not in ("trained_on_data", "distilled_from_queries", "pretrained"):
        raise SurrogateError(f"strategy.model_basis.source: unknown source {source!r}")
    shape = tuple(input_shape)
    default = DEFAULT_MODELS.get(shape)
    if source == "pretrained":
        if not names and request.defaulted and default is not None:
            names = [default]  # no model basis in the spec: the built-in pretrained surrogate
        if not names:
            raise SurrogateError(
                "strategy.model_basis.model: a pretrained surrogate has to be named (a built-in name, an "
                f"entry point or a model file){'' if default is None else f', e.g. {default}'}"
            )
        if size > len(names) or any(n in TRAINED_ARCHITECTURES for n in names):
            raise SurrogateError(
                f"strategy.model_basis: a pretrained ensemble of {size} needs {size} named, loadable models "
                f"(got {names}); use source trained_on_data to train the others"
            )
    if source == "trained_on_data" and not names and default is not None:
        names = [default]  # trained on the digits training split; stays the first member

    loaded = [n for n in names if n not in TRAINED_ARCHITECTURES]
    if source == "distilled_from_queries" and loaded:
        raise SurrogateError(
            f"strategy.model_basis.model: a distilled surrogate is trained from the victim's answers; name "
            f"architectures ({', '.join(TRAINED_ARCHITECTURES)}) or use source pretrained for {loaded}"
        )
    members: list[Member] = []
    modules: list[nn.Module] = []
    for name in loaded:
        modules.append(_load(name, layout))
        how = "named, used as it is" if request.names else "built-in default, used as it is"
        if name == default:
            how += " (shipped weights, trained on the digits training split)"
        members.append(Member(name, how))
    archs = [n for n in names if n in TRAINED_ARCHITECTURES]
    archs += trained_architectures(size - len(loaded) - len(archs), shape)
    built = BuiltSurrogate(nn.Identity(), source, members)
    if archs and source == "trained_on_data":
        if basis is None:
            raise SurrogateError(
                f"strategy.data_basis: {len(archs)} of the {size} surrogate members must be trained on data, "
                "but the run has no data basis; set threat.data_knowledge and strategy.data_basis to training "
                "or surrogate (and pass --basis-data), name pretrained models in strategy.model_basis.model, "
                "or lower strategy.model_basis.ensemble"
            )
        x, y = basis
        x, y = x.to(device), torch.as_tensor(y).to(device)
        for i, arch in enumerate(archs):
            s = member_seed(seed, i)
            modules.append(train_surrogate(x, y, arch, epochs=EPOCHS[arch], seed=s, classes=classes))
            members.append(Member(f"{arch}#{len(members) + 1}", f"trained on the data basis ({len(x)} inputs, "
                                  f"{EPOCHS[arch]} epochs, seed {s})"))
    elif archs:  # distilled_from_queries
        modules += _distill(built, archs, shape, classes, basis, victim, knowledge, inputs, query_budget,
                            step, bounds, seed, device)
    models = [m.eval().to(device).requires_grad_(False) for m in modules]
    built.model = models[0] if len(models) == 1 else LogitEnsemble(models).eval()
    return built


def _distill(built: BuiltSurrogate, archs: list[str], shape: tuple[int, ...], classes: int,
             basis: tuple[Tensor, Any] | None, victim: nn.Module | None, knowledge: Any, inputs: Tensor | None,
             query_budget: int | None, step: float | None, bounds: tuple[float, float], seed: int,
             device: torch.device | str) -> list[nn.Module]:
    from attackgen.run.attacks.transfer import train_surrogate

    if victim is None:
        raise SurrogateError("strategy.model_basis.source: distilled_from_queries needs the victim to query")
    if query_budget is not None and query_budget < 1:
        raise SurrogateError(
            "threat.model_knowledge.query_budget: nothing is left of the per-input query budget to distil a "
            "surrogate from (the victim's verification takes its share); raise the budget"
        )
    modules: list[nn.Module] = []
    if basis is not None:  # each input of the data basis asked once
        x = basis[0].to(device)
        oracle = victim_oracle(victim, knowledge, x.shape[0], query_budget, device)
        y = ask(oracle, x, torch.arange(x.shape[0], device=device))
        built.queried = f"the data basis ({x.shape[0]} inputs), once each"
        points, first = x, 0
    else:
        if inputs is None or inputs.shape[0] == 0:
            raise SurrogateError("strategy.model_basis.source: distilled_from_queries without a data basis needs "
                                 "the attacked inputs to start from")
        x = inputs.to(device)
        rounds = distill_rounds(x.shape[0], query_budget)
        span = bounds[1] - bounds[0]
        lam = step if step is not None else 0.1 * span
        oracle = victim_oracle(victim, knowledge, x.shape[0], query_budget, device)
        s = member_seed(seed, 0)
        model, points, y = jacobian_augmentation(oracle, x, archs[0], classes, rounds, lam, bounds, s)
        modules.append(model)
        built.members.append(Member(f"{archs[0]}#1", f"distilled: {len(points)} victim labels ({x.shape[0]} "
                                    f"attacked inputs + {rounds} rounds of Jacobian augmentation, lambda {lam:g}), "
                                    f"{EPOCHS[archs[0]]} epochs, seed {s}"))
        built.queried = (f"the {x.shape[0]} attacked inputs and their Jacobian augmentations (Papernot et al. "
                         f"2017), {rounds} rounds, lambda {lam:g}")
        first = 1
    for i in range(first, len(archs)):
        s = member_seed(seed, i)
        modules.append(train_surrogate(points, y, archs[i], epochs=EPOCHS[archs[i]], seed=s, classes=classes))
        built.members.append(Member(f"{archs[i]}#{i + 1}", f"distilled: trained on the same {len(points)} "
                                    f"victim labels, {EPOCHS[archs[i]]} epochs, seed {s}"))
    built.victim_queries = int(oracle.queries.sum())
    built.queries_per_input = int(oracle.queries.max())
    return modules
