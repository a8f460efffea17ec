"""attackgen: from a written threat model to verified adversarial attacks and a coverage audit."""

__version__ = "0.1.0"
