"""Doctest collection of src/mixscale: modules of optional extras only when the extra is installed.

``--doctest-modules`` imports every module under ``src/mixscale``. A module that
needs an optional extra (a plugin, an exporter) cannot be imported without it, so
it is left out of the collection then, and the run's header says so.
"""

import importlib.util
from pathlib import Path

# path (relative to this file) -> the import names its extras provide (all needed)
OPTIONAL_EXTRAS = {
    "src/mixscale/napari": ("napari", "qtpy", "PyQt6"),  # the plugin's widgets import napari and Qt at the top
}

_missing = {path: ", ".join(n for n in names if importlib.util.find_spec(n) is None)
            for path, names in OPTIONAL_EXTRAS.items() if (Path(__file__).parent / path).exists()}
_missing = {path: names for path, names in _missing.items() if names}
collect_ignore = list(_missing)


def pytest_report_header(config):
    if _missing:
        return "doctests not collected (optional extra not installed): " + ", ".join(
            f"{path} (needs {name})" for path, name in _missing.items())
    return None
