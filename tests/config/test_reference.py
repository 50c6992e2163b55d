"""The config reference: docs/config.md is the generator's output and covers every key."""

from pathlib import Path

import pytest
import yaml

from mixscale.config import TrainConfig
from mixscale.config.reference import COMMAND, config_reference, type_name

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def _sections(text):
    """``{section key: {field: [type, default, allowed, description]}}`` parsed back from the Markdown."""
    found, key = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            key = "" if line == "## Top level" else line[3:].strip("`")
            found[key] = {}
        elif key is not None and line.startswith("| ") and not line.startswith("| key |"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            found[key][cells[0]] = cells[1:]
    return found


def _walk(model, prefix=""):
    yield prefix, model
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields"):
            yield from _walk(field.annotation, f"{prefix}.{name}" if prefix else name)


def test_doc_is_the_generated_reference():
    assert DOC.read_text(encoding="utf-8") == config_reference(), f"docs/config.md is stale: run {COMMAND}"


def test_every_field_of_every_section_appears():
    tables = _sections(config_reference())
    expected = dict(_walk(TrainConfig))
    assert set(tables) == set(expected)
    assert set(expected) >= {"", "data", "data.point_sampling", "data.augment", "net", "optim", "schedule", "trainer"}
    for key, model in expected.items():
        assert list(tables[key]) == list(model.model_fields), key


@pytest.mark.parametrize("section, key, value", [
    ("trainer", "max_epochs", 50), ("optim", "lr", 0.001), ("trainer", "devices", 1),
    ("data", "patch_shape", [128, 128]), ("data.augment", "intensity_scale", [0.9, 1.1]),
    ("trainer", "max_time", None), ("", "task", "segmentation"),
])
def test_defaults_shown_are_the_schema_defaults(section, key, value):
    default = _sections(config_reference())[section][key][1]
    assert yaml.safe_load(default.strip("`")) == value


def test_required_keys_constraints_and_choices():
    tables = _sections(config_reference())
    assert tables[""]["run_dir"][1] == "required" and tables["data"]["train_images"][1] == "required"
    assert tables["data"]["val_fraction"][2] == "> 0 and < 1"
    assert tables["optim"]["name"][2] == '`"adam"`, `"adamw"`, `"sgd"`'
    assert "pattern" in tables["trainer"]["max_time"][2] and "DD:HH:MM:SS" in tables["trainer"]["max_time"][3]
    assert "DDP" in tables["trainer"]["devices"][3]  # the comment beside the field in schema.py


def test_net_section_says_it_takes_constructor_arguments():
    text = config_reference()
    net = text[text.index("## `net`"):text.index("## `optim`")]
    assert "any constructor argument" in net and "networks.md" in net


def test_type_names():
    assert type_name(int | None) == "int or null"
    assert type_name(dict[str, float]) == "{str: float}"
