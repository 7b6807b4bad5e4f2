"""Benchmark spine-measure on the real lumbar masks in ../shared/data/lumbar_mri.

Per case (best of ``--repeat`` runs, warm file cache), in milliseconds:

* reference: ``SimpleITK.ReadImage`` + ``GetArrayFromImage`` (the time of only reading the same files), twice:
  A with each result freed at once (as inside a measurement), B with the previous result still alive during the next
  read. On the 11 MB chu2015_t2 masks this read takes about 4 ms when malloc hands out already-mapped pages and
  15-20 ms when it hands out fresh ones (page faults); which of the two a process gets depends on its heap state
  (raising MALLOC_MMAP_THRESHOLD_ gives the fast case), so both ways are given and the ratios use both; and C, the
  read as it happens inside each timed ``measure_file`` call (``measure.io.read_image`` timed in place: same process,
  same heap state), whose per-case ratio does not depend on which of the two states the reference loops got;
* ``measure.io.read_mask`` (read + checks + reorientation to the canonical frame);
* ``measure.batch.measure_file`` without QC pictures, with SimpleITK's default thread count and with one thread;
* ``measure.batch.measure_file`` with QC pictures (the picture uses the ``image.nii.gz`` beside each mask);

and the wall time of ``measure.batch.measure_files`` for ``jobs=1`` and ``jobs=2`` (ms per case = wall / cases,
best of ``--batch-repeat``). Each phase runs in a fresh Python process so that its peak memory (``ru_maxrss``) is its
own; for ``jobs=2`` the largest worker (``RUSAGE_CHILDREN``) is reported too. The summary statistic is the median
over cases; targets: full measurement under 2x the plain read time and under 0.5 s per case. ``--profile N`` adds a
cProfile of ``measure_file`` (without and with QC pictures) on chu2015_t2.

Usage::

    .venv/bin/python benchmarks/bench_measure.py [--data DIR] [--json FILE] [--repeat 3] [--profile 15]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "lumbar_mri"
LABELS_PER_CASE = "levels.json"
FOCUS_SET = "chu2015_t2"  # the real 1 mm masks of about 77 x 381 x 381 voxels
TARGET_RATIO = 2.0  # measurement time / plain read time
TARGET_MS = 500.0  # per case

PER_CASE_PHASES = ("sitk_read", "sitk_read_held", "read_mask", "measure", "measure_1thread", "measure_qc")
PHASE_TITLES = {
    "sitk_read": "Reference A: `SimpleITK.ReadImage` + `GetArrayFromImage`, result freed at once (ms/case)",
    "sitk_read_held": "Reference B: the same, previous result still held (ms/case)",
    "read_mask": "`measure.io.read_mask` (read + reorientation) (ms/case)",
    "measure": "`measure_file`, no QC pictures, 1 process (ms/case)",
    "measure_1thread": "`measure_file`, no QC, 1 process, SimpleITK 1 thread (ms/case)",
    "measure_qc": "`measure_file` with QC pictures, 1 process (ms/case)",
}


# --------------------------------------------------------------------------------------------------------------
# Worker side: one phase in a fresh process, result as JSON in a file.


def _maxrss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def _best_ms(function, repeat: int, hold: bool, clock: list[float] | None = None) -> tuple[float, object, float]:
    """Best wall time (ms) of ``repeat`` calls, and the last result when ``hold`` (the previous result is then still
    alive during each call, which changes how the allocator serves large arrays); otherwise each result is freed at
    once and None is returned. ``clock``: a list that a timed part of the call appends its milliseconds to; the sum
    of that part in the best call is returned (NaN without a clock)."""
    best, value, part = float("inf"), None, float("nan")
    for _ in range(repeat):
        if clock is not None:
            clock.clear()
        start = time.perf_counter()
        if hold:
            value = function()
        else:
            function()
        elapsed = (time.perf_counter() - start) * 1e3
        if elapsed < best:
            best, part = elapsed, (sum(clock) if clock is not None else float("nan"))
    return best, value, part


def _clock_read_image(clock: list[float]) -> None:
    """Time every ``measure.io.read_image`` call (SimpleITK.ReadImage plus the cheap truncation check) into
    ``clock``: the read as it happens inside a measurement, in the same process and heap state (reference C)."""
    import measure.io as mask_io

    original = mask_io.read_image

    def timed(path):
        start = time.perf_counter()
        try:
            return original(path)
        finally:
            clock.append((time.perf_counter() - start) * 1e3)

    mask_io.read_image = timed


def _status_counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def _merge_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


def run_phase(phase: str, paths: list[str], ids: list[str], repeat: int, jobs: int) -> dict:
    """Run one benchmark phase over the given cases in this process; returns timings and peak memory."""
    import SimpleITK as sitk

    from measure.batch import MeasureOptions, measure_file, measure_files
    from measure.io import read_mask

    result: dict = {"phase": phase, "itk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}
    if phase == "baseline":
        result["maxrss_mib"] = _maxrss_mib(resource.RUSAGE_SELF)
        return result
    if phase == "measure_1thread":
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        result["itk_threads"] = 1
    with tempfile.TemporaryDirectory(prefix="bench_measure_qc_") as qc_dir:
        options = MeasureOptions(labels_per_case=LABELS_PER_CASE, qc_dir=qc_dir if phase == "measure_qc" else None)
        statuses: dict[str, int] = {}

        def one(path: str, case_id: str):
            if phase in ("sitk_read", "sitk_read_held"):
                return lambda: sitk.GetArrayFromImage(sitk.ReadImage(path))
            if phase == "read_mask":
                return lambda: read_mask(path)
            if phase in ("measure", "measure_1thread", "measure_qc"):
                return lambda: measure_file(path, case_id, options)
            raise ValueError(f"unknown phase {phase!r}")

        if phase == "batch":
            measure_files(paths[:1], ids[:1], options, jobs=1, progress=False)  # warm-up (lazy imports)
            walls = []
            for _ in range(repeat):
                start = time.perf_counter()
                frame = measure_files([Path(p) for p in paths], ids, options, jobs=jobs, progress=False)
                walls.append((time.perf_counter() - start) * 1e3)
            counts = frame["status"].value_counts()
            result.update(jobs=jobs, wall_ms=walls, statuses={str(k): int(v) for k, v in counts.items()})
        else:
            clock: list[float] | None = None
            if phase == "measure":
                clock = []
                _clock_read_image(clock)
            one(paths[0], ids[0])()  # warm-up (lazy imports, first-call costs)
            per_case, read_inside = {}, {}
            for path, case_id in zip(paths, ids, strict=True):
                hold = phase.startswith("measure") or phase == "sitk_read_held"  # measure_file returns small rows
                per_case[case_id], value, read_inside[case_id] = _best_ms(one(path, case_id), repeat, hold, clock)
                if phase.startswith("measure"):
                    _merge_counts(statuses, _status_counts(value))
            result["per_case_ms"] = per_case
            if clock is not None:
                result["read_inside_ms"] = read_inside
            if statuses:
                result["statuses"] = statuses
    result["maxrss_mib"] = _maxrss_mib(resource.RUSAGE_SELF)
    result["children_maxrss_mib"] = _maxrss_mib(resource.RUSAGE_CHILDREN)
    return result


def spawn_phase(phase: str, cases: list[tuple[str, str, str]], repeat: int, jobs: int = 1) -> dict:
    """Run :func:`run_phase` in a fresh Python process (so its ``ru_maxrss`` belongs to that phase alone)."""
    with tempfile.TemporaryDirectory(prefix="bench_measure_") as folder:
        request, answer = Path(folder) / "request.json", Path(folder) / "answer.json"
        request.write_text(json.dumps({"phase": phase, "paths": [c[2] for c in cases], "ids": [c[1] for c in cases],
                                       "repeat": repeat, "jobs": jobs}))
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(request), str(answer)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                         os.environ.get("PYTHONPATH")])))
        done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not answer.exists():
            raise RuntimeError(f"phase {phase} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(answer.read_text())


def worker_main(request_path: str, answer_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    result = run_phase(request["phase"], request["paths"], request["ids"], request["repeat"], request["jobs"])
    Path(answer_path).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------------------------
# Driver side.


def find_cases(data: Path) -> list[tuple[str, str, str]]:
    """(set, case id, mask path) of every ``<set>/<case>/mask.nii.gz`` that has a ``levels.json``, sorted."""
    return [
        (mask.parent.parent.name, mask.parent.name, str(mask))
        for mask in sorted(data.glob("*/*/mask.nii.gz"))
        if (mask.parent / LABELS_PER_CASE).is_file()
    ]


def warm_file_cache(cases: list[tuple[str, str, str]]) -> int:
    """Read every file of every case folder once (mask, image, levels.json); returns the bytes read."""
    total = 0
    for _, _, mask in cases:
        for item in Path(mask).parent.iterdir():
            if item.is_file():
                total += len(item.read_bytes())
    return total


def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``; elsewhere ``platform.processor()`` or ``default``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or default


def machine_info() -> dict:
    import cv2
    import numpy
    import pandas
    import SimpleITK as sitk

    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        toolkit = version("spine-mri-toolkit")
    except Exception:  # noqa: BLE001 - not installed: report it, do not fail
        toolkit = "not installed"
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "SimpleITK": sitk.Version_VersionString(),
        "opencv": cv2.__version__,
        "pandas": pandas.__version__,
        "spine_mri_toolkit": toolkit,
        "itk_default_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
    }


def source_fingerprint() -> str:
    """Short SHA-256 of the measure/ package sources, to tie the figures to one state of the code."""
    digest = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "measure").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json"):
            digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def _merged(results: dict, cases: list[tuple[str, str, str]], phase: str, key: str = "per_case_ms") -> dict:
    """One phase's per-case figures (``key``) of every set the cases come from, by case id."""
    out: dict = {}
    for case_set in sorted({c[0] for c in cases}):
        out.update(results["per_case"][case_set][phase][key])
    return out


def summarise(results: dict, groups: dict[str, list[tuple[str, str, str]]]) -> dict:
    """Median per-case times, ratios, batch ms/case and peak memory per group."""
    summary: dict[str, dict] = {}
    for group, cases in groups.items():
        ids = [c[1] for c in cases]
        row: dict = {"n": len(cases)}
        for phase in PER_CASE_PHASES:
            per_case = _merged(results, cases, phase)
            times = [per_case[i] for i in ids]
            row[f"{phase}_ms"] = median(times)
            row[f"{phase}_max_ms"] = max(times)
            row[f"{phase}_mean_ms"] = statistics.fmean(times)
        read_a, read_b = row["sitk_read_ms"], row["sitk_read_held_ms"]
        inside, totals = _merged(results, cases, "measure", "read_inside_ms"), _merged(results, cases, "measure")
        row["read_inside_ms"] = median(inside[i] for i in ids)
        row["measure_ratio_c"] = median(totals[i] / inside[i] for i in ids)  # per case, same call
        for jobs in (1, 2):
            batch = results["batch"][group][str(jobs)]
            row[f"batch{jobs}_ms"] = min(batch["wall_ms"]) / len(cases)
            row[f"batch{jobs}_maxrss_mib"] = batch["maxrss_mib"]
            row[f"batch{jobs}_children_maxrss_mib"] = batch["children_maxrss_mib"]
        for quantity in ("read_mask", "measure", "measure_1thread", "measure_qc", "batch1", "batch2"):
            row[f"{quantity}_ratio"] = row[f"{quantity}_ms"] / read_a  # ratio to reference A
            row[f"{quantity}_ratio_b"] = row[f"{quantity}_ms"] / read_b  # ratio to reference B
        row["speedup_jobs2"] = row["batch1_ms"] / row["batch2_ms"]
        sets = sorted({c[0] for c in cases})
        row["measure_maxrss_mib"] = max(results["per_case"][s]["measure"]["maxrss_mib"] for s in sets)
        row["measure_qc_maxrss_mib"] = max(results["per_case"][s]["measure_qc"]["maxrss_mib"] for s in sets)
        statuses: dict[str, int] = {}
        for s in sets:
            _merge_counts(statuses, results["per_case"][s]["measure"].get("statuses", {}))
        row["row_statuses"] = statuses
        row["meets_ratio"] = row["measure_ratio"] < TARGET_RATIO
        row["meets_ratio_b"] = row["measure_ratio_b"] < TARGET_RATIO
        row["meets_ratio_c"] = row["measure_ratio_c"] < TARGET_RATIO
        row["meets_time"] = row["measure_ms"] < TARGET_MS
        summary[group] = row
    return summary


def markdown_table(summary: dict, baseline_mib: float) -> str:
    groups = list(summary)
    header = ["quantity (median over cases)"] + [f"{g} (n={summary[g]['n']})" for g in groups] + ["target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(groups) + ["---"]) + "|"]

    def add(label: str, key: str, fmt: str, target: str = "") -> None:
        cells = [fmt.format(summary[g][key]) for g in groups]
        lines.append("| " + " | ".join([label, *cells, target]) + " |")

    def add_ratio(label: str, quantity: str, target: str = "", bold: bool = False) -> None:
        mark = "**" if bold else ""
        cells = [f"{mark}{summary[g][quantity + '_ratio']:.1f}x / {summary[g][quantity + '_ratio_b']:.1f}x{mark}"
                 for g in groups]
        lines.append("| " + " | ".join([f"  {mark}{label}{mark}", *cells, target]) + " |")

    time_target, ratio_target = f"< {TARGET_MS:.0f} ms", f"< {TARGET_RATIO:g}x"
    add(PHASE_TITLES["sitk_read"], "sitk_read_ms", "{:.1f}", "reference")
    add(PHASE_TITLES["sitk_read_held"], "sitk_read_held_ms", "{:.1f}", "reference")
    add(PHASE_TITLES["read_mask"], "read_mask_ms", "{:.1f}")
    add_ratio("ratio to reference A / B", "read_mask")
    add(PHASE_TITLES["measure"], "measure_ms", "{:.1f}", time_target)
    add("  mean over cases (ms)", "measure_mean_ms", "{:.1f}", time_target)
    add("  slowest case (ms)", "measure_max_ms", "{:.1f}", time_target)
    add_ratio("ratio measurement / reference A / B", "measure", ratio_target, bold=True)
    add("Reference C: the read inside that `measure_file` call (`read_image`: SimpleITK.ReadImage + truncation "
        "check) (ms/case)", "read_inside_ms", "{:.1f}", "reference")
    add("  **ratio measurement / reference C** (per case, same call; median)", "measure_ratio_c", "**{:.1f}x**",
        ratio_target)
    add(PHASE_TITLES["measure_1thread"], "measure_1thread_ms", "{:.1f}", time_target)
    add_ratio("ratio to reference A / B", "measure_1thread", ratio_target)
    add(PHASE_TITLES["measure_qc"], "measure_qc_ms", "{:.1f}")
    add_ratio("ratio to reference A / B", "measure_qc")
    add("`measure_files`, jobs=1: wall / cases (ms)", "batch1_ms", "{:.1f}", time_target)
    add_ratio("ratio to reference A / B", "batch1", ratio_target)
    add("`measure_files`, jobs=2: wall / cases (ms)", "batch2_ms", "{:.1f}", time_target)
    add_ratio("ratio to reference A / B", "batch2", ratio_target)
    add("  speed-up jobs=2 over jobs=1", "speedup_jobs2", "{:.2f}x")
    lines.append("| " + " | ".join(["peak RSS, Python + imports only (MiB)"] + [f"{baseline_mib:.0f}"] * len(groups)
                                   + [""]) + " |")
    add("peak RSS, per-case process, no QC (MiB)", "measure_maxrss_mib", "{:.0f}")
    add("peak RSS, per-case process, with QC (MiB)", "measure_qc_maxrss_mib", "{:.0f}")
    add("peak RSS, `measure_files` jobs=1 (MiB)", "batch1_maxrss_mib", "{:.0f}")
    add("peak RSS, `measure_files` jobs=2, parent (MiB)", "batch2_maxrss_mib", "{:.0f}")
    add("peak RSS, `measure_files` jobs=2, largest worker (MiB)", "batch2_children_maxrss_mib", "{:.0f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_measure.py",
        description="Benchmark spine-measure (read, measurement with and without QC pictures, batch jobs=1/2) on "
        "the real lumbar masks; prints a Markdown table.",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help=f"dataset folder holding <set>/<case>/mask.nii.gz (default: {DEFAULT_DATA})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all figures (per case too) as JSON")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case, best taken (default 3)")
    parser.add_argument("--batch-repeat", type=int, default=3, help="runs per batch, best taken (default 3)")
    parser.add_argument("--sets", nargs="+", metavar="SET", help="only these sets (default: all)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help=f"also profile measure_file (without and with QC pictures) on {FOCUS_SET} with cProfile "
                        "and print the top N functions by own time and by cumulative time")
    parser.add_argument("--worker", nargs=2, metavar=("REQUEST", "ANSWER"), help=argparse.SUPPRESS)
    return parser


def profile_measure(cases: list[tuple[str, str, str]], top: int, qc: bool = False) -> str:
    """cProfile of ``measure_file`` over the cases (with or without QC pictures): top functions by own and by
    cumulative time."""
    import cProfile
    import io
    import pstats

    from measure.batch import MeasureOptions, measure_file

    with tempfile.TemporaryDirectory(prefix="bench_measure_qc_") as qc_dir:
        options = MeasureOptions(labels_per_case=LABELS_PER_CASE, qc_dir=qc_dir if qc else None)
        measure_file(cases[0][2], cases[0][1], options)  # warm-up
        profiler = cProfile.Profile()
        profiler.enable()
        for _, case_id, path in cases:
            measure_file(path, case_id, options)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    if args.repeat < 1 or args.batch_repeat < 1:
        print("bench_measure: --repeat and --batch-repeat must be >= 1", file=sys.stderr)
        return 2
    data = args.data.resolve()
    if not data.is_dir():
        print(f"bench_measure: dataset folder {data} not found; it should hold <set>/<case>/mask.nii.gz with "
              f"{LABELS_PER_CASE} beside each mask (see ../shared/data/lumbar_mri/README.md), or pass --data DIR",
              file=sys.stderr)
        return 2
    cases = find_cases(data)
    if args.sets:
        cases = [c for c in cases if c[0] in args.sets]
    if not cases:
        print(f"bench_measure: no <set>/<case>/mask.nii.gz with {LABELS_PER_CASE} found in {data}"
              + (f" for sets {', '.join(args.sets)}" if args.sets else ""), file=sys.stderr)
        return 2
    sets = sorted({c[0] for c in cases})
    groups = {s: [c for c in cases if c[0] == s] for s in sets}
    if FOCUS_SET in groups:  # the headline set first
        groups = {FOCUS_SET: groups.pop(FOCUS_SET), **groups}
    if len(sets) > 1:
        groups["all"] = cases

    started = time.perf_counter()
    machine = machine_info()
    load_before = os.getloadavg()
    fingerprint = source_fingerprint()
    warmed = warm_file_cache(cases)
    print(f"bench_measure: {len(cases)} cases in {len(sets)} set(s) from {data} ({warmed / 1e6:.1f} MB warmed)",
          file=sys.stderr)
    results: dict = {"per_case": {}, "batch": {}}
    results["baseline"] = spawn_phase("baseline", cases[:1], 1)
    for case_set in sets:
        results["per_case"][case_set] = {}
        for phase in PER_CASE_PHASES:
            print(f"  {case_set}: {phase} ...", file=sys.stderr, flush=True)
            results["per_case"][case_set][phase] = spawn_phase(phase, groups[case_set], args.repeat)
    for group, group_cases in groups.items():
        results["batch"][group] = {}
        for jobs in (1, 2):
            print(f"  {group}: measure_files jobs={jobs} ...", file=sys.stderr, flush=True)
            results["batch"][group][str(jobs)] = spawn_phase("batch", group_cases, args.batch_repeat, jobs)
    summary = summarise(results, groups)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    if source_fingerprint() != fingerprint:
        print("bench_measure: WARNING: the measure/ sources changed during the run; the figures mix two versions",
              file=sys.stderr)
        fingerprint += " (changed during the run)"

    baseline_mib = results["baseline"]["maxrss_mib"]
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cpu_count']} cores ({machine['cpus_usable']} usable), "
        f"{machine['memory_gib']} GiB; {machine['platform']}",
        f"Python {machine['python']}, numpy {machine['numpy']}, SimpleITK {machine['SimpleITK']} "
        f"(default threads {machine['itk_default_threads']}), opencv {machine['opencv']}, "
        f"pandas {machine['pandas']}, spine-mri-toolkit {machine['spine_mri_toolkit']} "
        f"(measure/ sources sha256 {fingerprint})",
        f"Per case: best of {args.repeat} runs, median over cases; batch: best of {args.batch_repeat} runs; "
        f"file cache warm. Total benchmark time {elapsed:.0f} s; load average (1 min) {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after.",
        "",
        markdown_table(summary, baseline_mib),
        "",
    ]
    for group, row in summary.items():
        verdict = (f"{group}: measurement {row['measure_ms']:.0f} ms/case = {row['measure_ratio']:.1f}x read time A "
                   f"({row['measure_ratio_b']:.1f}x B, {row['measure_ratio_c']:.1f}x C) -> target < {TARGET_RATIO:g}x "
                   f"{'met' if row['meets_ratio'] else 'MISSED'} (B: {'met' if row['meets_ratio_b'] else 'MISSED'}, "
                   f"C: {'met' if row['meets_ratio_c'] else 'MISSED'}), "
                   f"target < {TARGET_MS:.0f} ms {'met' if row['meets_time'] else 'MISSED'}; "
                   f"row statuses {row['row_statuses']}")
        lines.append(verdict)
    print("\n".join(lines))

    if args.profile > 0:
        focus = groups.get(FOCUS_SET) or cases
        for qc in (False, True):
            print(f"\ncProfile of measure_file ({'with' if qc else 'no'} QC pictures) over {len(focus)} case(s), "
                  f"top {args.profile}:\n")
            print(profile_measure(focus, args.profile, qc))

    if args.json:
        report = {
            "benchmark": "benchmarks/bench_measure.py",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
            "data": str(data),
            "repeat": args.repeat,
            "batch_repeat": args.batch_repeat,
            "targets": {"ratio_to_read": TARGET_RATIO, "ms_per_case": TARGET_MS},
            "machine": machine,
            "measure_sources_sha256": fingerprint,
            "elapsed_s": elapsed,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "summary": summary,
            "baseline_maxrss_mib": baseline_mib,
            "raw": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"bench_measure: figures written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
