"""QC pictures: the measured sagittal section(s) with outlines, trapezoids, height lines and distances in mm.

Left panel: heights (as in the paper's figure 1); right panel: distances to the caudal neighbour (figure 2d).
Anterior is on the left and superior at the top, as sagittal images are read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .io import SagittalVolume
from .outputs import atomic_write
from .segments import SegmentMeasurement, SpineSummary
from .spine import SpineMeasurement
from .vertebra import VertebraMeasurement

_LINE_COLOURS = {"anterior": (0, 140, 255), "middle": (60, 220, 60), "posterior": (255, 200, 0)}  # BGR
_FAILED_COLOUR = (60, 60, 255)  # BGR: outlines of bodies whose measurement failed
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class _View:
    """Maps in-plane mm (x anterior, y superior) to picture pixels (anterior left, superior up)."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], pixels_per_mm: float):
        self.x_max, self.y_max = x_range[1], y_range[1]
        self.k = pixels_per_mm
        self.width = int(math.ceil((x_range[1] - x_range[0]) * pixels_per_mm))
        self.height = int(math.ceil((y_range[1] - y_range[0]) * pixels_per_mm))

    def px(self, points_mm: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(points_mm, dtype=float))
        return np.column_stack(((self.x_max - p[:, 0]) * self.k, (self.y_max - p[:, 1]) * self.k))

    def pt(self, point_mm: np.ndarray) -> tuple[int, int]:
        x, y = self.px(point_mm)[0]
        return int(round(x)), int(round(y))

    def background(self, slice_2d: np.ndarray, spacing: tuple[float, float],
                   offset: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Resample a slice (whose pixel [0, 0] has index ``offset`` in the whole slice) onto the picture."""
        xs, ys = np.meshgrid(np.arange(self.width), np.arange(self.height))
        rows = ((self.x_max - (xs + 0.5) / self.k) / spacing[0] - offset[0]).astype(np.float32)  # along x
        cols = ((self.y_max - (ys + 0.5) / self.k) / spacing[1] - offset[1]).astype(np.float32)  # along y
        return cv2.remap(np.ascontiguousarray(slice_2d, dtype=np.float32), cols, rows, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT)


def _text(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int], scale: float,
          align_right: bool = False) -> None:
    (w, h), _ = cv2.getTextSize(text, _FONT, scale, 1)
    x = org[0] - w if align_right else org[0]
    x = int(np.clip(x, 2, max(2, img.shape[1] - w - 2)))
    y = int(np.clip(org[1] + h // 2, h + 2, img.shape[0] - 3))
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)):  # dark halo, same advance
        cv2.putText(img, text, (x + dx, y + dy), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), _FONT, scale, colour, 1, cv2.LINE_AA)


def _fmt(value: float) -> str:
    return "--" if not math.isfinite(value) else f"{value:.1f}"


def _shown_slice(volume: SagittalVolume, measured: Sequence[SpineMeasurement]) -> int:
    """The canonical slice shown: the median of the measured slices (the middle one when none)."""
    if not measured:
        return volume.shape[0] // 2
    slices = sorted(m.vertebra.canonical_slice for m in measured)
    return slices[len(slices) // 2]


def _label_on_slice(volume: SagittalVolume, shown: int, label: int) -> np.ndarray | None:
    """The pixels of ``label`` on the canonical slice ``shown`` (boolean, the crop's in-plane shape), or None where
    that slice holds none of it."""
    local = shown - volume.offset[0]
    if not 0 <= local < volume.array.shape[0]:
        return None
    body = volume.array[local] == label
    return body if body.any() else None


def _mask_points(volume: SagittalVolume, body: np.ndarray) -> np.ndarray:
    """In-plane mm (anterior, superior) of the pixels of a slice mask of the crop (:func:`_label_on_slice`)."""
    return (np.argwhere(body) + np.asarray(volume.offset[1:])) * np.asarray(volume.spacing[1:], dtype=float)


def _view_for(volume: SagittalVolume, measured: Sequence[SpineMeasurement], target_height_px: int,
              extra_points: np.ndarray | None = None) -> _View:
    """The drawing window around the measured bodies and ``extra_points`` (in-plane mm; the whole volume when there
    are none)."""
    sx, sy = float(volume.spacing[1]), float(volume.spacing[2])
    parts = [m.vertebra.contour_2d for m in measured]
    if extra_points is not None and len(extra_points):
        parts.append(extra_points)
    if parts:
        points = np.concatenate(parts)
        lo, hi = points.min(axis=0) - 15, points.max(axis=0) + 15
        lo[0] -= 10
        hi[0] += 10
    else:
        lo = np.zeros(2)
        hi = np.array([volume.shape[1] * sx, volume.shape[2] * sy])
    lo[1] = max(lo[1], -sy / 2)
    hi[1] = min(hi[1], (volume.shape[2] - 0.5) * sy)
    k = float(np.clip(target_height_px / max(hi[1] - lo[1], 1.0), 1.5, 12.0))
    lo[0] -= 250 / k  # room for the labels on the posterior (right) side
    return _View((lo[0], hi[0]), (lo[1], hi[1]), k)


def _background(view: _View, volume: SagittalVolume, image: SagittalVolume | None, shown: int) -> np.ndarray:
    """The shown slice of the image (contrast from its 1-99.5 percentiles), or of the mask in grey, as BGR."""
    spacing = (float(volume.spacing[1]), float(volume.spacing[2]))
    if image is not None:
        base = view.background(image.array[shown - image.offset[0]], spacing, image.offset[1:])
        low, high = np.percentile(base, [1, 99.5]) if base.size else (0, 1)
        grey = np.clip((base - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    else:
        local = shown - volume.offset[0]
        inside = 0 <= local < volume.array.shape[0]
        labels = (volume.array[local] > 0) if inside else np.zeros(volume.array.shape[1:], bool)
        grey = (view.background(labels, spacing, volume.offset[1:]) * 90).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def _draw_heights(panel: np.ndarray, view: _View, m: SpineMeasurement, scale: float, thick: int) -> None:
    """One body on the heights panel: its fitted trapezoid, the three height lines and the label lines beside it."""
    v = m.vertebra
    if v.trapezoid is not None:
        corners = view.px(v.trapezoid.corners).round().astype(np.int32)
        cv2.polylines(panel, [corners], True, (0, 255, 255), 1, cv2.LINE_AA)
    for position, colour_line in _LINE_COLOURS.items():
        top, bottom = v.anchors_2d.get((position, "superior")), v.anchors_2d.get((position, "inferior"))
        if top is None or bottom is None:
            continue
        cv2.line(panel, view.pt(top), view.pt(bottom), colour_line, thick, cv2.LINE_AA)
        for p in (top, bottom):
            cv2.circle(panel, view.pt(p), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
    centre = view.pt(v.contour_2d.mean(axis=0))
    right_edge = int(view.px(v.contour_2d)[:, 0].max()) + 8
    h = v.heights_mm
    label = f"{v.level or v.label}  A {_fmt(h['anterior'])}  M {_fmt(h['middle'])}  P {_fmt(h['posterior'])}"
    if v.slice_index is not None:
        label += f"  (slice {v.slice_index})"
    _text(panel, label, (right_edge, centre[1] - 10), (255, 255, 255), scale)
    extra = f"rot {_fmt(v.rotation_deg)} deg"
    if m.genant is not None and m.genant.grade:
        extra += f"  Genant {m.genant.grade} {m.genant.deformity_type}"
    if v.status in ("warning", "failed"):
        extra += f"  [{v.status}]"
    if v.status == "failed" and v.messages:
        extra += f" {_reason(v.messages)}"
    _text(panel, extra, (right_edge, centre[1] + 12), (200, 200, 255) if v.status != "ok" else (200, 200, 200),
          scale * 0.85)


def _reason(messages: Sequence[str]) -> str:
    """The message that says why a body could not be measured (the first one otherwise), shortened for a picture."""
    reason = next((message for message in messages if "not measurable" in message), messages[0])
    return reason.removeprefix("not measurable: ")[:70]


def _status_note(v: VertebraMeasurement) -> str:
    """``[status]`` and, where there is one, the reason (:func:`_reason`): what a picture says of a body it cannot
    show measured."""
    return f"[{v.status}]" + (f" {_reason(v.messages)}" if v.messages else "")


def _draw_unmeasured(panels: Sequence[np.ndarray], view: _View, volume: SagittalVolume, m: SpineMeasurement,
                     body: np.ndarray, scale: float) -> bool:
    """A body without a measured section (its measurement failed before one was chosen): the outline of ``body``, its
    mask on the shown slice (:func:`_label_on_slice`), in the failure colour on both panels, its name beside it and,
    on the heights panel, its status and reason. False (nothing drawn) where none of it falls inside the picture (the
    window takes it in: :func:`render_qc`)."""
    v = m.vertebra
    spacing = (float(volume.spacing[1]), float(volume.spacing[2]))
    on_picture = view.background(body.astype(np.float32), spacing, volume.offset[1:]) >= 0.5
    outlines, _ = cv2.findContours(on_picture.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not outlines:
        return False
    for panel in panels:
        cv2.drawContours(panel, outlines, -1, _FAILED_COLOUR, 1, cv2.LINE_AA)
    points = np.concatenate(outlines)[:, 0, :]
    centre = (int(points[:, 0].mean()), int(points[:, 1].mean()))
    name = str(v.level or v.label)
    _text(panels[0], f"{name}  {_status_note(v)}", (int(points[:, 0].max()) + 8, centre[1]), (200, 200, 255),
          scale * 0.85)
    _text(panels[1], name, centre, (255, 255, 255), scale)
    return True


def _draw_distances(panel: np.ndarray, view: _View, m: SpineMeasurement, measurements: Sequence[SpineMeasurement],
                    scale: float, thick: int) -> None:
    """One body on the distances panel: its level name and the lines to its caudal neighbour with their values."""
    v = m.vertebra
    _text(panel, str(v.level or v.label), view.pt(v.contour_2d.mean(axis=0)), (255, 255, 255), scale)
    for side, colour_line in (("anterior", _LINE_COLOURS["anterior"]), ("posterior", _LINE_COLOURS["posterior"])):
        value = m.distances_mm[side]
        if not math.isfinite(value) or m.distance_to_level is None:
            continue
        lower = next(x.vertebra for x in measurements if x.vertebra.level == m.distance_to_level)
        p, q = v.anchors_2d[(side, "inferior")], lower.anchors_2d[(side, "superior")]
        cv2.line(panel, view.pt(p), view.pt(q), colour_line, thick, cv2.LINE_AA)
        for point in (p, q):
            cv2.circle(panel, view.pt(point), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        mid = view.pt((np.asarray(p) + np.asarray(q)) / 2)
        offset = -10 if side == "anterior" else 10
        _text(panel, f"{value:.1f}", (mid[0] + offset, mid[1]), colour_line, scale, align_right=side == "anterior")


def _header(case_id: str, volume: SagittalVolume, shown: int, measurements: Sequence[SpineMeasurement],
            summary: SpineSummary | None, width: int) -> np.ndarray:
    """The title rows: case, slice shown, row counts by status; with ``summary`` the lordosis and sacral slope."""
    header = np.zeros((34 if summary is None else 56, width, 3), np.uint8)
    counts = {s: sum(1 for m in measurements if m.vertebra.status == s) for s in ("ok", "warning", "failed")}
    title = (f"{case_id}  slice {volume.file_index(0, shown)} (shown)  heights A/M/P mm | distances mm   "
             f"ok {counts['ok']}  warning {counts['warning']}  failed {counts['failed']}   anterior left")
    _text(header, title, (6, 17), (255, 255, 255), 0.5)
    if summary is not None:
        curve = (f"lordosis L1-S1 {_fmt(summary.lordosis_l1_s1_deg)} deg   L1-L5 {_fmt(summary.lordosis_l1_l5_deg)} "
                 f"deg   sacral slope {_fmt(summary.sacral_slope_deg)} deg   (segments: angle deg, slip mm, "
                 "Meyerding grade)")
        _text(header, curve, (6, 39), (180, 255, 255), 0.5)
    return header


def render_qc(
    case_id: str,
    volume: SagittalVolume,
    measurements: Sequence[SpineMeasurement],
    image: SagittalVolume | None = None,
    target_height_px: int = 900,
    segments: Sequence[SegmentMeasurement] = (),
    summary: SpineSummary | None = None,
) -> np.ndarray:
    """The QC picture (BGR uint8) of one case; with ``segments`` and ``summary``, each motion segment's angle and
    slip (its two corners marked) on the distances panel and the lordosis and sacral slope in the header."""
    measured = [m for m in measurements if m.vertebra.contour_2d is not None]
    shown = _shown_slice(volume, measured)
    unmeasured = [(m, _label_on_slice(volume, shown, m.vertebra.label))
                  for m in measurements if m.vertebra.contour_2d is None]
    extra = [_mask_points(volume, body) for _, body in unmeasured if body is not None]
    view = _view_for(volume, measured, target_height_px, np.concatenate(extra) if extra else None)
    base_bgr = _background(view, volume, image, shown)
    heights_panel, distance_panel = base_bgr.copy(), base_bgr.copy()
    scale = float(np.clip(view.k / 6.0, 0.5, 0.9))
    thick = 2 if view.k >= 4 else 1
    for m in measured:
        colour = (235, 235, 235) if m.vertebra.status != "failed" else _FAILED_COLOUR
        outline = view.px(m.vertebra.contour_2d).round().astype(np.int32)
        for panel in (heights_panel, distance_panel):
            cv2.polylines(panel, [outline], True, colour, 1, cv2.LINE_AA)
        _draw_heights(heights_panel, view, m, scale, thick)
        _draw_distances(distance_panel, view, m, measurements, scale, thick)
    _draw_segments(distance_panel, view, segments, measurements, scale, thick)
    not_drawn = [m for m, body in unmeasured
                 if body is None or not _draw_unmeasured((heights_panel, distance_panel), view, volume, m, body, scale)]
    _list_not_drawn(heights_panel, not_drawn, scale)
    separator = np.full((view.height, 4, 3), 255, np.uint8)
    picture = np.concatenate([heights_panel, separator, distance_panel], axis=1)
    return np.concatenate([_header(case_id, volume, shown, measurements, summary, picture.shape[1]), picture], axis=0)


def _list_not_drawn(panel: np.ndarray, rows: Sequence[SpineMeasurement], scale: float, most: int = 4) -> None:
    """One line per body the shown slice does not hold, at the bottom of the panel (the first ``most``, then how many
    more): its level, status, the slice it was looked at on and the reason."""
    lines = []
    for m in rows[:most]:
        v = m.vertebra
        where = f" (its slice {v.slice_index})" if v.slice_index is not None else ""
        lines.append(f"not on this slice: {v.level or v.label}{where}  {_status_note(v)}")
    if len(rows) > most:
        lines.append(f"+{len(rows) - most} more not on this slice: see the table")
    step = int(28 * scale)
    for row, text in enumerate(reversed(lines)):  # bottom up
        _text(panel, text, (6, panel.shape[0] - 12 - row * step), (200, 200, 255), scale * 0.85)


def _draw_segments(panel: np.ndarray, view: _View, segments: Sequence[SegmentMeasurement],
                   measurements: Sequence[SpineMeasurement], scale: float, thick: int) -> None:
    """Each segment's angle, slip and grade beside its disc (posterior side), the two slip corners marked."""
    bodies = {m.vertebra.level: m.vertebra for m in measurements if m.vertebra.contour_2d is not None}
    for segment in segments:
        upper, lower = bodies.get(segment.upper_level), bodies.get(segment.lower_level)
        if upper is None or lower is None:
            continue
        if segment.slip_corners_2d is not None:
            for corner in segment.slip_corners_2d:
                cv2.drawMarker(panel, view.pt(corner), (255, 0, 255), cv2.MARKER_CROSS, 6 + 3 * thick, thick)
        disc = 0.5 * (upper.contour_2d[:, 1].min() + lower.contour_2d[:, 1].max())
        right = max(view.px(upper.contour_2d)[:, 0].max(), view.px(lower.contour_2d)[:, 0].max())
        edge = int(right) + 55  # clear of the posterior distance's label
        grade = "" if segment.meyerding_grade is None else f" M{segment.meyerding_grade}"
        text = f"{_fmt(segment.segment_angle_deg)} deg  slip {_fmt(segment.slip_mm)}{grade}"
        colour = (255, 120, 255) if segment.meyerding_grade else (230, 180, 230)
        _text(panel, text, (edge, view.pt(np.array([0.0, disc]))[1]), colour, scale * 0.85)


def write_qc(path: str | Path, picture: np.ndarray) -> None:
    """Write the picture as a PNG, atomically (a reader never sees a half-written picture)."""

    def write(temporary: Path) -> None:
        if not cv2.imwrite(str(temporary), picture, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"{path}: could not write the QC picture")

    atomic_write(path, write)
