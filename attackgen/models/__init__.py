"""Execution inputs: loading models and data, task adapters, the built-in zoo (torch)."""
