"""The paper's anterior-posterior crop and its exact inverse (paste-back).

``--crop-ap 0.25`` removes 25 % of the image's extent along the file axis closest to the patient's
anterior-posterior direction (found from the direction matrix) on each side. The cropped image keeps its physical
geometry (the origin moves to the first kept voxel), so a cropped mask overlays the original scan; the
:class:`CropBox` records what was removed so that the same crop can be applied to a new scan at inference and a
prediction pasted back into the full grid voxel for voxel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from measure.io import canonical_axis_map

AP_CANONICAL_AXIS = 1  # canonical axes: left, anterior, superior


@dataclass(frozen=True)
class CropBox:
    """A crop along one file axis: keep indices ``start`` to ``stop - 1`` of ``axis`` (ITK order: 0 = i, 1 = j,
    2 = k) out of a grid of ``full_size`` voxels with ``full_origin``/``spacing``/``direction``."""

    axis: int
    start: int
    stop: int
    full_size: tuple[int, int, int]
    full_origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    fraction: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> CropBox:
        return cls(axis=int(data["axis"]), start=int(data["start"]), stop=int(data["stop"]),
                   full_size=tuple(int(v) for v in data["full_size"]),  # type: ignore[arg-type]
                   full_origin=tuple(float(v) for v in data["full_origin"]),  # type: ignore[arg-type]
                   spacing=tuple(float(v) for v in data["spacing"]),  # type: ignore[arg-type]
                   direction=tuple(float(v) for v in data["direction"]), fraction=float(data["fraction"]))

    def index_slices(self) -> tuple[slice, slice, slice]:
        """The kept region as slices of a numpy array in SimpleITK order (k, j, i)."""
        kept = [slice(None)] * 3
        kept[2 - self.axis] = slice(self.start, self.stop)
        return tuple(kept)  # type: ignore[return-value]


def ap_axis(image: sitk.Image) -> int:
    """The file axis (0 = i, 1 = j, 2 = k) closest to the patient's anterior-posterior direction."""
    axes, _, _ = canonical_axis_map(np.array(image.GetDirection(), dtype=float).reshape(3, 3))
    return axes[AP_CANONICAL_AXIS]


def ap_crop_box(image: sitk.Image, fraction: float) -> CropBox:
    """The box removing ``fraction`` (0 <= fraction < 0.5) of the anterior-posterior extent on each side.

    The number of voxels removed per side is ``round(fraction * n)``, the same on both sides.
    """
    if not 0.0 <= fraction < 0.5:
        raise ValueError(f"crop fraction must be in [0, 0.5), got {fraction}")
    axis = ap_axis(image)
    n = image.GetSize()[axis]
    cut = int(round(fraction * n))
    if n - 2 * cut < 1:
        raise ValueError(f"cropping {fraction:.0%} per side of {n} voxels leaves nothing")
    return CropBox(axis=axis, start=cut, stop=n - cut, full_size=tuple(image.GetSize()),  # type: ignore[arg-type]
                   full_origin=tuple(image.GetOrigin()), spacing=tuple(image.GetSpacing()),  # type: ignore[arg-type]
                   direction=tuple(image.GetDirection()), fraction=float(fraction))


def _check_grid(image: sitk.Image, box: CropBox, what: str, tolerance: float = 1e-4) -> None:
    if tuple(image.GetSize()) != tuple(box.full_size):
        raise ValueError(f"{what}: size {image.GetSize()} differs from the crop box's grid {box.full_size}")
    for name, have, want in (("origin", image.GetOrigin(), box.full_origin),
                             ("spacing", image.GetSpacing(), box.spacing),
                             ("direction", image.GetDirection(), box.direction)):
        if not np.allclose(have, want, atol=tolerance):
            raise ValueError(f"{what}: {name} {tuple(np.round(have, 5))} differs from the crop box's "
                             f"{tuple(np.round(want, 5))}")


def apply_crop(image: sitk.Image, box: CropBox) -> sitk.Image:
    """Crop an image of the box's grid; the result keeps its physical position."""
    _check_grid(image, box, "image to crop")
    index = [0, 0, 0]
    size = list(image.GetSize())
    index[box.axis] = box.start
    size[box.axis] = box.stop - box.start
    return sitk.RegionOfInterest(image, size, index)


def paste_back(cropped: sitk.Image, box: CropBox, background: float = 0) -> sitk.Image:
    """Put a cropped image (e.g. a prediction on the cropped scan) back into the full grid; outside is ``background``.

    Exact inverse of :func:`apply_crop` inside the box: every voxel keeps its value and physical position.
    """
    expected = list(box.full_size)
    expected[box.axis] = box.stop - box.start
    if list(cropped.GetSize()) != expected:
        raise ValueError(f"cropped image has size {cropped.GetSize()}, the crop box gives {tuple(expected)}")
    first = np.array(box.full_origin) + np.array(box.direction).reshape(3, 3) @ (
        np.eye(3)[box.axis] * box.start * np.array(box.spacing))
    if not np.allclose(cropped.GetOrigin(), first, atol=1e-3):
        raise ValueError(f"cropped image origin {tuple(np.round(cropped.GetOrigin(), 4))} is not where the crop box "
                         f"puts it ({tuple(np.round(first, 4))})")
    array = sitk.GetArrayViewFromImage(cropped)
    full = np.full(tuple(reversed(box.full_size)), background, dtype=array.dtype)
    full[box.index_slices()] = array
    result = sitk.GetImageFromArray(full)
    result.SetOrigin(box.full_origin)
    result.SetSpacing(box.spacing)
    result.SetDirection(box.direction)
    return result
