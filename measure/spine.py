"""All vertebrae of one volume: per-vertebra measurements, distances to the caudal neighbour, Genant grades."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .grading import GenantResult, genant, ratio
from .io import SagittalVolume
from .levels import LabelMap, caudal_neighbour, is_sacral_level, level_rank
from .regions import LabelRegion, label_regions
from .vertebra import MethodParameters, VertebraMeasurement, measure_vertebra


@dataclass
class SpineMeasurement:
    """One vertebra's row-to-be: its own measurement plus the relations to its neighbours."""

    vertebra: VertebraMeasurement
    distance_to_level: str | None = None
    distances_mm: dict[str, float] = field(default_factory=lambda: {"anterior": math.nan, "posterior": math.nan})
    ratio_anterior_posterior: float = math.nan
    ratio_middle_posterior: float = math.nan
    genant: GenantResult | None = None


MAX_SPINE_TILT_DEG = 80.0
"""The local cranial direction of a lumbar spine lies within this angle of the image's superior axis (sacral slope
rarely exceeds 70 degrees); a neighbour direction beyond it comes from a mislabelled or stray label."""

MIN_NEIGHBOUR_SHARE = 0.1
"""A neighbour with fewer voxels than this share of a vertebra's sets no direction for it: a speck carrying the next
level's label (a prediction error) lies anywhere, and its centroid can tilt the axis by tens of degrees while staying
within :data:`MAX_SPINE_TILT_DEG`."""


def spine_axes(volume: SagittalVolume, ordered: list[LabelRegion]) -> list[np.ndarray | None]:
    """Local cranial direction of the spine at each vertebra (cranio-caudal order), from the centroids of its
    cranial and caudal neighbours in the mask; when that direction is implausible (more than
    :data:`MAX_SPINE_TILT_DEG` from superior, e.g. a stray island carrying a neighbour's label), the one-sided
    direction to a single neighbour, else None (the image's superior axis is then the prior). A neighbour under
    :data:`MIN_NEIGHBOUR_SHARE` of the vertebra's voxels is not used."""
    centroids = [region.centroid_index()[1:] * volume.spacing[1:] for region in ordered]  # (anterior, superior) mm
    counts = [region.voxel_count for region in ordered]
    min_cos = float(np.cos(np.radians(MAX_SPINE_TILT_DEG)))
    axes: list[np.ndarray | None] = []

    def usable(i: int, j: int) -> bool:
        return 0 <= j < len(centroids) and counts[j] >= MIN_NEIGHBOUR_SHARE * counts[i]

    for i, centre in enumerate(centroids):
        upper = centroids[i - 1] if usable(i, i - 1) else centre
        lower = centroids[i + 1] if usable(i, i + 1) else centre
        chosen = None
        for direction in (upper - lower, upper - centre, centre - lower):
            norm = float(np.linalg.norm(direction))
            if norm > 1e-6 and direction[1] / norm >= min_cos:  # component 1: superior
                chosen = direction / norm
                break
        axes.append(chosen)
    return axes


def planar_distance(volume: SagittalVolume, p: np.ndarray, q: np.ndarray) -> float:
    """Distance (mm) between two physical points projected onto the sagittal image plane."""
    d = np.asarray(p) - np.asarray(q)
    n = volume.slice_normal()
    return float(np.linalg.norm(d - (d @ n) * n))


def measure_spine(
    volume: SagittalVolume, label_map: LabelMap, params: MethodParameters, ignore_unmapped: bool = False
) -> list[SpineMeasurement]:
    """Measure every labelled vertebra of a canonical volume, in cranio-caudal order.

    Label values missing from the label map give a ``failed`` row (or are skipped with ``ignore_unmapped``).
    """
    mapped, unmapped = [], []
    for value, region in label_regions(volume.array).items():
        level = label_map.level(value)
        (mapped if level else unmapped).append((region, level))
    mapped.sort(key=lambda item: level_rank(item[1]))
    axes = spine_axes(volume, [region for region, _ in mapped])
    rows = [
        SpineMeasurement(measure_vertebra(volume, region, level, params, axis))
        for (region, level), axis in zip(mapped, axes, strict=True)
    ]
    for value in ([] if ignore_unmapped else [region.value for region, _ in unmapped]):
        vertebra = VertebraMeasurement(label=value, level=None, status="failed")
        vertebra.note(f"label {value} is not in the label map ({label_map.source})")
        rows.append(SpineMeasurement(vertebra))
    by_level = {row.vertebra.level: row for row in rows if row.vertebra.level}
    _add_distances(volume, by_level, params)
    _add_grades(by_level)
    for row in rows:
        _set_status(row)
    return rows


def _add_distances(volume: SagittalVolume, by_level: dict[str, SpineMeasurement], params: MethodParameters) -> None:
    present = set(by_level)
    low, high = params.plausible_distance_mm
    for level, row in by_level.items():
        upper = row.vertebra
        neighbour = caudal_neighbour(level, present)
        if neighbour.level is None:
            upper.note("no caudal neighbour in the mask: distances not defined")
            continue
        if neighbour.missing:
            upper.missing_neighbour = True
            upper.note(f"caudal neighbour {'/'.join(neighbour.missing)} missing from the mask: distances not measured")
            continue
        row.distance_to_level = neighbour.level
        lower = by_level[neighbour.level].vertebra
        for side in ("anterior", "posterior"):
            p, q = upper.anchors_mm.get((side, "inferior")), lower.anchors_mm.get((side, "superior"))
            if p is None or q is None or math.isnan(upper.heights_mm[side]) or math.isnan(lower.heights_mm[side]):
                upper.note(f"{side} distance to {neighbour.level} not measurable (anchor missing)")
                continue
            distance = planar_distance(volume, p, q)
            row.distances_mm[side] = distance
            if not low <= distance <= high:
                upper.implausible_value = True
                upper.note(f"implausible {side} distance {distance:.1f} mm (expected {low:g}-{high:g} mm)")


def _add_grades(by_level: dict[str, SpineMeasurement]) -> None:
    levels = sorted(by_level, key=level_rank)
    for i, level in enumerate(levels):
        row = by_level[level]
        h = row.vertebra.heights_mm
        row.ratio_anterior_posterior = ratio(h["anterior"], h["posterior"])
        row.ratio_middle_posterior = ratio(h["middle"], h["posterior"])
        if is_sacral_level(level):
            row.vertebra.note("Genant grading is not defined for sacral levels")
            continue
        neighbours = [
            by_level[other].vertebra.heights_mm["posterior"]
            for other in levels[max(0, i - 1) : i + 2]
            if other != level and not is_sacral_level(other) and abs(level_rank(other) - level_rank(level)) <= 2
            and _grade_refusal(by_level[other].vertebra) is None  # a fragment's height is no reference for crush
        ]
        row.genant = genant(h["anterior"], h["middle"], h["posterior"], neighbours)
        refusal = _grade_refusal(row.vertebra)
        if refusal and row.genant.grade is not None:
            row.genant = replace(row.genant, grade=None, deformity_type=None, reason=refusal)
        if row.genant.reason and row.genant.grade is None:
            row.vertebra.note(f"Genant grade: {row.genant.reason}")


def _grade_refusal(v: VertebraMeasurement) -> str | None:
    """Why a vertebra's height ratios must not be read as a Genant grade, or None: a body that may continue outside
    the image, or one whose heights are outside what a body can be (a fragment of a body, not a fracture)."""
    if v.at_inplane_border:
        return "not graded at the border of the field of view (the body may continue outside it)"
    if v.implausible_height:
        return "not graded: a height outside the plausible range (the mask is not a whole body)"
    return None


def _set_status(row: SpineMeasurement) -> None:
    v = row.vertebra
    if v.status == "failed":
        return
    heights = list(v.heights_mm.values())
    if all(math.isnan(h) for h in heights):
        v.status = "failed"
        return
    flagged = v.touches_fov_border or v.several_components or v.implausible_value or v.missing_neighbour
    if flagged or any(math.isnan(h) for h in heights):
        v.status = "warning"
    if v.touches_fov_border:
        v.note("body touches the border of the field of view or comes within the margin of an in-plane border")
