"""Weighted sums of losses, and the loss registry used by configs and the CLI."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from .._checks import check_float
from .overlap import DiceLoss, TverskyLoss
from .pixelwise import CrossEntropyLoss, FocalLoss
from .regression import L1Loss, MSELoss

__all__ = ["CombinedLoss", "create_loss", "list_losses"]

_LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "l1": L1Loss,
    "mse": MSELoss,
}


class CombinedLoss(nn.Module):
    """Weighted sum of losses: ``sum(weight_i * loss_i(pred, target))``.

    Parameters
    ----------
    terms : sequence of (nn.Module, float)
        Loss modules with their weights (finite, >= 0). Keyword arguments given
        to :meth:`forward` (e.g. ``mask``) are passed on to every term.

    Examples
    --------
    >>> import torch
    >>> loss = CombinedLoss([(CrossEntropyLoss(), 1.0), (DiceLoss(), 0.5)])
    >>> float(loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))) > 0
    True
    """

    def __init__(self, terms: Sequence[tuple[nn.Module, float]]) -> None:
        super().__init__()
        if isinstance(terms, (str, bytes, Mapping)) or not isinstance(terms, Sequence):
            raise TypeError(
                "terms must be a sequence of (loss module, weight) pairs, "
                f"got {type(terms).__name__}"
            )
        if len(terms) == 0:
            raise ValueError("terms must hold at least one (loss module, weight) pair, got none")
        modules, weights = [], []
        for i, term in enumerate(terms):
            if not (isinstance(term, (tuple, list)) and len(term) == 2
                    and isinstance(term[0], nn.Module)):
                raise TypeError(f"terms[{i}] must be a (nn.Module, weight) pair, got {term!r}")
            modules.append(term[0])
            weights.append(check_float(f"terms[{i}][1]", term[1], minimum=0))  # the weight
        self.terms = nn.ModuleList(modules)
        self.weights = tuple(weights)

    def forward(self, pred: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        total = None
        for module, weight in zip(self.terms, self.weights):
            value = weight * module(pred, target, **kwargs)
            total = value if total is None else total + value
        return total

    def extra_repr(self) -> str:
        return f"weights={list(self.weights)}"


def list_losses() -> list[str]:
    """Names accepted by :func:`create_loss`."""
    return list(_LOSSES)


def _lookup(name: object) -> type[nn.Module]:
    if not isinstance(name, str) or name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(_LOSSES)}")
    return _LOSSES[name]


def _options(cls: type[nn.Module]) -> set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY}


def create_loss(spec: str | Mapping[str, float], **kwargs: Any) -> nn.Module:
    """Build a loss from a name, or a weighted combination from ``{name: weight}``.

    Parameters
    ----------
    spec : str or mapping of str to float
        One of :func:`list_losses` (``"ce"``, ``"dice"``, ``"focal"``, ``"tversky"``,
        ``"l1"``, ``"mse"``), or a mapping ``{name: weight}`` giving a
        :class:`CombinedLoss`.
    **kwargs
        Options of the loss classes. For a single name all must be accepted by
        that loss; for a mapping each term takes the options it accepts (e.g.
        ``ignore_index`` goes to the segmentation terms), and each option must be
        accepted by at least one term.

    Returns
    -------
    loss : nn.Module

    Examples
    --------
    >>> create_loss("dice", include_background=False)
    DiceLoss(ignore_index=-1, smooth=1e-05, include_background=False)
    >>> loss = create_loss({"ce": 1.0, "dice": 1.0}, ignore_index=255)
    >>> [term.ignore_index for term in loss.terms]
    [255, 255]
    """
    if isinstance(spec, str):
        cls = _lookup(spec)
        unknown = sorted(set(kwargs) - _options(cls))
        if unknown:
            raise TypeError(
                f"loss {spec!r} does not accept option(s) {unknown}; "
                f"it accepts: {sorted(_options(cls)) or 'no options'}"
            )
        return cls(**kwargs)
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"spec must be a loss name or a mapping {{name: weight}}, got {type(spec).__name__}"
        )
    if not spec:
        raise ValueError("spec mapping is empty; give at least one {name: weight} entry")
    classes = {name: _lookup(name) for name in spec}
    used = set().union(*(_options(cls) for cls in classes.values()))
    unknown = sorted(set(kwargs) - used)
    if unknown:
        raise TypeError(f"no loss in {list(spec)} accepts option(s) {unknown}")
    terms = []
    for name, cls in classes.items():
        weight = check_float(f"spec[{name!r}]", spec[name], minimum=0)  # the weight
        accepted = _options(cls)
        terms.append((cls(**{k: v for k, v in kwargs.items() if k in accepted}), weight))
    return CombinedLoss(terms)
