"""The threat-model taxonomy: schema, rules, constraint graph and attack catalogue. Imports no torch."""

from taxonomy.errors import AttackgenError, SpecError
from taxonomy.spec import AttackSpec, ThreatModel, load_spec, parse_spec

__all__ = ["AttackSpec", "AttackgenError", "SpecError", "ThreatModel", "load_spec", "parse_spec"]
