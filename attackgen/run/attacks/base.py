"""The contract every attack module implements.

An attack gets one Access object (what its threat model grants), the clean batch, an Objective (what
success means for the task and consequence) and a Budget (norm, epsilon, mask, bounds). It returns
candidate adversarial inputs. It does not decide success: the executor clips, re-runs the victim and
re-measures the perturbation, and only that verification counts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks.randomness import RowRandom, row_seeds_for
from attackgen.run.objectives.base import Capability, MissingCapability, Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import AttackParams, param_problems

P = TypeVar("P", bound=AttackParams)


@dataclass
class Budget:
    """The imperceptibility and capability constraints, in input units."""

    bounds: tuple[float, float] = (0.0, 1.0)
    norm: str | None = "inf"  # "0", "1", "2", "inf", or None when no Lp bound applies
    epsilon: float | None = None  # None in minimal-norm mode
    mask: Tensor | None = None  # broadcastable to x; 1 where change is allowed
    ssim_floor: float | None = None
    wasserstein_radius: float | None = None  # transport cost, see attackgen.run.wasserstein

    def project(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Into the Lp ball (Linf and L2), the mask and the bounds."""
        delta = x_adv - x
        if self.mask is not None:
            delta = delta * self.mask
        if self.epsilon is not None and self.norm == "inf":
            delta = delta.clamp(-self.epsilon, self.epsilon)
        elif self.epsilon is not None and self.norm == "2":
            flat = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (self.epsilon / flat).clamp(max=1.0)
            delta = delta * factor.view(-1, *([1] * (delta.dim() - 1)))
        return (x + delta).clamp(*self.bounds)


@dataclass(frozen=True)
class Shard:
    """One process's share of a data-parallel fit (attackgen.run.distributed): it takes rows rank::world
    of every batch, and ``total`` sums a tensor over the processes (an all-reduce), so each update is the
    one a single process computes on the whole batch, up to the order of float additions."""

    rank: int
    world: int
    total: Callable[[Tensor], Tensor]

    def rows(self, rows: Tensor) -> Tensor:
        return rows[self.rank :: self.world]


@dataclass
class AttackEnv:
    """What the strategy grants beyond the batch: the data basis and a surrogate model.

    ``data_x``/``data_y`` is the data basis (None for data basis 'none'): decision-based targeted
    attacks take their starting points from it, transfer attacks train surrogates on it.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data_x: Tensor | None = None
    data_y: Tensor | None = None
    surrogate: torch.nn.Module | None = None
    num_classes: int | None = None
    shard: Shard | None = None  # set for a UniversalAttack whose fit is data-parallel (see Shard)
    random_outputs: bool = False  # the victim's outputs change from call to call (found before the attacks)


@dataclass
class AttackOutput:
    """Candidates from one attack on one batch; success is decided by the executor, not here."""

    x_adv: Tensor
    info: dict[str, Any] = field(default_factory=dict)


class Attack(ABC, Generic[P]):
    """Base of every attack. Subclasses set ``access`` and ``params_model`` and implement ``run``.

    ``params_model`` is the catalogue entry's parameter model (taxonomy.params; a test checks they
    agree); the constructor validates its keyword arguments against it, so ``self.params`` is typed and
    holds every default. A name the model does not declare is an error, never silently ignored.
    """

    access: ClassVar[str]  # "gradients" | "scores" | "labels" | "surrogate"; must match the catalogue
    objective_needs: ClassVar[frozenset[Capability]] = frozenset()
    """What the attack asks of its objective beyond loss and success (checked before it runs)."""

    params_model: ClassVar[type[AttackParams]] = AttackParams

    def __init__(self, seed: int = 0, **params: Any) -> None:
        self.seed = seed
        problems = param_problems(type(self).__name__, self.params_model, params)
        if problems:
            raise AttackgenError("; ".join(problems))
        self.params: P = cast(P, self.params_model.model_validate(params))
        self.row_seeds: list[int] | None = None
        """One seed per input of the next batch (set by the step runner from the input's index)."""

    def row_random(self, x: Tensor) -> RowRandom:
        """Per-input random streams for the batch x (see attackgen.run.attacks.randomness): use these for
        every per-input draw, so an input's result does not depend on its batch."""
        seeds = self.row_seeds if self.row_seeds is not None and len(self.row_seeds) == len(x) else \
            row_seeds_for(self.seed, len(x))
        return RowRandom(seeds, x.device)

    def check_objective(self, objective: Objective) -> None:
        """Fail with one message when the objective lacks a capability this attack needs."""
        missing = objective.missing(self.objective_needs)
        if missing:
            raise MissingCapability(
                f"{type(self).__name__} needs an objective with {', '.join(missing)}; the "
                f"{type(objective).__name__} objective offers "
                f"{', '.join(sorted(c.value for c in objective.capabilities)) or 'none of them'}"
            )

    def generator(self, device: torch.device) -> torch.Generator:
        """A seeded generator on the batch's device, for draws shared by the whole batch (prefer
        ``row_random`` for per-input draws)."""
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed)
        return gen

    @abstractmethod
    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        """Return candidate adversarial inputs for the batch x (same shape as x)."""


class UniversalAttack(Attack[P]):
    """Fitted once on inputs of the data basis (or a context), then applied unchanged to every input.

    The executor calls ``fit`` on the fitting split, then ``run`` (which applies the fitted
    perturbation or patch) on held-out inputs, so the reported figure is a held-out fooling rate.
    """

    fitted: Tensor | None = None
    data_parallel_fit: ClassVar[bool] = False
    """True when ``fit`` honours ``env.shard``; otherwise a distributed run fits on rank 0 and sends the result."""

    @staticmethod
    def require_inputs(x_fit: Tensor, what: str) -> None:
        """A fit needs inputs: an empty data basis (or a context that selects none) is the spec's problem."""
        if x_fit.shape[0] == 0:
            raise AttackgenError(f"threat.scope: no input to fit {what} on (empty data basis or a context that "
                                 "selects nothing)")

    @abstractmethod
    def fit(
        self, access: Access, x_fit: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> Tensor:
        """Learn the perturbation (or patch) from x_fit; store it in self.fitted and return it."""

    @abstractmethod
    def apply(self, x: Tensor, budget: Budget) -> Tensor:
        """x with the fitted perturbation or patch applied (inside bounds and mask)."""

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if self.fitted is None:
            raise RuntimeError("a universal attack must be fitted before it is applied")
        return AttackOutput(self.apply(x, budget), {"universal": True})
