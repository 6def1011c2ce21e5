"""lifelong.SGD steps exactly as torch.optim.SGD, and builds without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lifelong import SGD


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_is_bit_identical_to_torch_sgd(momentum: float) -> None:
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    frozen = torch.randn(2, requires_grad=True)  # never gets a gradient: skipped by both
    mine = SGD([*ours, frozen], lr=0.1, momentum=momentum)
    reference = torch.optim.SGD([*theirs, frozen], lr=0.1, momentum=momentum)
    x = torch.randn(4, 5)
    for _ in range(5):
        for params, optimizer in ((ours, mine), (theirs, reference)):
            optimizer.zero_grad()
            ((x @ params[0] + params[1]).tanh().pow(2).sum()).backward()
            optimizer.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_zero_grad_keeps_or_drops_the_gradients() -> None:
    p = torch.ones(2, requires_grad=True)
    optimizer = SGD([p], lr=1.0)
    p.sum().backward()
    optimizer.zero_grad(set_to_none=False)
    assert p.grad is not None and torch.equal(p.grad, torch.zeros(2))
    optimizer.zero_grad()
    assert p.grad is None


def test_a_naive_run_does_not_import_torch_dynamo() -> None:
    """torch.optim's first optimiser imports torch._dynamo, seconds of a short process."""
    code = (
        "import sys, lifelong\n"
        "lifelong.run('split-mnist', 'er', seed=0, device='cpu', "
        "settings={'n_tasks': 2, 'eval_every': 0})\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
