"""The `attackgen` command: click groups, one module per group of verbs."""
