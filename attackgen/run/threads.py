"""How many CPU threads torch gets for a run, when the user does not say (--threads, OMP_NUM_THREADS).

A small model's forward pass is too short to split: a second thread mostly waits for the first, and on
a machine whose cores are busy the waiting costs far more than the work (a user's CNN took 14 min with
torch's default threads against 72 s with one, on a loaded 2-core machine). So the default is one
thread unless one forward pass of one input costs at least ``MACS_PER_THREAD`` multiply-accumulates,
and never more threads than the cores left idle by the machine's load. bench/bench_threads.py measured,
at load 11 on 2 cores, two threads slower than one for every model: 45x on the digits CNN (0.4 M MAC
per input), 2.1x at 155 M, 1.45x at 1.4 G; the threshold for an idle machine is not measured here.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

MACS_PER_THREAD = 100e6
"""Multiply-accumulates per input per thread (a second thread only on an idle core and above this)."""


def macs_per_input(model: nn.Module, shape: tuple[int, ...], device: torch.device | str = "cpu") -> float:
    """Multiply-accumulates of one forward pass of one input in the model's convolutions and linear layers."""
    total = [0.0]

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            return
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            kernel = 1
            for k in module.kernel_size:
                kernel *= k
            total[0] += output[0].numel() * kernel * module.in_channels / module.groups
        elif isinstance(module, nn.Linear):
            total[0] += output[0].numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear)]
    if not layers:  # nothing to count (an endpoint, ONNX Runtime, TorchScript): no probe call at all
        return 0.0
    hooks = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]


def idle_cores() -> int:
    """Cores this process may use minus the machine's one-minute load, at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, int(cores - load))


def default_threads(macs: float, idle: int) -> int:
    """One thread per ``MACS_PER_THREAD`` of work per input, at most the idle cores, at least one."""
    return max(1, min(idle, int(macs // MACS_PER_THREAD)))


def choose_threads(requested: int | None, model: nn.Module, shape: tuple[int, ...],
                   device: torch.device) -> tuple[int, str]:
    """Set torch's CPU threads for a run and say why: --threads, OMP_NUM_THREADS, else the default above."""
    if requested is not None:
        torch.set_num_threads(requested)
        return requested, "--threads"
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    try:
        macs = macs_per_input(model, shape, device)
    except Exception as error:  # a model the probe cannot run on one zero input: keep one thread
        macs, why = 0.0, f"cost unknown ({type(error).__name__})"
    else:
        why = f"{macs / 1e6:.1f} M multiply-accumulates per input"
    idle = idle_cores()
    threads = default_threads(macs, idle)
    torch.set_num_threads(threads)
    return threads, f"default: {why}, {idle} idle core(s); --threads N to change"
