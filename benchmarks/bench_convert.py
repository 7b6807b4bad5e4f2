"""Benchmark spine-convert on the real export in ../shared/data/lumbar_mri: cases per second.

Each configuration runs the real command (``spine-convert ROOT --out TMP --id 990 --name Bench --no-progress``) in a
fresh process, ``--repeat`` times (best wall time kept, warm file cache), for ``--jobs 1`` and ``--jobs 2``, without
and with the paper's crop (``--crop-ap 0.25``). Reference: the time of only reading every image and mask with
SimpleITK and writing them back as compressed NIfTI in one process (the file work any converter must do).

Usage::

    .venv/bin/python benchmarks/bench_convert.py [--data DIR] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_measure import machine_info, warm_file_cache  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "lumbar_mri"
CONFIGURATIONS = (("jobs 1", ["--jobs", "1"]), ("jobs 2", ["--jobs", "2"]),
                  ("jobs 1, --crop-ap 0.25", ["--jobs", "1", "--crop-ap", "0.25"]),
                  ("jobs 2, --crop-ap 0.25", ["--jobs", "2", "--crop-ap", "0.25"]))


def run_convert(data: Path, extra: list[str]) -> tuple[float, int, int]:
    """Wall seconds of one spine-convert process, converted and skipped case counts."""
    out = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        command = [str(Path(sys.executable).parent / "spine-convert"), str(data), "--out", str(out), "--id", "990",
                   "--name", "Bench", "--no-progress", *extra]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace")
        wall = time.perf_counter() - start
        if done.returncode not in (0, 1):
            raise RuntimeError(f"spine-convert failed ({done.returncode}): {done.stderr[-2000:]}")
        info = json.loads((out / "Dataset990_Bench" / "spine_convert.json").read_text())
        return wall, int(info["converted"]), len(info["skipped"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def reference_read_write(data: Path) -> tuple[float, int]:
    """Seconds to read every image and mask and write them back compressed (one process, no checks)."""
    import SimpleITK as sitk

    pairs = sorted(data.glob("*/*/mask.nii.gz"))
    out = Path(tempfile.mkdtemp(prefix="bench_convert_ref_"))
    try:
        start = time.perf_counter()
        for n, mask in enumerate(pairs):
            for name in ("image.nii.gz", "mask.nii.gz"):
                sitk.WriteImage(sitk.ReadImage(str(mask.parent / name)), str(out / f"{n}_{name}"), True)
        return time.perf_counter() - start, len(pairs)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"data not found: {args.data}", file=sys.stderr)
        return 2
    cases = [(str(p), p.parent.name, "") for p in sorted(args.data.glob("*/*/mask.nii.gz"))]
    warm_file_cache([(str(Path(c[0]).parent / "image.nii.gz"), c[1], "") for c in cases] + cases)
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
               "cases": len(cases), "rows": []}
    ref_wall = min(reference_read_write(args.data)[0] for _ in range(args.repeat))
    results["rows"].append({"configuration": "reference: SimpleITK read + compressed write of image and mask",
                            "wall_s": ref_wall, "converted": len(cases), "skipped": 0})
    for title, extra in CONFIGURATIONS:
        runs = [run_convert(args.data, extra) for _ in range(args.repeat)]
        wall, converted, skipped = min(runs)
        results["rows"].append({"configuration": title, "wall_s": wall, "converted": converted, "skipped": skipped})
    print(f"{len(cases)} cases in {args.data}; best of {args.repeat}; machine: {results['machine']['cpu_model']}, "
          f"{results['machine']['cpus_usable']} cores")
    print("| configuration | wall (s) | cases handled / s | converted / skipped | wall / reference |")
    print("|---|---:|---:|---:|---:|")
    for row in results["rows"]:
        handled = row["converted"] + row["skipped"]
        print(f"| {row['configuration']} | {row['wall_s']:.2f} | {handled / row['wall_s']:.1f} | "
              f"{row['converted']} / {row['skipped']} | {row['wall_s'] / ref_wall:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
