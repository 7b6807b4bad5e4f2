"""The one module that touches nnU-Net internals (nnunetv2 2.8.1 is pinned: these are the names we rely on).

``tests/test_compat.py`` checks every name used here, so an nnunetv2 upgrade fails there first.
"""

from __future__ import annotations

from pathlib import Path

NNUNET_VERSION = "2.8.1"


def nnunet_version() -> str:
    from importlib.metadata import version

    return version("nnunetv2")


def verify_raw_dataset(folder: str | Path, num_processes: int = 1) -> None:
    """Run nnU-Net's own ``verify_dataset_integrity`` on a raw dataset folder (what
    ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` runs); raises on any problem."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), num_processes=num_processes)
