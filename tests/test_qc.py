"""QC pictures: a body whose measurement failed before a section was chosen is still shown, named and explained."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from conftest import phantom_on_grid

from dataset_conversion.phantom import typical_spine
from measure.io import SagittalVolume, mask_volume
from measure.levels import project_label_map
from measure.qc import _FAILED_COLOUR, _shown_slice, _view_for, render_qc
from measure.spine import SpineMeasurement, measure_spine
from measure.vertebra import MethodParameters

NOTE = (200, 200, 255)  # status text of bodies that are not "ok"


def _measured(levels: list[str]) -> tuple[SagittalVolume, list[SpineMeasurement]]:
    phantom = phantom_on_grid(typical_spine(levels), (2.0, 1.0, 1.0))
    volume = mask_volume(phantom.mask_image(), phantom.case_id)
    return volume, measure_spine(volume, project_label_map(), MethodParameters())


def _fail_early(rows: list[SpineMeasurement], level: str) -> None:
    """Leave ``level`` as a measurement that failed before a section was chosen (as for a mask holding posterior
    elements): no outline, status failed, the reason in its messages."""
    vertebra = next(r.vertebra for r in rows if r.vertebra.level == level)
    vertebra.contour_2d = None
    vertebra.status = "failed"
    vertebra.note("not measurable: largest part 70.0 mm from front to back")


def _pixels(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(picture == np.array(colour, np.uint8), axis=-1)


def _failure_outline(picture: np.ndarray) -> np.ndarray:
    """Pixels of the failure colour, antialiased over a grey background: red well above green, blue like green (the
    orange height lines have no blue)."""
    b, g, r = (picture[..., c].astype(int) for c in range(3))
    assert _FAILED_COLOUR[0] == _FAILED_COLOUR[1] and _FAILED_COLOUR[2] - _FAILED_COLOUR[1] > 150
    return (r - g > 80) & (np.abs(b - g) < 25)


def test_body_failed_without_a_section_is_outlined_where_it_lies() -> None:
    volume, rows = _measured(["T12", "L1", "L2", "L3", "L4", "L5"])
    assert all(r.vertebra.status != "failed" for r in rows)
    before = render_qc("case", volume, rows)
    assert not _failure_outline(before).any()

    contour = next(r.vertebra.contour_2d for r in rows if r.vertebra.level == "L3").copy()
    _fail_early(rows, "L3")
    after = render_qc("case", volume, rows)
    view = _view_for(volume, [r for r in rows if r.vertebra.contour_2d is not None], 900)
    header = after.shape[0] - view.height
    expected_rows = view.px(contour)[:, 1] + header  # where L3's measured outline was drawn
    assert after.shape == before.shape
    half = after.shape[1] // 2
    failed = _failure_outline(after)
    assert failed[:, :half].sum() > 50 and failed[:, half:].sum() > 50  # outlined on both panels
    red_rows = np.nonzero(failed[:, :half])[0]
    note_rows = np.nonzero(_pixels(after, NOTE)[:, :half] & ~_pixels(before, NOTE)[:, :half])[0]
    assert note_rows.size and red_rows.min() <= np.median(note_rows) <= red_rows.max()  # "L3 [failed] <reason>"
    assert not _listed(after)  # drawn where it lies, not listed
    # the red outline (L3's mask on the shown slice) lies where its measured section's outline was drawn
    margin = 3 * view.k  # 3 mm
    assert expected_rows.min() - margin <= red_rows.min() and red_rows.max() <= expected_rows.max() + margin
    assert red_rows.max() - red_rows.min() > 0.6 * (expected_rows.max() - expected_rows.min())
    red_columns, expected_columns = np.nonzero(failed[:, :half])[1], view.px(contour)[:, 0]
    assert expected_columns.min() - margin <= red_columns.min() and red_columns.max() <= expected_columns.max() + margin
    assert red_columns.max() - red_columns.min() > 0.6 * (expected_columns.max() - expected_columns.min())


def test_failed_end_body_is_inside_the_picture() -> None:
    """The window takes in a failed body's mask: the lowest body is outlined whole, not cut at the picture's edge."""
    volume, rows = _measured(["L2", "L3", "L4", "L5"])
    contour = next(r.vertebra.contour_2d for r in rows if r.vertebra.level == "L5").copy()
    _fail_early(rows, "L5")
    picture = render_qc("case", volume, rows)
    half = picture.shape[1] // 2
    red_rows = np.nonzero(_failure_outline(picture)[:, :half])[0]
    view = _view_for(volume, [r for r in rows if r.vertebra.contour_2d is not None], 900, contour)
    assert red_rows.size and red_rows.max() < picture.shape[0] - 10  # clear of the bottom edge
    assert red_rows.max() - red_rows.min() > 0.8 * view.k * np.ptp(contour[:, 1])  # the whole height, not a sliver


def test_body_failed_off_the_shown_slice_is_listed() -> None:
    volume, rows = _measured(["L1", "L2", "L3", "L4", "L5"])
    value = next(r.vertebra.label for r in rows if r.vertebra.level == "L5")
    array = volume.array.copy()
    array[1:][array[1:] == value] = 0  # L5 only on the first slice: the shown (middle) slice holds none of it
    _fail_early(rows, "L5")
    picture = render_qc("case", replace(volume, array=array), rows)
    assert not _failure_outline(picture).any()  # nothing of it to outline
    assert _listed(picture)  # "not on this slice: L5 [failed] <reason>" at the bottom left


def test_cropped_mask_looks_at_the_right_slice() -> None:
    """A mask cropped along left-right (``offset``): the failed body is looked for on the shown slice's own data."""
    volume, rows = _measured(["L1", "L2", "L3", "L4", "L5"])
    shown = _shown_slice(volume, rows)
    value = next(r.vertebra.label for r in rows if r.vertebra.level == "L5")
    _fail_early(rows, "L5")
    start = 2
    assert shown - volume.offset[0] >= start + 2
    for kept, drawn in ((shown, True), (shown + 2, False)):  # canonical slice that keeps L5
        array = volume.array.copy()
        keep = array[kept - volume.offset[0]].copy()
        array[array == value] = 0
        array[kept - volume.offset[0]] = keep
        cropped = replace(volume, array=array[start:], offset=(volume.offset[0] + start, *volume.offset[1:]))
        picture = render_qc("case", cropped, rows)
        assert _failure_outline(picture).any() == drawn and _listed(picture) != drawn


def _listed(picture: np.ndarray) -> bool:
    """Whether the bottom left corner of the heights panel (left of every body, below the last) holds status text."""
    return bool(_pixels(picture[-40:, :100], NOTE).any())
