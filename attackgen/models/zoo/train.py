"""Retrain the built-in models deterministically and write weights/ and weights/models.json.

    python -m attackgen.models.zoo.train [NAME ...]

Without names every model whose data is present is trained. Seeded (torch and the shuffling), CPU,
two threads: the same machine gives the same weights.
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
from attackgen.models.zoo.models import BUILTIN_MODELS, WEIGHTS_DIR, ModelInfo, Normalize, model_info
from taxonomy.errors import AttackgenError

SEED = 0


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
                      for i in range(0, len(y), batch))
    return correct / len(y)


def train_one(info: ModelInfo) -> dict[str, object]:
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
    for _ in range(info.epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(order), info.batch_size):
            rows = order[i : i + info.batch_size]
            loss = F.cross_entropy(model(train.x[rows]), train.y[rows])
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
    return {
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
        print(f"{name}: test accuracy {summary[name]['test_accuracy']:.4f} "
              f"({summary[name]['train_seconds']} s, {info.weights.stat().st_size // 1024} KB)")
    path.write_text(json.dumps(dict(sorted(summary.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
