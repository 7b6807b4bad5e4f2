"""Every bad input of spine-convert is skipped with a reason naming the file and the problem; the others convert.
Also: --strict, --overwrite protection, duplicate dataset ids, interrupted conversions leave nothing behind."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

import dataset_conversion.convert as convert_module
from dataset_conversion.convert_cli import main
from tests.convert_helpers import edit_levels, export_phantom, write_export

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def convert(roots, out, *extra, dataset_id=12, name="Bad"):
    roots = roots if isinstance(roots, (list, tuple)) else [roots]
    return main([str(r) for r in roots] + ["--out", str(out), "--id", str(dataset_id), "--name", name,
                                             "--no-progress", *extra])


def reasons(out: Path, name: str = "Dataset012_Bad") -> dict[str, str]:
    table = pd.read_csv(out / name / "case_mapping.csv", dtype=str, keep_default_na=False)
    return dict(zip(table["original_case_id"], table["reason"], strict=True))


def rewrite_mask(folder: Path, change) -> None:
    """Read the case's mask, apply ``change(image) -> image`` and write it back."""
    image = sitk.ReadImage(str(folder / "mask.nii.gz"))
    sitk.WriteImage(change(image), str(folder / "mask.nii.gz"))


def _shifted_origin(image):
    image.SetOrigin(tuple(np.array(image.GetOrigin()) + [0.0, 2.5, 0.0]))
    return image


def _other_spacing(image):
    image.SetSpacing(tuple(np.array(image.GetSpacing()) * [1.0, 1.1, 1.0]))
    return image


def _rotated_direction(image):
    angle = np.radians(5)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    image.SetDirection((rotation @ np.array(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    return image


def _smaller(image):
    return image[:, :-3, :]


def _fractional(image):
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[array > 0] += 0.5
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _empty(image):
    return image * 0


def _unnamed_value(image):
    array = sitk.GetArrayFromImage(image)
    array[array == 3] = 42
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _flipped_axes(image):
    """Same voxels stored in another axis order (an exporter's choice): must be re-indexed, not refused."""
    return sitk.Flip(image, [False, True, False])


MASK_PROBLEMS = {
    "origin": (_shifted_origin, "mask grid does not match the image image.nii.gz: origin"),
    "spacing": (_other_spacing, "mask grid does not match the image image.nii.gz: spacing"),
    "direction": (_rotated_direction, "mask grid does not match the image image.nii.gz: direction"),
    "size": (_smaller, "mask grid does not match the image image.nii.gz: size"),
    "fractional": (_fractional, "mask has non-integer values"),
    "empty": (_empty, "mask is empty"),
    "unnamed": (_unnamed_value, "mask value(s) [42] have no level name"),
}


@pytest.fixture(scope="module")
def bad_export(tmp_path_factory):
    """One good case and one case per bad input."""
    root = tmp_path_factory.mktemp("bad_export")
    names = ["good", *MASK_PROBLEMS, "flipped", "truncated", "garbage", "no_levels", "two_images", "unsafe_id",
             "no_vertebra", "bad_json", "qc_bad", "duplicate_level"]
    folders = write_export(root, [export_phantom(n, levels=("L1", "L2", "L3"), seed=i) for i, n in enumerate(names)])
    for name, (change, _) in MASK_PROBLEMS.items():
        rewrite_mask(folders[name], change)
    rewrite_mask(folders["flipped"], _flipped_axes)
    data = (folders["truncated"] / "image.nii.gz").read_bytes()
    (folders["truncated"] / "image.nii.gz").write_bytes(data[: len(data) // 2])
    (folders["garbage"] / "mask.nii.gz").write_bytes(gzip.compress(b"not an image at all" * 10))
    (folders["no_levels"] / "levels.json").unlink()
    shutil.copy(folders["two_images"] / "image.nii.gz", folders["two_images"] / "image_copy.nii.gz")
    edit_levels(folders["unsafe_id"], case_id="../../etc")
    edit_levels(folders["no_vertebra"], labels={"1": "C3", "2": "C4", "3": "C5"})
    (folders["bad_json"] / "levels.json").write_text("{not json")
    edit_levels(folders["qc_bad"], qc={"status": "bad", "findings": ["L2 misplaced"]})
    edit_levels(folders["duplicate_level"], labels={"1": "L1", "2": "L1", "3": "L3"})  # two bodies in one class
    return root, folders


def test_each_bad_case_is_skipped_with_its_reason(bad_export, tmp_path, capsys):
    root, folders = bad_export
    assert convert(root, tmp_path) == 1
    found = reasons(tmp_path)
    expected = {name: text for name, (_, text) in MASK_PROBLEMS.items()}
    expected.update({
        "truncated": "truncated",
        "garbage": "cannot read the file",
        "no_levels": "no level names for the mask values",
        "two_images": "several image candidates (image.nii.gz, image_copy.nii.gz)",
        "../../etc": "unsafe case id '../../etc'",
        "no_vertebra": "no vertebra of T11-S2 in the mask",
        "bad_json": "cannot read level names",
        "qc_bad": "the export marks this case QC 'bad': L2 misplaced",
        "duplicate_level": "level(s) named by several mask values (L1 by values [1, 2]); one level is one vertebra",
    })
    for case, text in expected.items():
        assert text in found[case], (case, found[case])
        assert str(root) in found[case] or case == "../../etc", found[case]  # the message names the file or folder
    assert found["good"] == "" and found["flipped"] == ""
    dataset = tmp_path / "Dataset012_Bad"
    assert sorted(os.listdir(dataset / "labelsTr")) == ["Bad_0005.nii.gz", "Bad_0008.nii.gz"]  # flipped, good
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 2
    printed = capsys.readouterr().out
    assert "2 case(s) converted" in printed and "16 skipped" in printed and "mask is empty" in printed
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left


def test_mask_in_another_axis_order_is_reindexed_exactly(bad_export, tmp_path):
    root, folders = bad_export
    convert(root, tmp_path, "--ignore-beyond", "none")
    table = pd.read_csv(tmp_path / "Dataset012_Bad" / "case_mapping.csv", dtype=str, keep_default_na=False)
    row = table.set_index("original_case_id").loc["flipped"]
    assert "re-indexed onto the image grid" in row["warnings"]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "Dataset012_Bad" / "labelsTr" /
                                                      f"{row['nnunet_case_id']}.nii.gz")))
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["flipped"] / "mask.nii.gz")))[:, ::-1, :]
    np.testing.assert_array_equal(label, original + np.where(original > 0, 2, 0))  # L1..L3 = 1..3 -> 3..5


def test_strict_stops_and_writes_nothing(bad_export, tmp_path, capsys):
    root, _ = bad_export
    assert convert(root, tmp_path, "--strict") == 2
    assert "--strict: case" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_duplicate_case_ids_across_roots(tmp_path):
    site_a, site_b = tmp_path / "site_a", tmp_path / "site_b"
    write_export(site_a, [export_phantom("p001", levels=("L1", "L2")), export_phantom("p002", levels=("L1", "L2"))])
    write_export(site_b, [export_phantom("p001", levels=("L3", "L4"), seed=3)])
    assert convert([site_a, site_b], tmp_path / "out") == 1
    table = pd.read_csv(tmp_path / "out" / "Dataset012_Bad" / "case_mapping.csv", dtype=str, keep_default_na=False)
    assert list(table["status"]) == ["converted", "converted", "skipped"]
    assert "duplicate case id 'p001'" in table["reason"].iloc[2] and str(site_a / "p001") in table["reason"].iloc[2]


def test_nothing_convertible_writes_nothing(tmp_path, capsys):
    root = tmp_path / "export"
    write_export(root, [export_phantom("only", levels=("L1", "L2"))])
    rewrite_mask(root / "only", _empty)
    assert convert(root, tmp_path / "out") == 2
    assert "no training case could be converted" in capsys.readouterr().err
    assert not (tmp_path / "out" / "Dataset012_Bad").exists()
    assert convert(tmp_path / "missing_root", tmp_path / "out") == 2
    assert "export root not found" in capsys.readouterr().err


@pytest.fixture()
def small_export(tmp_path):
    root = tmp_path / "export"
    write_export(root, [export_phantom(f"case_{n}", levels=("L1", "L2", "L3"), seed=n) for n in range(3)])
    return root


def test_existing_dataset_is_never_overwritten_without_flag(small_export, tmp_path, capsys):
    out = tmp_path / "raw"
    assert convert(small_export, out) == 0
    marker = out / "Dataset012_Bad" / "dataset.json"
    before = marker.read_text()
    (out / "Dataset012_Bad" / "my_notes.txt").write_text("keep me")
    assert convert(small_export, out, "--binary") == 2
    assert "exists; use --overwrite" in capsys.readouterr().err
    assert marker.read_text() == before and (out / "Dataset012_Bad" / "my_notes.txt").exists()
    assert convert(small_export, out, "--binary", "--overwrite") == 0
    assert "vertebra" in json.loads(marker.read_text())["labels"]
    assert not (out / "Dataset012_Bad" / "my_notes.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["Dataset012_Bad"]
    assert convert(small_export, out, name="Other") == 2  # same id, other name: nnU-Net could not tell them apart
    assert "dataset id 012 is already used by Dataset012_Bad" in capsys.readouterr().err


class _Interrupt(KeyboardInterrupt):
    pass


def test_interrupted_conversion_leaves_no_half_written_dataset(small_export, tmp_path, monkeypatch):
    out = tmp_path / "raw"
    real = convert_module.convert_case
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise _Interrupt()
        return real(*args, **kwargs)

    monkeypatch.setattr(convert_module, "convert_case", interrupted)
    with pytest.raises(_Interrupt):
        convert_module.convert_export([small_export], out, 12, "Bad", progress=False)
    assert len(calls) == 2
    assert list(out.iterdir()) == []  # neither the dataset nor its temporary folder


def test_interrupted_process_leaves_no_dataset_and_stale_parts_are_cleaned(small_export, tmp_path,
                                                                         started_processes):
    """A real spine-convert process stopped by SIGTERM (as by a scheduler) mid-conversion."""
    out = tmp_path / "raw"
    slow = tmp_path / "slow.py"  # convert_case slowed down so the signal surely arrives mid-conversion
    slow.write_text(
        "import sys, time\n"
        "import dataset_conversion.convert as c\n"
        "real = c.convert_case\n"
        "def slow(*a, **k):\n"
        "    time.sleep(1.0)\n"
        "    return real(*a, **k)\n"
        "c.convert_case = slow\n"
        "from dataset_conversion.convert_cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    log = tmp_path / "stderr.txt"  # a file, not a pipe nobody reads while waiting: the child can never block on it
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, str(slow), str(small_export), "--out", str(out), "--id", "12",
                                    "--name", "Bad", "--no-progress"], cwd=PROJECT_ROOT, stderr=stderr)
    started_processes.append(process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob(".Dataset012_Bad.partial-*/imagesTr/*.nii.gz")):
        assert process.poll() is None, f"spine-convert ended early: {log.read_text()}"
        time.sleep(0.05)
    assert list(out.glob(".Dataset012_Bad.partial-*")), "the conversion never started"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    err = log.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 130, err
    assert "interrupted; nothing was written" in err and "Traceback" not in err
    assert list(out.iterdir()) == []
    # a run killed without any chance to clean up (SIGKILL) leaves a hidden folder; the next run removes it
    stale = out / ".Dataset012_Bad.partial-999999999"
    (stale / "imagesTr").mkdir(parents=True)
    assert convert(small_export, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Dataset012_Bad"]
