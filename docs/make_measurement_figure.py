"""Draw docs/figures/measurement_definition.png: the measurement definition on a phantom vertebra.

Run: .venv/bin/python docs/make_measurement_figure.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dataset_conversion.phantom import GridSpec, SpineSpec, VertebraSpec, make_phantom
from measure.geometry import section_from_slice
from measure.io import mask_volume
from measure.vertebra import MethodParameters, largest_component_2d, measure_section

SCALE = 14  # pixels per mm
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _measured_section():
    """An L3 phantom body (rotated 12 degrees, rounded corners) and the measurement of its middle section."""
    body = VertebraSpec("L3", 21.0, 27.0, 21.5, 36.0, rotation_deg=12.0, corner_radius_mm=3.0)
    spine = SpineSpec((body,), ())
    phantom = make_phantom("figure", spine, GridSpec((20, 60, 50), (2.0, 0.5, 0.5)), with_image=False)
    volume = mask_volume(phantom.mask_image(), "figure")
    slice_mask, _ = largest_component_2d(volume.array[volume.array.shape[0] // 2] == 5)
    # volume.array is cropped to the labelled region: tell the section where the crop lies in the whole slice
    section = section_from_slice(slice_mask, (0.5, 0.5), index_offset=volume.offset[1:], slice_shape=volume.shape[1:])
    return section, measure_section(section, MethodParameters())


def _draw_heights(img: np.ndarray, values: dict, px) -> None:
    """The three height lines, their anchor points with S/I tags and their lengths."""
    colours = {"anterior": (0, 120, 255), "middle": (40, 170, 40), "posterior": (200, 120, 0)}
    for name, colour in colours.items():
        top, bottom = values["anchors"][(name, "superior")], values["anchors"][(name, "inferior")]
        cv2.line(img, px(top), px(bottom), colour, 3, cv2.LINE_AA)
        for p, tag in ((top, "S"), (bottom, "I")):
            cv2.circle(img, px(p), 6, (0, 0, 0), -1, cv2.LINE_AA)
            x, y = px(p)
            cv2.putText(img, f"{name[0].upper()}{tag}", (x + 8, y + (-8 if tag == "S" else 22)), FONT, 0.6, (0, 0, 0),
                        1, cv2.LINE_AA)
        label_at = px((top + bottom) / 2)
        cv2.putText(img, f"H{name[0]} {values['heights'][name]:.1f} mm", (label_at[0] + 8, label_at[1]), FONT, 0.6,
                    colour, 2, cv2.LINE_AA)


def _draw(section, values: dict) -> np.ndarray:
    """The section's pixels, its trapezoid, bisector, wall-search lines, walls and height lines."""
    trapezoid = values["trapezoid"]
    points = section.pixel_centres_mm()
    lo, hi = points.min(axis=0) - 9, points.max(axis=0) + 9
    width, height = int((hi[0] - lo[0]) * SCALE), int((hi[1] - lo[1]) * SCALE)

    def px(p: np.ndarray) -> tuple[int, int]:
        return int((hi[0] - p[0]) * SCALE), int((hi[1] - p[1]) * SCALE)  # anterior left, superior up

    img = np.full((height, width, 3), 255, np.uint8)
    for x, y in points:  # the segmented pixels
        a, b = px((x + 0.25, y + 0.25)), px((x - 0.25, y - 0.25))
        cv2.rectangle(img, a, b, (225, 215, 200), -1)
    corners = [px(c) for c in trapezoid.corners]
    cv2.polylines(img, [np.array(corners)], True, (0, 170, 230), 2, cv2.LINE_AA)
    axis, normal, mid = trapezoid.axis, trapezoid.normal, values["centre"]
    posterior, anterior = values["walls"]
    for offset in values["wall_offsets"]:  # wall search lines
        cv2.line(img, px(mid + offset * normal + posterior * axis), px(mid + offset * normal + anterior * axis),
                 (160, 160, 160), 1, cv2.LINE_AA)
    for wall in (posterior, anterior):
        cv2.line(img, px(mid + wall * axis - 16 * normal), px(mid + wall * axis + 16 * normal), (120, 120, 120), 1,
                 cv2.LINE_AA)
    cv2.arrowedLine(img, px(mid - 22 * axis), px(mid + 24 * axis), (90, 90, 90), 1, cv2.LINE_AA, tipLength=0.03)
    _draw_heights(img, values, px)
    depth = values["depth"]
    inset_y = px(mid + anterior * axis - 17 * normal)[1]
    cv2.putText(img, f"10% of depth ({0.1 * depth:.1f} mm)", (px(mid + anterior * axis)[0] - 10, inset_y + 30), FONT,
                0.55, (60, 60, 60), 1, cv2.LINE_AA)
    return img


def main() -> int:
    section, values = _measured_section()
    img = _draw(section, values)
    legend = ["orange box: smallest bounding trapezoid (walls perpendicular to the endplate bisector)",
              "grey arrow: endplate bisector (rotation = its angle to the anterior axis, here "
              f"{values['trapezoid'].angle_deg:.1f} deg)",
              "grey lines: five wall-search lines; walls = median extent (rounded corners ignored)",
              "coloured: height lines perpendicular to the bisector, 10% of the depth inside the walls",
              "S/I dots: the six anchor points (farthest segmented points on each line)"]
    footer = np.full((24 * len(legend) + 10, img.shape[1], 3), 255, np.uint8)
    for n, text in enumerate(legend):
        cv2.putText(footer, text, (8, 22 + 24 * n), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    out = Path(__file__).resolve().parent / "figures" / "measurement_definition.png"
    out.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(out), np.concatenate([img, footer]))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
