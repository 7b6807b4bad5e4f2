"""Write synthetic phantom cohorts to disk: one export-layout folder per case and the truth table (what
``spine-phantom`` writes; the geometry itself is :mod:`dataset_conversion.phantom`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .phantom import GridSpec, Phantom, SpineSpec, deform, fov_for, make_phantom, random_spine, typical_spine
from .phantom_spineps import spineps_masks


@dataclass(frozen=True)
class CohortSpec:
    """What ``spine-phantom`` draws: ``levels`` (cranial first), voxel spacing (mm: left-right, anterior-posterior,
    superior-inferior), file-axis orientation, grid rotation about left-right (deg), left-right field of view (mm),
    deformities ``(level, kind, height reduction)`` and slips ``(level, mm)`` applied to every case."""

    cases: int = 3
    seed: int = 0
    levels: tuple[str, ...] = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")
    spacing: tuple[float, float, float] = (3.0, 0.8, 0.8)
    orientation: str = "LPS"
    oblique_deg: float = 0.0
    lateral_fov_mm: float = 60.0
    typical: bool = False
    deformities: tuple[tuple[str, str, float], ...] = ()
    slips: tuple[tuple[str, float], ...] = ()
    deformity_probability: float = 0.15
    with_image: bool = True
    case_prefix: str = "phantom"
    spineps: bool = False
    """Also write SPINEPS-style ``seg-vert`` / ``seg-spine`` masks (:mod:`.phantom_spineps`)."""


def write_case(phantom: Phantom, out_dir: str | Path, compress: bool = True, spineps: bool = False) -> Path:
    """Write ``OUT/<case>/image.nii.gz``, ``mask.nii.gz`` and ``levels.json`` (the in-house export layout); with
    ``spineps`` also ``seg-vert.nii.gz`` and ``seg-spine.nii.gz``."""
    folder = Path(out_dir) / phantom.case_id
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(phantom.mask_image(), str(folder / "mask.nii.gz"), compress)
    if spineps:
        for name, array in zip(("seg-vert", "seg-spine"), spineps_masks(phantom), strict=True):
            sitk.WriteImage(phantom.image_like(array), str(folder / f"{name}.nii.gz"), compress)
    if phantom.image is not None:
        sitk.WriteImage(phantom.intensity_image(), str(folder / "image.nii.gz"), compress)
    levels = {str(value): level for level, value in sorted(phantom.label_values.items(), key=lambda kv: kv[1])
              if level in set(phantom.truth["level"])}
    meta = {"case_id": phantom.case_id, "labels": levels, "level_source": "synthetic phantom (spine-phantom)",
            "grid": {"spacing_mm": phantom.grid.spacing(), "orientation": phantom.grid.orientation,
                     "oblique_deg": phantom.grid.oblique_deg, "tilt_deg": phantom.grid.tilt_deg}}
    (folder / "levels.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def _cohort_spine(spec: CohortSpec, rng: np.random.Generator) -> SpineSpec:
    spine = typical_spine(spec.levels) if spec.typical else random_spine(rng, spec.levels, spec.deformity_probability)
    if not (spec.deformities or spec.slips):
        return spine
    vertebrae = list(spine.vertebrae)
    for i, v in enumerate(vertebrae):
        for level, kind, amount in spec.deformities:
            if v.level == level:
                v = deform(v, kind, amount)
        for level, amount in spec.slips:
            if v.level == level:
                v = replace(v, slip_mm=amount)
        vertebrae[i] = v
    return type(spine)(tuple(vertebrae), spine.disc_heights_mm, spine.centre_mm)


def write_cohort(out_dir: str | Path, spec: CohortSpec) -> pd.DataFrame:
    """Write ``spec.cases`` phantoms into ``out_dir`` (one folder per case), ``out_dir/truth.csv`` and, for the
    segments and spine tables, ``truth_segments.csv`` and ``truth_spine.csv``; returns the vertebra truth table
    (what a correct ``spine-measure`` reports, mm and degrees)."""
    rng = np.random.default_rng(spec.seed)
    out = Path(out_dir)
    truths, segments, spines = [], [], []
    for n in range(spec.cases):
        spine = _cohort_spine(spec, rng)
        grid = GridSpec(fov_for(spine, lateral_mm=spec.lateral_fov_mm), tuple(spec.spacing), spec.orientation,
                        spec.oblique_deg)
        phantom = make_phantom(f"{spec.case_prefix}_{n:03d}", spine, grid, with_image=spec.with_image,
                               seed=spec.seed * 1000 + n)
        write_case(phantom, out, spineps=spec.spineps)
        truths.append(phantom.truth)
        segments.append(phantom.segment_truth)
        spines.append(phantom.spine_truth)
    truth = pd.concat(truths, ignore_index=True)
    truth.to_csv(out / "truth.csv", index=False, float_format="%.4f")
    pd.concat(segments, ignore_index=True).to_csv(out / "truth_segments.csv", index=False, float_format="%.4f")
    pd.concat(spines, ignore_index=True).to_csv(out / "truth_spine.csv", index=False, float_format="%.4f")
    return truth


__all__ = ["CohortSpec", "write_case", "write_cohort"]
