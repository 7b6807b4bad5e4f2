"""Shared test helpers: phantom measurement and the optional real data beside the project."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from dataset_conversion.phantom import GridSpec, Phantom, SpineSpec, fov_for, make_phantom
from measure.io import mask_volume
from measure.levels import project_label_map
from measure.spine import measure_spine
from measure.table import rows_for_case, to_frame
from measure.vertebra import MethodParameters

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
REAL_MRI = SHARED_DATA / "lumbar_mri"


def measure_phantom(phantom: Phantom, params: MethodParameters | None = None) -> pd.DataFrame:
    """Measure a phantom's mask in memory; one row per vertebra."""
    volume = mask_volume(phantom.mask_image(), phantom.case_id)
    rows = measure_spine(volume, project_label_map(), params or MethodParameters())
    return to_frame(rows_for_case(phantom.case_id, volume, rows))


def measure_phantom_tables(phantom: Phantom, params: MethodParameters | None = None
                           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Measure a phantom's mask in memory into the vertebra, segments and spine tables."""
    from measure.segment_table import segment_rows, spine_row, to_segment_frame, to_spine_frame
    from measure.segments import measure_segments, spine_summary

    params = params or MethodParameters()
    volume = mask_volume(phantom.mask_image(), phantom.case_id)
    rows = measure_spine(volume, project_label_map(), params)
    return (to_frame(rows_for_case(phantom.case_id, volume, rows)),
            to_segment_frame(segment_rows(phantom.case_id, volume, measure_segments(volume, rows, params))),
            to_spine_frame([spine_row(phantom.case_id, volume, spine_summary(volume, rows, params))]))


def phantom_on_grid(spine: SpineSpec, spacing: tuple[float, float, float], orientation: str = "LPS",
                    lateral_mm: float = 30.0, **grid: float) -> Phantom:
    return make_phantom("case", spine, GridSpec(fov_for(spine, lateral_mm=lateral_mm), spacing, orientation, **grid),
                        with_image=False)


@pytest.fixture(scope="session")
def real_mri() -> Path:
    if not REAL_MRI.is_dir():
        pytest.skip(f"real data not available at {REAL_MRI}")
    return REAL_MRI


def children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def started_processes():
    """A list for the command processes (``subprocess.Popen``) a test starts: whatever its assertions did, those still
    running, and their children, are killed after it."""
    started: list = []
    yield started
    for process in started:
        if process.poll() is not None:  # ended and reaped: its id may belong to another process by now
            continue
        for pid in [process.pid, *children(process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        process.wait(timeout=10)
