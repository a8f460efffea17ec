"""RuleNote: one rule finding as a plan shows it. Its own module so that the plan file model
(document) and the plan checks (checks) share it without importing each other."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class RuleNote(BaseModel):
    """One rule finding, as shown to the user: id, severity, field path, reason, fix."""

    model_config = ConfigDict(extra="forbid")

    id: str
    severity: Literal["error", "warning"]
    field: str = ""
    reason: str
    fix: str = ""
    detail: str = ""

    def line(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        detail = f" ({self.detail})" if self.detail else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.id} {self.severity}{where}: {self.reason}{detail}.{fix}"


def note_of(violation: Any) -> RuleNote:
    """A rules.Violation as the plan's RuleNote (id, severity, field, reason, fix, detail)."""
    rule = violation.rule
    return RuleNote(
        id=str(violation.id),
        severity="error" if str(violation.severity) in ("error", "Severity.error") else "warning",
        field=str(getattr(violation, "field", "") or ""),
        reason=str(getattr(rule, "reason", "") or getattr(rule, "message", "")),
        fix=str(getattr(rule, "fix", "") or ""),
        detail=str(getattr(violation, "detail", "") or ""),
    )
