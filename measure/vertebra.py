"""One vertebra of a canonical volume -> its measurement (heights, rotation, anchor points), NaN plus reasons."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from .geometry import (
    GeometryError,
    LineSampler,
    Section,
    Trapezoid,
    bounding_trapezoid,
    median,
    robust_slope,
    section_from_slice,
)
from .io import SagittalVolume, foreground_box
from .levels import is_sacral_level
from .regions import LabelRegion

POSITIONS = ("anterior", "middle", "posterior")
ENDS = ("superior", "inferior")
_LPS_ANTERIOR = np.array([0.0, -1.0, 0.0])
_LPS_SUPERIOR = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class MethodParameters:
    """Parameters of the measurement method (recorded in the CSV sidecar)."""

    inset_fraction: float = 0.10
    """Height lines lie this fraction of the body depth inside the anterior and posterior walls."""
    slice_selection: str = "largest"
    """``largest``: sagittal slice with the largest area, where slices within ``slice_area_tolerance`` of it count as
    tied and the one nearest the body's left-right centroid wins; ``centroid``: the slice through the centroid."""
    slice_area_tolerance: float = 0.10
    smoothing_sigma_px: float = 1.0
    """Gaussian smoothing of the binary section before sub-pixel sampling (pixels)."""
    wall_band_fraction: float = 0.25
    """Walls are found on five lines parallel to the endplates within +-this fraction of the central height."""
    endplate_fit_fraction: float = 0.9
    """Central share of the body depth whose endplate profiles give the endplate directions (robust line fit)."""
    island_fraction: float = 0.05
    """3D components smaller than this share of a label's voxels are stray islands (ignored, noted)."""
    max_obliquity_deg: float = 25.0
    resample_oblique: bool = False
    plausible_height_mm: tuple[float, float] = (8.0, 60.0)
    plausible_distance_mm: tuple[float, float] = (0.0, 30.0)
    plausible_rotation_deg: float = 60.0
    fov_margin_mm: float = 3.0
    """A body that comes this close to an in-plane image border (anterior, posterior, superior, inferior; laterally
    only on the border itself) counts as touching the field of view's border (``qc_touches_fov_border``); near an
    in-plane border it gets no Genant grade: there a segmentation often stops a few voxels short of a body that
    continues outside the image, and the part in view then reads as a wedge (docs/measurements.md, "Field of view").
    A body on the lateral slab edge keeps its grade (its measured sagittal section is whole)."""
    max_body_depth_mm: float = 65.0
    """A section deeper than this, or a largest part longer than this from front to back, is not a vertebral body
    (lumbar bodies are 25-50 mm deep, a whole vertebra with its arch and spinous process 70-100 mm): the vertebra is
    refused (``failed``) with the reason. The second test (not for the sacrum, whose tilt alone can exceed it)
    catches whole vertebrae whose spinal canal separates the arch from the body in the measured section."""


@dataclass
class VertebraMeasurement:
    """Everything measured on one vertebra; lengths in mm, angles in degrees, NaN where not computable."""

    label: int
    level: str | None
    status: str = "ok"
    messages: list[str] = field(default_factory=list)
    slice_index: int | None = None  # index along the file's own sagittal axis
    canonical_slice: int | None = None
    heights_mm: dict[str, float] = field(default_factory=lambda: dict.fromkeys(POSITIONS, math.nan))
    rotation_deg: float = math.nan
    depth_mm: float = math.nan
    section_area_mm2: float = math.nan
    voxel_count: int = 0
    volume_ml: float = math.nan
    """Volume of the body's largest 3D part (the one measured)."""
    anchors_2d: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # in-plane mm (anterior, superior)
    anchors_mm: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # physical LPS mm
    trapezoid: Trapezoid | None = None
    contour_2d: np.ndarray | None = None  # outline of the measured section, in-plane mm
    wall_lines_2d: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Posterior and anterior wall near each endplate: (a point, unit direction pointing superior), in-plane mm
    (:func:`wall_lines`)."""
    touches_fov_border: bool = False
    several_components: bool = False
    implausible_value: bool = False
    implausible_height: bool = False  # a height outside the plausible range: the mask is not a whole body
    at_inplane_border: bool = False  # on or within fov_margin_mm of an in-plane border: the body may continue there
    missing_neighbour: bool = False

    def note(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)


def choose_slice(mask: np.ndarray, mode: str, tolerance: float = 0.0) -> int:
    """Sagittal slice (axis 0) to measure: the largest area (slices within ``tolerance`` of it tie; the tie goes to
    the slice nearest the centroid) or the centroid slice."""
    areas = mask.sum(axis=(1, 2))
    centroid = float(np.dot(np.arange(len(areas)), areas) / areas.sum())
    if mode == "centroid":
        return int(np.clip(round(centroid), 0, len(areas) - 1))
    if mode != "largest":
        raise ValueError(f"unknown slice selection {mode!r} (largest, centroid)")
    best = np.nonzero(areas >= (1 - tolerance) * areas.max())[0]
    return int(best[np.argmin(np.abs(best - centroid))])


def largest_component_2d(slice_mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Largest 8-connected component of a 2D mask and the number of components."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(slice_mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return slice_mask, count - 1
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest, count - 1


def to_patient_angle(volume: SagittalVolume, axis_2d: np.ndarray) -> float:
    """Angle (deg) of an in-plane direction to the patient's anterior axis, positive toward superior."""
    vector = volume.direction[:, 1] * axis_2d[0] + volume.direction[:, 2] * axis_2d[1]
    return float(np.degrees(np.arctan2(vector @ _LPS_SUPERIOR, vector @ _LPS_ANTERIOR)))


def measure_section(
    section: Section, params: MethodParameters, spine_axis: np.ndarray | None = None, reference: str = "bisector"
) -> dict:
    """Heights and anchor points of one 2D section (in-plane mm); see docs/measurements.md for the definition.

    ``spine_axis``: in-plane unit vector pointing cranially along the spine at this vertebra (from its neighbours);
    it tells the endplates from the walls when a body is tilted by about 45 degrees. ``reference``: ``bisector`` of
    the endplates or ``superior`` endplate (sacral levels).
    """
    sampler = LineSampler(section, params.smoothing_sigma_px)
    trapezoid = bounding_trapezoid(section, sampler, spine_axis, reference, params.endplate_fit_fraction)
    axis, normal = trapezoid.axis, trapezoid.normal
    hull = section.hull_mm
    margin = 2 * max(section.spacing)

    def reach(origin: np.ndarray, direction: np.ndarray) -> float:
        """How far lines through ``origin`` (or shifted perpendicular to ``direction``) can meet the body."""
        return float(np.abs((hull - origin) @ direction).max()) + margin

    centre = section.centroid_mm()
    vertical = sampler.extent(centre, normal, reach(centre, normal))
    if vertical is None:
        raise GeometryError("the line through the centroid misses the body (strongly concave section)")
    mid = centre + 0.5 * (vertical[0] + vertical[1]) * normal
    central_height = vertical[1] - vertical[0]
    offsets = np.linspace(-params.wall_band_fraction, params.wall_band_fraction, 5) * central_height
    spans = sampler.extents(mid + offsets[:, None] * normal, axis, reach(mid, axis))
    spans = spans[np.isfinite(spans[:, 0])]
    if not len(spans):
        raise GeometryError("no wall found on the lines through the body's centre")
    a_posterior, a_anterior = median(spans[:, 0]), median(spans[:, 1])
    depth = a_anterior - a_posterior
    inset = params.inset_fraction * depth
    positions = {
        "anterior": a_anterior - inset,
        "middle": 0.5 * (a_anterior + a_posterior),
        "posterior": a_posterior + inset,
    }
    heights, anchors, truncated = {}, {}, []
    starts = mid + np.array(list(positions.values()))[:, None] * axis
    for name, start, span in zip(positions, starts, sampler.extents(starts, normal, reach(mid, normal)), strict=True):
        if np.isnan(span[0]):
            heights[name] = math.nan
            continue
        inferior, superior = start + span[0] * normal, start + span[1] * normal
        anchors[(name, "superior")], anchors[(name, "inferior")] = superior, inferior
        cut = [end for end, p in (("superior", superior), ("inferior", inferior)) if sampler.on_fov_edge(p)]
        if cut:
            truncated.append(f"{name} {'/'.join(cut)}")
            heights[name] = math.nan
        else:
            heights[name] = span[1] - span[0]
    return {"trapezoid": trapezoid, "heights": heights, "anchors": anchors, "depth": depth, "truncated": truncated,
            "centre": mid, "walls": (a_posterior, a_anterior), "wall_offsets": list(offsets),
            "wall_lines": wall_lines(sampler, mid, axis, normal, central_height, reach(mid, axis),
                                     min(section.spacing))}


WALL_LINE_FRACTIONS = (0.05, 0.38)
"""The walls are sampled between these fractions of the central height from the body's centre, towards each
endplate (clear of rounded corners)."""


def wall_lines(sampler: LineSampler, mid: np.ndarray, axis: np.ndarray, normal: np.ndarray, central_height: float,
               reach: float, pixel: float) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """The posterior and anterior walls near the superior and inferior endplates, as lines (a point, the unit
    direction pointing superior) in in-plane mm, keyed (side, end). A wall's direction is a robust line through its
    crossings with 16 lines parallel to ``axis`` (8 towards each endplate, :data:`WALL_LINE_FRACTIONS`); its position
    near each endplate is the median of the 8 crossings on that side. So a wall need be neither perpendicular to the
    endplates (lumbar bodies are often sheared in the sagittal plane) nor straight (a concave wall, or one that
    steps): each corner is found from the wall next to it, with the steadier direction of the whole wall. Where
    fewer than 4 lines on a side cross, that line is left out."""
    halves = {end: sign * np.linspace(*WALL_LINE_FRACTIONS, 8) * central_height
              for end, sign in (("superior", 1.0), ("inferior", -1.0))}
    offsets = np.concatenate(list(halves.values()))
    spans = sampler.extents(mid + offsets[:, None] * normal, axis, reach)
    near = {"superior": np.arange(8), "inferior": np.arange(8, 16)}
    lines = {}
    for side, column in (("posterior", 0), ("anterior", 1)):
        ok = np.isfinite(spans[:, column])
        if ok.sum() < 4:
            continue
        slope = robust_slope(offsets[ok], spans[ok, column], pixel)  # wall position along axis per mm of height
        direction = normal + slope * axis
        for end, rows in near.items():
            rows = rows[ok[rows]]
            if len(rows) >= 4:
                intercept = median(spans[rows, column] - slope * offsets[rows])
                lines[(side, end)] = (mid + intercept * axis, direction / np.linalg.norm(direction))
    return lines


def section_contour(section: Section) -> np.ndarray:
    """Outer contour of a section as an (n, 2) array of in-plane mm (pixel centres)."""
    contours, _ = cv2.findContours(section.mask.astype(np.uint8).T.copy(), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=len).reshape(-1, 2).astype(float)  # (x=i, y=j) after the transpose
    return (contour + np.array(section.offset)) * np.array(section.spacing)


def _whole_vertebra_note(what: str, params: MethodParameters) -> str:
    return (f"not measurable: {what}, more than a vertebral body (above {params.max_body_depth_mm:g} mm): the mask "
            "holds whole vertebrae with posterior elements; give their subregion mask with --subregions (SPINEPS), or "
            "--bodies-from-shape for masks without one")


def _note_components(result: VertebraMeasurement, counts: list[int], params: MethodParameters) -> None:
    """Notes on a label in several 3D parts: large ones (measured on the largest) and stray islands."""
    if len(counts) < 2:
        return
    major = [c for c in counts if c >= params.island_fraction * result.voxel_count]
    if len(major) > 1:
        result.several_components = True
        result.note(f"label in {len(major)} large parts ({'+'.join(map(str, major))} voxels): measured on the largest")
    if len(counts) > len(major):
        result.note(f"{len(counts) - len(major)} stray island(s) ignored")


def _touches_border(ranges: Sequence[tuple[int, int]], starts: Sequence[int], shape: Sequence[int],
                    margins: Sequence[int] | None = None) -> bool:
    """Whether the measured body (ignored islands do not count) comes within ``margins`` voxels (per axis; None: 0)
    of the edge of the whole volume along the axes given."""
    margins = [0] * len(ranges) if margins is None else margins
    return any(start + first <= margin or start + last >= size - 1 - margin
               for (first, last), start, size, margin in zip(ranges, starts, shape, margins, strict=True))


def _too_long_for_a_body(ranges: Sequence[tuple[int, int]], spacing_ap: float, level: str | None,
                         params: MethodParameters) -> str | None:
    """The refusal note for a largest part longer front to back than a body can be (whole vertebrae whose canal parts
    the arch in the midline), or None; not for the sacrum, whose tilt alone can exceed it."""
    first, last = ranges[1]
    extent_mm = float(last - first + 1) * spacing_ap
    if extent_mm <= params.max_body_depth_mm or (level and is_sacral_level(level)):
        return None
    return _whole_vertebra_note(f"largest part {extent_mm:.1f} mm from front to back", params)


def _section_values(section_mask: np.ndarray, spacing_2d: tuple[float, float], starts: Sequence[int],
                    shape: Sequence[int], level: str | None, params: MethodParameters, spine_axis: np.ndarray | None,
                    result: VertebraMeasurement) -> dict:
    """Measure the chosen section (:func:`measure_section`); its area and contour go into ``result``. Raises
    :class:`GeometryError` when it is too small or cut by the field of view."""
    section = section_from_slice(section_mask, spacing_2d, index_offset=(starts[1], starts[2]),
                                 slice_shape=(shape[1], shape[2]))
    result.section_area_mm2 = section.area_mm2()
    result.contour_2d = section_contour(section)
    if section.mask.sum() < 9:
        raise GeometryError(f"section of {int(section.mask.sum())} pixels is too small to measure")
    reference = "superior" if level and is_sacral_level(level) else "bisector"
    cut = section.border_contact()
    if cut:
        raise GeometryError(f"body cut by the field of view at the {'/'.join(cut)} image border")
    return measure_section(section, params, spine_axis, reference)


def _store_section(result: VertebraMeasurement, values: dict, volume: SagittalVolume,
                   spacing_2d: tuple[float, float]) -> None:
    """The section's heights, depth, rotation and anchors (in patient mm) into ``result``, with notes on cut or
    missed height lines."""
    result.trapezoid = values["trapezoid"]
    result.heights_mm = {name: float(values["heights"].get(name, math.nan)) for name in POSITIONS}
    result.depth_mm = float(values["depth"])
    result.rotation_deg = to_patient_angle(volume, result.trapezoid.axis)
    result.anchors_2d = values["anchors"]
    result.wall_lines_2d = values["wall_lines"]
    for key, point in values["anchors"].items():
        index = np.array([result.canonical_slice, point[0] / spacing_2d[0], point[1] / spacing_2d[1]])
        result.anchors_mm[key] = volume.index_to_physical(index)
    if values["truncated"]:
        result.note(f"body cut by the field of view at {', '.join(values['truncated'])}: height not measurable")
    for name in POSITIONS:
        if math.isnan(result.heights_mm[name]) and not values["truncated"]:
            result.note(f"{name} height line misses the body")


def _note_implausible(result: VertebraMeasurement, params: MethodParameters) -> None:
    low, high = params.plausible_height_mm
    bad = [f"{n} {h:.1f} mm" for n, h in result.heights_mm.items() if math.isfinite(h) and not low <= h <= high]
    if bad:
        result.implausible_height = True
        result.implausible_value = True
        result.note(f"implausible height ({', '.join(bad)}; expected {low:g}-{high:g} mm)")
    if abs(result.rotation_deg) > params.plausible_rotation_deg:
        result.implausible_value = True
        result.note(f"implausible rotation {result.rotation_deg:.1f} deg")


def _failed(result: VertebraMeasurement, note: str) -> VertebraMeasurement:
    result.status = "failed"
    result.note(note)
    return result


def measure_vertebra(
    volume: SagittalVolume,
    region: LabelRegion,
    level: str | None,
    params: MethodParameters,
    spine_axis: np.ndarray | None = None,
) -> VertebraMeasurement:
    """Measure one labelled vertebra (``region``: its voxels and largest component in the canonical array);
    ``spine_axis`` the local cranial direction of the spine in the sagittal plane (None: the image's superior axis is
    the prior)."""
    result = VertebraMeasurement(label=region.value, level=level)
    body = region.body
    result.voxel_count = region.voxel_count
    result.volume_ml = float(body.sum()) * float(np.prod(volume.spacing)) / 1000.0
    _note_components(result, list(region.component_sizes), params)
    shape = volume.shape
    starts = [s.start + o for s, o in zip(region.box, volume.offset, strict=True)]  # indices in the whole volume
    ranges = [(extent.start, extent.stop - 1) for extent in foreground_box(body)]  # first and last index per axis
    in_plane = [math.ceil(params.fov_margin_mm / float(s) - 1e-9) for s in volume.spacing[1:]]  # voxels
    result.at_inplane_border = _touches_border(ranges[1:], starts[1:], shape[1:], in_plane)
    result.touches_fov_border = result.at_inplane_border or _touches_border(ranges[:1], starts[:1], shape[:1])

    local_slice = choose_slice(body, params.slice_selection, params.slice_area_tolerance)
    result.canonical_slice = local_slice + starts[0]
    result.slice_index = volume.file_index(0, result.canonical_slice)
    whole = _too_long_for_a_body(ranges, float(volume.spacing[1]), level, params)
    if whole:
        return _failed(result, whole)
    if result.canonical_slice in (0, shape[0] - 1) and shape[0] > 1:
        result.note("measured slice is at the lateral edge of the field of view (the body may be cut laterally)")
    section_mask, n_parts = largest_component_2d(body[local_slice])
    if n_parts > 1:
        result.note(f"measured slice holds {n_parts} pieces of this label: measured the largest")
    spacing_2d = (float(volume.spacing[1]), float(volume.spacing[2]))
    try:
        values = _section_values(section_mask, spacing_2d, starts, shape, level, params, spine_axis, result)
    except GeometryError as exc:
        return _failed(result, f"not measurable: {exc}")
    if values["depth"] > params.max_body_depth_mm:
        return _failed(result, _whole_vertebra_note(f"section {values['depth']:.1f} mm deep", params))
    _store_section(result, values, volume, spacing_2d)
    _note_implausible(result, params)
    return result
