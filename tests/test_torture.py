"""Torture runs: every bad input of tests/test_bad_inputs.py, plus those of issue 12, in ONE folder beside good
masks, through the commands as a user runs them (in parallel). For each bad input: the exit status says some case
failed, its row or line names the file; every good input's output is complete and identical to a clean run of the
good inputs alone. (spine-convert's torture run is tests/test_convert_bad_inputs.py::test_each_bad_case_is_skipped...)
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk

from measure.cli import main as measure_main
from measure.evaluation.cli import main as evaluate_main
from tests.test_bad_inputs import FILE_ERRORS, make

GOOD = ("good_a", "good_b")
SCORABLE = {"empty", "tilted"}  # bad to measure, but a valid prediction to score (Dice 0 / any orientation)


def _pixdim_zero(folder: Path, good: Path) -> Path:
    header = bytearray(gzip.decompress(good.read_bytes()))
    struct.pack_into("<f", header, 80, 0.0)  # pixdim[1]
    path = folder / "pixdim_zero.nii.gz"
    path.write_bytes(gzip.compress(bytes(header)))
    return path


@pytest.fixture(scope="module")
def torture(tmp_path_factory) -> tuple[Path, Path, dict[str, list[str]]]:
    """(folder with good and bad masks, folder with the good ones only, bad case id -> expected reason fragments)."""
    root = tmp_path_factory.mktemp("torture")
    mixed, clean = root / "mixed", root / "clean"
    mixed.mkdir()
    clean.mkdir()
    phantom = make()
    for name in GOOD:
        sitk.WriteImage(phantom.mask_image(), str(clean / f"{name}.nii.gz"))
        shutil.copy(clean / f"{name}.nii.gz", mixed / f"{name}.nii.gz")
    bad: dict[str, list[str]] = {}
    for build, reasons in FILE_ERRORS:
        scratch = root / build.__name__
        scratch.mkdir()
        path = build(scratch, phantom)
        if path.exists():
            shutil.move(str(path), mixed / path.name)
            bad[path.name.split(".")[0]] = reasons
    bad["pixdim_zero"] = ["pixdim", "not positive"]
    _pixdim_zero(mixed, mixed / "good_a.nii.gz")
    return mixed, clean, bad


def _rows(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv, dtype=str, keep_default_na=False)


def test_spine_measure_torture(torture, tmp_path, capsys):
    mixed, clean, bad = torture
    assert measure_main([str(clean), "-o", str(tmp_path / "clean.csv"), "--no-progress"]) == 0
    assert measure_main([str(mixed), "-o", str(tmp_path / "mixed.csv"), "--jobs", "2", "--no-progress",
                         "--qc-dir", str(tmp_path / "qc")]) == 1
    err = capsys.readouterr().err
    rows = _rows(tmp_path / "mixed.csv")
    assert set(rows["case_id"]) == set(GOOD) | set(bad)
    for case, reasons in bad.items():
        row = rows[rows["case_id"] == case]
        assert len(row) == 1 and row["status"].iloc[0] == "error", case
        message = row["message"].iloc[0]
        assert str(mixed / case) in message and all(r.lower() in message.lower() for r in reasons), message
        assert case in err
    good = rows[rows["case_id"].isin(GOOD)].reset_index(drop=True)
    expected = _rows(tmp_path / "clean.csv").reset_index(drop=True)
    columns = [c for c in expected.columns if c != "source_file"]  # the same masks, in another folder
    pd.testing.assert_frame_equal(good[columns], expected[columns])
    assert sorted(p.name for p in (tmp_path / "qc").iterdir()) == [f"{g}.png" for g in GOOD]


def test_spine_evaluate_torture(torture, tmp_path, capsys):
    """Bad predictions beside good ones: each bad one is a failed case naming its file; the good ones' figures are
    those of a clean evaluation."""
    mixed, clean, bad = torture
    references = tmp_path / "ref"
    references.mkdir()
    for case in (*GOOD, *bad):
        shutil.copy(clean / "good_a.nii.gz", references / f"{case}.nii.gz")
    clean_code = evaluate_main(["--pred", str(clean), "--ref", str(references), "--cases", *GOOD, "-o",
                                str(tmp_path / "clean"), "--no-measure", "--no-progress"])
    assert clean_code == 0
    code = evaluate_main(["--pred", str(mixed), "--ref", str(references), "-o", str(tmp_path / "mixed"),
                          "--no-measure", "--no-progress", "--jobs", "2", "--missing", "skip"])
    assert code == 1
    err = capsys.readouterr().err
    cases = pd.read_csv(tmp_path / "mixed" / "cases.csv", dtype={"case_id": str})
    for case in set(bad) - SCORABLE:
        row = cases[cases["case_id"] == case]
        assert len(row) == 1 and row["status"].iloc[0] in ("error", "skipped"), case
        assert case in err
    failed = cases[cases["status"] == "error"]
    assert all(str(mixed) in message for message in failed["message"]), failed["message"].tolist()
    expected = pd.read_csv(tmp_path / "clean" / "cases.csv", dtype={"case_id": str}).set_index("case_id")
    good = cases.set_index("case_id").loc[list(GOOD)]
    for column in ("dice_multiclass", "dice_binary", "status"):
        assert good[column].tolist() == expected.loc[list(GOOD), column].tolist()
