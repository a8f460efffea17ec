"""CPPN EA Fool (Nguyen, Yosinski, Clune 2015, arXiv:1412.1897): unrecognisable images the model
labels as the target class with high confidence.

The images are not perturbations of x: each is drawn by a compositional pattern-producing network
(CPPN) that maps pixel coordinates (x, y, distance from the centre, bias) through a few layers of
units with mixed activation functions (sine, Gaussian, sigmoid, tanh, absolute value, identity,
cosine) to an intensity per channel. The evolutionary loop keeps a population of CPPN genomes per
input and, every generation, breeds children by tournament selection and mutation (Gaussian weight
noise, activation-function swaps, connections switched on or off: a light version of NEAT's topology
mutations), queries the oracle once per child, and keeps the best of parents and children
((mu + lambda) selection). Fitness is the objective's loss until the consequence holds, then the
confidence of the predicted class. An input stops when the model is at least ``confidence`` (0.99)
sure of the wanted class, or when its queries are spent. The output ignores x except for its shape
(Budget.norm is None: there is no perturbation bound). The paper's MAP-Elites over all classes is
replaced by one population per input, since the threat model names one target per input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attackgen.run.access import Access
from attackgen.run.attacks._query import confidence, left, population_slots, query_budget, score, with_loss
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import CPPNParams

N_INPUTS = 4  # x, y, r, bias


_ACTIVATIONS = (
    torch.sin,
    lambda z: torch.exp(-z * z),  # Gaussian
    torch.sigmoid,
    torch.tanh,
    torch.abs,
    lambda z: z,
    torch.cos,
)
N_ACT = len(_ACTIVATIONS)


def _activate(z: Tensor, act: Tensor) -> Tensor:
    """Apply unit u's own activation function act[g, u] to z[g, :, u] (each function on its units only)."""
    zt = z.transpose(1, 2)
    out = torch.empty_like(zt)
    for a, fn in enumerate(_ACTIVATIONS):
        units = act == a
        if bool(units.any()):
            out[units] = fn(zt[units])
    return out.transpose(1, 2)


class CPPNPopulation:
    """G genomes of a fixed-width layered CPPN with per-unit activations and connection masks."""

    def __init__(self, g: int, width: int, depth: int, channels: int, gen: torch.Generator,
                 device: torch.device) -> None:
        self.gen, self.device = gen, device
        self.weights: list[Tensor] = []
        self.masks: list[Tensor] = []
        self.acts: list[Tensor] = []
        fan_in = N_INPUTS
        for _ in range(depth):
            self.weights.append(self._randn(g, fan_in + 1, width))  # +1 row: bias
            self.masks.append(self._rand(g, fan_in + 1, width) < 0.7)
            self.acts.append(torch.randint(0, N_ACT, (g, width), generator=gen, device=device))
            fan_in = width + N_INPUTS  # every layer also sees the coordinates
        self.weights.append(self._randn(g, fan_in + 1, channels))
        self.masks.append(torch.ones(g, fan_in + 1, channels, dtype=torch.bool, device=device))

    def _randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.gen, device=self.device)

    def _rand(self, *shape: int) -> Tensor:
        return torch.rand(*shape, generator=self.gen, device=self.device)

    def render(self, h: int, w: int, bounds: tuple[float, float], rows: Tensor | None = None) -> Tensor:
        """Images (G, C, h, w) in bounds, for all genomes or those at ``rows``."""
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])
        ys = torch.linspace(-1, 1, h, device=self.device)
        xs = torch.linspace(-1, 1, w, device=self.device)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([gx, gy, (gx**2 + gy**2).sqrt() * math.sqrt(0.5), torch.ones_like(gx)], -1)
        coords = coords.view(1, h * w, N_INPUTS)
        g = pick(self.weights[0]).shape[0]
        feats = coords.expand(g, -1, -1)
        hidden = feats
        for layer, (wt, mk) in enumerate(zip(self.weights, self.masks, strict=True)):
            inp = torch.cat([hidden, torch.ones_like(hidden[..., :1])], dim=-1)
            z = torch.bmm(inp, pick(wt) * pick(mk))
            if layer == len(self.weights) - 1:
                out = torch.sigmoid(z)  # (G, h*w, C)
                break
            act = pick(self.acts[layer])
            z = _activate(z, act)
            hidden = torch.cat([z, feats], dim=-1)
        lo, hi = bounds
        return (lo + (hi - lo) * out).permute(0, 2, 1).reshape(g, -1, h, w)

    def take(self, rows: Tensor) -> CPPNPopulation:
        child = object.__new__(CPPNPopulation)
        child.gen, child.device = self.gen, self.device
        child.weights = [t[rows].clone() for t in self.weights]
        child.masks = [t[rows].clone() for t in self.masks]
        child.acts = [t[rows].clone() for t in self.acts]
        return child

    def put(self, rows: Tensor, other: CPPNPopulation, from_rows: Tensor) -> None:
        for mine, theirs in ((self.weights, other.weights), (self.masks, other.masks), (self.acts, other.acts)):
            for a, b in zip(mine, theirs, strict=True):
                a[rows] = b[from_rows]

    def mutate(self, sigma: float, p_weight: float, p_act: float, p_link: float) -> None:
        for wt, mk in zip(self.weights, self.masks, strict=True):
            hit = self._rand(*wt.shape) < p_weight
            wt.add_(self._randn(*wt.shape) * sigma * hit)
            if mk is not self.masks[-1]:
                mk.logical_xor_(self._rand(*mk.shape) < p_link)
        for act in self.acts:
            swap = self._rand(*act.shape) < p_act
            act[swap] = torch.randint(0, N_ACT, (int(swap.sum()),), generator=self.gen, device=self.device)


class CPPNEAFool(Attack[CPPNParams]):
    """Fooling images grown by an evolutionary loop over CPPN genomes; access to scores only."""

    access = "scores"
    params_model = CPPNParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if x.dim() != 4:
            raise AttackgenError(f"CPPN EA Fool draws images (N, C, H, W); got shape {tuple(x.shape)}")
        pop_size = self.params.population
        generations = self.params.generations
        target_conf = self.params.confidence
        width = self.params.width
        depth = self.params.depth
        sigma = self.params.sigma
        n, c, h, w = x.shape
        objective = with_loss(objective, "margin")
        gen = self.generator(x.device)
        rows = torch.arange(n, device=x.device)
        cap = query_budget(access, rows, self.params.max_queries)
        pop = CPPNPopulation(n * pop_size, width, depth, c, gen, x.device)
        fitness = torch.full((n, pop_size), float("inf"), device=x.device, dtype=torch.float64)
        best = x.clone()
        best_fit = torch.full((n,), float("inf"), device=x.device, dtype=torch.float64)
        best_conf = torch.zeros(n, device=x.device, dtype=torch.float64)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        used = torch.zeros(n, dtype=torch.long, device=x.device)

        def evaluate(genomes: CPPNPopulation, active: Tensor) -> Tensor:
            """Fitness (n, pop_size) of genomes; inf where not evaluated. Updates best, done, used."""
            fit = torch.full((n, pop_size), float("inf"), device=x.device, dtype=torch.float64)
            i, j = population_slots(access, used, cap, pop_size, active)
            if i.numel() == 0:
                return fit
            images = genomes.render(h, w, budget.bounds, i * pop_size + j).to(x.dtype)
            loss, success, scores = score(access, objective, images, i)
            conf = confidence(access, scores).to(device=x.device, dtype=torch.float64)
            # before success: the objective's loss; after: higher confidence is better (float64, so the
            # offset that ranks every success above every failure keeps the confidence's digits)
            value = torch.where(success, -1e6 - conf, loss)
            fit[i, j] = value
            used.index_add_(0, i, torch.ones_like(i))
            # the best candidate of this round per input, where it beats the best so far
            round_best, member = fit.min(dim=1)
            slot = torch.full((n, pop_size), -1, dtype=torch.long, device=x.device)
            slot[i, j] = torch.arange(i.numel(), device=x.device)
            r = (round_best < best_fit).nonzero().squeeze(1)
            pos = slot[r, member[r]]
            best_fit[r] = value[pos]
            best[r] = images[pos]
            best_conf[r] = torch.where(success[pos], conf[pos], torch.zeros_like(conf[pos]))
            done[:] = best_conf >= target_conf
            return fit

        fitness = evaluate(pop, torch.ones(n, dtype=torch.bool, device=x.device))
        for _ in range(generations):
            active = ~done & (torch.minimum(left(access, rows), cap - used) > 0)
            if not bool(active.any()):
                break
            # tournament of two within each input's population
            a = torch.randint(0, pop_size, (n, pop_size), generator=gen, device=x.device)
            b = torch.randint(0, pop_size, (n, pop_size), generator=gen, device=x.device)
            parent = torch.where(fitness.gather(1, a) <= fitness.gather(1, b), a, b)
            flat_parent = (rows[:, None] * pop_size + parent).flatten()
            children = pop.take(flat_parent)
            children.mutate(sigma, p_weight=0.2, p_act=0.05, p_link=0.03)
            child_fit = evaluate(children, active)
            # (mu + lambda): keep the best pop_size of parents and children per input
            both = torch.cat([fitness, child_fit], dim=1)
            keep = both.argsort(dim=1)[:, :pop_size]
            from_child = keep >= pop_size
            src = (rows[:, None] * pop_size + keep % pop_size).flatten()
            merged = pop.take(src)
            slots = from_child.flatten().nonzero().squeeze(1)
            merged.put(slots, children, src[slots])
            pop = merged
            fitness = both.gather(1, keep)
        return AttackOutput(
            best,
            {"queries": used.tolist(), "confidence": best_conf.tolist(), "reached_confidence": done.tolist()},
        )
