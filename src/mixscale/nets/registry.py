"""Build networks by name.

Every architecture registers itself with :func:`register_net`; :func:`create_net`
builds one from its name and constructor arguments, which is also how the model
file rebuilds a network (name + JSON arguments, never pickled code).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_net(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that makes a network buildable by ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"network name {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def list_nets() -> list[str]:
    """Names accepted by :func:`create_net`, sorted."""
    return sorted(_REGISTRY)


def net_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``; ValueError listing known names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown network name={name!r}; known networks: {', '.join(list_nets())}")
    return _REGISTRY[name]


def net_defaults(name: str) -> dict[str, Any]:
    """Constructor defaults of network ``name`` (the single source of defaults)."""
    params = inspect.signature(net_class(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}


def create_net(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with constructor ``kwargs``.

    Parameters
    ----------
    name : str
        One of :func:`list_nets`.
    **kwargs
        Constructor arguments; an unknown one raises ``ValueError`` naming it.

    Examples
    --------
    >>> net = create_net("msd", depth=10, in_channels=1, out_channels=2)
    >>> net.config()["depth"]
    10
    """
    cls = net_class(name)
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for network {name!r}; allowed: {', '.join(allowed)}")
    return cls(**kwargs)
