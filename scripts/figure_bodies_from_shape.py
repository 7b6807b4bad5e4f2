"""Figure for docs/measurements.md section 9: a whole vertebra of a SPINEPS-format mask cut down to its body by shape
(``spine-measure --bodies-from-shape``), three sagittal sections side by side, against the body the subregion mask
names (corpus + endplates).

    python scripts/figure_bodies_from_shape.py ../shared/data/extra/spineps_panoptica docs/figures/bodies_from_shape.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import SimpleITK as sitk

from measure.bodies import isolate_body, posterior_wall
from measure.io import mask_volume
from measure.subregions import vertebral_bodies

GREY, WHITE, GREEN, ORANGE = (90, 90, 90), (235, 235, 235), (60, 200, 60), (255, 140, 0)  # RGB


def _canonical(image: sitk.Image, name: str) -> tuple[np.ndarray, np.ndarray]:
    volume = mask_volume(image, name, 25.0, False)
    full = np.zeros(volume.shape, volume.array.dtype)
    full[tuple(slice(o, o + n) for o, n in zip(volume.offset, volume.array.shape, strict=True))] = volume.array
    return full, volume.spacing


def render(folder: Path, value: int, scale: int = 6) -> np.ndarray:
    """Panels of three sagittal sections (midline, half-way, lateral) of vertebra ``value`` of the reference."""
    image = sitk.ReadImage(str(folder / "matched_instance_ref.nii.gz"))
    instances = sitk.GetArrayFromImage(image)
    whole = sitk.GetImageFromArray(np.where(instances >= 200, instances - 200, np.where(instances >= 100, 0, instances))
                                   .astype(np.uint8))
    whole.CopyInformation(image)
    truth = sitk.GetImageFromArray(vertebral_bodies(
        instances, sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "semantic_ref.nii.gz"))))[0])
    truth.CopyInformation(image)
    whole_array, spacing = _canonical(whole, "whole")
    truth_array, _ = _canonical(truth, "truth")
    voxels = whole_array == value
    box = tuple(slice(max(int(w.min()) - 2, 0), int(w.max()) + 3) for w in np.nonzero(voxels))
    voxels, expected = voxels[box], truth_array[box] == value
    body = isolate_body(voxels, spacing)
    intercept, slope = posterior_wall(voxels, spacing)
    counts = voxels.sum(axis=(1, 2))
    centre = int(round(float((np.arange(len(counts)) * counts).sum() / counts.sum())))
    lateral = int(np.nonzero(counts)[0].max())
    panels = []
    for index, title in ((centre, "midline"), ((centre + lateral) // 2, "through a pedicle"), (lateral, "lateral")):
        rgb = np.zeros((*voxels.shape[1:], 3), np.uint8)
        rgb[voxels[index]] = GREY
        rgb[body[index]] = WHITE
        rgb = np.rot90(rgb)[:, ::-1].copy()  # superior up, anterior left (as the QC pictures)
        size = (int(rgb.shape[1] * spacing[1] * scale), int(rgb.shape[0] * spacing[2] * scale))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST)
        outline = np.rot90(expected[index].astype(np.uint8))[:, ::-1].copy()
        contours, _ = cv2.findContours(cv2.resize(outline, size, interpolation=cv2.INTER_NEAREST), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, GREEN, 3)
        top, bottom = voxels.shape[2] * spacing[2], 0.0
        points = [(intercept + slope * s, s) for s in (bottom, top)]  # the midline wall: anterior = a + b superior
        pixels = [(int(rgb.shape[1] - a * scale), int(rgb.shape[0] - s * scale)) for a, s in points]
        cv2.line(rgb, pixels[0], pixels[1], ORANGE, 3)
        cv2.putText(rgb, title, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.9, WHITE, 2)
        panels.append(np.pad(rgb, ((0, 0), (0, 12), (0, 0))))
    height = max(p.shape[0] for p in panels)
    return np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels], axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the spineps_panoptica example folder")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--value", type=int, default=6, help="instance value of the vertebra (default 6, L3)")
    args = parser.parse_args(argv)
    picture = render(args.folder, args.value)
    if not cv2.imwrite(str(args.output), picture[..., ::-1]):
        print(f"figure_bodies_from_shape: could not write {args.output}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
