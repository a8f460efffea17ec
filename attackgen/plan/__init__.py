"""Planning: a validated spec -> a ranked, typed plan of concrete attacks (no torch)."""
