"""Checks of a converted dataset that packages above this one provide (``spine-convert --verify``).

``dataset_conversion`` imports nothing from the packages built on it. A package that knows how to check a dataset
registers a function ``check(folder: Path, num_processes: int) -> None`` (raising on a problem) under the entry-point
group :data:`GROUP` in its packaging metadata; ``nnunet_ext`` registers nnU-Net's own integrity check there (what
``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` runs), see ``pyproject.toml``.
"""

from __future__ import annotations

from importlib.metadata import distributions
from pathlib import Path
from typing import Callable

GROUP = "spine_mri_toolkit.dataset_checks"


def dataset_checks() -> dict[str, Callable[..., None]]:
    """The installed checks by name (loaded: importing their package). Every installed distribution's metadata is
    read, not only the first of a name: a stale ``*.egg-info`` left in a source checkout (on ``sys.path`` when
    commands run from there) would otherwise hide the installed metadata."""
    found = {}
    for distribution in distributions():
        for entry in distribution.entry_points:
            if entry.group == GROUP:
                found.setdefault(entry.name, entry)
    return {name: found[name].load() for name in sorted(found)}


def run_dataset_checks(folder: str | Path, num_processes: int = 1) -> list[str]:
    """Run every installed check on a raw dataset folder; returns their names. Raises LookupError when none is
    installed and whatever a check raises on a problem."""
    checks = dataset_checks()
    if not checks:
        raise LookupError(f"no dataset check is installed (entry-point group {GROUP!r}; nnU-Net's comes with the "
                          "nnunet_ext package of this project)")
    for check in checks.values():
        check(Path(folder), num_processes=num_processes)
    return list(checks)
