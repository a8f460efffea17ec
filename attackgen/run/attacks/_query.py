"""Shared plumbing of the query-based attacks (score and label oracles).

Every query goes through ``ask``, which checks the per-input budget itself before the oracle does:
``Access._charge`` only refuses rows whose budget is already spent, so a batch that names one row
several times (many samples of one input) could otherwise overshoot by up to the batch size.
``ask`` makes sure each row is named no more often than it has queries left.

Score-based attacks read their oracle's answer through ``as_outputs``: logits as they are,
probabilities and top-k probabilities as log-probabilities (missing top-k classes become a very low
log-probability). Margin and cross-entropy losses are invariant under the per-input shift that
separates logits from log-probabilities, so ``objective.loss`` works on either.

Decision-based attacks share ``decision_starts`` (an adversarial starting point per input: uniform
noise, or for targeted consequences an input of the data basis the oracle already labels as wanted)
and ``boundary_search`` (binary search between the clean input and an adversarial one).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attackgen.run.access import Access, QueryBudgetExceeded
from attackgen.run.attacks.base import AttackEnv
from attackgen.run.attacks.randomness import RowRandom
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError

LOG_FLOOR = 1e-30


def ask(access: Access, x: Tensor, rows: Tensor) -> Tensor:
    """Query the oracle for x (one row index per input), refusing to name a row beyond its budget."""
    if rows.numel() == 0:
        raise ValueError("no inputs to query")
    rows = rows.to(access.queries.device)
    unique, counts = rows.unique(return_counts=True)
    left = access.remaining(unique)
    if bool((counts > left).any()):
        over = unique[counts > left].tolist()[:5]
        raise QueryBudgetExceeded(f"attack asked for more queries than are left for inputs {over}")
    return access(x, rows)


def live(access: Access, rows: Tensor, need: int = 1) -> Tensor:
    """Bool mask over rows: inputs that still have at least ``need`` queries left."""
    return access.remaining(rows).to(rows.device) >= need


def left(access: Access, rows: Tensor) -> Tensor:
    """Queries left per row, clipped to int range, on the rows' device."""
    return access.remaining(rows).to(rows.device).clamp(max=2**40)


class Allowance:
    """The queries each input may still make in one attack: the oracle's budget, and the attack's own
    ``max_queries`` (None: the oracle's budget alone), counted from when the attack started."""

    def __init__(self, access: Access, rows: Tensor, cap: int | None) -> None:
        self.access, self.rows, self.cap = access, rows, cap
        self.start = access.queries.clone()

    def spent(self) -> Tensor:
        return (self.access.queries - self.start).to(self.rows.device)

    def room(self) -> Tensor:
        left_now = left(self.access, self.rows)
        return left_now if self.cap is None else torch.minimum(left_now, int(self.cap) - self.spent())


def as_outputs(access: Access, scores: Tensor, objective: Objective | None = None) -> Tensor:
    """Oracle scores in the form the objective reads: logits, or log-probabilities standing in for them.

    An objective that says it reads probabilities (``output_kind == "probabilities"``) gets them as they
    are; any other gets logits, or the log of probabilities / top-k probabilities.
    """
    if not isinstance(scores, Tensor) or access.granularity == "logits":
        return scores  # logits, or a detector's scored boxes
    if objective is not None and objective.output_kind == "probabilities":
        return scores
    return scores.clamp_min(LOG_FLOOR).log()


def with_loss(objective: Objective, kind: str) -> Objective:
    """The objective with another loss ("margin" or "ce") where it offers one, else unchanged."""
    return objective.with_loss(kind)


def score(access: Access, objective: Objective, x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One score query per input: (loss to minimise, success, raw scores) for the inputs at ``rows``."""
    scores = ask(access, x, rows)
    outputs = as_outputs(access, scores, objective)
    sub = objective.subset(rows)
    loss = sub.loss(outputs).detach().to(device=rows.device, dtype=torch.float64)
    return loss, sub.success(outputs).to(rows.device).bool(), scores


def population_slots(access: Access, used: Tensor, cap: int, size: int, active: Tensor) -> tuple[Tensor, Tensor]:
    """(input, member) index pairs of the candidates each active input can afford this generation:
    the first min(size, queries left, cap - used) members of its population."""
    rows = torch.arange(used.shape[0], device=used.device)
    room = torch.minimum(left(access, rows), cap - used).clamp(min=0, max=size) * active
    which = (torch.arange(size, device=used.device)[None, :] < room[:, None]).nonzero()
    return which[:, 0], which[:, 1]


def confidence(access: Access, scores: Tensor) -> Tensor:
    """Per-input probability of the predicted class (classification scores only)."""
    if access.granularity == "logits":
        return scores.softmax(dim=1).amax(dim=1)
    return scores.amax(dim=1)


def query_budget(access: Access, rows: Tensor, cap: int | None) -> int:
    """How many queries the attack may plan on per input: its own cap and the most any row has left."""
    most = int(left(access, rows).max().item()) if rows.numel() else 0
    return most if cap is None else min(int(cap), most)


def lp_distance(a: Tensor, b: Tensor, norm: str) -> Tensor:
    diff = (a - b).flatten(1)
    if norm == "inf":
        return diff.abs().amax(dim=1)
    return diff.norm(dim=1)


def bview(values: Tensor, like: Tensor) -> Tensor:
    """Per-input values shaped to broadcast against a batch like ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------- decision-based helpers


def decide(access: Access, objective: Objective, x: Tensor, rows: Tensor) -> Tensor:
    """One label query per input; True where the answer realises the consequence for that row."""
    labels = ask(access, x, rows)
    return objective.subset(rows).success_from_decisions(labels).to(rows.device).bool()


def blend(x: Tensor, x_adv: Tensor, alpha: Tensor, norm: str) -> Tensor:
    """The point a fraction alpha of the way from x towards x_adv (L2) or the Linf-clip at alpha (Linf)."""
    a = bview(alpha, x)
    if norm == "inf":
        return torch.minimum(torch.maximum(x_adv, x - a), x + a)
    return (1 - a) * x + a * x_adv


def boundary_search(
    access: Access,
    objective: Objective,
    x: Tensor,
    x_adv: Tensor,
    rows: Tensor,
    norm: str = "2",
    tolerance: float | Tensor = 1e-3,
    room: Tensor | None = None,
) -> Tensor:
    """Binary search from x_adv (adversarial) towards x, to within ``tolerance`` of the boundary.

    L2: over the blend factor in [0, 1]; Linf: over the clip radius in [0, ||x_adv - x||inf]. Returns
    the adversarial end of the final bracket for every row, so the result is always adversarial. Rows
    that run out of queries (the oracle's budget, or ``room[i]`` queries for this call: the caller's
    own cap) stop where they are. A bracket that can no longer be halved in floating point also stops:
    HopSkipJump's tolerance on large inputs (gamma / d^2) lies below float32 resolution, and the search
    would otherwise spin until the budget is gone.
    """
    n = x.shape[0]
    high = lp_distance(x_adv, x, "inf") if norm == "inf" else torch.ones(n, device=x.device)
    low = torch.zeros_like(high)
    tol = torch.as_tensor(tolerance, device=x.device, dtype=high.dtype).expand_as(high)
    if norm == "inf":
        tol = tol * high.clamp_min(1e-12)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    used = torch.zeros(n, dtype=torch.long, device=x.device)
    while True:
        going = ~done & ((high - low) > tol) & live(access, rows)
        if room is not None:
            going &= used < room.to(x.device)
        if not bool(going.any()):
            break
        idx = going.nonzero().squeeze(1)
        mid = (low[idx] + high[idx]) / 2
        stuck = (mid <= low[idx]) | (mid >= high[idx])  # no representable midpoint left
        done[idx[stuck]] = True
        idx, mid = idx[~stuck], mid[~stuck]
        if idx.numel() == 0:
            continue
        is_adv = decide(access, objective, blend(x[idx], x_adv[idx], mid, norm), rows[idx])
        used[idx] += 1
        high[idx] = torch.where(is_adv, mid, high[idx])
        low[idx] = torch.where(is_adv, low[idx], mid)
    return blend(x, x_adv, high, norm)


def _basis_error(objective: Objective, reason: str) -> AttackgenError:
    kind = "targeted" if objective.targeted else "untargeted"
    return AttackgenError(
        f"threat.consequence: a {kind} decision-based attack (boundary, hopskipjump) starts from an input "
        f"the model already labels as the consequence asks, taken from the data basis "
        f"(strategy.data_basis / threat.data_knowledge); {reason}. Give a data basis that holds inputs of "
        "the target class, or use a score-based attack (model_knowledge output_transparent or query_limited)."
    )


def decision_starts(
    access: Access,
    objective: Objective,
    x: Tensor,
    rows: Tensor,
    env: AttackEnv | None,
    gen: torch.Generator | RowRandom,
    bounds: tuple[float, float],
    noise_tries: int = 20,
    basis_tries: int = 20,
    room: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """An adversarial starting point per input, found through the label oracle; (x_start, found).

    Untargeted: uniform noise inside the bounds (``noise_tries`` draws at most), then inputs of the
    data basis. Targeted: only inputs of the data basis whose label realises the consequence (the
    objective's predicate on the data's labels); each one is confirmed by an oracle query, charged to
    the input that needs it, and each data-basis input is queried once per batch. Raises an
    AttackgenError when a targeted attack has no data basis, or the data basis has no input of the
    wanted class for some input. ``room[i]``: the most queries input i may spend here (the caller's cap);
    an input that reaches it keeps looking no further (found False).
    """
    n = x.shape[0]
    device = x.device
    start = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=device)
    used = torch.zeros(n, dtype=torch.long, device=device)
    cap = None if room is None else room.to(device)

    def can_ask(mask: Tensor) -> Tensor:
        ok = mask & live(access, rows)
        return ok if cap is None else ok & (used < cap)

    targeted = bool(objective.targeted)
    has_basis = env is not None and env.data_x is not None and env.data_y is not None
    if targeted and not has_basis:
        raise _basis_error(objective, "this run has no data basis (data basis 'none')")

    if not targeted:
        lo, hi = bounds
        for _ in range(noise_tries):
            want = can_ask(~found)
            if not bool(want.any()):
                break
            idx = want.nonzero().squeeze(1)
            noise = (gen.subset(idx).rand(*x.shape[1:]) if isinstance(gen, RowRandom) else
                     torch.rand(x[idx].shape, generator=gen, device=device)) * (hi - lo) + lo
            ok = decide(access, objective, noise, rows[idx])
            used[idx] += 1
            start[idx[ok]] = noise[ok]
            found[idx[ok]] = True
        if bool(found.all()) or not has_basis:
            return start, found

    assert env is not None and env.data_x is not None and env.data_y is not None
    data_x = env.data_x.to(device)
    data_y = env.data_y.to(device) if isinstance(env.data_y, Tensor) else env.data_y
    m = data_x.shape[0]
    cache: dict[int, Tensor] = {}  # data-basis index -> the oracle's label
    missing_class: list[int] = []
    for i in (~found).nonzero().squeeze(1).tolist():
        row = rows[i : i + 1]
        sub = objective.subset(row.repeat(m))
        wanted = sub.success_from_decisions(data_y).to(device).bool()
        if not bool(wanted.any()):
            missing_class.append(i)
            continue
        cand = wanted.nonzero().squeeze(1)
        order = cand[lp_distance(data_x[cand], x[i : i + 1].expand_as(data_x[cand]), "2").argsort()]
        tries = 0
        for c in order.tolist():
            if c not in cache:
                capped = cap is not None and int(used[i]) >= int(cap[i])
                if tries >= basis_tries or capped or not bool(live(access, row).all()):
                    break
                cache[c] = ask(access, data_x[c : c + 1], row)
                used[i] += 1
                tries += 1
            label = cache[c]
            if bool(objective.subset(row).success_from_decisions(label).bool().all()):
                start[i] = data_x[c]
                found[i] = True
                break
    if missing_class and targeted:
        raise _basis_error(
            objective,
            f"the data basis ({m} inputs) holds no input of the wanted class for batch inputs "
            f"{missing_class[:5]}",
        )
    return start, found
