"""The spine between and across vertebrae: motion segments (disc-space heights, segmental angle, slip, Meyerding
grade) and the whole lumbar curve (lordosis, sacral slope), from the vertebrae's measured endplates.

Every quantity comes from the endplate points :mod:`.vertebra` already measures on each body's sagittal section (the
anterior, middle and posterior height lines; docs/measurements.md) and the walls they were placed from:

- an *endplate line* runs through the endplate's posterior and anterior points; extended to the body's walls it ends
  in the body's *corners* (the inset of the height lines, ``inset_fraction`` x depth, taken back off);
- an endplate's *angle* is the angle of its fitted direction (the robust line through its whole central profile that
  the body's rotation is measured from) to the patient's anterior axis, positive when its anterior end is cranial (as
  ``rotation_deg``): a line through many profile points is steadier than one through two.

Coordinates are in-plane mm of the canonical sagittal plane (anterior, superior): two bodies measured on different
sagittal slices are compared in projection onto that plane, as the vertebra table's distances are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .io import SagittalVolume
from .levels import caudal_neighbour, is_sacral_level
from .spine import SpineMeasurement
from .vertebra import POSITIONS, MethodParameters, VertebraMeasurement, to_patient_angle

MEYERDING_MIN_SLIP_PERCENT = 8.0
"""Slips below this share of the lower endplate (either direction) are graded 0: 8 % is the usual 3 mm criterion of a
listhesis on a 35-40 mm lumbar endplate, and healthy spines show corner offsets up to about 5 % from the bodies'
differing depths and tilts alone."""

PLAUSIBLE_SEGMENT_ANGLE_DEG = (-25.0, 40.0)
PLAUSIBLE_DISC_HEIGHT_MM = (0.0, 30.0)


@dataclass(frozen=True)
class EndplateLine:
    """One endplate of one body: corners (in-plane mm) and the unit direction from posterior to anterior."""

    posterior: np.ndarray
    anterior: np.ndarray

    @property
    def direction(self) -> np.ndarray:
        vector = self.anterior - self.posterior
        return vector / np.linalg.norm(vector)

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.anterior - self.posterior))


def _intersect(point: np.ndarray, direction: np.ndarray, line: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:
    """Where the line through ``point`` along ``direction`` meets ``line`` (a point, a direction); None if parallel."""
    other, along = line
    matrix = np.column_stack([direction, -along])
    if abs(np.linalg.det(matrix)) < 1e-6:
        return None
    t = np.linalg.solve(matrix, other - point)[0]
    return point + t * direction


def endplate_line(vertebra: VertebraMeasurement, end: str, inset_fraction: float) -> EndplateLine | None:
    """The ``end`` (``superior`` / ``inferior``) endplate of a measured body: the line through its anterior and
    posterior height-line points, from wall to wall. The corners are where it meets the fitted wall lines (walls
    may be sheared); a wall without a fitted line is taken perpendicular to the body's axis, ``inset_fraction`` x
    depth beyond the height line. None when either point or the body's frame is missing."""
    posterior = vertebra.anchors_2d.get(("posterior", end))
    anterior = vertebra.anchors_2d.get(("anterior", end))
    if posterior is None or anterior is None or vertebra.trapezoid is None or not math.isfinite(vertebra.depth_mm):
        return None
    posterior, anterior = np.asarray(posterior, float), np.asarray(anterior, float)
    direction = (anterior - posterior) / np.linalg.norm(anterior - posterior)
    along_axis = float(direction @ vertebra.trapezoid.axis)  # how far one mm of endplate moves along the body's axis
    if along_axis <= 0.1:
        return None
    step = inset_fraction * vertebra.depth_mm / along_axis
    corners = {"posterior": posterior - step * direction, "anterior": anterior + step * direction}
    for side in corners:
        wall = vertebra.wall_lines_2d.get((side, end))
        meet = None if wall is None else _intersect(posterior, direction, wall)
        if meet is not None and np.linalg.norm(meet - corners[side]) <= step + 0.25 * vertebra.depth_mm:
            corners[side] = meet
    return EndplateLine(corners["posterior"], corners["anterior"])


def endplate_angle_deg(volume: SagittalVolume, vertebra: VertebraMeasurement, end: str) -> float:
    """Angle (deg) of a measured body's ``end`` endplate (its fitted direction) to the patient's anterior axis,
    positive when its anterior end is cranial; NaN when the body has no fitted endplates."""
    if vertebra.status == "failed" or vertebra.trapezoid is None:
        return math.nan
    fitted = vertebra.trapezoid.superior_direction if end == "superior" else vertebra.trapezoid.inferior_direction
    return to_patient_angle(volume, fitted)


def meyerding_grade(slip_percent: float, minimum: float = MEYERDING_MIN_SLIP_PERCENT) -> int | None:
    """Meyerding grade of a slip (% of the lower endplate, either direction): 0 below ``minimum``, 1-4 for the
    quarters up to 100 %, 5 beyond (spondyloptosis); None for NaN."""
    if not math.isfinite(slip_percent):
        return None
    size = abs(slip_percent)
    if size < minimum:
        return 0
    return 5 if size > 100.0 else max(1, math.ceil(size / 25.0))


@dataclass
class SegmentMeasurement:
    """One motion segment (a body and its caudal neighbour); lengths in mm, angles in degrees, NaN where not
    computable."""

    upper_level: str
    lower_level: str
    status: str = "ok"
    messages: list[str] = field(default_factory=list)
    disc_heights_mm: dict[str, float] = field(default_factory=lambda: dict.fromkeys(POSITIONS, math.nan))
    disc_height_mean_mm: float = math.nan
    disc_height_index: float = math.nan
    segment_angle_deg: float = math.nan
    slip_mm: float = math.nan
    slip_percent: float = math.nan
    meyerding_grade: int | None = None
    slip_corners_2d: tuple[np.ndarray, np.ndarray] | None = None
    """(upper posterior-inferior, lower posterior-superior) corner, in-plane mm (for the QC picture)."""

    def note(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)


def _disc_heights(segment: SegmentMeasurement, upper: VertebraMeasurement, lower: VertebraMeasurement) -> None:
    for position in POSITIONS:
        p, q = upper.anchors_2d.get((position, "inferior")), lower.anchors_2d.get((position, "superior"))
        if p is None or q is None:
            segment.note(f"{position} disc height not measurable (endplate point missing)")
            continue
        segment.disc_heights_mm[position] = float(np.linalg.norm(np.asarray(p) - np.asarray(q)))
    heights = list(segment.disc_heights_mm.values())
    if all(math.isfinite(h) for h in heights):
        segment.disc_height_mean_mm = float(np.mean(heights))
        if math.isfinite(upper.depth_mm) and upper.depth_mm > 0:
            segment.disc_height_index = segment.disc_height_mean_mm / upper.depth_mm


def _angle_and_slip(segment: SegmentMeasurement, volume: SagittalVolume, upper: VertebraMeasurement,
                    lower: VertebraMeasurement, inset_fraction: float) -> None:
    above, below = endplate_line(upper, "inferior", inset_fraction), endplate_line(lower, "superior", inset_fraction)
    if above is None or below is None:
        segment.note("segment angle and slip not measurable (an endplate is missing)")
        return
    segment.segment_angle_deg = (endplate_angle_deg(volume, upper, "inferior")
                                 - endplate_angle_deg(volume, lower, "superior"))
    segment.slip_mm = float((above.posterior - below.posterior) @ below.direction)
    segment.slip_corners_2d = (above.posterior, below.posterior)
    segment.slip_percent = 100.0 * segment.slip_mm / below.length_mm
    segment.meyerding_grade = meyerding_grade(segment.slip_percent)


def _segment_status(segment: SegmentMeasurement, upper: VertebraMeasurement, lower: VertebraMeasurement) -> None:
    values = [*segment.disc_heights_mm.values(), segment.segment_angle_deg, segment.slip_mm]
    if all(not math.isfinite(v) for v in values):
        segment.status = "failed"
        return
    low, high = PLAUSIBLE_DISC_HEIGHT_MM
    implausible = [f"{p} disc height {h:.1f} mm" for p, h in segment.disc_heights_mm.items()
                   if math.isfinite(h) and not low <= h <= high]
    low, high = PLAUSIBLE_SEGMENT_ANGLE_DEG
    if math.isfinite(segment.segment_angle_deg) and not low <= segment.segment_angle_deg <= high:
        implausible.append(f"segment angle {segment.segment_angle_deg:.1f} deg")
    if implausible:
        segment.note(f"implausible {', '.join(implausible)}")
    cut = [v.level for v in (upper, lower) if v.touches_fov_border]
    if cut:
        segment.note(f"{'/'.join(map(str, cut))} touches the border of the field of view")
    if implausible or cut or any(not math.isfinite(v) for v in values):
        segment.status = "warning"


def measure_segment(volume: SagittalVolume, upper: VertebraMeasurement, lower: VertebraMeasurement,
                    params: MethodParameters) -> SegmentMeasurement:
    """The motion segment between two measured adjacent bodies (``upper`` cranial)."""
    segment = SegmentMeasurement(upper.level or "", lower.level or "")
    failed = [v.level for v in (upper, lower) if v.status == "failed"]
    if failed:
        segment.status = "failed"
        segment.note(f"{'/'.join(map(str, failed))} not measurable: segment not measured")
        return segment
    _disc_heights(segment, upper, lower)
    _angle_and_slip(segment, volume, upper, lower, params.inset_fraction)
    _segment_status(segment, upper, lower)
    return segment


def measure_segments(volume: SagittalVolume, rows: list[SpineMeasurement], params: MethodParameters
                     ) -> list[SegmentMeasurement]:
    """Every motion segment of a measured spine: each level with its caudal neighbour present in the mask (a level
    whose neighbour is missing, e.g. L4 absent between L3 and L5, forms no segment; S1-S2, fused, is none either),
    cranio-caudal order."""
    by_level = {row.vertebra.level: row.vertebra for row in rows if row.vertebra.level}
    segments = []
    for level, upper in by_level.items():
        neighbour = caudal_neighbour(level, set(by_level))
        if neighbour.level is None or neighbour.missing or (is_sacral_level(level)
                                                              and is_sacral_level(neighbour.level)):
            continue
        segments.append(measure_segment(volume, upper, by_level[neighbour.level], params))
    return segments


@dataclass
class SpineSummary:
    """The lumbar curve of one case; angles in degrees, NaN where not computable."""

    status: str = "ok"
    messages: list[str] = field(default_factory=list)
    lordosis_l1_s1_deg: float = math.nan
    lordosis_l1_l5_deg: float = math.nan
    sacral_slope_deg: float = math.nan


def _angle_of(volume: SagittalVolume, by_level: dict[str, VertebraMeasurement], level: str, end: str,
              messages: list[str]) -> float:
    vertebra = by_level.get(level)
    angle = math.nan if vertebra is None else endplate_angle_deg(volume, vertebra, end)
    if not math.isfinite(angle):
        messages.append(f"{level} {end} endplate {'not in the mask' if vertebra is None else 'not measurable'}")
    return angle


def spine_summary(volume: SagittalVolume, rows: list[SpineMeasurement], params: MethodParameters) -> SpineSummary:
    """Lumbar lordosis L1-S1 (Cobb angle between L1's and S1's superior endplates) and L1-L5 (L1's superior and L5's
    inferior endplate), positive for the normal lordotic curve; sacral slope, S1's superior endplate against the
    patient's anterior axis (the horizontal of a standing patient; positive when its anterior end is caudal)."""
    by_level = {row.vertebra.level: row.vertebra for row in rows if row.vertebra.level}
    summary = SpineSummary()
    notes: list[str] = []
    l1 = _angle_of(volume, by_level, "L1", "superior", notes)
    s1 = _angle_of(volume, by_level, "S1", "superior", notes)
    l5 = _angle_of(volume, by_level, "L5", "inferior", notes)
    summary.lordosis_l1_s1_deg, summary.lordosis_l1_l5_deg, summary.sacral_slope_deg = l1 - s1, l1 - l5, -s1
    summary.messages = list(dict.fromkeys(notes))
    values = (summary.lordosis_l1_s1_deg, summary.lordosis_l1_l5_deg, summary.sacral_slope_deg)
    if all(not math.isfinite(v) for v in values):
        summary.status = "failed"
    elif any(not math.isfinite(v) for v in values):
        summary.status = "warning"
    return summary
