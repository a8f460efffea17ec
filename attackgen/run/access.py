"""What an attack may touch on the victim: exactly one of these, as its threat model grants.

White-box access hands over the module. Score and label oracles answer queries and count them per
input; a query on an input whose budget is spent raises QueryBudgetExceeded instead of answering, so
no attack can go over budget by mistake. A label oracle keeps the model in a closure and has no method
that returns scores. NoAccess holds only a surrogate: the victim is out of reach, and calling it is a
query over its budget of zero.

The contract every attack relies on is ``Access``: an abstract callable ``access(x, rows=None)`` that
answers for the inputs at ``rows`` of the batch and counts the queries, plus ``remaining()``,
``granularity`` (what a score answer holds) and ``surrogate`` (a white-box surrogate, NoAccess only).

A model behind an endpoint (attackgen.models.remote) is one more model here: the budget is charged
before the oracle calls it, so no request leaves for an input whose budget is spent, and the oracle
tells it which data indices it is querying (``input_ids``, set by the step runner) for its query log.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attackgen.models.onnx import find_oracle_only
from attackgen.models.remote import querying


class QueryBudgetExceeded(RuntimeError):
    """An attack asked for more queries than its threat model allows."""


class Access(ABC):
    """What an attack may call: per-input query counts over one batch of n inputs, and the answer."""

    kind: ClassVar[str] = "base"
    granularity: str = "logits"
    """What a score answer holds: "logits" (raw model outputs), "probabilities" or "top_k"."""
    surrogate: WhiteBoxAccess | None = None
    """A white-box handle on a surrogate model (full black-box access only)."""
    _listener: Callable[[Access], None] | None = None
    """Called after every counted call (the run's progress within a batch; set by the step runner)."""

    def __init__(self, n_inputs: int, budget: int | None, device: torch.device | str = "cpu") -> None:
        self.budget = budget
        self.queries = torch.zeros(n_inputs, dtype=torch.long, device=device)
        self.overdrawn = torch.zeros((), dtype=torch.bool, device=device)  # set by a refused query_live
        self.input_ids: Tensor | None = None  # the data indices of the batch rows (the step runner sets them)

    def _ids(self, rows: Tensor | None, n: int) -> list[int]:
        """The data indices of the inputs in one query, for a remote model's query log."""
        local = torch.arange(n) if rows is None else rows.detach().cpu()
        return (self.input_ids.cpu()[local] if self.input_ids is not None else local).tolist()

    def check_overdraft(self) -> None:
        """Raise QueryBudgetExceeded when a ``query_live`` call asked beyond a budget (refused, unanswered)."""
        if bool(self.overdrawn):
            self.overdrawn.zero_()
            raise QueryBudgetExceeded(f"query budget of {self.budget} per input: the attack asked for more queries "
                                      "than were left (refused, not answered); it must check remaining() first")

    def remaining(self, rows: Tensor | None = None) -> Tensor:
        """Queries left per input (a large number when unbudgeted)."""
        counts = self.queries if rows is None else self.queries[rows]
        if self.budget is None:
            return torch.full_like(counts, 2**62)
        return self.budget - counts

    def _charge(self, rows: Tensor | None, n: int) -> None:
        if rows is None:
            rows = torch.arange(n, device=self.queries.device)
        rows = rows.to(self.queries.device)
        if rows.numel() != n:
            raise ValueError(f"{n} inputs queried but {rows.numel()} row indices given")
        if self.budget is not None:
            # count repeats within this call too: one call naming an input k times costs k queries
            after = self.queries + torch.bincount(rows, minlength=self.queries.numel())
            if bool((after > self.budget).any()):
                over = torch.nonzero(after > self.budget).flatten().tolist()[:5]
                raise QueryBudgetExceeded(
                    f"query budget of {self.budget} per input is spent for inputs {over}; "
                    "the attack must check remaining() before querying"
                )
        self.queries.index_add_(0, rows, torch.ones_like(rows, dtype=torch.long))
        if self._listener is not None:
            self._listener(self)

    @abstractmethod
    def __call__(self, x: Tensor, rows: Tensor | None = None) -> Any:
        """The answer for x; rows are the batch indices of the inputs being queried (default: all, in order).
        Raises QueryBudgetExceeded, without answering, when an input's budget would be exceeded."""


class WhiteBoxAccess(Access):
    """The victim module itself: gradients, logits, everything. Forward passes are counted, not budgeted."""

    kind = "white_box"

    def __init__(self, model: nn.Module, n_inputs: int, device: torch.device | str = "cpu") -> None:
        super().__init__(n_inputs, None, device)
        self.model = model

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        self._charge(rows, x.shape[0])
        return self.model(x)


class ScoreOracle(Access):
    """Scores without gradients: logits, probabilities or the top-k probabilities, budgeted per input."""

    kind = "scores"

    def __init__(
        self,
        model: nn.Module,
        n_inputs: int,
        granularity: str = "probabilities",
        k: int | None = None,
        budget: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(n_inputs, budget, device)
        if granularity not in ("logits", "probabilities", "top_k"):
            raise ValueError(f"unknown granularity {granularity!r}")
        self.granularity = granularity
        self.k = k
        forward = model
        self._oracle_only = find_oracle_only(model) is not None
        self.num_outputs = 0  # learnt from the first answer (the shape of an all-stopped answer)

        def answer(x: Tensor) -> Tensor:
            with torch.no_grad():
                return forward(x.detach())

        self._answer: Callable[[Tensor], Tensor] = answer

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """Scores for x; rows are the batch indices of the inputs being queried (default: all, in order)."""
        self._charge(rows, x.shape[0])  # the budget is spent before anything is asked of the model
        with querying(lambda: self._ids(rows, x.shape[0])):
            logits = self._answer(x)
        return self._scores(logits)

    def query_live(self, x: Tensor, rows: Tensor, live: Tensor) -> Tensor:
        """Scores for the rows of x where ``live`` (bool, one per row); the others are neither charged nor
        answered (their scores are NaN). A loop that stops inputs by a mask and shrinks its batch only now
        and then (attackgen.run.attacks.syncs) queries through this without a sync to drop stopped rows.
        A local model still computes the stopped rows (cheaper than a sync on a GPU); a remote or ONNX
        model is asked about the live rows only, so no request leaves for a stopped input."""
        live = live.to(device=x.device, dtype=torch.bool)
        if rows.numel() != x.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs queried but {rows.numel()} row indices given")
        rows = rows.to(self.queries.device)
        if self.budget is not None:
            # Refused without a sync: a row whose budget this call would exceed is not charged and not
            # answered (NaN, like a stopped row), and the overdraft is raised by ``check_overdraft`` after
            # the attack, so no answer beyond the budget ever reaches it.
            after = self.queries + torch.bincount(rows, weights=live.to(rows.device).long(),
                                                  minlength=self.queries.numel()).long()
            over = after > self.budget
            self.overdrawn |= over.any()
            live = live & ~over[rows].to(live.device)
        self.queries.index_add_(0, rows, live.to(rows.device).long())
        if self._listener is not None:
            self._listener(self)
        if self._oracle_only:
            keep = live.nonzero().squeeze(1)
            if keep.numel() == 0:
                return torch.full((x.shape[0], self.num_outputs), float("nan"), device=x.device)
            with querying(lambda: self._ids(rows[keep], keep.numel())):
                answered = self._scores(self._answer(x[keep]))
            self.num_outputs = answered.shape[1]
            out = torch.full((x.shape[0], *answered.shape[1:]), float("nan"), device=answered.device,
                             dtype=answered.dtype)
            out[keep] = answered
            return out
        with querying(lambda: self._ids(rows, x.shape[0])):
            scores = self._scores(self._answer(x))
        if not isinstance(scores, Tensor):
            raise TypeError("query_live needs tensor answers (scores of a classifier or a dense model)")
        return scores.masked_fill(~live.to(scores.device).view(-1, *([1] * (scores.dim() - 1))), float("nan"))

    def _scores(self, logits: Any) -> Any:
        if self.granularity == "logits" or not isinstance(logits, Tensor):
            return logits  # a detector's scored boxes are its score-level answer, whatever the granularity
        probs = logits.softmax(dim=1)
        if self.granularity == "probabilities":
            return probs
        top = probs.topk(self.k or 1, dim=1)
        masked = torch.zeros_like(probs)
        return masked.scatter_(1, top.indices, top.values)


class LabelOracle(Access):
    """Only the decision: the top-1 label (classification) or the argmax map (segmentation)."""

    kind = "labels"

    def __init__(
        self,
        model: nn.Module,
        n_inputs: int,
        budget: int | None = None,
        device: torch.device | str = "cpu",
        decide: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(n_inputs, budget, device)
        forward = model
        to_label = decide or (lambda out: out.argmax(dim=1))

        def answer(x: Tensor) -> Tensor:
            with torch.no_grad():
                return to_label(forward(x.detach()))

        self._answer: Callable[[Tensor], Tensor] = answer

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        self._charge(rows, x.shape[0])
        with querying(lambda: self._ids(rows, x.shape[0])):
            return self._answer(x)


class NoAccess(Access):
    """Full black-box: the attack sees a surrogate model only; the victim cannot be queried."""

    kind = "surrogate"

    def __init__(self, surrogate: nn.Module, n_inputs: int, device: torch.device | str = "cpu") -> None:
        super().__init__(n_inputs, 0, device)
        self.surrogate: WhiteBoxAccess = WhiteBoxAccess(surrogate, n_inputs, device)

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> Any:
        """The victim cannot be queried: any query is over the budget of zero."""
        self._charge(rows, x.shape[0])
        raise QueryBudgetExceeded("full black-box: the victim cannot be queried; attack access.surrogate")


ACCESS_FOR_KIND = {"gradients": WhiteBoxAccess, "scores": ScoreOracle, "labels": LabelOracle, "surrogate": NoAccess}
