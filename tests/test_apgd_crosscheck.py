"""APGD-CE and APGD-T against the original AutoAttack code on the same digits inputs, steps and restarts.

The reference (fra31/auto-attack, PyPI ``pyautoattack``) is never a dependency: the test runs where it is
importable (``pip install --no-deps --target .venv-aa/site pyautoattack`` in the worktree, or any
environment that has ``pyautoattack`` or ``autoattack``) and is skipped elsewhere.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from attackgen.run.access import WhiteBoxAccess
from attackgen.run.attacks.apgd import APGDCE, APGDT
from attackgen.run.attacks.base import Budget
from attackgen.run.objectives.classification import ClassificationObjective
from tests.reference_autoattack import reference_module

EPS, N = 0.1, 256
TOLERANCE = 0.5  # points of robust accuracy (one input in 256): with batch_start the random starts are the
# reference's own draws, so only floating-point order can differ


def reference() -> ModuleType | None:
    return reference_module("autopgd_base")


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-t"])
def test_apgd_matches_the_reference_robust_accuracy(victim, test_set, attack: str) -> None:
    base = reference()
    if base is None:
        pytest.skip("the reference AutoAttack (pyautoattack) is not importable here")
    x, y = test_set[0][:N], test_set[1][:N]
    if attack == "apgd-ce":
        ref = base.APGDAttack(victim, n_iter=100, norm="Linf", eps=EPS, seed=0, loss="ce", device="cpu")
        ours = APGDCE(seed=0, steps=100, batch_start=True)
    else:
        ref = base.APGDAttack_targeted(victim, n_iter=100, norm="Linf", eps=EPS, seed=0, n_target_classes=9,
                                       device="cpu")
        ours = APGDT(seed=0, steps=100, parallel_targets=False, batch_start=True)
    theirs = ref.perturb(x.clone(), y.clone()).detach()  # seeds torch's global generator with 0, as ours
    mine = ours.run(WhiteBoxAccess(victim, N), x, ClassificationObjective(y), Budget(norm="inf", epsilon=EPS)).x_adv
    with torch.no_grad():
        robust_ref = float((victim(theirs.clamp(0, 1)).argmax(1) == y).float().mean()) * 100
        robust_ours = float((victim(mine).argmax(1) == y).float().mean()) * 100
    assert float((mine - x).abs().max()) <= EPS + 1e-6
    assert abs(robust_ours - robust_ref) <= TOLERANCE, f"{attack}: ours {robust_ours:.1f}%, reference {robust_ref:.1f}%"
    assert robust_ours < 50.0  # both actually attack


L1_EPS, L1_N = 3.0, 128
L1_TOLERANCE = 1.0  # points (one input in 128): same starts, same schedule; float order can flip an input


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-t"])
def test_l1_apgd_matches_the_reference_robust_accuracy(victim, test_set, attack: str) -> None:
    """AutoAttack's L1 settings (use_largereps: radii 3, 2, 1 x epsilon; APGD-T over 5 targets) on both sides."""
    base = reference()
    if base is None:
        pytest.skip("the reference AutoAttack (pyautoattack) is not importable here")
    x, y = test_set[0][:L1_N], test_set[1][:L1_N]
    if attack == "apgd-ce":
        ref = base.APGDAttack(victim, n_iter=100, norm="L1", eps=L1_EPS, seed=0, loss="ce", device="cpu",
                              use_largereps=True)
        ours = APGDCE(seed=0, steps=100, batch_start=True, large_eps=True)
    else:
        ref = base.APGDAttack_targeted(victim, n_iter=100, norm="L1", eps=L1_EPS, seed=0, n_target_classes=5,
                                       device="cpu", use_largereps=True)
        ours = APGDT(seed=0, steps=100, n_target_classes=5, parallel_targets=False, batch_start=True)
    theirs = ref.perturb(x.clone(), y.clone()).detach()
    mine = ours.run(WhiteBoxAccess(victim, L1_N), x, ClassificationObjective(y),
                    Budget(norm="1", epsilon=L1_EPS)).x_adv
    with torch.no_grad():
        robust_ref = float((victim(theirs.clamp(0, 1)).argmax(1) == y).float().mean()) * 100
        robust_ours = float((victim(mine).argmax(1) == y).float().mean()) * 100
    assert float((mine - x).abs().flatten(1).sum(1).max()) <= L1_EPS * (1 + 1e-5)
    assert abs(robust_ours - robust_ref) <= L1_TOLERANCE, \
        f"{attack}: ours {robust_ours:.1f}%, reference {robust_ref:.1f}%"
    assert robust_ours < 80.0  # both actually attack
