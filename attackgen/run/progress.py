"""Run progress with an ETA, per item and overall, updated within a batch.

The step runner reports whole inputs as they finish (``advance``) and, within a batch, the share of the
batch's expected victim calls made so far (``within``): the access object calls its ``_listener`` on
every counted call, so attacks report progress without knowing about it. The expected calls per input
come from the catalogue's cost model at the item's parameters (queries for oracles, forward passes
for gradients); an attack that stops early simply jumps ahead when its batch ends.

Three sinks: a rich progress display (ETA column) on a terminal, a plain line every ``interval``
seconds when the output is a file or a pipe, or nothing (--quiet).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

Mode = Literal["rich", "lines", "off"]
LINE_INTERVAL = 10.0
"""Seconds between two plain progress lines."""


def eta_text(seconds: float | None) -> str:
    """1h02m, 4m10s, 12s; '?' before anything is measured."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class RunProgress:
    """Progress of one run: ``n_items`` items over ``n_inputs`` inputs each."""

    def __init__(self, n_items: int, n_inputs: int, mode: Mode = "off", echo: Callable[[str], None] | None = None,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.n_items, self.n_inputs, self.mode = n_items, max(1, n_inputs), mode
        self.echo = echo or (lambda line: None)
        self.interval, self.clock = LINE_INTERVAL if interval is None else interval, clock
        self.label = ""
        self.index = 0
        self.done = 0.0  # whole inputs of the current item
        self.partial = 0.0  # inputs' worth of the batch in flight
        self.items_done = 0
        self.started = self.item_started = self.last_line = clock()
        self.skipped = 0.0  # work found finished (resume), left out of the speed
        self._rich: Any = None
        self._item_task: Any = None
        self._total_task: Any = None

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> RunProgress:
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                  console=Console(stderr=True))
            self._rich.__enter__()
            self._total_task = self._rich.add_task(f"all {self.n_items} items", total=self.n_items * self.n_inputs)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(None, None, None)
            self._rich = None

    # ------------------------------------------------------------------ what the runner reports

    def start_item(self, index: int, label: str) -> None:
        self.index, self.label = index, label
        self.done = self.partial = 0.0
        self.item_started = self.clock()
        if self._rich is not None:
            self._item_task = self._rich.add_task(f"{index + 1}/{self.n_items} {label}", total=self.n_inputs)

    def advance(self, n: float, skipped: bool = False) -> None:
        """``n`` more inputs of the current item are finished (``skipped``: found finished, as on resume)."""
        self.done += n
        self.partial = 0.0
        if skipped:
            self.skipped += n
        self._update()

    def within(self, batch: int, fraction: float) -> None:
        """The batch of ``batch`` inputs in flight is ``fraction`` done (by its expected victim calls)."""
        self.partial = batch * min(max(fraction, 0.0), 0.99)
        self._update()

    def end_item(self) -> None:
        self.items_done += 1
        self.done, self.partial = float(self.n_inputs), 0.0
        if self._rich is not None and self._item_task is not None:
            self._rich.update(self._item_task, completed=self.n_inputs, visible=False)
        self._update(force_line=False)

    # ------------------------------------------------------------------ estimates

    @property
    def item_fraction(self) -> float:
        return min(1.0, (self.done + self.partial) / self.n_inputs)

    @property
    def overall_fraction(self) -> float:
        return min(1.0, (self.items_done + (0.0 if self.done >= self.n_inputs else self.item_fraction)) / self.n_items)

    def item_eta(self) -> float | None:
        elapsed = self.clock() - self.item_started
        fraction = self.item_fraction
        return None if fraction <= 0 or elapsed <= 0 else elapsed / fraction * (1 - fraction)

    def overall_eta(self) -> float | None:
        elapsed = self.clock() - self.started
        total = self.n_items * self.n_inputs
        measured = self.overall_fraction * total - self.skipped
        if measured <= 0 or elapsed <= 0:
            return None
        return elapsed / measured * (total - self.overall_fraction * total)

    def line(self) -> str:
        """One plain progress line: item, done/total, ETA; overall share and ETA."""
        return (f"progress: item {self.index + 1}/{self.n_items} {self.label}: "
                f"{int(self.done + self.partial)}/{self.n_inputs} inputs, ETA {eta_text(self.item_eta())}; "
                f"overall {100 * self.overall_fraction:.0f}%, ETA {eta_text(self.overall_eta())}")

    def _update(self, force_line: bool = False) -> None:
        if self._rich is not None:
            if self._item_task is not None:
                self._rich.update(self._item_task, completed=self.done + self.partial)
            self._rich.update(self._total_task, completed=self.overall_fraction * self.n_items * self.n_inputs)
        elif self.mode == "lines":
            now = self.clock()
            if force_line or now - self.last_line >= self.interval:
                self.last_line = now
                self.echo(self.line())
