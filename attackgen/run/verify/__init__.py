"""Verification, the project's core promise: a candidate counts only after it is cleaned, clipped,
re-run through the victim and re-measured against every bound of its budget.

``verify(model, x, candidate, objective, bounds, ...)`` is a pure function of its arguments (it keeps
no state and writes nothing), so tests and other runners call it directly. Each kind of bound is one
class in ``attackgen.run.verify.bounds``: adding a bound means writing one class and listing it in
``bounds_for`` (or passing it to ``verify`` yourself).
"""

from attackgen.run.verify.bounds import (
    Bound,
    BoundCheck,
    DetectorBound,
    LpBound,
    MaskBound,
    PrintabilityBound,
    SsimBound,
    WassersteinBound,
    bounds_for,
    printability_bound,
)
from attackgen.run.verify.candidate import NORM_COLUMN, SSIM_COLUMN, Verified, measure, quantize, verify

__all__ = [
    "NORM_COLUMN",
    "SSIM_COLUMN",
    "Bound",
    "BoundCheck",
    "DetectorBound",
    "LpBound",
    "MaskBound",
    "PrintabilityBound",
    "SsimBound",
    "Verified",
    "WassersteinBound",
    "bounds_for",
    "measure",
    "printability_bound",
    "quantize",
    "verify",
]
