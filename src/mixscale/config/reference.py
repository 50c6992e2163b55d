"""The config reference: every key of :class:`TrainConfig` as Markdown tables.

The tables are read from the schema itself (types, defaults, constraints, Literal
choices, nested sections, docstrings and field descriptions), plus the comments
written beside or above each field in ``schema.py``, which pydantic does not keep
and which are therefore read from the schema's source. ``docs/config.md`` is this
module's output, and a test checks that it still is. Regenerate it with::

    python -m mixscale.config.reference > docs/config.md

Examples
--------
>>> text = config_reference()
>>> "| max_epochs | int | `50` | >= 1 |" in text
True
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import re
import sys
import tokenize
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel

from . import load, schema
from .schema import TrainConfig

COMMAND = "python -m mixscale.config.reference > docs/config.md"

# What the docstrings cannot say: how train/ uses these sections (net arguments, optimiser, schedule).
_NOTES = {
    "net": ("Besides `name`, this section takes any constructor argument of the chosen network "
            "(for `msd`: `depth`, `width`, `dilations`, ...); unknown arguments are an error naming them; "
            "`spatial_dims`, `in_channels` and `out_channels` are taken from the data (given ones must agree), "
            "and other arguments left out take the constructor's defaults. The networks and their arguments: "
            "[networks.md](networks.md)."),
    "optim": "The optimiser. `momentum` is used by `sgd` only.",
    "schedule": ("The learning-rate schedule. `cosine` anneals to `min_lr` over `trainer.max_epochs`; `step` "
                 "multiplies by `gamma` every `step_size` epochs; `plateau` multiplies by `gamma` after `patience` "
                 "epochs without a lower `val_loss`, down to `min_lr`."),
}
_FIELD_NOTES = {
    ("TrainConfig", "version"): f"the config format; this mixscale reads version {schema.CONFIG_VERSION}",
    ("TrainConfig", "task"): "task 'detection' defaults to `net: {name: classifier}`",
    ("TrainConfig", "loss"): ("one loss name, or a weighted sum such as `{ce: 1.0, dice: 1.0}` "
                              "(`mixscale.losses.list_losses()` lists the names): for class tasks "
                              f"{', '.join(schema.CLASS_LOSSES)}; for image tasks {', '.join(schema.IMAGE_LOSSES)}. "
                              + inspect.cleandoc(TrainConfig.loss_spec.__doc__ or "")),
    ("DataConfig", "label_convention"): ("dense: classes 0..C-1, unlabelled pixels = `ignore_index`; scribble: "
                                         "0 = unlabelled, classes 1..K"),
}


def _model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation names, if it is one (a nested section)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """``(dotted key, model)`` for the model and every nested section, depth first in field order."""
    found = [(prefix, model)]
    for name, field in model.model_fields.items():
        sub = _model(field.annotation)
        if sub is not None:
            found += _sections(sub, f"{prefix}.{name}" if prefix else name)
    return found


def type_name(annotation: Any) -> str:
    """A short, YAML-minded name of a type annotation.

    Examples
    --------
    >>> type_name(Union[str, list[str], None])
    'str or list[str] or null'
    >>> type_name(tuple[float, float])
    '[float, float]'
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " or ".join(dict.fromkeys(type(a).__name__ for a in args))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return "{" + f"{type_name(args[0])}: {type_name(args[1])}" + "}"
    if _model(annotation) is not None:
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _value(value: Any) -> str:
    """A value as it may be written in the YAML file (JSON is valid YAML)."""
    if isinstance(value, tuple):
        value = list(value)
    return "`" + json.dumps(value) + "`"


def _default(field: Any, key: str) -> str:
    """The default of a field: a value, ``required``, or the section it opens."""
    if _model(field.annotation) is not None:
        return f"section `{key}`"
    if field.default_factory is not None:
        return _value(field.default_factory())
    if field.is_required():
        return "required"
    return _value(field.default)


def _literals(annotation: Any) -> list[Any]:
    """The Literal choices inside an annotation (also inside a Union)."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [c for a in typing.get_args(annotation) for c in _literals(a)]
    return []


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
           ("max_length", "length <="), ("multiple_of", "multiple of"))


def _allowed(field: Any) -> str:
    """Choices and constraints of a field, e.g. ``> 0 and < 1``."""
    choices = _literals(field.annotation)
    parts = [", ".join(_value(c) for c in choices)] if choices else []
    for meta in field.metadata:
        for attr, word in _BOUNDS:
            bound = getattr(meta, attr, None)
            if bound is not None:
                parts.append(f"{word} {bound}")
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            parts.append(f"pattern `{pattern}`")
    return " and ".join(parts)


def _comments() -> dict[tuple[str, str], str]:
    """``(class, field) -> comment`` from the comments beside and just above each field in ``schema.py``."""
    try:
        source = inspect.getsource(schema)
    except (OSError, TypeError):  # no source shipped: the tables simply lack the comments
        return {}
    lines = {tok.start[0]: tok.string.lstrip("#").strip()
             for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    text = source.splitlines()
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above, row = [], item.lineno - 1
            while row in lines and text[row - 1].lstrip().startswith("#"):
                above.insert(0, lines[row])
                row -= 1
            beside = [lines[r] for r in range(item.lineno, item.end_lineno + 1) if r in lines]
            if above or beside:
                found[(node.name, item.target.id)] = " ".join(above + beside)
    return found


def _markdown(text: str) -> str:
    """Docstring text as Markdown: ``code`` and :role:`name` become `name`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", inspect.cleandoc(text))
    return text.replace("``", "`")


def _join(parts: list[str]) -> str:
    """Non-empty, distinct parts as one text; a part not ending in a full stop is followed by a semicolon."""
    text = ""
    for part in dict.fromkeys(p for p in parts if p):
        text += (" " if text.endswith(".") else "; " if text else "") + part
    return text


def _cell(text: str) -> str:
    """Text that cannot break a Markdown table row."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(key: str, model: type[BaseModel], comments: dict[tuple[str, str], str]) -> list[str]:
    """The Markdown table of one section."""
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        sub_key = f"{key}.{name}" if key else name
        sub = _model(field.annotation)
        words = [field.description or "", comments.get((model.__name__, name), ""),
                 _FIELD_NOTES.get((model.__name__, name), "")]
        if sub is not None and not any(words):
            words = [re.split(r"(?<=\.)\s", _markdown(sub.__doc__ or _NOTES.get(sub_key, "")))[0]]
        description = _join(words)
        rows.append("| " + " | ".join(_cell(c) for c in (
            name, type_name(field.annotation), _default(field, sub_key), _allowed(field), description)) + " |")
    return rows


def _section(key: str, model: type[BaseModel], comments: dict[tuple[str, str], str]) -> list[str]:
    """Heading, docstring, notes and table of one section."""
    out = [f"## {'`' + key + '`' if key else 'Top level'}", ""]
    doc = _markdown(model.__doc__ or "")
    if doc:
        for part in doc.split("\n\n"):
            out += [" ".join(part.split()), ""]
    if key in _NOTES:
        out += [_NOTES[key], ""]
    if model.model_config.get("extra") == "allow":
        out += ["Keys other than those below are allowed (see above).", ""]
    return out + _table(key, model, comments) + [""]


def config_reference() -> str:
    """The Markdown reference of every training-config key.

    Returns
    -------
    str
        A generated-file header, then one section per config section (top level,
        ``data``, ``data.point_sampling``, ``data.augment``, ``net``, ``optim``,
        ``schedule``, ``trainer``), each with a table
        ``key | type | default | allowed | description``.

    Examples
    --------
    >>> config_reference().splitlines()[0]
    '# Training config reference'
    """
    comments = _comments()
    out = ["# Training config reference", "",
           f"Generated from `src/mixscale/config/schema.py`; do not edit by hand. Regenerate with `{COMMAND}`.", "",
           f"A config is a YAML file with `version: {schema.CONFIG_VERSION}`. Unknown keys and wrong types are "
           "errors that name the key; `mixscale train config.yaml --set trainer.max_epochs=5` overrides one key "
           "from the command line. Defaults are written as they may be written in the YAML file (`null`: none); "
           "`required` keys have no default. The file is UTF-8 text of at most "
           f"{load.MAX_CONFIG_BYTES // 2**20} MiB; a key given twice in one section is an error; anchors and "
           f"aliases may be used, up to {load.MAX_CONFIG_NODES} values once expanded.", ""]
    for key, model in _sections(TrainConfig):
        out += _section(key, model, comments)
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(config_reference())
