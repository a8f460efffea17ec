"""attackgen: from a written threat model to verified adversarial attacks and a coverage audit."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``attackgen.evaluate`` and ``attackgen.Evaluation``, imported on first use: ``import attackgen`` stays
    torch-free (the CLI's validate/plan/audit never load torch)."""
    if name in ("evaluate", "Evaluation"):
        from attackgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'attackgen' has no attribute {name!r}")
