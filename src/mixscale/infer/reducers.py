"""Streaming statistics over ensemble members (or test-time augmentations, which are members too).

Memory is one running mean, one running sum of squared deviations and one running
mean entropy, whatever the number of members (Welford's algorithm): nothing grows
with the ensemble. The spread is the members' standard deviation with ``ddof=1``,
a property of the ensemble, not a standard error that shrinks as members are
added; identical members give a spread and a mutual information of exactly 0.

Examples
--------
>>> import torch
>>> r = MemberStatistics()
>>> for p in ([[0.8], [0.2]], [[0.6], [0.4]]):  # two members, (K=2, 1 pixel)
...     r.update(torch.tensor(p, dtype=torch.float64))
>>> r.mean[:, 0].round(decimals=6).tolist(), round(float(r.std()[0, 0]), 4)  # std of (0.8, 0.6), ddof=1
([0.7, 0.3], 0.1414)
"""

from __future__ import annotations

import torch


def entropy(probs: torch.Tensor, *, dim: int = 0) -> torch.Tensor:
    """``-sum_k p_k log p_k`` over ``dim`` (0 log 0 = 0), in nats."""
    p = probs.to(torch.float64) if probs.dtype not in (torch.float32, torch.float64) else probs
    return -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(dim)


class MemberStatistics:
    """Running mean, spread, predictive entropy and mutual information of member outputs.

    ``update(x)`` takes one member's output ``(K, *spatial)`` (class probabilities, or
    a regression output), or ``(B, K, *spatial)`` with ``class_dim=1``. Accumulation is
    in float64 unless ``dtype`` says otherwise.
    """

    def __init__(self, *, dtype: torch.dtype = torch.float64, class_dim: int = 0) -> None:
        self.dtype, self.count, self.class_dim = dtype, 0, class_dim
        self.mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None
        self._mean_entropy: torch.Tensor | None = None

    def update(self, x: torch.Tensor, *, probabilities: bool = True) -> None:
        """Add one member's ``(K, *spatial)`` output (``probabilities=False`` skips the entropy terms)."""
        x = x.to(self.dtype)
        self.count += 1
        if self.mean is None:
            self.mean, self._m2 = x.clone(), torch.zeros_like(x)
            self._mean_entropy = entropy(x, dim=self.class_dim) if probabilities else None
            return
        if x.shape != self.mean.shape:
            raise ValueError(f"member output of shape {tuple(x.shape)} differs from the first, "
                             f"{tuple(self.mean.shape)}")
        delta = x - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (x - self.mean)
        if self._mean_entropy is not None:
            self._mean_entropy += (entropy(x, dim=self.class_dim) - self._mean_entropy) / self.count

    def _need(self, what: str, members: int = 1) -> None:
        if self.count < members:
            raise ValueError(f"{what} needs at least {members} member(s), got {self.count}")

    def std(self) -> torch.Tensor:
        """Members' standard deviation per class and pixel (``ddof=1``; 0 for a single member)."""
        self._need("std")
        if self.count == 1:
            return torch.zeros_like(self.mean)
        return torch.sqrt(torch.clamp(self._m2 / (self.count - 1), min=0))

    def entropy(self) -> torch.Tensor:
        """Predictive entropy ``H(mean p)``, ``(*spatial)``: total uncertainty."""
        self._need("entropy")
        return entropy(self.mean, dim=self.class_dim)

    def mutual_information(self) -> torch.Tensor:
        """``H(mean p) - mean H(p_m)``, ``(*spatial)``: the members' disagreement (epistemic part), >= 0."""
        self._need("mutual_information")
        if self._mean_entropy is None:
            raise ValueError("mutual information needs probabilities (update(..., probabilities=True))")
        return torch.clamp(self.entropy() - self._mean_entropy, min=0)


def lower_bound_mask(mean: torch.Tensor, std: torch.Tensor, *, k: float = 1.0, threshold: float = 0.5) -> torch.Tensor:
    """Where each class is confidently present: ``mean - k * std > threshold``, ``(K, *spatial)`` bool.

    With ``std`` the members' spread (not a standard error), the rule means the same
    for 3 members as for 30 (DLSIA's fibre masks, defined so that it does).
    """
    return (mean - k * std) > threshold
