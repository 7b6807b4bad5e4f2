"""Measurement records -> one tidy table: one row per (case, vertebra), one column per quantity with its unit."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .io import SagittalVolume
from .runtime import tool_version
from .spine import SpineMeasurement
from .vertebra import ENDS, POSITIONS

ANCHOR_COLUMNS = [f"anchor_{p}_{e}_{axis}_mm" for p in POSITIONS for e in ENDS for axis in "xyz"]

# Column -> description (units in the names; anchors are physical LPS coordinates of the file).
COLUMNS: dict[str, str] = {
    "case_id": "case identifier (file name without extension, see --case-id)",
    "level": "vertebral level name (empty if the label is not in the label map)",
    "label": "label value in the mask",
    "status": "ok | warning (measured, see message/qc_* columns) | failed (vertebra not measurable) | "
              "error (file not measurable)",
    "message": "reasons for NaN values and warnings, '; '-separated",
    "slice_index": "index of the measured sagittal slice along the file's own left-right axis",
    "height_anterior_mm": "anterior vertebral body height",
    "height_middle_mm": "middle vertebral body height",
    "height_posterior_mm": "posterior vertebral body height",
    "depth_mm": "anterior-posterior depth between the walls, along the endplate bisector",
    "rotation_deg": "angle of the endplate bisector to the anterior axis, positive when the anterior end is cranial",
    "distance_to_level": "the caudal neighbour the distances are measured to",
    "distance_anterior_mm": "anterior inferior anchor to the neighbour's anterior superior anchor (sagittal plane)",
    "distance_posterior_mm": "posterior inferior anchor to the neighbour's posterior superior anchor (sagittal plane)",
    "ratio_anterior_posterior": "height_anterior_mm / height_posterior_mm",
    "ratio_middle_posterior": "height_middle_mm / height_posterior_mm",
    "height_reduction_wedge": "1 - Ha/Hp (fraction, 0 if Ha >= Hp)",
    "height_reduction_biconcave": "1 - Hm/Hp (fraction, 0 if Hm >= Hp)",
    "height_reduction_crush": "1 - Hp / mean Hp of the adjacent non-sacral vertebrae (fraction)",
    "genant_grade": "Genant grade 0-3 (largest reduction: <20%, 20-25%, 25-40%, >40%); empty if not computable",
    "deformity_type": "none | wedge | biconcave | crush (the kind with the largest reduction)",
    "qc_touches_fov_border": "the body touches the border of the field of view, or comes within fov_margin_mm of an "
                             "in-plane border (no Genant grade then; on the lateral slab edge it keeps its grade)",
    "qc_several_components": "the label has several large 3D parts (measured on the largest)",
    "qc_missing_neighbour": "an expected caudal neighbour level is absent from the mask",
    "qc_implausible_value": "a height, distance or rotation outside the plausible range",
    "section_area_mm2": "area of the measured sagittal section",
    "voxel_count": "voxels carrying this label",
    "volume_ml": "volume of the body's largest 3D part (voxel count x voxel volume)",
    **{c: "anchor point, physical coordinate (file frame, LPS)" for c in ANCHOR_COLUMNS},
    "pixel_spacing_ap_mm": "in-plane spacing along anterior-posterior",
    "pixel_spacing_si_mm": "in-plane spacing along superior-inferior",
    "slice_thickness_mm": "spacing between sagittal slices",
    "source_file": "the mask file measured",
    "tool_version": "spine-mri-toolkit version",
}


PROVENANCE_COLUMNS = ("pixel_spacing_ap_mm", "pixel_spacing_si_mm", "slice_thickness_mm", "source_file",
                      "tool_version")


def provenance(volume: SagittalVolume) -> dict:
    """The provenance columns of a measured volume (spacing of the canonical frame, source file, version)."""
    return {"pixel_spacing_ap_mm": float(volume.spacing[1]), "pixel_spacing_si_mm": float(volume.spacing[2]),
            "slice_thickness_mm": float(volume.spacing[0]), "source_file": volume.source,
            "tool_version": tool_version()}


def with_volume_warnings(volume: SagittalVolume, status: str, messages: list[str], notes: bool = False
                         ) -> tuple[str, str]:
    """A row's status and message with the volume's warnings (what makes every measurement of it less reliable)
    added: ``ok`` becomes ``warning``; the message is the volume's notes (with ``notes``), its warnings, then
    ``messages``, '; '-separated."""
    status = "warning" if volume.warnings and status == "ok" else status
    return status, "; ".join([*(volume.notes if notes else []), *volume.warnings, *messages])


def _empty_row(case_id: str, source: str) -> dict:
    row = dict.fromkeys(COLUMNS, math.nan)
    row.update(case_id=case_id, level="", label=pd.NA, status="error", message="", slice_index=pd.NA,
               distance_to_level="", genant_grade=pd.NA, deformity_type="", source_file=source,
               tool_version=tool_version(), voxel_count=pd.NA)
    for flag in ("qc_touches_fov_border", "qc_several_components", "qc_missing_neighbour", "qc_implausible_value"):
        row[flag] = pd.NA
    return row


def error_row(case_id: str, source: str, message: str) -> dict:
    """The single row of a file that could not be measured at all."""
    row = _empty_row(case_id, source)
    row["message"] = message
    return row


def rows_for_case(case_id: str, volume: SagittalVolume, measurements: Sequence[SpineMeasurement]) -> list[dict]:
    """Table rows of one measured volume."""
    rows = []
    for m in measurements:
        v = m.vertebra
        row = _empty_row(case_id, volume.source)
        status, message = with_volume_warnings(volume, v.status, v.messages, notes=True)
        row.update(
            provenance(volume), status=status, message=message, level=v.level or "", label=v.label,
            slice_index=v.slice_index if v.slice_index is not None else pd.NA,
            height_anterior_mm=v.heights_mm["anterior"], height_middle_mm=v.heights_mm["middle"],
            height_posterior_mm=v.heights_mm["posterior"], depth_mm=v.depth_mm, rotation_deg=v.rotation_deg,
            distance_to_level=m.distance_to_level or "", distance_anterior_mm=m.distances_mm["anterior"],
            distance_posterior_mm=m.distances_mm["posterior"], ratio_anterior_posterior=m.ratio_anterior_posterior,
            ratio_middle_posterior=m.ratio_middle_posterior,
            qc_touches_fov_border=v.touches_fov_border, qc_several_components=v.several_components,
            qc_missing_neighbour=v.missing_neighbour, qc_implausible_value=v.implausible_value,
            section_area_mm2=v.section_area_mm2, voxel_count=v.voxel_count, volume_ml=v.volume_ml,
        )
        if m.genant is not None:
            row.update(height_reduction_wedge=m.genant.reduction_wedge,
                       height_reduction_biconcave=m.genant.reduction_biconcave,
                       height_reduction_crush=m.genant.reduction_crush,
                       genant_grade=m.genant.grade if m.genant.grade is not None else pd.NA,
                       deformity_type=m.genant.deformity_type or "")
        for (position, end), point in v.anchors_mm.items():
            if math.isfinite(v.heights_mm[position]):
                for axis, value in zip("xyz", np.asarray(point, dtype=float), strict=False):
                    row[f"anchor_{position}_{end}_{axis}_mm"] = float(value)
        rows.append(row)
    return rows


def to_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with the fixed column order and nullable integer / boolean types."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    for column in ("label", "slice_index", "genant_grade", "voxel_count"):
        frame[column] = frame[column].astype("Int64")
    for column in ("qc_touches_fov_border", "qc_several_components", "qc_missing_neighbour", "qc_implausible_value"):
        frame[column] = frame[column].astype("boolean")
    return frame
