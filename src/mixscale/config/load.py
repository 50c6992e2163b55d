"""Read a YAML config, apply ``--set a.b=c`` overrides, validate, name the bad key.

A config is read under bounds, so that no file can hang a run or exhaust its
memory: at most :data:`MAX_CONFIG_BYTES` of UTF-8 text, and at most
:data:`MAX_CONFIG_NODES` values once anchors and aliases are expanded (a
"billion laughs" document of nested aliases is refused before it is expanded).
A key given twice in one mapping is an error, where YAML loaders keep the last
one silently.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from .schema import TrainConfig

#: the largest config file read (a config is a few kilobytes)
MAX_CONFIG_BYTES = 1 << 20
#: the most values (scalars, lists, mappings) a document may hold with its aliases expanded
MAX_CONFIG_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(ValueError):
    """A config that does not validate; the message names every bad key."""


class _Refused(yaml.YAMLError):
    """A document the bounded loader refuses (the message says why, without the file name)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader (no tags, no code) that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _check_unique_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # '<<: *base' merges; explicit keys may override merged ones
            continue
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the safe constructor refuses it with its own message
            continue
        if first is not None:
            raise _Refused(f"duplicate key {key!r} at line {line} (first given at line {first}); "
                           "each key may appear once per section")
        seen[key] = line


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` holds with every alias expanded; stops past ``limit`` and at a cycle."""
    sizes: dict[int, int] = {}  # id(node) -> expanded size; shared (aliased) nodes are counted once here
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise _Refused("an alias refers to a node that contains it (a recursive alias); an alias must "
                          "not contain itself")
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        if total > limit:
            raise _Refused(f"the document expands to more than {limit} values through nested anchors and "
                           f"aliases; a config may hold at most {limit}")
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root)


def parse_yaml(text: str, *, limit: int = MAX_CONFIG_NODES) -> Any:
    """Parse one YAML document with the safe loader, bounded: at most ``limit`` values with aliases
    expanded, no recursive alias, no key twice in a mapping.

    Raises
    ------
    yaml.YAMLError
        For invalid YAML or a refused document (the message says why).

    Examples
    --------
    >>> parse_yaml("a: &x [1, 2]\\nb: *x")
    {'a': [1, 2], 'b': [1, 2]}
    """
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, limit)
        return loader.construct_document(node)
    except RecursionError:
        raise _Refused("the document is nested too deeply") from None
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], value)``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not allowed; expected key.sub=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part; expected key.sub=value")
    try:
        return parts, parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not allowed: {exc}") from None


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``raw`` with every ``key.sub=value`` override set."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return out


def _error_line(err: dict) -> str:
    """One pydantic error as ``key: reason (got value)``; a validator's own message stands alone."""
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        return f"{key}: {err['ctx']['error']}"  # the message names the key, the value and what is allowed
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def validate_config(raw: dict) -> TrainConfig:
    """Validate a plain dict; a :class:`ConfigError` names each bad key (one line for one error)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(raw).__name__}")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_error_line(err) for err in exc.errors()]
        if len(lines) == 1:
            raise ConfigError(f"invalid config: {lines[0]}") from None
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def read_config_text(path: str | Path) -> str:
    """The text of config file ``path``: at most :data:`MAX_CONFIG_BYTES` of UTF-8 (a BOM is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} has {size} bytes; a config may have at most {MAX_CONFIG_BYTES}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                          "a config must be a UTF-8 YAML file: save it as UTF-8") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read YAML ``path`` (safe loader: no tags, no code; bounded, see the module), apply overrides, validate."""
    path = Path(path)
    text = read_config_text(path)
    try:
        raw = parse_yaml(text)
    except _Refused as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level, got {type(raw).__name__}")
    return validate_config(apply_overrides(raw, overrides))


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML (what the run directory keeps)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
