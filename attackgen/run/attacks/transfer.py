"""Transfer attacks: optimise on a surrogate model, never touch the victim (full black-box, rule A3).

The attacker trains or loads a substitute model (Papernot et al. 2017, arXiv:1602.02697), runs a
white-box attack that is known to transfer on it, and hands the candidates over. The executor checks
them on the victim where the spec allows; under full black-box knowledge it may not query the victim,
and the result is a transfer estimate (``info["transfer"] = True`` tells it where the candidates came
from).

- ``TransferMIFGSM``: momentum iterative FGSM (Dong et al. 2018, arXiv:1710.06081): the L1-normalised
  gradient is accumulated with decay mu and the step follows the sign of the accumulator (Linf) or its
  L2 direction (L2). Momentum keeps the update direction stable across iterations, which transfers
  better than plain PGD.
- ``TransferDIFGSM``: MI-FGSM with input diversity (Xie et al. 2019, arXiv:1803.06978): at each step,
  with probability ``diversity_prob``, the input is shrunk to a random size in [resize_rate * H, H]
  and padded back to H x W at a random offset before the gradient is taken.
- ``train_surrogate``: a quick substitute trained on the data basis (an MLP or a small CNN); the run
  builds the surrogate its model basis describes with it (attackgen.run.surrogates: trained members,
  members distilled from the victim's answers).

``model_handle`` is shared by the attacks of this family that may run on either the victim or a
surrogate: it returns the white-box handle an attack may differentiate through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attackgen.run.access import Access, NoAccess, WhiteBoxAccess
from attackgen.run.attacks._gradient import on_device
from attackgen.run.attacks.base import Attack, AttackEnv, AttackOutput, Budget
from attackgen.run.objectives.base import Objective
from taxonomy.errors import AttackgenError
from taxonomy.params import DIFGSMParams, TransferParams


def model_handle(access: Access, env: AttackEnv | None, prefer_surrogate: bool = False) -> WhiteBoxAccess:
    """The white-box handle an attack may differentiate through.

    NoAccess yields its surrogate (the victim is unreachable). White-box access yields the victim,
    unless ``prefer_surrogate`` and the environment carries a surrogate (a transfer attack run with a
    surrogate model basis). Score and label oracles give no gradients: that is a planning error.
    """
    if isinstance(access, NoAccess):
        return access.surrogate
    if prefer_surrogate and env is not None and env.surrogate is not None:
        return WhiteBoxAccess(env.surrogate, access.queries.numel(), access.queries.device)
    if isinstance(access, WhiteBoxAccess):
        return access
    if env is not None and env.surrogate is not None:
        return WhiteBoxAccess(env.surrogate, access.queries.numel(), access.queries.device)
    raise AttackgenError(
        f"strategy.model_basis: this attack needs gradients of a model, but it was given {access.kind!r} "
        "access and no surrogate model; grant white-box knowledge or name a surrogate model basis"
    )


def input_diversity(x: Tensor, gen: torch.Generator, prob: float, resize_rate: float) -> Tensor:
    """Random resize-and-pad (Xie et al. 2019), keeping the input size so any model accepts it.

    With probability ``prob`` (one draw per batch, as in the reference code), the batch is resized to a
    random side in [resize_rate * H, H] and zero-padded back to H x W at a random offset.
    """
    if prob <= 0 or float(torch.rand((), generator=gen, device=gen.device)) >= prob:
        return x
    height, width = x.shape[-2:]
    low = max(1, round(height * resize_rate))
    new_h = int(torch.randint(low, height + 1, (), generator=gen, device=gen.device))
    new_w = min(width, max(1, round(new_h * width / height)))
    resized = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top = int(torch.randint(0, height - new_h + 1, (), generator=gen, device=gen.device))
    left = int(torch.randint(0, width - new_w + 1, (), generator=gen, device=gen.device))
    return F.pad(resized, (left, width - new_w - left, top, height - new_h - top))


class TransferMIFGSM(Attack[TransferParams]):
    """MI-FGSM on the surrogate; the candidates are meant for a victim the attack never sees.

    Parameters: ``steps`` (10), ``step_size`` (input units; the planner sets it from ``rel_stepsize``,
    default epsilon / steps), ``decay`` (mu, 1.0), ``diversity_prob`` (0: plain MI-FGSM), ``resize_rate``
    (0.9). Unlike the white-box loop, the candidate is the final iterate, not the first one that fools
    the surrogate: pushing past the surrogate's boundary is what makes a perturbation transfer.
    """

    access = "surrogate"
    params_model = TransferParams

    def run(
        self, access: Access, x: Tensor, objective: Objective, budget: Budget, env: AttackEnv | None = None
    ) -> AttackOutput:
        if budget.epsilon is None or budget.norm not in ("inf", "2"):
            raise AttackgenError(
                "threat.imperceptibility: transfer MI-FGSM needs a fixed Linf or L2 epsilon, "
                f"got norm={budget.norm!r} epsilon={budget.epsilon!r}"
            )
        model = model_handle(access, env, prefer_surrogate=True)
        steps = self.params.steps
        alpha = self.params.step_for(budget.epsilon)  # Dong et al.: alpha = epsilon / T at the defaults
        objective = on_device(objective, x.device)
        decay = self.params.decay
        prob = self.params.diversity_prob
        rate = self.params.resize_rate
        gen = self.generator(x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        x_adv = x.clone().detach()
        momentum = torch.zeros_like(x)
        view = (-1,) + (1,) * (x.dim() - 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = objective.loss(model(input_diversity(x_adv, gen, prob, rate), rows)).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            if budget.mask is not None:
                grad = grad * budget.mask
            grad = grad / grad.abs().flatten(1).mean(dim=1).clamp_min(1e-12).view(view)
            momentum = decay * momentum + grad
            if budget.norm == "inf":
                direction = momentum.sign()
            else:
                direction = momentum / momentum.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            x_adv = budget.project(x, x_adv.detach() - alpha * direction)  # minimise the objective's loss
        with torch.no_grad():
            on_surrogate = objective.success(model(x_adv, rows))
        return AttackOutput(
            x_adv.detach(),
            {"transfer": True, "surrogate_success": on_surrogate.detach().cpu(), "victim_queries": 0},
        )


class TransferDIFGSM(TransferMIFGSM):
    """MI-FGSM with input diversity (random resize-and-pad at each step, probability 0.5)."""

    params_model = DIFGSMParams


# ---------------------------------------------------------------------- surrogate training


def surrogate_architecture(arch: str, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """A fresh surrogate: 'mlp' (fully connected) or 'cnn' (two conv blocks), normalising inside."""
    from attackgen.models.zoo.models import MLP, SmallCNN

    channels, height, width = input_shape
    if arch == "mlp":
        return MLP(channels * height * width, classes=classes)
    if arch == "cnn":
        if channels != 1 or height != width or height % 4:
            raise AttackgenError(
                f"strategy.model_basis.model: the built-in surrogate 'cnn' takes square 1-channel inputs "
                f"with a side divisible by 4, got {tuple(input_shape)}; use 'mlp' or pass a module"
            )
        return SmallCNN(height, classes=classes)
    raise AttackgenError(f"strategy.model_basis.model: unknown surrogate architecture {arch!r}; use 'mlp' or 'cnn'")


def train_surrogate(
    x: Tensor,
    y: Tensor,
    arch: str | nn.Module = "mlp",
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    classes: int | None = None,
) -> nn.Module:
    """Train a substitute on the data basis (x, y) and return it in eval mode.

    ``y`` are the labels the attacker has: ground truth of a training or surrogate data basis, or the
    victim's answers when the basis was labelled by queries. On digits (1285 inputs) an MLP takes about
    two seconds on two CPU cores.
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise AttackgenError(
            f"strategy.data_basis: a surrogate needs labelled inputs, got {x.shape[0]} inputs and "
            f"{y.shape[0]} labels"
        )
    classes = classes or int(y.max()) + 1
    torch.manual_seed(seed)
    model = surrogate_architecture(arch, tuple(x.shape[1:]), classes) if isinstance(arch, str) else arch
    norm = getattr(model, "norm", None)
    if norm is not None and hasattr(norm, "mean"):
        norm.mean.fill_(float(x.mean()))
        norm.std.fill_(float(x.std()))
    model = model.to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()
