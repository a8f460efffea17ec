"""Execution: access objects, attacks, objectives, verification and the executor (torch)."""
