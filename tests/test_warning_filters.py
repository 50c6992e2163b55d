"""The test run's warning policy: a warning from mixscale fails a test that does not expect it."""

import ast
import importlib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _warning_classes_defined_in_mixscale() -> set[type]:
    """Every Warning subclass a mixscale module defines (found by reading the source, then imported)."""
    found = set()
    for path in (ROOT / "src" / "mixscale").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = [node.name for node in tree.body if isinstance(node, ast.ClassDef)
                 and any("Warning" in ast.unparse(base) for base in node.bases)]
        if names:
            parts = path.relative_to(ROOT / "src").with_suffix("").parts
            module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            found.update(getattr(module, name) for name in names)
    return {cls for cls in found if issubclass(cls, Warning)}


def test_every_mixscale_warning_category_is_an_error_in_the_test_run(pytestconfig):
    errors = set()
    for entry in pytestconfig.getini("filterwarnings"):  # pyproject.toml's, as this run reads them
        action, _, category, *_ = (entry.split(":") + [""] * 4)[:5]
        if action == "error" and category.startswith("mixscale."):
            module, _, name = category.rpartition(".")
            errors.add(getattr(importlib.import_module(module), name))
    defined = _warning_classes_defined_in_mixscale()
    assert defined, "no mixscale warning class found: the source scan is broken"
    missing = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in defined - errors)
    assert not missing, f"add 'error::<public path>' for {missing} to filterwarnings in pyproject.toml"


def test_warnings_from_mixscale_fail_and_others_do_not():
    from mixscale.data import LabelConventionWarning

    with pytest.raises(UserWarning, match="from a mixscale module"):
        warnings.warn_explicit("from a mixscale module", UserWarning, "x.py", 1, module="mixscale.data.labels")
    with pytest.raises(LabelConventionWarning):  # its category is mixscale's, wherever it is issued
        warnings.warn_explicit("a mixscale category", LabelConventionWarning, "x.py", 1, module="user_code")
    with warnings.catch_warnings(record=True) as record:  # the run's filters stay in force: shown, not raised
        warnings.warn_explicit("not mixscale", UserWarning, "x.py", 1, module="mixscaled_other_package")
    assert [str(w.message) for w in record] == ["not mixscale"]
