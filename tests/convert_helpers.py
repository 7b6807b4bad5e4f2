"""Helpers for the spine-convert tests: small in-house exports made of phantoms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from dataset_conversion.phantom import GridSpec, Phantom, fov_for, make_phantom, typical_spine
from dataset_conversion.phantom_cli import write_case

SPACING = (4.0, 1.2, 1.2)  # coarse: the conversion tests are about labels and files, not measurement accuracy


def export_phantom(case_id: str, levels: Sequence[str] = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"),
                   orientation: str = "LPS", seed: int = 0, spacing: tuple[float, float, float] = SPACING) -> Phantom:
    """A phantom labelled the way exports usually are: 1 = the most cranial body, counting down."""
    spine = typical_spine(list(levels))
    grid = GridSpec(fov_for(spine, lateral_mm=24.0), spacing, orientation)
    values = {level: n for n, level in enumerate(levels, start=1)}
    return make_phantom(case_id, spine, grid, with_image=True, seed=seed, label_values=values)


def write_export(root: Path, phantoms: Sequence[Phantom]) -> dict[str, Path]:
    """Write each phantom as ``root/<case>/image.nii.gz, mask.nii.gz, levels.json``; returns case -> folder."""
    return {p.case_id: write_case(p, root) for p in phantoms}


def edit_levels(folder: Path, **changes) -> None:
    data = json.loads((folder / "levels.json").read_text())
    data.update(changes)
    (folder / "levels.json").write_text(json.dumps(data))


def level_voxels(folder: Path) -> dict[str, np.ndarray]:
    """Boolean voxel masks per level name of an exported case (from its own levels.json)."""
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "mask.nii.gz")))
    labels = json.loads((folder / "levels.json").read_text())["labels"]
    return {name: mask == int(value) for value, name in labels.items()}


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def nnunet_integrity_check(raw: Path, work: Path, dataset_id: int, processes: int = 1,
                           timeout: int = 600) -> subprocess.CompletedProcess:
    """Run nnU-Net's own ``nnUNetv2_plan_and_preprocess -d ID --verify_dataset_integrity --no_pp`` on a raw folder
    (preprocessed and results folders under ``work``); asserts it succeeded and reported the check done."""
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(work / "preprocessed"),
           "nnUNet_results": str(work / "results"), "nnUNet_def_n_proc": str(processes), "nnUNet_n_proc_DA": "1",
           "nnUNet_compile": "f"}
    command = [str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id),
               "--verify_dataset_integrity", "--no_pp", "-np", str(processes), "-npfp", str(processes)]
    done = subprocess.run(command, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verify_dataset_integrity Done" in done.stdout
    return done
