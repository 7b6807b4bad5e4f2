"""Pure 2D geometry of one vertebral body section: hull, bounding trapezoid, sub-pixel line extents.

Coordinates are in mm in the sagittal image plane: ``x`` points anterior, ``y`` superior. A binary section is given
as a boolean array ``mask[i, j]`` (i along x, j along y) with pixel spacing ``(sx, sy)`` and the index ``offset`` of
``mask[0, 0]`` in the full slice, so pixel ``(i, j)`` has its centre at ``((offset_i + i) * sx, (offset_j + j) * sy)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import cv2
import numpy as np


class GeometryError(ValueError):
    """A section cannot be measured (too small, degenerate)."""


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def perpendicular(v: np.ndarray) -> np.ndarray:
    """``v`` rotated by +90 degrees (anterior -> superior)."""
    return np.array([-v[1], v[0]])


@dataclass(frozen=True)
class Section:
    """A binary 2D section of one vertebra in the sagittal plane, cropped with a zero margin."""

    mask: np.ndarray
    spacing: tuple[float, float]
    offset: tuple[int, int]
    slice_shape: tuple[int, int]  # size of the full slice, to tell where the field of view ends

    def pixel_centres_mm(self, where: np.ndarray | None = None) -> np.ndarray:
        i, j = np.nonzero(self.mask if where is None else where)
        return np.column_stack(((i + self.offset[0]) * self.spacing[0], (j + self.offset[1]) * self.spacing[1]))

    def centroid_mm(self) -> np.ndarray:
        return self.pixel_centres_mm().mean(axis=0)

    def area_mm2(self) -> float:
        return float(self.mask.sum() * self.spacing[0] * self.spacing[1])

    def border_contact(self, min_pixels: int = 3) -> list[str]:
        """Sides of the full slice (anterior, posterior, superior, inferior) along which the section runs on the
        image border for at least ``min_pixels`` pixels: the body continues outside the field of view there."""
        i, j = np.nonzero(self.mask)
        i, j = i + self.offset[0], j + self.offset[1]
        n_i, n_j = self.slice_shape
        counts = {"posterior": np.sum(i == 0), "anterior": np.sum(i == n_i - 1),
                  "inferior": np.sum(j == 0), "superior": np.sum(j == n_j - 1)}
        return [side for side, count in counts.items() if count >= min_pixels]

    @cached_property
    def boundary_mask(self) -> np.ndarray:
        kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        eroded = cv2.erode(self.mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        return self.mask & (eroded == 0)

    @cached_property
    def hull_mm(self) -> np.ndarray:
        """Convex hull (counter-clockwise, in mm) of the pixel squares, not only their centres (computed once)."""
        centres = self.pixel_centres_mm(self.boundary_mask)
        half = np.array(self.spacing) / 2
        corners = np.concatenate([centres + half * s for s in ((1, 1), (1, -1), (-1, 1), (-1, -1))])
        hull = cv2.convexHull(corners.astype(np.float64).astype(np.float32)).reshape(-1, 2).astype(float)
        if len(hull) < 3:
            raise GeometryError("section is degenerate (fewer than three hull points)")
        if _signed_area(hull) < 0:
            hull = hull[::-1]
        return hull


def section_from_slice(
    slice_mask: np.ndarray,
    spacing: tuple[float, float],
    margin: int = 3,
    index_offset: tuple[int, int] = (0, 0),
    slice_shape: tuple[int, int] | None = None,
) -> Section:
    """Crop a 2D boolean mask to its bounding box plus a zero margin.

    ``slice_mask[0, 0]`` is pixel ``index_offset`` of a full slice of ``slice_shape`` (default: the mask itself).
    """
    i, j = np.nonzero(slice_mask)
    if i.size == 0:
        raise GeometryError("empty section")
    i0, i1, j0, j1 = i.min(), i.max() + 1, j.min(), j.max() + 1
    crop = np.zeros((i1 - i0 + 2 * margin, j1 - j0 + 2 * margin), dtype=bool)
    crop[margin:-margin, margin:-margin] = slice_mask[i0:i1, j0:j1]
    shape = slice_shape if slice_shape is not None else slice_mask.shape
    return Section(crop, (float(spacing[0]), float(spacing[1])),
                   (int(i0) - margin + index_offset[0], int(j0) - margin + index_offset[1]),
                   (int(shape[0]), int(shape[1])))


def _signed_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


class LineSampler:
    """Sub-pixel sampling of a section: Gaussian-smoothed mask, bilinear interpolation, iso-level 0.5."""

    def __init__(self, section: Section, sigma_px: float = 1.0):
        values = section.mask.astype(np.float32)
        if sigma_px > 0:
            values = cv2.GaussianBlur(values, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_CONSTANT)
        self.values = values
        self.section = section

    def __call__(self, points_mm: np.ndarray) -> np.ndarray:
        sec = self.section
        u = points_mm[..., 0] / sec.spacing[0] - sec.offset[0]
        v = points_mm[..., 1] / sec.spacing[1] - sec.offset[1]
        # cv2 images are (row, col) = (i, j): map_x runs along columns (j), map_y along rows (i). remap maps must
        # stay below 32767 columns: a (lines, samples) grid that fits is passed as it is, anything else is laid out
        # in rows of at most 4096.
        if u.ndim == 2 and 0 < u.shape[1] < 32000:
            return cv2.remap(self.values, v.astype(np.float32), u.astype(np.float32), cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        flat_u, flat_v = u.astype(np.float32).ravel(), v.astype(np.float32).ravel()
        count = flat_u.size
        width = min(4096, max(1, count))
        pad = (-flat_u.size) % width
        if pad:
            flat_u = np.concatenate([flat_u, np.full(pad, -10, np.float32)])
            flat_v = np.concatenate([flat_v, np.full(pad, -10, np.float32)])
        map_rows, map_cols = flat_u.reshape(-1, width), flat_v.reshape(-1, width)
        sampled = cv2.remap(self.values, map_cols, map_rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
        return sampled.ravel()[:count].reshape(u.shape)

    def extent(self, start: np.ndarray, direction: np.ndarray, reach_mm: float) -> tuple[float, float] | None:
        """First and last crossing of the 0.5 level along ``start + t * direction``, ``|t| <= reach_mm``.

        These are the farthest segmented points on the line, to sub-pixel precision. None if the line misses.
        """
        first, last = self.extents(np.asarray(start, dtype=float)[None, :], direction, reach_mm)[0]
        return None if np.isnan(first) else (float(first), float(last))

    def extents(self, starts: np.ndarray, direction: np.ndarray, reach_mm: float, step_px: float = 0.25) -> np.ndarray:
        """:meth:`extent` for many parallel lines at once: (n, 2) array of (first, last), NaN where a line misses.

        Samples every ``step_px`` pixels; the smoothed profile is smooth on that scale, so the linear interpolation
        of the 0.5 crossing between samples is exact to about 0.01 pixel.
        """
        step = step_px * min(self.section.spacing)
        t = np.arange(-reach_mm, reach_mm + step, step)
        values = self(starts[:, None, :] + t[None, :, None] * direction[None, None, :])
        inside = values >= 0.5
        hit = inside.any(axis=1)
        first = np.argmax(inside, axis=1)
        last = len(t) - 1 - np.argmax(inside[:, ::-1], axis=1)
        rows = np.arange(len(starts))

        def crossing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            # np.minimum/np.maximum rather than np.clip: the same values, a fraction of the call overhead
            a, b = np.minimum(np.maximum(a, 0), len(t) - 1), np.minimum(np.maximum(b, 0), len(t) - 1)
            va, vb = values[rows, a], values[rows, b]
            with np.errstate(divide="ignore", invalid="ignore"):
                fraction = np.where(vb != va, (0.5 - va) / (vb - va), 0.5)
            return t[a] + np.minimum(np.maximum(fraction, 0.0), 1.0) * (t[b] - t[a])

        out = np.column_stack([crossing(first - 1, first), crossing(last, last + 1)])
        out[~hit] = np.nan
        return out

    def on_fov_edge(self, point_mm: np.ndarray, tolerance_px: float = 1.0) -> bool:
        """Whether a boundary point lies on the edge of the full slice (the body may continue outside)."""
        sec = self.section
        index = np.array(point_mm) / np.array(sec.spacing)
        low = index < -0.5 + tolerance_px
        high = index > np.array(sec.slice_shape) - 0.5 - tolerance_px
        return bool(np.any(low | high))


@dataclass(frozen=True)
class Trapezoid:
    """Bounding trapezoid: two endplate lines and two walls perpendicular to the reference axis, all touching the body.

    ``axis`` is the unit reference axis (the bisector of the two endplate directions, or the superior endplate for
    sacral levels; pointing anterior), ``normal`` the unit
    perpendicular (pointing superior). ``corners`` are anterior-superior, posterior-superior, posterior-inferior,
    anterior-inferior, in mm.
    """

    axis: np.ndarray
    normal: np.ndarray
    superior_direction: np.ndarray
    inferior_direction: np.ndarray
    corners: np.ndarray

    @property
    def angle_deg(self) -> float:
        """In-plane angle of the bisector to the x (anterior) axis, positive when the anterior end is higher."""
        return float(np.degrees(np.arctan2(self.axis[1], self.axis[0])))



def _rough_axis(hull: np.ndarray, spine_axis: np.ndarray | None = None) -> np.ndarray:
    """Endplate direction of the minimum-area rectangle (pointing anterior).

    Of the rectangle's two side directions, the one most perpendicular to ``spine_axis`` (the local cranio-caudal
    direction of the spine, from the neighbouring vertebrae) or, without it, the one closest to the anterior axis.
    """
    box = cv2.boxPoints(cv2.minAreaRect(hull.astype(np.float32))).astype(float)
    sides = [unit(box[1] - box[0]), unit(box[2] - box[1])]
    if spine_axis is None:
        axis = max(sides, key=lambda s: abs(s[0]))
        return axis if axis[0] >= 0 else -axis
    anterior = np.array([spine_axis[1], -spine_axis[0]])
    axis = max(sides, key=lambda s: abs(float(np.dot(s, anterior))))
    return axis if np.dot(axis, anterior) >= 0 else -axis


def _line_corner(n1: np.ndarray, c1: np.ndarray, n2: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Intersections of lines ``p . n1 = c1`` and ``p . n2 = c2`` (vectorised over the leading axis)."""
    det = n1[..., 0] * n2[..., 1] - n1[..., 1] * n2[..., 0]
    x = (c1 * n2[..., 1] - c2 * n1[..., 1]) / det
    y = (n1[..., 0] * c2 - n2[..., 0] * c1) / det
    return np.stack([x, y], axis=-1)


def _trapezoid_corners(hull: np.ndarray, n_sup: np.ndarray, n_inf: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Corners of the smallest trapezoid bounding the hull with the given endplate normals and walls
    perpendicular to ``axis``: anterior-superior, posterior-superior, posterior-inferior, anterior-inferior."""
    c_sup, c_inf = (hull @ n_sup).max(), (hull @ n_inf).max()
    projection = hull @ axis
    a_max, a_min = projection.max(), projection.min()
    return np.stack([
        _line_corner(n_sup, c_sup, axis, a_max),
        _line_corner(n_sup, c_sup, axis, a_min),
        _line_corner(n_inf, c_inf, axis, a_min),
        _line_corner(n_inf, c_inf, axis, a_max),
    ])


def _pair_corners(hull: np.ndarray, n_sup: np.ndarray, n_inf: np.ndarray) -> tuple[np.ndarray, ...]:
    """Corners, endplate directions (anterior) for many pairs of endplate normals (P, 2) at once."""
    d_sup = np.stack([n_sup[:, 1], -n_sup[:, 0]], axis=-1)
    d_inf = np.stack([-n_inf[:, 1], n_inf[:, 0]], axis=-1)
    axis = d_sup + d_inf
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    c_sup, c_inf = (hull @ n_sup.T).max(axis=0), (hull @ n_inf.T).max(axis=0)
    projection = hull @ axis.T
    a_max, a_min = projection.max(axis=0), projection.min(axis=0)
    corners = np.stack([_line_corner(n_sup, c_sup, axis, a_max), _line_corner(n_sup, c_sup, axis, a_min),
                        _line_corner(n_inf, c_inf, axis, a_min), _line_corner(n_inf, c_inf, axis, a_max)], axis=-2)
    return corners, d_sup, d_inf


def _quad_area(corners: np.ndarray) -> np.ndarray:
    x, y = corners[..., 0], corners[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1))


def _refine_direction(points: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Total-least-squares direction of boundary points along one endplate; ``fallback`` if too few."""
    if len(points) < 4:
        return fallback
    centred = points - points.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    direction = direction if np.dot(direction, fallback) >= 0 else -direction
    return direction if np.dot(direction, fallback) >= np.cos(np.radians(20)) else fallback


def min_area_endplates(
    section: Section, spine_axis: np.ndarray | None = None, max_tilt_deg: float = 40.0
) -> tuple[np.ndarray, np.ndarray]:
    """Endplate directions (pointing anterior) of the smallest-area bounding trapezoid.

    Candidate endplate lines are the hull edges whose outward normal lies within ``max_tilt_deg`` of the superior
    (inferior) side of the minimum-area rectangle; for each pair the walls are the hull support lines perpendicular
    to the endplate bisector; the pair with the smallest area wins. Each direction is then refined by a
    total-least-squares line through the boundary pixels along the chosen support line (central 80% of the body),
    which removes the staircase bias of hull edges. Precise on clean shapes (it uses the whole edge), but a spur or
    notch can steer it: see :func:`bounding_trapezoid`.
    """
    hull = section.hull_mm
    rough = _rough_axis(hull, spine_axis)
    up = perpendicular(rough)
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.linalg.norm(edges, axis=1)
    keep = lengths > 1e-9
    normals = np.stack([edges[keep, 1], -edges[keep, 0]], axis=1) / lengths[keep, None]
    cos_limit = np.cos(np.radians(max_tilt_deg))
    n_sup = np.vstack([up, normals[normals @ up >= cos_limit]])
    n_inf = np.vstack([-up, normals[normals @ -up >= cos_limit]])
    corners, d_sup, d_inf = _pair_corners(hull, np.repeat(n_sup, len(n_inf), axis=0), np.tile(n_inf, (len(n_sup), 1)))
    best = int(np.argmin(_quad_area(corners)))
    d_sup, d_inf = d_sup[best], d_inf[best]
    spacing = max(section.spacing)
    boundary = section.pixel_centres_mm(section.boundary_mask)
    along = boundary @ rough
    lo, hi = (hull @ rough).min(), (hull @ rough).max()
    central = (along >= lo + 0.1 * (hi - lo)) & (along <= hi - 0.1 * (hi - lo))
    refined = []
    for direction, sign in ((d_sup, 1.0), (d_inf, -1.0)):
        normal = sign * perpendicular(direction)
        near = central & (boundary @ normal >= (hull @ normal).max() - 1.5 * spacing)
        refined.append(_refine_direction(boundary[near], direction))
    return refined[0], refined[1]


def median(values: np.ndarray) -> float:
    """Median of a 1D array; the same value as :func:`numpy.median` at a fraction of its call overhead (it is called
    hundreds of times per case)."""
    n = values.size
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    low_high = np.partition(values, (half - 1, half))
    return float((low_high[half - 1] + low_high[half]) / 2)


@lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def theil_sen_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Median of all pairwise slopes (robust to spurs and notches up to ~29% of the points)."""
    i, j = _pairs(len(x))
    dx = x[j] - x[i]
    keep = np.abs(dx) > 1e-9
    return median((y[j] - y[i])[keep] / dx[keep])


def robust_slope(x: np.ndarray, y: np.ndarray, tolerance: float) -> float:
    """Slope of a line through (x, y) that ignores spurs and notches.

    Theil-Sen gives a robust start; points farther than ``max(tolerance, 3 robust sigma)`` from that line are
    dropped and least squares is fitted to the rest (twice). Least squares, unlike Theil-Sen alone, is not biased
    by the pixel staircase of a nearly axis-aligned edge.
    """
    if len(x) > 40:  # Theil-Sen start on a subsample: O(n^2) pairs
        pick = np.linspace(0, len(x) - 1, 40).astype(int)
        slope = theil_sen_slope(x[pick], y[pick])
    else:
        slope = theil_sen_slope(x, y)
    intercept = median(y - slope * x)
    for _ in range(2):
        residual = y - (slope * x + intercept)
        spread = 1.4826 * median(np.abs(residual - median(residual)))
        keep = np.abs(residual) <= max(tolerance, 3 * spread)
        if keep.sum() < 3:
            break
        xs, ys = x[keep], y[keep]
        x_mean, y_mean = xs.sum() / xs.size, ys.sum() / ys.size
        dx = xs - x_mean
        slope = float(np.dot(dx, ys - y_mean) / np.dot(dx, dx))  # least squares, closed form
        intercept = float(y_mean - slope * x_mean)
    return float(slope)


def fit_endplates(
    section: Section,
    sampler: LineSampler,
    spine_axis: np.ndarray | None = None,
    central_fraction: float = 0.9,
    iterations: int = 3,
    start_axis: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Directions (pointing anterior) of the superior and inferior endplates.

    Starting from the minimum-area rectangle (its endplate side chosen with ``spine_axis``), lines perpendicular to
    the current endplate bisector are cast through the central part of the body; their farthest segmented points
    trace the two endplate profiles at sub-pixel precision (a line every pixel, 25 to 80 lines), and a robust line
    through each profile (:func:`robust_slope`) gives its direction. Repeated with the new bisector until stable.
    """
    hull = section.hull_mm
    axis = _rough_axis(hull, spine_axis) if start_axis is None else start_axis
    d_sup = d_inf = axis
    for _ in range(iterations):
        normal = perpendicular(axis)
        along, across = hull @ axis, hull @ normal
        margin = 0.5 * (1 - central_fraction) * np.ptp(along)
        pixel = min(section.spacing)
        samples = int(np.clip((np.ptp(along) - 2 * margin) / pixel, 25, 80))
        u = np.linspace(along.min() + margin, along.max() - margin, samples)
        level = 0.5 * (across.min() + across.max())
        spans = sampler.extents(u[:, None] * axis + level * normal, normal, 0.5 * float(np.ptp(across)) + 2 * pixel)
        ok = np.isfinite(spans[:, 0])
        if ok.sum() < 4:
            raise GeometryError("too few lines cross the body to find its endplates")
        d_sup = unit(axis + robust_slope(u[ok], spans[ok, 1], pixel) * normal)
        d_inf = unit(axis + robust_slope(u[ok], spans[ok, 0], pixel) * normal)
        new_axis = unit(d_sup + d_inf)
        converged = float(np.dot(new_axis, axis)) > np.cos(np.radians(0.05))
        axis = new_axis
        if converged:
            break
    return d_sup, d_inf


def bounding_trapezoid(
    section: Section,
    sampler: LineSampler,
    spine_axis: np.ndarray | None = None,
    reference: str = "bisector",
    central_fraction: float = 0.9,
) -> Trapezoid:
    """The body's bounding trapezoid: two endplate lines and two walls perpendicular to the reference axis, all
    touching the body.

    The smallest-area bounding trapezoid (:func:`min_area_endplates`) gives the starting frame; the endplate
    directions are then fitted robustly to the two endplate profiles over the central part of the body
    (:func:`fit_endplates`), which ignores spurs, notches and rounded corners that can tilt a hull edge.

    ``reference``: ``bisector`` of the two endplates (vertebrae), or ``superior`` endplate alone (sacral levels,
    whose inferior border is a fusion line rather than an endplate).
    """
    hull_sup, hull_inf = min_area_endplates(section, spine_axis)
    d_sup, d_inf = fit_endplates(section, sampler, spine_axis, central_fraction, start_axis=unit(hull_sup + hull_inf))
    axis = unit(d_sup + d_inf) if reference == "bisector" else d_sup
    corners = _trapezoid_corners(section.hull_mm, perpendicular(d_sup), -perpendicular(d_inf), axis)
    return Trapezoid(axis=axis, normal=perpendicular(axis), superior_direction=d_sup, inferior_direction=d_inf,
                     corners=corners)
