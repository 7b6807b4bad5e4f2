"""Synthetic sagittal lumbar spines with exactly known geometry (masks, MRI-like images, truth tables).

A spine is built in the patient's sagittal plane (``a``: anterior mm, ``s``: superior mm, ``l``: left mm). Each
vertebral body has a local frame (``u`` along its endplate bisector, pointing anterior; ``h`` perpendicular,
pointing superior) in which the body is ``{|u| <= D/2, bottom(u) <= h <= top(u)}``:

* the endplates are straight and tilted symmetrically about ``u`` (wedge), with an optional parabolic dip in the
  central 60% of each endplate (biconcave) and rounded corners;
* the heights at ``u = +-(0.5 - inset) D`` and ``u = 0`` are exactly the requested anterior, posterior and middle
  heights, so they are what a correct measurement (docs/measurements.md) must report;
* the body has a flat lateral core (the same section over its central 40% of width) and tapers laterally, so the
  largest sagittal section is known exactly.

Voxels are labelled by evaluating these shapes at each voxel centre's physical position, so any spacing, axis order,
flip or rotated grid gives the same physical phantom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from measure.grading import genant, ratio
from measure.levels import is_sacral_level, project_label_map

from .phantom_segments import segment_truth_table, spine_truth_table

INSET_FRACTION = 0.10
_CODE_VECTORS = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}
_PATIENT_AXIS_OF_CODE = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}

# Typical healthy dimensions (mm) and sagittal rotation (deg) per level; disc height below each level (mm).
TYPICAL = {
    # level: (anterior height, posterior height, depth, rotation, disc below)
    "T11": (22.0, 23.0, 30.0, 12.0, 6.0),
    "T12": (23.0, 24.5, 31.0, 10.0, 7.0),
    "L1": (24.5, 26.0, 33.0, 7.0, 8.0),
    "L2": (25.5, 26.5, 35.0, 4.0, 9.0),
    "L3": (26.5, 26.5, 36.0, 0.0, 10.0),
    "L4": (27.0, 26.0, 37.0, -5.0, 10.0),
    "L5": (27.5, 25.0, 37.0, -13.0, 10.0),
    "S1": (27.0, 27.0, 36.0, -28.0, 2.5),
    "S2": (20.5, 20.5, 26.0, -35.0, 2.5),
}


@dataclass(frozen=True)
class VertebraSpec:
    """One vertebral body; heights are those at the measurement lines (see module docstring)."""

    level: str
    height_anterior_mm: float = 26.0
    height_posterior_mm: float = 27.0
    height_middle_mm: float | None = None  # None: straight endplates, (Ha + Hp) / 2
    depth_mm: float = 35.0
    width_mm: float = 40.0
    rotation_deg: float = 0.0  # endplate bisector vs anterior axis, positive = anterior end cranial
    corner_radius_mm: float = 1.5
    slip_mm: float = 0.0  # anterior displacement relative to the next caudal vertebra (spondylolisthesis)

    @property
    def linear_middle_mm(self) -> float:
        return 0.5 * (self.height_anterior_mm + self.height_posterior_mm)

    @property
    def middle_mm(self) -> float:
        return self.linear_middle_mm if self.height_middle_mm is None else self.height_middle_mm

    def validate(self) -> None:
        if min(self.height_anterior_mm, self.height_posterior_mm, self.depth_mm, self.width_mm) <= 0:
            raise ValueError(f"{self.level}: heights, depth and width must be positive")
        if self.middle_mm > self.linear_middle_mm + 1e-9:
            raise ValueError(f"{self.level}: middle height above (Ha + Hp) / 2 (convex endplates) is not supported")
        if is_sacral_level(self.level) and (self.height_anterior_mm != self.height_posterior_mm
                                            or self.middle_mm != self.linear_middle_mm):
            raise ValueError(f"{self.level}: sacral bodies are measured from their superior endplate, so phantoms "
                             "give them parallel, straight endplates (equal anterior and posterior heights)")
        if self.corner_radius_mm > INSET_FRACTION * self.depth_mm:
            raise ValueError(f"{self.level}: corner radius must not exceed {INSET_FRACTION:g} x depth")

    # -- local shape -----------------------------------------------------------------------------------------
    def _half_tilt(self) -> float:
        """tan of half the endplate angle; heights fall by 2 * u * t from posterior to anterior."""
        return (self.height_posterior_mm - self.height_anterior_mm) / (2 * 2 * (0.5 - INSET_FRACTION) * self.depth_mm)

    def top(self, u: np.ndarray) -> np.ndarray:
        """Superior boundary h(u) in the local frame."""
        return 0.5 * self.linear_middle_mm - u * self._half_tilt() - self._dip(u) - self._rounding(u)

    def bottom(self, u: np.ndarray) -> np.ndarray:
        return -0.5 * self.linear_middle_mm + u * self._half_tilt() + self._dip(u) + self._rounding(u)

    def _dip(self, u: np.ndarray) -> np.ndarray:
        depth = 0.5 * (self.linear_middle_mm - self.middle_mm)
        reach = 0.3 * self.depth_mm
        return depth * np.clip(1 - (u / reach) ** 2, 0, None)

    def _rounding(self, u: np.ndarray) -> np.ndarray:
        r = self.corner_radius_mm
        if r <= 0:
            return np.zeros_like(u)
        over = np.clip(np.abs(u) - (0.5 * self.depth_mm - r), 0, None)
        return r - np.sqrt(np.clip(r * r - over * over, 0, None))

    def inside_local(self, u: np.ndarray, h: np.ndarray) -> np.ndarray:
        return (np.abs(u) <= 0.5 * self.depth_mm) & (h <= self.top(u)) & (h >= self.bottom(u))

    def volume_ml(self) -> float:
        """The body's volume: its local section's area (integrated numerically on 200 001 points, relative error
        below 1e-6) times the integral of :meth:`lateral_scale` squared over the width, 0.8 x width."""
        u = np.linspace(-0.5 * self.depth_mm, 0.5 * self.depth_mm, 200_001)
        area = np.trapezoid(np.clip(self.top(u) - self.bottom(u), 0, None), u)
        return float(area * 0.8 * self.width_mm / 1000.0)

    def lateral_scale(self, l_mm: np.ndarray) -> np.ndarray:
        """Size of the sagittal section at left-right offset ``l`` (1 in the flat core, 0 at the side)."""
        half, core = 0.5 * self.width_mm, 0.2 * self.width_mm
        t = np.clip((np.abs(l_mm) - core) / (half - core), 0, None)
        return np.sqrt(np.clip(1 - t * t, 0, None))


@dataclass(frozen=True)
class SpineSpec:
    vertebrae: tuple[VertebraSpec, ...]
    disc_heights_mm: tuple[float, ...]  # between consecutive vertebrae, measured at the disc centre
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (left, anterior, superior) of the spine's centre

    def __post_init__(self) -> None:
        if len(self.disc_heights_mm) != max(0, len(self.vertebrae) - 1):
            raise ValueError("disc_heights_mm needs one value per pair of adjacent vertebrae")
        for v in self.vertebrae:
            v.validate()


@dataclass(frozen=True)
class GridSpec:
    """The image grid: field of view and spacing per patient axis (left-right, anterior-posterior, superior-inferior).

    ``orientation``: the direction in which the file's index axes i, j, k increase, as three letters of L/R, A/P,
    S/I (``LPS`` is ITK's identity direction; ``ASL`` stores sagittal slices along k). ``oblique_deg`` rotates the
    grid about the left-right axis (an oblique sagittal acquisition), ``tilt_deg`` about the superior axis.
    """

    fov_mm: tuple[float, float, float] = (60.0, 90.0, 200.0)
    spacing_mm: tuple[float, float, float] = (3.0, 0.8, 0.8)
    orientation: str = "LPS"
    oblique_deg: float = 0.0
    tilt_deg: float = 0.0

    def file_axes(self) -> list[int]:
        code = self.orientation.upper()
        if len(code) != 3 or sorted(_PATIENT_AXIS_OF_CODE[c] for c in code) != [0, 1, 2]:
            raise ValueError(f"orientation {self.orientation!r} must name each patient axis once (e.g. LPS, ASL)")
        return [_PATIENT_AXIS_OF_CODE[c] for c in code]

    def direction(self) -> np.ndarray:
        columns = np.array([_CODE_VECTORS[c] for c in self.orientation.upper()]).T
        return _rotation_lps(self.oblique_deg, self.tilt_deg) @ columns

    def size(self) -> list[int]:
        return [max(1, int(round(self.fov_mm[p] / self.spacing_mm[p]))) for p in self.file_axes()]

    def spacing(self) -> list[float]:
        return [float(self.spacing_mm[p]) for p in self.file_axes()]

    def origin(self) -> np.ndarray:
        """Origin that puts the grid's centre at the patient origin."""
        half = (np.array(self.size()) - 1) / 2 * np.array(self.spacing())
        return -self.direction() @ half


def _rotation_lps(oblique_deg: float, tilt_deg: float) -> np.ndarray:
    a, b = math.radians(oblique_deg), math.radians(tilt_deg)
    about_x = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    about_z = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    return about_z @ about_x


@dataclass
class PlacedVertebra:
    spec: VertebraSpec
    label: int
    centre: np.ndarray  # (a, s) in the sagittal plane, mm
    axis: np.ndarray = field(init=False)
    normal: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        t = math.radians(self.spec.rotation_deg)
        self.axis = np.array([math.cos(t), math.sin(t)])
        self.normal = np.array([-math.sin(t), math.cos(t)])

    def to_plane(self, u: float, h: float) -> np.ndarray:
        return self.centre + u * self.axis + h * self.normal

    def line_positions(self) -> dict[str, float]:
        reach = (0.5 - INSET_FRACTION) * self.spec.depth_mm
        return {"anterior": reach, "middle": 0.0, "posterior": -reach}

    def anchors(self) -> dict[tuple[str, str], np.ndarray]:
        out = {}
        for name, u in self.line_positions().items():
            uu = np.array([u])
            out[(name, "superior")] = self.to_plane(u, float(self.spec.top(uu)[0]))
            out[(name, "inferior")] = self.to_plane(u, float(self.spec.bottom(uu)[0]))
        return out

    def corners(self) -> np.ndarray:
        """Sagittal-plane corners (anterior-superior, posterior-superior, posterior-inferior, anterior-inferior)."""
        r = 0.5 * self.spec.depth_mm
        return np.array([self.to_plane(u, float(f(np.array([u]))[0]))
                         for u, f in ((r, self.spec.top), (-r, self.spec.top), (-r, self.spec.bottom),
                                      (r, self.spec.bottom))])

    def inside(self, lr: np.ndarray, a: np.ndarray, s: np.ndarray) -> np.ndarray:
        scale = self.spec.lateral_scale(lr)
        da, ds = a - self.centre[0], s - self.centre[1]
        u = da * self.axis[0] + ds * self.axis[1]
        h = da * self.normal[0] + ds * self.normal[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            result = self.spec.inside_local(u / scale, h / scale)
        return result & (scale > 0)


def place_spine(spec: SpineSpec, label_values: dict[str, int] | None = None) -> list[PlacedVertebra]:
    """Stack the bodies cranio-caudally: each disc's centre height along the mean of the two endplate normals."""
    values = label_values or {v: k for k, v in project_label_map().levels.items()}
    placed: list[PlacedVertebra] = []
    for i, v in enumerate(spec.vertebrae):
        if v.level not in values:
            raise ValueError(f"level {v.level} has no label value")
        if i == 0:
            placed.append(PlacedVertebra(v, values[v.level], np.zeros(2)))
            continue
        upper = placed[-1]
        current = PlacedVertebra(v, values[v.level], np.zeros(2))
        bottom_mid = upper.to_plane(0.0, -0.5 * upper.spec.linear_middle_mm)
        down = -(upper.normal + current.normal)
        down /= np.linalg.norm(down)
        top_mid = bottom_mid + spec.disc_heights_mm[i - 1] * down - upper.spec.slip_mm * upper.axis
        current.centre = top_mid - 0.5 * v.linear_middle_mm * current.normal
        placed.append(current)
    mean = np.mean([p.centre for p in placed], axis=0)
    for p in placed:
        p.centre = p.centre - mean + np.array(spec.centre_mm[1:])
    return placed


# -- rasterisation --------------------------------------------------------------------------------------------
def _patient_coordinates(grid: GridSpec, index_ijk: np.ndarray) -> tuple[np.ndarray, ...]:
    physical = grid.origin() + (index_ijk * np.array(grid.spacing())) @ grid.direction().T
    return physical[..., 0], -physical[..., 1], physical[..., 2]  # left, anterior, superior


def _index_box(grid: GridSpec, lower: np.ndarray, upper: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Index ranges (i, j, k) of the voxels whose centres may lie in a patient-space box (l, a, s)."""
    corners = np.array([[x, y, z] for x in (lower[0], upper[0]) for y in (lower[1], upper[1])
                        for z in (lower[2], upper[2])])
    lps = np.column_stack([corners[:, 0], -corners[:, 1], corners[:, 2]])
    index = np.linalg.solve(grid.direction(), (lps - grid.origin()).T).T / np.array(grid.spacing())
    size = grid.size()
    lo = np.clip(np.floor(index.min(axis=0)).astype(int) - 1, 0, size)
    hi = np.clip(np.ceil(index.max(axis=0)).astype(int) + 2, 0, size)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=False))


def _paint(grid: GridSpec, volume_kji: np.ndarray, box_lps: tuple[np.ndarray, np.ndarray],
           inside: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], value: float) -> None:
    box = _index_box(grid, *box_lps)
    if box is None:
        return
    i, j, k = np.meshgrid(*(np.arange(b.start, b.stop) for b in box), indexing="ij")
    lr, a, s = _patient_coordinates(grid, np.stack([i, j, k], axis=-1).astype(float))
    hit = inside(lr, a, s)
    volume_kji[k[hit], j[hit], i[hit]] = value


def _body_box(p: PlacedVertebra) -> tuple[np.ndarray, np.ndarray]:
    """Patient-space box around the whole body (its outline, not only its corners: rounding lowers the corners)."""
    u = np.linspace(-0.5 * p.spec.depth_mm, 0.5 * p.spec.depth_mm, 721)
    outline = np.concatenate([[p.to_plane(x, y) for x, y in zip(u, p.spec.top(u), strict=True)],
                              [p.to_plane(x, y) for x, y in zip(u, p.spec.bottom(u), strict=True)]])
    half_w = 0.5 * p.spec.width_mm
    pad = 1.0
    return (np.array([-half_w - pad, outline[:, 0].min() - pad, outline[:, 1].min() - pad]),
            np.array([half_w + pad, outline[:, 0].max() + pad, outline[:, 1].max() + pad]))


def _polygon_inside(polygon: np.ndarray, half_width: float, inner_half_width: float = 0.0) -> Callable:
    """Inside test for a convex sagittal polygon extruded over inner_half_width <= |l| <= half_width (mm from the
    midline; an inner half width > 0 makes a left and a right part, such as the pedicles)."""
    centre = polygon.mean(axis=0)
    edges = np.roll(polygon, -1, axis=0) - polygon
    normals = np.column_stack([edges[:, 1], -edges[:, 0]])
    offsets = np.einsum("ij,ij->i", normals, polygon)
    sign = np.sign(normals @ centre - offsets)

    def inside(lr: np.ndarray, a: np.ndarray, s: np.ndarray) -> np.ndarray:
        ok = (np.abs(lr) <= half_width) & (np.abs(lr) >= inner_half_width)
        for n, c, g in zip(normals, offsets, sign, strict=False):
            ok &= (a * n[0] + s * n[1] - c) * g >= 0
        return ok

    return inside


def _polygon_box(polygon: np.ndarray, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([-half_width, *polygon.min(axis=0)]) - 1, np.array([half_width, *polygon.max(axis=0)]) + 1)


def render_mask(grid: GridSpec, placed: Sequence[PlacedVertebra]) -> np.ndarray:
    """Label volume in SimpleITK array order (k, j, i)."""
    mask = np.zeros(grid.size()[::-1], dtype=np.uint8)
    for p in placed:
        _paint(grid, mask, _body_box(p), p.inside, p.label)
    return mask


def render_image(grid: GridSpec, placed: Sequence[PlacedVertebra], mask: np.ndarray, rng: np.random.Generator,
                 noise: float = 0.03, bias: float = 0.25) -> np.ndarray:
    """MRI-like T2 image (int16): dark-grey bone with a darker cortex, bright discs and CSF, noise, bias field."""
    image = np.full(mask.shape, 0.22, dtype=np.float32)
    for upper, lower in zip(placed[:-1], placed[1:], strict=False):  # discs
        c_up, c_low = upper.corners(), lower.corners()
        polygon = np.array([c_up[3], c_up[2], c_low[1], c_low[0]])
        half = 0.25 * (upper.spec.width_mm + lower.spec.width_mm) * 0.8
        _paint(grid, image, _polygon_box(polygon, half), _polygon_inside(polygon, half), 0.8)
    for p in placed:  # spinal canal (CSF), posterior to each body and its lower disc
        corners = p.corners()
        back = -p.axis
        polygon = np.array([corners[1] + 2 * back, corners[1] + 14 * back, corners[2] + 14 * back - 6 * p.normal,
                            corners[2] + 2 * back - 6 * p.normal])
        _paint(grid, image, _polygon_box(polygon, 7.0), _polygon_inside(polygon, 7.0), 0.95)
    cortex = np.zeros_like(mask)
    for p in placed:
        thinner = replace(p.spec, height_anterior_mm=p.spec.height_anterior_mm - 2,
                          height_posterior_mm=p.spec.height_posterior_mm - 2, height_middle_mm=p.spec.middle_mm - 2,
                          depth_mm=p.spec.depth_mm - 2, width_mm=p.spec.width_mm - 2,
                          corner_radius_mm=min(p.spec.corner_radius_mm, 0.1 * (p.spec.depth_mm - 2)))
        marrow = PlacedVertebra(thinner, p.label, p.centre)
        _paint(grid, cortex, _body_box(marrow), marrow.inside, 1)
    image[mask > 0] = 0.12
    image[(mask > 0) & (cortex > 0)] = 0.42
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in mask.shape), indexing="ij")
    coefficients = rng.uniform(-1, 1, size=4) * bias / 2
    c = coefficients
    field = 1 + c[0] * i + c[1] * j + c[2] * k + c[3] * (i * j + k * k - 0.5)
    image *= field.astype(np.float32)
    real = image + rng.normal(0, noise, mask.shape).astype(np.float32)
    imaginary = rng.normal(0, noise, mask.shape).astype(np.float32)
    magnitude = np.sqrt(real * real + imaginary * imaginary)
    return np.clip(magnitude * 1000, 0, 32767).astype(np.int16)


# -- truth -----------------------------------------------------------------------------------------------------
def truth_table(case_id: str, placed: Sequence[PlacedVertebra]) -> pd.DataFrame:
    """What a correct measurement reports, one row per vertebra (column names as in spine-measure's CSV)."""
    rows = []
    anchors = [p.anchors() for p in placed]
    for idx, p in enumerate(placed):
        spec = p.spec
        row = {
            "case_id": case_id, "level": spec.level, "label": p.label,
            "height_anterior_mm": spec.height_anterior_mm, "height_middle_mm": spec.middle_mm,
            "height_posterior_mm": spec.height_posterior_mm, "rotation_deg": spec.rotation_deg,
            "depth_mm": spec.depth_mm,
            "distance_anterior_mm": math.nan, "distance_posterior_mm": math.nan,
            "ratio_anterior_posterior": ratio(spec.height_anterior_mm, spec.height_posterior_mm),
            "ratio_middle_posterior": ratio(spec.middle_mm, spec.height_posterior_mm),
            "volume_ml": spec.volume_ml(),
        }
        if idx + 1 < len(placed):
            lower = anchors[idx + 1]
            for side in ("anterior", "posterior"):
                row[f"distance_{side}_mm"] = float(np.linalg.norm(anchors[idx][(side, "inferior")]
                                                                   - lower[(side, "superior")]))
        if not is_sacral_level(spec.level):
            neighbours = [q.spec.height_posterior_mm for q in placed[max(0, idx - 1): idx + 2]
                          if q is not p and not is_sacral_level(q.spec.level)]
            g = genant(spec.height_anterior_mm, spec.middle_mm, spec.height_posterior_mm, neighbours)
            row["genant_grade"], row["deformity_type"] = g.grade, g.deformity_type
        else:
            row["genant_grade"], row["deformity_type"] = None, None
        for (position, end), point in anchors[idx].items():
            lps = (0.0, -point[0], point[1])  # on the mid-sagittal plane (left-right = 0)
            for axis, value in zip("xyz", lps, strict=False):
                row[f"anchor_{position}_{end}_{axis}_mm"] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["genant_grade"] = frame["genant_grade"].astype("Int64")
    return frame


# -- whole cases -----------------------------------------------------------------------------------------------
@dataclass
class Phantom:
    case_id: str
    grid: GridSpec
    spine: SpineSpec
    mask: np.ndarray  # SimpleITK array order (k, j, i)
    image: np.ndarray | None
    truth: pd.DataFrame
    label_values: dict[str, int]
    segment_truth: pd.DataFrame | None = None
    """One row per motion segment, as spine-measure's segments table (:mod:`.phantom_segments`)."""
    spine_truth: pd.DataFrame | None = None
    """One row, as spine-measure's spine table."""

    def _sitk(self, array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(self.grid.spacing())
        img.SetDirection(self.grid.direction().ravel().tolist())
        img.SetOrigin(self.grid.origin().tolist())
        return img

    def image_like(self, array: np.ndarray) -> sitk.Image:
        """An array (SimpleITK order) on the phantom's grid."""
        return self._sitk(array)

    def mask_image(self) -> sitk.Image:
        return self._sitk(self.mask)

    def intensity_image(self) -> sitk.Image:
        if self.image is None:
            raise ValueError("phantom was made without an image")
        return self._sitk(self.image)


def make_phantom(case_id: str, spine: SpineSpec, grid: GridSpec, with_image: bool = True, seed: int = 0,
                 label_values: dict[str, int] | None = None) -> Phantom:
    """Rasterise a spine on a grid; the truth is the analytic geometry."""
    values = label_values or {v: k for k, v in project_label_map().levels.items()}
    placed = place_spine(spine, values)
    mask = render_mask(grid, placed)
    image = render_image(grid, placed, mask, np.random.default_rng(seed)) if with_image else None
    return Phantom(case_id, grid, spine, mask, image, truth_table(case_id, placed), values,
                   segment_truth_table(case_id, placed), spine_truth_table(case_id, placed))


def typical_vertebra(level: str, **changes: float) -> VertebraSpec:
    ha, hp, depth, rotation, _ = TYPICAL.get(level, TYPICAL["L3"])
    return replace(VertebraSpec(level, ha, hp, None, depth, rotation_deg=rotation), **changes)


def typical_spine(levels: Sequence[str], **spine_changes) -> SpineSpec:
    vertebrae = tuple(typical_vertebra(level) for level in levels)
    discs = tuple(TYPICAL.get(level, TYPICAL["L3"])[4] for level in levels[:-1])
    return SpineSpec(vertebrae, discs, **spine_changes)


DEFORMITIES = ("wedge", "biconcave", "crush")


def deform(v: VertebraSpec, kind: str, reduction: float) -> VertebraSpec:
    """Apply a Genant-type deformity: wedge lowers Ha, biconcave Hm, crush all heights, by ``reduction``."""
    if kind == "wedge":
        return replace(v, height_anterior_mm=v.height_posterior_mm * (1 - reduction))
    if kind == "biconcave":
        return replace(v, height_middle_mm=v.height_posterior_mm * (1 - reduction),
                       height_anterior_mm=v.height_posterior_mm)
    if kind == "crush":
        return replace(v, height_anterior_mm=v.height_anterior_mm * (1 - reduction),
                       height_posterior_mm=v.height_posterior_mm * (1 - reduction),
                       corner_radius_mm=min(v.corner_radius_mm, 0.1 * v.depth_mm))
    raise ValueError(f"unknown deformity {kind!r} ({', '.join(DEFORMITIES)})")


def random_spine(rng: np.random.Generator, levels: Sequence[str], deformity_probability: float = 0.15,
                 slip_probability: float = 0.1) -> SpineSpec:
    """A plausible random spine: sizes +-10%, rotations +-6 deg, discs +-25%, some deformities and slips."""
    vertebrae = []
    for level in levels:
        ha, hp, depth, rotation, _ = TYPICAL.get(level, TYPICAL["L3"])
        scale = rng.uniform(0.9, 1.1)
        ha, hp = ha * scale * rng.uniform(0.97, 1.03), hp * scale * rng.uniform(0.97, 1.03)
        if is_sacral_level(level):
            ha = hp = 0.5 * (ha + hp)
        v = VertebraSpec(level, ha, hp, None, depth * rng.uniform(0.92, 1.08), width_mm=rng.uniform(36, 48),
                         rotation_deg=rotation + rng.uniform(-6, 6), corner_radius_mm=rng.uniform(0.5, 2.5))
        if not is_sacral_level(level) and rng.random() < deformity_probability:
            v = deform(v, str(rng.choice(DEFORMITIES)), float(rng.uniform(0.22, 0.45)))
        if rng.random() < slip_probability and level in ("L3", "L4", "L5"):
            v = replace(v, slip_mm=float(rng.uniform(3, 8)))
        vertebrae.append(v)
    discs = tuple(TYPICAL.get(level, TYPICAL["L3"])[4] * rng.uniform(0.75, 1.25) for level in levels[:-1])
    return SpineSpec(tuple(vertebrae), discs, (0.0, float(rng.uniform(-5, 5)), float(rng.uniform(-8, 8))))


def fov_for(spine: SpineSpec, margin_mm: float = 15.0, lateral_mm: float = 60.0) -> tuple[float, float, float]:
    """A field of view (left-right, anterior-posterior, superior-inferior) holding the whole spine plus a margin."""
    placed = place_spine(spine, {v.level: n for n, v in enumerate(spine.vertebrae, start=1)})  # values unused here
    corners = np.concatenate([p.corners() for p in placed])
    centre = np.array(spine.centre_mm[1:])
    reach = np.abs(corners - centre).max(axis=0) + margin_mm
    return (lateral_mm, float(2 * reach[0] + 25), float(2 * reach[1]))
