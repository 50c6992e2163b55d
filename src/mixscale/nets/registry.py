"""Build networks by name.

Every architecture derives from :class:`NetBase` and registers itself with
:func:`register_net`; :func:`create_net` builds one from its name and constructor
arguments, which is also how the model file rebuilds a network (name + JSON
arguments from :meth:`NetBase.config`, never pickled code).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import numpy as np
from torch import nn

_REGISTRY: dict[str, type[NetBase]] = {}


def json_ready(value: Any) -> Any:
    """A JSON-ready copy of a constructor argument (what :meth:`NetBase.config` stores).

    Tuples, lists and ranges become lists, dicts are copied, numpy scalars become
    Python numbers; everything else is returned as is.

    Examples
    --------
    >>> json_ready({"a": (1, 2), "b": range(2), "c": np.int64(3)})
    {'a': [1, 2], 'b': [0, 1], 'c': 3}
    """
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, range)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _bound_arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Arguments of one ``__init__(self, ...)`` call by name, defaults applied, ``**kwargs`` flattened."""
    bound = signature.bind(None, *args, **kwargs)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:  # without self
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def _recording_init(init: Callable) -> Callable:
    """Wrap a network's ``__init__`` so that the outermost call records its arguments, JSON-ready."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self).__init__ is __init__:  # a subclass's constructor records its own arguments
            self._init_arguments = json_ready(_bound_arguments(signature, args, kwargs))

    return __init__


class NetBase(nn.Module):
    """Base of every registered network: :meth:`config` and :attr:`halo`, written once.

    A subclass's constructor arguments (defaults applied, JSON-ready) are recorded
    on construction; :meth:`config` returns them, updated by
    :meth:`_config_overrides` where the network keeps a normalised value instead
    (a drawn spec or graph, a resolved default). Each network defines its own
    :attr:`receptive_field`.

    Examples
    --------
    >>> class Tiny(NetBase):
    ...     def __init__(self, size: int = 3, shape: tuple = (4, 4)) -> None:
    ...         super().__init__()
    ...         self.size = size
    ...     @property
    ...     def receptive_field(self) -> int:
    ...         return self.size
    >>> net = Tiny(size=5)
    >>> net.config(), net.halo
    ({'size': 5, 'shape': [4, 4]}, 2)
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__init__)

    @property
    def receptive_field(self) -> int:
        """Width in pixels of the region one output pixel depends on; each network defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define receptive_field")

    @property
    def halo(self) -> int:
        """Pixels of context needed on each side: ``(receptive_field - 1) // 2``."""
        return (self.receptive_field - 1) // 2

    @property
    def fixed_input_shape(self) -> tuple[int, ...] | None:
        """The one spatial shape the network takes, or None where any (large enough) size works."""
        return None

    def config(self) -> dict:
        """Constructor arguments, JSON-safe, every one of them (what the model file stores).

        Returns
        -------
        dict
            A fresh dict keyed by the constructor's parameter names, in signature order.
        """
        cfg = dict(self._init_arguments)
        overrides = self._config_overrides()
        unknown = sorted(set(overrides) - set(cfg))
        if unknown:
            raise KeyError(f"{type(self).__name__}._config_overrides returned non-arguments {unknown}")
        cfg.update(overrides)
        return json_ready(cfg)

    def _config_overrides(self) -> dict:
        """Normalised values that :meth:`config` stores instead of the recorded arguments (none here)."""
        return {}


def register_net(name: str) -> Callable[[type[NetBase]], type[NetBase]]:
    """Class decorator that makes a network (a :class:`NetBase` subclass) buildable by ``name``."""

    def wrap(cls: type[NetBase]) -> type[NetBase]:
        if not (isinstance(cls, type) and issubclass(cls, NetBase)):
            raise TypeError(f"network {name!r} must derive from mixscale.nets.registry.NetBase, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"network name {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def list_nets() -> list[str]:
    """Names accepted by :func:`create_net`, sorted."""
    return sorted(_REGISTRY)


def net_class(name: str) -> type[NetBase]:
    """The class registered under ``name``; ValueError listing known names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown network name={name!r}; known networks: {', '.join(list_nets())}")
    return _REGISTRY[name]


def net_defaults(name: str) -> dict[str, Any]:
    """Constructor defaults of network ``name`` (the single source of defaults)."""
    params = inspect.signature(net_class(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}


def create_net(name: str, **kwargs: Any) -> NetBase:
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
