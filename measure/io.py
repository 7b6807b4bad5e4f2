"""Read a label mask and bring it into one patient frame for sagittal measurement.

The canonical frame used everywhere in :mod:`measure`:

* array axis 0 runs from patient right to **left** (the sagittal slice axis),
* array axis 1 runs from posterior to **anterior**,
* array axis 2 runs from inferior to **superior**.

So ``labels[s]`` is a sagittal slice whose first in-plane axis points anterior and second points superior; in-plane
2D coordinates in mm are ``(index_ap * spacing_ap, index_si * spacing_si)``. Physical coordinates are those of the
file (ITK / DICOM LPS: +x left, +y posterior, +z superior).

Any signed permutation of the axes (48 orientations) is reoriented exactly. A grid whose axes are rotated against the
patient axes is accepted while its slice axis lies within ``max_obliquity_deg`` of left-right (the in-plane rotation
is taken into account through the direction matrix); a grid beyond that is refused, or resampled onto a
patient-aligned grid with ``resample_oblique``.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")

# Target directions of the canonical axes in LPS.
_CANONICAL_AXES = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])  # left, anterior, superior
_AXIS_NAMES = ("left-right", "anterior-posterior", "superior-inferior")


COARSE_SI_SPACING_MM = 2.0
"""Above this spacing along superior-inferior, heights are too coarsely sampled to trust: rows get a warning."""


class MaskReadError(ValueError):
    """A mask file cannot be measured; the message names the file and the problem."""


def strip_suffix(path: str | Path, keep_other_suffixes: bool = False) -> str:
    """File name without its image extension (``case_01.nii.gz`` -> ``case_01``); a name without one loses its last
    suffix, or, with ``keep_other_suffixes`` (folder names such as a DICOM series ``s.1``), stays as it is."""
    name = Path(path).name
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if keep_other_suffixes else Path(name).stem


def is_image_file(path: Path) -> bool:
    """A visible file with one of the image extensions (masks and scans alike)."""
    return path.is_file() and path.name.lower().endswith(MASK_SUFFIXES) and not path.name.startswith(".")


@dataclass
class SagittalVolume:
    """A 3D volume in the canonical frame (left, anterior, superior) with its physical geometry.

    ``direction`` has the physical (LPS) direction of canonical axis ``c`` in column ``c``; ``origin`` is the physical
    position of canonical voxel (0, 0, 0). ``axis_of_file[c]`` and ``flipped[c]`` map canonical axes back to the
    file's own index axes (ITK order i, j, k).
    """

    array: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray
    origin: np.ndarray
    axis_of_file: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]
    file_size: tuple[int, int, int]
    source: str
    obliquity_deg: float = 0.0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What makes every measurement of this volume less reliable (e.g. coarse superior-inferior sampling): the rows
    of its vertebrae get status ``warning`` and these messages."""
    offset: tuple[int, int, int] = (0, 0, 0)
    """Canonical index of ``array[0, 0, 0]``: masks are cropped to their labelled region (indices elsewhere, such as
    ``index_to_physical`` and ``file_index``, are those of the whole volume)."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical shape of the whole volume (``array`` may be a crop of it)."""
        return tuple(self.file_size[m] for m in self.axis_of_file)  # type: ignore[return-value]

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Continuous canonical voxel indices (..., 3) -> physical LPS coordinates in mm (..., 3)."""
        index = np.asarray(index, dtype=float)
        return self.origin + (index * self.spacing) @ self.direction.T

    def file_index(self, canonical_axis: int, index: int) -> int:
        """Index along the file's own axis for a canonical index (e.g. the sagittal slice number in the file)."""
        n = self.file_size[self.axis_of_file[canonical_axis]]
        return n - 1 - index if self.flipped[canonical_axis] else index

    def slice_normal(self) -> np.ndarray:
        return self.direction[:, 0]

    def same_grid(self, other: SagittalVolume, tolerance: float = 1e-3) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.origin, other.origin, atol=tolerance * 10)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )


def read_image(path: str | Path) -> sitk.Image:
    """Read an image file with a clear error for missing, unreadable or truncated files."""
    path = Path(path)
    if not path.exists():
        raise MaskReadError(f"{path}: file not found")
    if path.is_dir():
        raise MaskReadError(f"{path}: is a folder, not an image file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        if len(detail) > 300:
            detail = detail[:300] + "..."
        reason = ("voxel spacing must be positive (the header gives a zero spacing)" if "zero-valued spacing"
                  in detail.lower() else "cannot read the file (damaged, truncated or not an image)")
        raise MaskReadError(f"{path}: {reason}: {detail}") from exc
    _check_nifti_complete(path)
    return image


def _nifti1_spacing(header: bytes) -> tuple[float, ...] | None:
    """The spatial ``pixdim`` entries of a NIfTI-1 header (None for other headers)."""
    for order in "<>":
        if len(header) < 348 or struct.unpack_from(order + "i", header)[0] != 348:
            continue
        dims = struct.unpack_from(order + "8h", header, 40)
        return struct.unpack_from(order + "8f", header, 76)[1: 1 + min(3, max(0, dims[0]))]
    return None


def _check_nifti_spacing(path: Path, header: bytes) -> None:
    """ITK reads a NIfTI pixdim of 0 as 1 mm without a word: refuse it, since every size in mm would be wrong."""
    spacing = _nifti1_spacing(header)
    if spacing is not None and not all(math.isfinite(v) and v > 0 for v in spacing):
        raise MaskReadError(f"{path}: the NIfTI header's voxel spacing (pixdim) is {tuple(spacing)}: not positive, "
                            "so sizes in mm cannot be known (ITK would read it as 1 mm); fix the header")


def _nifti1_expected_size(header: bytes) -> int | None:
    """Bytes of header plus voxel data that a NIfTI-1 header announces (None for other headers)."""
    for order in "<>":
        if len(header) < 348 or struct.unpack_from(order + "i", header)[0] != 348:
            continue
        dims, bitpix = struct.unpack_from(order + "8h", header, 40), struct.unpack_from(order + "h", header, 72)[0]
        offset = max(352, int(struct.unpack_from(order + "f", header, 108)[0]))
        if 1 <= dims[0] <= 7:
            return offset + math.prod(max(1, d) for d in dims[1 : dims[0] + 1]) * bitpix // 8
    return None


def _check_nifti_complete(path: Path) -> None:
    """ITK's NIfTI reader fills a truncated file's missing voxels silently: refuse files shorter than their header
    says, and gzip streams that end early or are damaged; and it reads a zero pixdim as 1 mm: refuse that too.

    Cheap for intact files: an uncompressed file's size, or a gzip file's trailer (ISIZE, the uncompressed length
    modulo 2**32), is compared with the header's announcement; only a mismatch (or a NIfTI-2 header) costs a full
    decompression to find out what is wrong.
    """
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    try:
        if not compressed:
            with open(path, "rb") as raw:
                header = raw.read(352)
            length = path.stat().st_size
        else:
            with gzip.open(path, "rb") as stream:
                header = stream.read(352)
            expected = _nifti1_expected_size(header)
            with open(path, "rb") as raw:
                raw.seek(-4, 2)
                trailer_size = struct.unpack("<I", raw.read(4))[0]
            if expected is not None and trailer_size == expected % (1 << 32):
                _check_nifti_spacing(path, header)
                return
            with gzip.open(path, "rb") as stream:
                length = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 22), b""))
    except (OSError, EOFError, zlib.error) as exc:
        raise MaskReadError(f"{path}: cannot read the file (damaged or truncated): {exc}") from exc
    expected = _nifti1_expected_size(header)
    if expected is not None and length < expected:
        raise MaskReadError(f"{path}: file is truncated ({length} of {expected} bytes of header and voxel data; "
                            "damaged or incompletely copied)")
    _check_nifti_spacing(path, header)


def check_geometry(image: sitk.Image, path: str | Path) -> None:
    """Refuse images that are not 3D scalar volumes with positive spacing and an orthonormal direction."""
    dim = image.GetDimension()
    if dim != 3:
        raise MaskReadError(f"{path}: expected a 3D volume, got a {dim}D image of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MaskReadError(
            f"{path}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()} components "
            "(vector or RGB image)"
        )
    spacing = np.array(image.GetSpacing(), dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise MaskReadError(f"{path}: voxel spacing must be positive, got {tuple(spacing)} mm")
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise MaskReadError(f"{path}: direction matrix is not orthonormal: {direction.round(4).tolist()}")


def canonical_axis_map(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool], float]:
    """Which file axis becomes canonical axis 0, 1, 2, whether it is flipped, and the slice-axis obliquity (deg).

    Each canonical axis (left, anterior, superior) takes the file axis closest to it; raises when two canonical
    axes would take the same file axis (a grid rotated about 45 degrees).
    """
    dots = _CANONICAL_AXES @ direction  # dots[c, m] = cos(angle between canonical axis c and file axis m)
    axes = tuple(int(np.argmax(np.abs(dots[c]))) for c in range(3))
    if len(set(axes)) != 3:
        raise ValueError("ambiguous orientation")
    flipped = tuple(bool(dots[c, axes[c]] < 0) for c in range(3))
    obliquity = float(np.degrees(np.arccos(min(1.0, abs(dots[0, axes[0]])))))
    return axes, flipped, obliquity  # type: ignore[return-value]


def foreground_box(array_kji: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of the non-zero voxels of a non-negative (or boolean) 3D array, None if it has none.

    Three max-reductions: over axis 0 (a 2D projection gives the box along axes 1 and 2), then over the box's
    columns for axis 0. Max-reductions vectorise far better than ``any`` on uint8 (about 6x on a 77 x 381 x 381 mask).
    """
    if array_kji.size == 0:
        return None
    projection = array_kji.max(axis=0)
    rows = np.flatnonzero(projection.max(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(projection.max(axis=0))
    box_1, box_2 = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    planes = np.flatnonzero(array_kji[:, box_1, box_2].max(axis=(1, 2)))
    return slice(int(planes[0]), int(planes[-1]) + 1), box_1, box_2


def _sagittal_axes(direction: np.ndarray, source: str,
                   max_obliquity_deg: float) -> tuple[tuple[int, int, int], tuple[bool, bool, bool], float]:
    """:func:`canonical_axis_map` of a direction matrix; raises :class:`MaskReadError` naming ``source`` when no image
    axis lies within ``max_obliquity_deg`` of left-right."""
    try:
        axes, flipped, obliquity = canonical_axis_map(direction)
    except ValueError:
        obliquity = 90.0
        axes, flipped = (0, 1, 2), (False, False, False)
    if obliquity > max_obliquity_deg:
        closest = np.degrees(np.arccos(np.clip(np.abs(_CANONICAL_AXES[0] @ direction).max(), 0, 1)))
        raise MaskReadError(
            f"{source}: no image axis lies within {max_obliquity_deg:g} degrees of the patient left-right axis "
            f"(closest: {closest:.1f} degrees), so the volume has no sagittal slice axis; resample it to sagittal "
            "(spine-measure --resample-oblique) or raise --max-obliquity"
        )
    return axes, flipped, obliquity


def _foreground_crop(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bounding box of the non-zero voxels of a (k, j, i) array and its file index range (i, j, k) [low, high)."""
    box = foreground_box(array)
    if box is None:
        return array[:0, :0, :0], np.zeros(3, dtype=int), np.zeros(3, dtype=int)
    return (array[box], np.array([box[2].start, box[1].start, box[0].start]),
            np.array([box[2].stop, box[1].stop, box[0].stop]))


def to_canonical(
    image: sitk.Image, array: np.ndarray, source: str, max_obliquity_deg: float, crop_to_foreground: bool = False,
    contiguous: bool = True,
) -> SagittalVolume:
    """Reorient an image (and its array in SimpleITK's (k, j, i) order) to the canonical frame.

    ``crop_to_foreground`` keeps only the bounding box of the non-zero voxels (found in file order, before the
    reorientation, so the full volume is never copied); ``contiguous=False`` returns a view (no copy at all).
    """
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=float)
    axes, flipped, obliquity = _sagittal_axes(direction, source, max_obliquity_deg)
    size = np.array(image.GetSize())
    low, high = np.zeros(3, dtype=int), size.copy()  # file index range kept, (i, j, k) order
    if crop_to_foreground:
        array, low, high = _foreground_crop(array)
    canonical = array.transpose(2, 1, 0).transpose(axes)
    canonical = canonical[tuple(slice(None, None, -1) if f else slice(None) for f in flipped)]
    signs = np.where(flipped, -1.0, 1.0)
    c_direction = direction[:, list(axes)] * signs
    c_spacing = spacing[list(axes)]
    first_file_index = np.zeros(3)
    for c in range(3):
        if flipped[c]:
            first_file_index[axes[c]] = size[axes[c]] - 1
    c_origin = np.array(image.GetOrigin(), dtype=float) + direction @ (first_file_index * spacing)
    offset = tuple(int(size[axes[c]] - high[axes[c]]) if flipped[c] else int(low[axes[c]]) for c in range(3))
    notes = []
    if obliquity > 1.0:
        notes.append(f"slice axis is {obliquity:.1f} degrees off left-right: heights are measured in the image plane")
    return SagittalVolume(
        array=np.ascontiguousarray(canonical) if contiguous else canonical,
        spacing=c_spacing,
        direction=c_direction,
        origin=c_origin,
        axis_of_file=axes,
        flipped=flipped,
        file_size=tuple(int(s) for s in size),
        source=source,
        obliquity_deg=obliquity,
        notes=notes,
        offset=offset,
    )


def resample_to_patient_grid(image: sitk.Image, interpolator: int = sitk.sitkNearestNeighbor) -> sitk.Image:
    """Resample onto an LPS-aligned grid covering the image (in-plane spacing: the finest; slice: the coarsest)."""
    spacing = np.array(image.GetSpacing())
    size = np.array(image.GetSize())
    corners = np.array([[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(c.astype(float).tolist()) for c in corners])
    lower, upper = points.min(axis=0), points.max(axis=0)
    new_spacing = np.array([spacing.max(), spacing.min(), spacing.min()])
    new_size = np.ceil((upper - lower) / new_spacing).astype(int) + 1
    return sitk.Resample(
        image, new_size.tolist(), sitk.Transform(), interpolator, lower.tolist(), new_spacing.tolist(),
        np.eye(3).ravel().tolist(), 0, image.GetPixelID(),
    )


def label_array(image: sitk.Image, path: str | Path, view: bool = False) -> np.ndarray:
    """The voxel values as a non-negative integer array; refuses probability maps and non-integer floats.

    ``view=True`` returns a view of the image's own buffer when no conversion is needed (no copy of the volume):
    the caller must keep ``image`` alive while it uses the array.
    """
    array = sitk.GetArrayViewFromImage(image) if view else sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise MaskReadError(f"{path}: mask holds NaN or infinite values")
        if not np.array_equal(array, np.round(array)):
            low, high = float(array.min()), float(array.max())
            hint = " (looks like probabilities: threshold or argmax them first)" if high <= 1.0 else ""
            raise MaskReadError(
                f"{path}: mask has non-integer values ({array.dtype}, range {low:g} to {high:g}){hint}; "
                "a label mask must hold integer labels"
            )
        array = array.astype(np.int32)
    elif not np.issubdtype(array.dtype, np.integer):
        raise MaskReadError(f"{path}: unsupported voxel type {array.dtype}")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise MaskReadError(f"{path}: mask has negative label values (minimum {array.min()})")
    if array.dtype.itemsize > 2 and array.size and array.max() <= np.iinfo(np.uint16).max:
        array = array.astype(np.uint16)
    return array


def read_mask(
    path: str | Path, max_obliquity_deg: float = 25.0, resample_oblique: bool = False
) -> SagittalVolume:
    """Read a label mask (NIfTI, NRRD, MHA) into the canonical sagittal frame; raises :class:`MaskReadError`."""
    return mask_volume(read_image(path), str(path), max_obliquity_deg, resample_oblique)


def mask_volume(
    image: sitk.Image, source: str, max_obliquity_deg: float = 25.0, resample_oblique: bool = False
) -> SagittalVolume:
    """A SimpleITK label image in the canonical sagittal frame (checks geometry and voxel values)."""
    check_geometry(image, source)
    notes: list[str] = []
    if resample_oblique:
        try:
            _, _, obliquity = canonical_axis_map(np.array(image.GetDirection()).reshape(3, 3))
        except ValueError:
            obliquity = 90.0
        if obliquity > max_obliquity_deg:
            image = resample_to_patient_grid(image)
            notes.append(f"resampled from an oblique grid ({obliquity:.1f} degrees) onto a patient-aligned grid")
    voxels = label_array(image, source, view=True)  # read-only view of the image's buffer: no copy of the volume
    volume = to_canonical(image, voxels, source, max_obliquity_deg, crop_to_foreground=True)
    if np.may_share_memory(volume.array, voxels):  # the crop happened to be contiguous already: own it
        volume.array = volume.array.copy()
    volume.notes[:0] = notes
    si_spacing = float(volume.spacing[2])
    if si_spacing > COARSE_SI_SPACING_MM:
        volume.warnings.append(f"superior-inferior spacing {si_spacing:g} mm (above {COARSE_SI_SPACING_MM:g} mm): "
                               f"heights and distances move in steps of about {si_spacing:g} mm")
    return volume


def read_image_like(path: str | Path, mask: SagittalVolume) -> SagittalVolume:
    """Read an intensity image (e.g. for QC pictures) into the canonical frame; it must share the mask's grid."""
    image = read_image(path)
    check_geometry(image, path)
    volume = to_canonical(image, sitk.GetArrayFromImage(image), str(path), max_obliquity_deg=90.0, contiguous=False)
    if not volume.same_grid(mask):
        raise MaskReadError(f"{path}: image grid (size, spacing, origin, direction) differs from the mask's")
    return volume
