"""The coverage audit over specs, plans and results; soundness over results; ATLAS (no torch)."""
