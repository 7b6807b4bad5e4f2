"""The package layering docs/architecture.md draws: measure at the base, dataset_conversion on it, nnunet_ext on
top; nnU-Net's internals only in nnunet_ext/compat.py and the trainer classes' base-class imports. Read from the
sources' import statements, so a new upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("measure", "dataset_conversion", "nnunet_ext")  # each may import only those before it
NNUNET_ALLOWED = {"nnunet_ext/compat.py", "nnunet_ext/training/trainers.py", "nnunet_ext/training/baselines.py"}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (relative imports resolved within its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(path.relative_to(ROOT).parts[0] if node.level else (node.module or "").split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_from_a_higher_package(package):
    higher = set(LAYERS[LAYERS.index(package) + 1:])
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & higher) for p in _sources(package)}
    assert not {k: v for k, v in offenders.items() if v}


def test_nnunet_internals_only_behind_compat():
    users = {str(p.relative_to(ROOT)) for package in (*LAYERS, "benchmarks", "scripts") for p in _sources(package)
             if "nnunetv2" in _imports(p)}
    assert users <= NNUNET_ALLOWED, sorted(users - NNUNET_ALLOWED)


def test_the_dataset_check_is_registered_not_imported():
    """spine-convert --verify finds nnU-Net's integrity check through the entry point nnunet_ext registers."""
    pytest.importorskip("nnunetv2")
    from dataset_conversion.checks import dataset_checks
    from nnunet_ext.compat import verify_raw_dataset

    assert dataset_checks().get("nnunet") is verify_raw_dataset
