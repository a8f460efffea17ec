"""Retrain the built-in models deterministically and write weights/ and weights/models.json.

    python -m attackgen.models.zoo.train [NAME ...]

Without names every model whose data is present is trained. Seeded (torch and the shuffling), CPU,
two threads: the same machine gives the same weights. A model with ``adversarial`` set is trained on
Linf PGD examples of each batch (Madry et al. 2018) and its robust accuracy under 100-step PGD is
measured on the test split; a wrapper (``wraps``) is not trained, only its test accuracy measured.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from attackgen.models.zoo.data import load_builtin_data
from attackgen.models.zoo.models import (
    BUILTIN_MODELS,
    WEIGHTS_DIR,
    AdversarialTraining,
    ModelInfo,
    Normalize,
    load_builtin_model,
    model_info,
)
from taxonomy.errors import AttackgenError

SEED = 0


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
                      for i in range(0, len(y), batch))
    return correct / len(y)


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, steps: int, step: float,
             gen: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted Linf PGD on cross-entropy from a uniform random start, inputs kept in [0, 1]."""
    start = (torch.rand(x.shape, generator=gen) * 2 - 1) * epsilon
    x_adv = (x + start).clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + step * grad.sign(), x - epsilon), x + epsilon)
        x_adv = x_adv.clamp(0.0, 1.0)
    return x_adv.detach()


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, steps: int = 100,
                    batch: int = 500) -> float:
    """Accuracy under PGD-``steps`` (step 2.5 * eps / steps, one random start, seeded)."""
    model.eval()
    gen = torch.Generator().manual_seed(SEED + 1)
    correct = 0
    for i in range(0, len(y), batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        x_adv = pgd_linf(model, xb, yb, epsilon, steps, 2.5 * epsilon / steps, gen)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / len(y)


def _training_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: AdversarialTraining | None,
                     epoch: int, gen: torch.Generator) -> torch.Tensor:
    """The batch itself, or its PGD examples at this epoch's (ramped) epsilon."""
    if adv is None:
        return x
    epsilon = adv.epsilon * min(1.0, (epoch + 1) / max(adv.ramp_epochs, 1))
    model.eval()
    x_adv = pgd_linf(model, x, y, epsilon, adv.steps, 2.5 * epsilon / adv.steps, gen)
    model.train()
    return x_adv


def describe_wrapper(info: ModelInfo) -> dict[str, object]:
    """models.json entry of a wrapper: what it wraps and its test accuracy (seeded for random ones)."""
    torch.manual_seed(SEED)
    test = load_builtin_data(info.data, split="test")
    return {
        "wraps": info.wraps,
        "data": info.data,
        "input_shape": list(info.input_shape),
        "test_size": len(test),
        "test_accuracy": round(accuracy(load_builtin_model(info.name), test.x, test.y), 4),
        "description": info.description,
    }


def train_one(info: ModelInfo) -> dict[str, object]:
    if info.wraps is not None:
        return describe_wrapper(info)
    torch.manual_seed(SEED)
    train = load_builtin_data(info.data, split="train")
    test = load_builtin_data(info.data, split="test")
    model = info.build()
    mean, std = float(train.x.mean()), float(train.x.std())
    norm = model.norm
    assert isinstance(norm, Normalize), "every built-in classifier starts with a Normalize layer"
    norm.mean.fill_(mean)
    norm.std.fill_(std)
    opt = torch.optim.Adam(model.parameters(), lr=info.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=info.epochs)
    gen = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for epoch in range(info.epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(order), info.batch_size):
            rows = order[i : i + info.batch_size]
            inputs = _training_inputs(model, train.x[rows], train.y[rows], info.adversarial, epoch, gen)
            loss = F.cross_entropy(model(inputs), train.y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(state, info.weights)
    digest = hashlib.sha256(info.weights.read_bytes()).hexdigest()[:16]
    entry: dict[str, object] = {
        "data": info.data,
        "input_shape": list(info.input_shape),
        "train_size": len(train),
        "test_size": len(test),
        "train_accuracy": round(accuracy(model, train.x, train.y), 4),
        "test_accuracy": round(accuracy(model, test.x, test.y), 4),
        "epochs": info.epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "normalization": {"mean": round(mean, 6), "std": round(std, 6)},
        "train_seconds": round(seconds, 1),
        "sha256_16": digest,
        "description": info.description,
    }
    if info.adversarial is not None:
        adv = info.adversarial
        entry["adversarial_training"] = {"norm": "inf", "epsilon": adv.epsilon, "steps": adv.steps,
                                         "step_size": round(adv.step_size, 6), "ramp_epochs": adv.ramp_epochs}
        entry["robust_accuracy"] = {
            "attack": f"PGD-100 Linf {adv.epsilon}, step {2.5 * adv.epsilon / 100:g}, one random start",
            "test_accuracy": round(robust_accuracy(model, test.x, test.y, adv.epsilon), 4),
        }
    return entry


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or [
        n for n in BUILTIN_MODELS if model_info(n).task == "classification"]
    dense = [n for n in names if model_info(n).task != "classification"]
    if dense:
        print(f"{', '.join(dense)}: dense models; retrain them with 'python -m attackgen.models.zoo.train_dense'")
        names = [n for n in names if n not in dense]
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    path = WEIGHTS_DIR / "models.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    for name in names:
        info = model_info(name)
        try:
            summary[name] = train_one(info)
        except AttackgenError as error:  # data not installed: keep the previous entry
            print(f"{name}: skipped ({error})")
            continue
        if info.wraps is not None:
            print(f"{name}: wraps {info.wraps}; test accuracy {summary[name]['test_accuracy']:.4f}")
            continue
        robust = summary[name].get("robust_accuracy")
        extra = f", robust accuracy {robust['test_accuracy']:.4f} ({robust['attack']})" if robust else ""
        print(f"{name}: test accuracy {summary[name]['test_accuracy']:.4f}{extra} "
              f"({summary[name]['train_seconds']} s, {info.weights.stat().st_size // 1024} KB)")
    path.write_text(json.dumps(dict(sorted(summary.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
