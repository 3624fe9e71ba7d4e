"""Modules the PyTorch tests save by class path (importable, so that trusting them can work)."""

from __future__ import annotations

from typing import Any

import torch


class TwoLayer(torch.nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int = 2) -> None:
        super().__init__()
        self.n_in, self.hidden, self.n_out = n_in, hidden, n_out
        self.body = torch.nn.Linear(n_in, hidden)
        self.head = torch.nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))


class Tied(torch.nn.Module):
    """Encoder and decoder share one weight matrix."""

    def __init__(self, n: int = 5, k: int = 3) -> None:
        super().__init__()
        self.n, self.k = n, k
        self.enc = torch.nn.Linear(n, k, bias=False)
        self.dec = torch.nn.Linear(k, n, bias=False)
        self.dec.weight = torch.nn.Parameter(self.enc.weight.T)  # not tied: a transposed copy
        self.out = torch.nn.Linear(k, n, bias=False)
        self.out.weight = self.dec.weight  # tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.enc(x))


class Opaque(torch.nn.Module):
    """Its constructor argument is not kept as an attribute: cannot be rebuilt by class."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(5, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Transposed(torch.nn.Module):
    """A weight that is a transpose: dense but not row-major (strides (1, 8))."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 8).t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class TwoHeads(torch.nn.Module):
    """Two inputs, and a tuple of outputs of different shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(5, 3)
        self.b = torch.nn.Linear(2, 3)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.a(x) + self.b(z)
        return y, y.sum(1)


class Lookup(torch.nn.Module):
    """Takes a table of 5,000 numbers as a constructor argument (stored as an array)."""

    def __init__(self, table: Any) -> None:
        super().__init__()
        self.table = table
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)
