"""CLI commands, one module per group of verbs."""
