"""Output safety (issue 12): atomic writes with the umask, outputs never over inputs, unique case ids, export folders
given to spine-predict. Each test reproduces a failure the issue reported."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from measure.outputs import (
    OutputError,
    atomic_write,
    atomic_write_text,
    check_unique_case_ids,
    check_writable_file,
    check_writable_folder,
    refuse_outputs_over_inputs,
)
from tests.conftest import children


def write_volume(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), value, np.uint8)), str(path))
    return path


def case_folder(root: Path, name: str) -> Path:
    """A case in the export layout: image, mask, levels.json."""
    write_volume(root / name / "image.nii.gz", 10)
    write_volume(root / name / "mask.nii.gz", 1)
    (root / name / "levels.json").write_text(json.dumps({"labels": {"1": "L1"}}))
    return root / name


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- atomic writes ----------------------------------------------------------------------------------------------------

def test_atomic_text_has_the_umask_permissions_not_0600(tmp_path, umask_027):
    path = atomic_write_text(tmp_path / "sub" / "table.csv", "a,b\n1,2\n")
    assert path.read_text() == "a,b\n1,2\n"
    assert mode(path) == 0o640  # 0o666 & ~0o027; mkstemp alone gives 0o600
    assert [p.name for p in path.parent.iterdir()] == ["table.csv"]


def test_atomic_write_keeps_the_old_file_and_leaves_no_temporary_on_error(tmp_path):
    path = atomic_write_text(tmp_path / "report.json", "old\n")

    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_write_keeps_the_suffix_for_writers_that_infer_the_format(tmp_path):
    seen = []
    atomic_write(tmp_path / "mask.nii.gz", lambda temporary: seen.append(temporary.name) or
                 write_volume(temporary))
    assert seen[0].endswith(".nii.gz") and sitk.ReadImage(str(tmp_path / "mask.nii.gz")).GetSize() == (6, 5, 4)


def test_spine_measure_csv_and_sidecar_follow_the_umask(tmp_path, umask_027):
    from dataset_conversion.phantom import GridSpec, fov_for, make_phantom, typical_spine
    from measure.cli import main

    spine = typical_spine(["L1", "L2", "L3"])
    phantom = make_phantom("p1", spine, GridSpec(fov_for(spine, lateral_mm=20.0), (1.0, 1.0, 1.0), "LPS"))
    sitk.WriteImage(phantom.mask_image(), str(tmp_path / "p1.nii.gz"))
    assert main([str(tmp_path / "p1.nii.gz"), "-o", str(tmp_path / "out.csv"), "--no-progress"]) == 0
    assert mode(tmp_path / "out.csv") == 0o640
    assert all(mode(p) == 0o640 for p in tmp_path.glob("out*.json"))


# --- locations --------------------------------------------------------------------------------------------------------

def test_output_over_an_input_is_refused(tmp_path):
    scan = write_volume(tmp_path / "scans" / "x.nii.gz")
    with pytest.raises(OutputError, match="the output is the input folder"):
        refuse_outputs_over_inputs([tmp_path / "scans"], [tmp_path / "scans"])
    with pytest.raises(OutputError, match="the output is the input file"):
        refuse_outputs_over_inputs([tmp_path / "scans" / "x.nii.gz"], [scan])
    refuse_outputs_over_inputs([tmp_path / "masks", tmp_path / "masks" / "x.nii.gz"], [tmp_path / "scans", scan])


def test_unwritable_or_wrong_kind_of_output_is_named_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable_folder(tmp_path / "file")
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        check_writable_file(tmp_path)
    if os.geteuid() != 0:  # root writes everywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="locked: the output folder cannot be written"):
            check_writable_folder(locked)


def test_clashing_case_ids_are_named():
    check_unique_case_ids([("a", Path("x/a.nii.gz")), ("b", Path("x/b.nii.gz"))])
    with pytest.raises(OutputError, match=r"case id 'x' is given by two inputs, d/x.nii.gz and d/x.nrrd"):
        check_unique_case_ids([("x", Path("d/x.nii.gz")), ("x", Path("d/x.nrrd"))])


# --- spine-predict's inputs -------------------------------------------------------------------------------------------

def test_find_inputs_reads_exports_as_cases_and_never_takes_a_mask(tmp_path):
    pytest.importorskip("torch")
    from nnunet_ext.inference import find_inputs

    export = tmp_path / "export"
    for name in ("caseA", "caseB"):
        case_folder(export / "set1", name)
    expected = [("caseA", export / "set1" / "caseA" / "image.nii.gz"),
                ("caseB", export / "set1" / "caseB" / "image.nii.gz")]
    assert find_inputs([export]) == expected  # the export root
    assert find_inputs([export / "set1" / "caseA", export / "set1" / "caseB"]) == expected  # case folders
    assert find_inputs([p for _, p in expected]) == expected  # caseA/image.nii.gz caseB/image.nii.gz
    plain = tmp_path / "plain"
    write_volume(plain / "s1.nii.gz")
    write_volume(plain / "s2_0000.nii.gz")
    assert find_inputs([plain]) == [("s1", plain / "s1.nii.gz"), ("s2_0000", plain / "s2_0000.nii.gz")]


def test_find_inputs_never_takes_a_label_folder_and_refuses_path_ids(tmp_path):
    pytest.importorskip("torch")
    from nnunet_ext.inference import find_inputs

    raw = tmp_path / "Dataset900_X"  # nnU-Net's raw layout is not an export: nothing in it is a case folder
    write_volume(raw / "imagesTr" / "X_0001_0000.nii.gz")
    write_volume(raw / "labelsTr" / "X_0001.nii.gz")
    assert find_inputs([raw]) == []
    case = case_folder(tmp_path / "export", "caseA")
    (case / "levels.json").write_text(json.dumps({"labels": {"1": "L1"}, "case_id": "../escape"}))
    with pytest.raises(OutputError, match="cannot name an output file"):
        find_inputs([tmp_path / "export"])


def test_find_inputs_refuses_two_scans_with_one_name(tmp_path):
    pytest.importorskip("torch")
    from nnunet_ext.inference import find_inputs

    write_volume(tmp_path / "d" / "x.nii.gz")
    write_volume(tmp_path / "d" / "x.nrrd")
    with pytest.raises(OutputError, match="case id 'x' is given by two inputs"):
        find_inputs([tmp_path / "d"])
    write_volume(tmp_path / "a" / "image.nii.gz")
    write_volume(tmp_path / "b" / "image.nii.gz")  # not export case folders: no mask, no levels.json
    with pytest.raises(OutputError, match="case id 'image'"):
        find_inputs([tmp_path / "a" / "image.nii.gz", tmp_path / "b" / "image.nii.gz"])


def fake_models(results: Path, dataset: str = "Dataset900_Safety") -> None:
    """Empty model folders: enough to get past the model check to the output checks, which come before any work."""
    for folder in ("nnUNetTrainerSpineCoarse__nnUNetPlans_spine__3d_lowres",
                   "nnUNetTrainerSpineFine__nnUNetPlans_spine__2d_cascade"):
        (results / dataset / folder).mkdir(parents=True)


@pytest.mark.parametrize("clash", ["output_is_input", "same_names"])
def test_spine_predict_refuses_before_any_work_and_leaves_inputs_untouched(tmp_path, monkeypatch, capsys, clash):
    pytest.importorskip("torch")
    from nnunet_ext.predict_cli import main

    fake_models(tmp_path / "results")
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    scans = tmp_path / "scans"
    write_volume(scans / "x.nii.gz", 7)
    if clash == "same_names":
        write_volume(scans / "x.nrrd", 8)
    before = {p.name: p.read_bytes() for p in scans.iterdir()}
    output = scans if clash == "output_is_input" else tmp_path / "masks"
    assert main(["-i", str(scans), "-o", str(output), "-d", "900", "--device", "cpu"]) == 2
    message = capsys.readouterr().err
    assert ("the output is the input folder" if clash == "output_is_input" else "case id 'x'") in message
    assert {p.name: p.read_bytes() for p in scans.iterdir()} == before
    assert not (tmp_path / "masks").exists()


# --- geometry that would be measured wrongly with status ok -----------------------------------------------------------

def phantom_mask(path: Path, spacing=(1.0, 1.0, 1.0)) -> Path:
    from dataset_conversion.phantom import GridSpec, fov_for, make_phantom, typical_spine

    spine = typical_spine(["L1", "L2", "L3"])
    phantom = make_phantom("p", spine, GridSpec(fov_for(spine, lateral_mm=60.0), spacing, "LPS"), with_image=False)
    sitk.WriteImage(phantom.mask_image(), str(path))
    return path


def test_zero_pixdim_is_refused_not_read_as_1_mm(tmp_path):
    import gzip
    import struct

    from measure.io import MaskReadError, read_mask

    good = phantom_mask(tmp_path / "good.nii.gz")
    header = bytearray(gzip.decompress(good.read_bytes()))
    struct.pack_into("<f", header, 76 + 4 * 2, 0.0)  # pixdim[2] = 0
    bad = tmp_path / "pixdim0.nii.gz"
    bad.write_bytes(gzip.compress(bytes(header)))
    assert sitk.ReadImage(str(bad)).GetSpacing()[1] == 1.0  # what ITK alone makes of it
    with pytest.raises(MaskReadError, match=r"pixdim0.nii.gz: the NIfTI header's voxel spacing \(pixdim\) is"):
        read_mask(bad)
    plain = tmp_path / "pixdim0.nii"
    plain.write_bytes(bytes(header))
    with pytest.raises(MaskReadError, match="not positive"):
        read_mask(plain)
    read_mask(good)


def test_coarse_superior_inferior_spacing_gives_warnings(tmp_path):
    from measure.batch import MeasureOptions, measure_files

    fine = measure_files([phantom_mask(tmp_path / "fine.nii.gz")], ["fine"], MeasureOptions())
    coarse = measure_files([phantom_mask(tmp_path / "coarse.nii.gz", (1.0, 1.0, 4.0))], ["coarse"], MeasureOptions())
    assert not fine["message"].str.contains("superior-inferior").any()
    assert set(coarse["status"]) == {"warning"}
    assert coarse["message"].str.contains("superior-inferior spacing 4 mm (above 2 mm)", regex=False).all()


# --- spine-measure checks its outputs before measuring ----------------------------------------------------------------

def test_spine_measure_refuses_bad_outputs_before_measuring(tmp_path, capsys):
    from measure.cli import main

    mask = phantom_mask(tmp_path / "p1.nii.gz")
    (tmp_path / "old.csv").write_text("precious\n")
    qc = tmp_path / "qc"
    assert main([str(mask), "-o", str(tmp_path / "old.csv"), "--qc-dir", str(qc), "--no-progress"]) == 2
    assert "old.csv exists: use --append" in capsys.readouterr().err
    assert (tmp_path / "old.csv").read_text() == "precious\n" and not qc.exists()  # refused before any picture
    assert main([str(mask), "-o", str(tmp_path), "--no-progress"]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
    assert main([str(mask), "-o", str(mask), "--overwrite", "--no-progress"]) == 2
    assert "the output is the input file" in capsys.readouterr().err
    (tmp_path / "qc_file").write_text("")
    assert main([str(mask), "-o", str(tmp_path / "new.csv"), "--qc-dir", str(tmp_path / "qc_file"),
                 "--no-progress"]) == 2
    assert "qc_file: the QC folder is a file" in capsys.readouterr().err
    assert not (tmp_path / "new.csv").exists()


def test_spine_evaluate_never_writes_its_report_into_the_predictions(tmp_path, capsys):
    from measure.evaluation.cli import main

    for side in ("pred", "ref"):
        (tmp_path / side).mkdir()
        phantom_mask(tmp_path / side / "case.nii.gz")
    before = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert main(["--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "-o", str(tmp_path / "pred"),
                 "--no-progress"]) == 2
    assert "the output is the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == before


# --- symbolic links ---------------------------------------------------------------------------------------------------

def test_recursive_search_follows_linked_case_folders_and_ids_come_from_the_links(tmp_path):
    from measure.batch import case_ids, find_mask_files

    for name in ("patient_smith", "patient_jones"):
        (tmp_path / "data" / name).mkdir(parents=True)
        phantom_mask(tmp_path / "data" / name / "mask.nii.gz")
    study = tmp_path / "study"
    study.mkdir()
    (study / "case01").symlink_to(tmp_path / "data" / "patient_smith", target_is_directory=True)
    (study / "case02").symlink_to(tmp_path / "data" / "patient_jones", target_is_directory=True)
    (study / "loop").symlink_to(study, target_is_directory=True)  # a cycle must not hang or duplicate
    paths = find_mask_files([study], "mask.nii.gz", recursive=True)
    assert paths == [study / "case01" / "mask.nii.gz", study / "case02" / "mask.nii.gz"]
    assert case_ids(paths) == ["case01", "case02"]  # pseudonyms, never the target folders' names
    assert case_ids(paths, "parent") == ["case01", "case02"]


# --- concurrent writers -----------------------------------------------------------------------------------------------

def _append_one_case(csv: str, case_id: str, start) -> None:
    """Worker: wait for the common start, then append one case's row to ``csv`` (what spine-measure --append ends
    with)."""
    from measure.batch import MeasureOptions, write_table
    from measure.table import error_row, to_frame

    start.wait()
    write_table(to_frame([error_row(case_id, f"{case_id}.nii.gz", "x")]), csv, MeasureOptions(), [case_id],
                append=True)


def test_an_append_waits_while_another_writer_holds_the_table(tmp_path):
    """Deterministic: while this process holds the lock, a second process's append blocks; released, it completes
    with both writers' rows."""
    import multiprocessing

    import pandas as pd

    from measure.batch import MeasureOptions, write_table
    from measure.outputs import folder_lock
    from measure.table import error_row, to_frame

    csv = tmp_path / "table.csv"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    start.set()
    write_table(to_frame([error_row("first", "f.nii.gz", "x")]), csv, MeasureOptions(), ["first"])
    with folder_lock(tmp_path):
        worker = context.Process(target=_append_one_case, args=(str(csv), "second", start))
        worker.start()
        worker.join(timeout=8)
        assert worker.is_alive(), "the append did not wait for the lock"
    worker.join(timeout=60)
    assert worker.exitcode == 0
    assert sorted(pd.read_csv(csv, dtype={"case_id": str})["case_id"]) == ["first", "second"]


def test_two_concurrent_appends_lose_nothing(tmp_path):
    """Two processes append to one table at the same moment, 5 times; the table is large enough (20000 rows) that
    their read-merge-write steps overlap (without the lock, most trials lose one of the two cases)."""
    import multiprocessing

    import pandas as pd

    from measure.batch import MeasureOptions, write_table
    from measure.table import error_row, to_frame

    base = to_frame([error_row(f"base{n}", "b.nii.gz", "x") for n in range(20000)])
    context = multiprocessing.get_context("spawn")
    for trial in range(5):
        csv = tmp_path / f"trial{trial}.csv"
        write_table(base, csv, MeasureOptions(), ["base"])
        start = context.Event()
        workers = [context.Process(target=_append_one_case, args=(str(csv), case, start)) for case in ("a", "b")]
        for worker in workers:
            worker.start()
        time.sleep(3)  # both imported and waiting
        start.set()
        for worker in workers:
            worker.join(timeout=120)
            assert worker.exitcode == 0
        cases = set(pd.read_csv(csv, dtype={"case_id": str}, usecols=["case_id"])["case_id"])
        added = sorted(c for c in cases if not c.startswith("base"))
        assert added == ["a", "b"] and len(cases) == 20002, f"trial {trial}: cases added {added}"


# --- interrupts -------------------------------------------------------------------------------------------------------

def slow_script(module: str, function: str, cli_module: str) -> str:
    """A script that runs ``cli_module.main`` with ``module.function`` (the per-case work) slowed to 2 s a case."""
    return (
        "import sys, time\n"
        f"import {module} as target\n"
        f"real = target.{function}\n"
        "def slow(*a, **k):\n"
        "    time.sleep(2.0)\n"
        "    return real(*a, **k)\n"
        f"target.{function} = slow\n"
        f"from {cli_module} import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_slow_parallel(tmp_path: Path, script_text: str, arguments: list[str], started: list) -> tuple:
    """A real command process (``script_text`` with ``arguments``, ``--jobs 2``) whose cases take 2 s each, added to
    ``started`` (the ``started_processes`` fixture); returns it and its workers' process ids once both workers are
    busy."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "slow.py"
    script.write_text(script_text)
    # as from a user's shell: Ctrl-C at its default (a test run may have left the pytest process ignoring it)
    process = subprocess.Popen([sys.executable, str(script), *arguments, "--jobs", "2", "--no-progress"],
                               cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, encoding="utf-8", errors="replace",
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    started.append(process)
    deadline = time.time() + 60
    while time.time() < deadline and len(children(process.pid)) < 2:
        time.sleep(0.1)
    workers = children(process.pid)
    assert len(workers) >= 2, "the workers never started"
    time.sleep(1.0)  # the workers are busy with their first cases
    return process, workers


def interrupt(process) -> tuple[float, str]:
    """Ctrl-C to ``process``; the seconds until it ended and its stderr."""
    import signal

    sent = time.time()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    return time.time() - sent, err


def survivors_of_sigkill(process, workers: list[int]) -> list[int]:
    """SIGKILL to ``process``; its workers still alive 5 s later."""
    import signal

    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.time() + 5
    while time.time() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    return [pid for pid in workers if alive(pid)]


def start_slow_parallel_measure(tmp_path: Path, started: list) -> tuple:
    """A real ``spine-measure --jobs 2`` process on 12 masks, each case slowed to 2 s."""
    for n in range(12):
        phantom_mask(tmp_path / f"m{n}.nii.gz")
    return start_slow_parallel(tmp_path, slow_script("measure.batch", "measure_case", "measure.cli"),
                               [str(tmp_path), "-o", str(tmp_path / "out.csv")], started)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_ctrl_c_stops_a_parallel_measurement_within_3_s_and_leaves_no_process(tmp_path, started_processes):
    process, workers = start_slow_parallel_measure(tmp_path, started_processes)
    seconds, err = interrupt(process)
    assert seconds < 3.0, f"took {seconds:.1f} s to stop"
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    time.sleep(0.5)
    assert not [pid for pid in workers if alive(pid)]
    assert not (tmp_path / "out.csv").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_killed_parent_leaves_no_orphaned_workers(tmp_path, started_processes):
    process, workers = start_slow_parallel_measure(tmp_path, started_processes)
    assert not survivors_of_sigkill(process, workers), "workers outlived their killed parent"


def start_slow_parallel_convert(tmp_path: Path, started: list) -> tuple:
    """A real ``spine-convert --jobs 2`` process on an export of 8 phantom cases, each slowed to 2 s."""
    from dataset_conversion.phantom import GridSpec, fov_for, make_phantom, typical_spine
    from dataset_conversion.phantom_cli import write_case

    spine = typical_spine(["L1", "L2", "L3"])
    for n in range(8):
        write_case(make_phantom(f"case{n}", spine, GridSpec(fov_for(spine, lateral_mm=40.0), (2.0, 2.0, 2.0), "LPS"),
                                with_image=True, seed=n), tmp_path / "export")
    return start_slow_parallel(tmp_path, slow_script("dataset_conversion.convert", "convert_case",
                                                     "dataset_conversion.convert_cli"),
                               [str(tmp_path / "export"), "--out", str(tmp_path / "raw"), "--id", "990", "--name",
                                "Slow"], started)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_killed_spine_convert_leaves_no_orphaned_workers(tmp_path, started_processes):
    """Issue 12, item 4: after SIGKILL, spine-convert --jobs 2 left its workers running with parent 1."""
    process, workers = start_slow_parallel_convert(tmp_path, started_processes)
    assert not survivors_of_sigkill(process, workers), "workers outlived their killed parent"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_ctrl_c_stops_spine_convert_within_3_s(tmp_path, started_processes):
    process, workers = start_slow_parallel_convert(tmp_path, started_processes)
    seconds, err = interrupt(process)
    assert seconds < 3.0, f"took {seconds:.1f} s to stop"
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    time.sleep(0.5)
    assert not [pid for pid in workers if alive(pid)]
    assert "nothing was written" in err and not any((tmp_path / "raw").rglob("*"))  # no half-written dataset


def test_a_process_forked_inside_a_command_ends_on_sigterm_as_by_default():
    """A pool the command does not own (nnU-Net's ``multiprocessing.Pool`` under ``spine-convert --verify``) forks
    its workers while the command's SIGTERM handler is installed and ends them with SIGTERM on exit; a worker that
    inherited the handler raised KeyboardInterrupt instead and could hang the command (seen once in the suite, and
    within 6 pool runs in a loop). The forked child gets the default disposition back; the command keeps its own."""
    import multiprocessing
    import signal

    from measure.runtime import interruptible

    def child(conn) -> None:
        conn.send(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)

    def early_signal() -> None:  # a SIGTERM that comes before the at-fork reset: the inherited handler still ends it
        from measure import runtime

        signal.signal(signal.SIGTERM, runtime._terminate_as_interrupt)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    @interruptible("test-command")
    def main(argv=None) -> int:
        parent_end, child_end = multiprocessing.get_context("fork").Pipe()
        process = multiprocessing.get_context("fork").Process(target=child, args=(child_end,))
        process.start()
        default_in_child = parent_end.recv()
        process.join(timeout=10)
        assert default_in_child, "the forked child kept the command's SIGTERM handler"
        early = multiprocessing.get_context("fork").Process(target=early_signal)
        early.start()
        early.join(timeout=10)
        assert early.exitcode == -signal.SIGTERM  # killed by the signal, not a KeyboardInterrupt (exit code 1)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the command's own handler is still there
        return 0

    assert main([]) == 0
