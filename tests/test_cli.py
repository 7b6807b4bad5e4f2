"""The command-line tools, run in-process as a user would call them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dataset_conversion.phantom_cli import main as phantom_main
from measure.cli import main as measure_main
from measure.table import COLUMNS
from nnunet_ext.cli import main as nnunet_main

REQUIRED = ["case_id", "level", "label", "slice_index", "status", "message", "height_anterior_mm", "height_middle_mm",
            "height_posterior_mm", "rotation_deg", "distance_anterior_mm", "distance_posterior_mm",
            "ratio_anterior_posterior", "ratio_middle_posterior", "genant_grade", "deformity_type", "source_file",
            "tool_version"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    assert phantom_main([str(out), "--cases", "3", "--seed", "1", "--levels", "T11-S2", "--spacing", "3", "0.8", "0.8",
                         "--deformity", "L1:crush:0.35"]) == 0
    return out


def test_phantom_layout(phantoms: Path) -> None:
    for n in range(3):
        case = phantoms / f"phantom_{n:03d}"
        assert {p.name for p in case.iterdir()} == {"image.nii.gz", "mask.nii.gz", "levels.json"}
        assert json.loads((case / "levels.json").read_text())["labels"]["1"] == "T11"
    truth = pd.read_csv(phantoms / "truth.csv")
    assert len(truth) == 27 and set(truth["level"]) >= {"T11", "L1", "S2"}


def test_measure_folder_csv_sidecar_and_qc(phantoms: Path, tmp_path: Path) -> None:
    out, qc = tmp_path / "m.csv", tmp_path / "qc"
    rc = measure_main([str(phantoms), "--recursive", "--pattern", "mask.nii.gz", "-o", str(out), "--qc-dir", str(qc),
                       "--no-progress"])
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert set(REQUIRED) <= set(table.columns)
    assert sorted(table["case_id"].unique()) == ["phantom_000", "phantom_001", "phantom_002"]  # parent folder names
    first = table[table["case_id"] == "phantom_000"]
    assert first["level"].tolist() == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2"]  # cranio-caudal
    assert (first["genant_grade"].dropna() >= 0).all()
    assert first.loc[first["level"] == "S1", "genant_grade"].isna().all()
    assert (table.loc[table["level"] == "L1", "deformity_type"] == "crush").all()
    truth = pd.read_csv(phantoms / "truth.csv")
    merged = table.merge(truth, on=["case_id", "level"], suffixes=("", "_truth"))
    for column in ("height_anterior_mm", "height_posterior_mm", "distance_anterior_mm"):
        assert np.nanmax(np.abs(merged[column] - merged[f"{column}_truth"])) <= 0.8
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["method"]["inset_fraction"] == 0.1 and sidecar["cases"] == 3
    for n in range(3):
        picture = cv2.imread(str(qc / f"phantom_{n:03d}.png"))
        assert picture is not None and picture.shape[0] > 400 and picture.std() > 10


def test_jobs_append_and_overwrite(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "cohort.csv"
    masks = sorted(phantoms.glob("*/mask.nii.gz"))
    assert measure_main([str(masks[0]), "-o", str(out), "--no-progress", "--case-id", "parent"]) == 0
    assert measure_main([str(masks[1]), "-o", str(out), "--no-progress", "--case-id", "parent"]) == 2  # exists
    assert measure_main([str(m) for m in masks[1:]] + ["-o", str(out), "--append", "--no-progress", "-j", "2",
                                                       "--case-id", "parent"]) == 0
    cohort = pd.read_csv(out)
    assert cohort["case_id"].value_counts().to_dict() == {"phantom_000": 9, "phantom_001": 9, "phantom_002": 9}
    assert measure_main([str(masks[0]), "-o", str(out), "--append", "--no-progress", "--case-id", "parent"]) == 0
    assert len(pd.read_csv(out)) == 27  # re-measured case replaces its rows
    assert measure_main([str(masks[0]), "-o", str(out), "--append", "--inset", "0.2", "--no-progress"]) == 2
    assert measure_main([str(masks[0]), "-o", str(out), "--overwrite", "--no-progress"]) == 0
    assert len(pd.read_csv(out)) == 9
    assert not list(tmp_path.glob(".cohort.csv.*"))  # no temporary files left


def test_segments_and_spine_tables_beside_the_csv_kept_in_step_by_append(phantoms: Path, tmp_path: Path) -> None:
    from measure.segment_table import SEGMENT_COLUMNS, SPINE_COLUMNS

    out = tmp_path / "cohort.csv"
    masks = sorted(phantoms.glob("*/mask.nii.gz"))
    assert measure_main([str(masks[0]), "-o", str(out), "--no-progress", "--case-id", "parent"]) == 0
    segments, spine = tmp_path / "cohort_segments.csv", tmp_path / "cohort_spine.csv"  # the defaults
    first = pd.read_csv(segments)
    assert list(first.columns) == list(SEGMENT_COLUMNS) and list(pd.read_csv(spine).columns) == list(SPINE_COLUMNS)
    assert list(zip(first["upper_level"], first["lower_level"], strict=True)) == [
        ("T11", "T12"), ("T12", "L1"), ("L1", "L2"), ("L2", "L3"), ("L3", "L4"), ("L4", "L5"), ("L5", "S1")]
    truth = pd.read_csv(phantoms / "truth_segments.csv")
    merged = first.merge(truth, on=["case_id", "upper_level", "lower_level"], suffixes=("", "_truth"))
    error = (merged["disc_height_middle_mm"] - merged["disc_height_middle_mm_truth"]).abs()
    assert len(merged) == 7 and error.max() < 0.8
    assert json.loads(segments.with_suffix(".json").read_text())["table"] == "segments"
    assert measure_main([*map(str, masks), "-o", str(out), "--append", "--no-progress", "--case-id", "parent"]) == 0
    assert pd.read_csv(segments)["case_id"].value_counts().to_dict() == dict.fromkeys(
        ["phantom_000", "phantom_001", "phantom_002"], 7)  # the re-measured case replaced, not doubled
    assert pd.read_csv(spine)["case_id"].tolist() == ["phantom_000", "phantom_001", "phantom_002"]
    other_segments, other_spine = tmp_path / "s.csv", tmp_path / "sub" / "c.csv"
    (tmp_path / "sub").mkdir()
    assert measure_main([str(masks[0]), "-o", str(tmp_path / "x.csv"), "--segments", str(other_segments), "--spine",
                         str(other_spine), "--no-progress"]) == 0
    assert len(pd.read_csv(other_segments)) == 7 and len(pd.read_csv(other_spine)) == 1
    assert measure_main([str(masks[0]), "-o", str(tmp_path / "y.csv"), "--segments", str(tmp_path / "y.csv"),
                         "--no-progress"]) == 2  # two tables into one file: refused before measuring
    assert measure_main([str(masks[0]), "-o", str(tmp_path / "z.csv"), "--spine", str(spine), "--no-progress"]) == 2


def test_parallel_equals_serial(phantoms: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert measure_main([str(phantoms), "--recursive", "-o", str(a), "--no-progress", "--pattern", "mask.nii.gz"]) == 0
    assert measure_main([str(phantoms), "--recursive", "-o", str(b), "--no-progress", "--pattern", "mask.nii.gz",
                         "-j", "2"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(a), pd.read_csv(b))


def test_demo_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nnunet_main(["demo", "--out", str(tmp_path / "demo"), "--cases", "2", "--measure-only"]) == 0
    printed = capsys.readouterr().out
    assert "measurements.csv" in printed and "QC pictures" in printed and "mean_abs_error" in printed
    assert len(list((tmp_path / "demo" / "qc").glob("*.png"))) == 2


def test_demo_seeds_its_trainings_and_reads_its_phantoms_as_complete(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands the demo would run (recorded, not run): every nnUNetv2_train seeded with --seed and its
    augmentation in the training process, nnU-Net's planner not (it fails on nnUNet_n_proc_DA=0), and the phantoms'
    background taken as background by the conversion and the evaluation."""
    from nnunet_ext import demo

    monkeypatch.delenv("SPINE_SEED", raising=False)
    commands: list[tuple[list[str], dict]] = []
    monkeypatch.setattr(demo, "_run", lambda command, env, log: commands.append((command, env)))
    monkeypatch.setattr(demo, "_print_results", lambda *args: None)
    assert demo.run_demo(tmp_path / "demo", seed=11) == 0
    by_tool = {tool: [(c, e) for c, e in commands if c[0] == tool] for tool in {c[0] for c, _ in commands}}
    assert len(by_tool["nnUNetv2_train"]) == 3
    for _, env in by_tool["nnUNetv2_train"]:
        assert env["SPINE_SEED"] == "11" and env["nnUNet_n_proc_DA"] == "0"
    for tool in ("nnUNetv2_plan_and_preprocess", "nnUNetv2_preprocess", "spine-predict"):
        assert all(env["nnUNet_n_proc_DA"] != "0" and "SPINE_SEED" not in env for _, env in by_tool[tool])
    for tool in ("spine-convert", "spine-evaluate"):
        (command, _), = by_tool[tool]
        assert command[command.index("--ignore-beyond") + 1] == "none"


@pytest.mark.parametrize("command", ["measure.cli", "measure.evaluation.cli", "dataset_conversion.phantom_cli",
                                     "dataset_conversion.convert_cli", "nnunet_ext.cli"])
def test_help_does_not_import_torch(command: str) -> None:
    code = (f"import sys; from {command} import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'nnunetv2' not in sys.modules, 'heavy import'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_console_scripts_installed() -> None:
    bindir = Path(sys.executable).parent
    for name in ("spine-measure", "spine-phantom", "spine-nnunet", "spine-convert", "spine-evaluate", "spine-predict"):
        result = subprocess.run([str(bindir / name), "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage" in result.stdout


def test_case_ids() -> None:
    from measure.batch import case_ids

    paths = [Path("/data/a/mask.nii.gz"), Path("/data/b/case_7.nii.gz"), Path("/x/c/case_7.nrrd"),
             Path("/data/d/t2_seg.mha")]
    assert case_ids(paths) == ["a", "b", "c", "t2_seg"]
    assert case_ids(paths, "name") == ["mask", "case_7", "case_7", "t2_seg"]
    assert case_ids(paths, "parent") == ["a", "b", "c", "d"]


@pytest.mark.parametrize("module, prog", [
    ("measure.cli", "spine-measure"), ("measure.evaluation.cli", "spine-evaluate"),
    ("dataset_conversion.convert_cli", "spine-convert"), ("dataset_conversion.phantom_cli", "spine-phantom"),
    ("nnunet_ext.cli", "spine-nnunet"), ("nnunet_ext.predict_cli", "spine-predict"),
])
def test_every_command_has_version(module: str, prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from measure.runtime import tool_version

    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {tool_version()}"


def test_nnunet_folders_are_read_in_one_place(monkeypatch) -> None:
    from measure.runtime import nnunet_folder

    monkeypatch.setenv("nnUNet_results", "/models")
    monkeypatch.setenv("nnUNet_raw", "")
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    assert nnunet_folder("nnUNet_results") == "/models"
    assert nnunet_folder("nnUNet_raw") is None and nnunet_folder("nnUNet_preprocessed") is None
    with pytest.raises(ValueError, match="nnUNet_result:"):
        nnunet_folder("nnUNet_result")


def test_spine_predict_accepts_nnunet_spellings_and_documents_one() -> None:
    """nnUNetv2_predict's single-dash spellings work as they are; --help shows the double-dash ones only."""
    from nnunet_ext.predict_cli import NNUNET_SPELLINGS, build_parser

    parser = build_parser()
    base = ["-i", "in", "-o", "out", "-d", "701"]
    nnunet = parser.parse_args([*base, "-chk", "checkpoint_best.pth", "-device", "cpu", "-npp", "2", "-step_size",
                                "0.25", "-num_parts", "3", "-part_id", "1"])
    ours = parser.parse_args([*base, "--checkpoint", "checkpoint_best.pth", "--device", "cpu", "--processes", "2",
                              "--step-size", "0.25", "--num-parts", "3", "--part-id", "1"])
    assert vars(nnunet) == vars(ours)
    defaults = parser.parse_args(base)
    assert (defaults.checkpoint, defaults.step_size, defaults.num_parts, defaults.part_id) == (
        "checkpoint_final.pth", 0.5, 1, 0)
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "-device", "tpu"])
    text = parser.format_help()
    assert "--step-size" in text
    assert not [flag for flag in NNUNET_SPELLINGS if re.search(rf"(?<![-\w]){flag}\b", text)]


def test_spine_predict_refuses_box_tiles_with_the_full_window(tmp_path, capsys) -> None:
    from nnunet_ext.predict_cli import main

    code = main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "-d", "701", "--box-tiles", "--full-window"])
    assert code == 2 and "choose one" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
