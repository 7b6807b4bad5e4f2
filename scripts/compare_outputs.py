"""Show that a change leaves every output the same: run spine-measure (three tables and QC pictures) and spine-convert
(multiclass; binary with an anterior-posterior crop) with the code of a git revision and with the working tree, on the
same export, and compare the files. Times, version strings and the recorded command line may differ; nothing else.

    python scripts/compare_outputs.py ../shared/data/lumbar_mri --base HEAD~3 --work /tmp/compare

Exit status 0 when everything is identical, 1 with the differing files listed otherwise.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
VOLATILE_KEYS = {"written_at", "created", "command", "tool_version", "measured_at"}
"""JSON keys and CSV columns that hold times, versions or the command line."""


def _run(code: Path, module: str, args: Sequence[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(code)}
    call = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    status = subprocess.run([sys.executable, "-c", call, *args], env=env, capture_output=True, text=True).returncode
    if status not in (0, 1):  # 1: some case skipped or failed, as the commands report it
        raise RuntimeError(f"{module} {' '.join(args)} exited with {status}")


def outputs(code: Path, export: Path, out: Path) -> None:
    """Every output of the commands compared, written with the code in ``code`` into ``out``."""
    _run(code, "measure.cli", [str(export), "--recursive", "--pattern", "mask.nii.gz", "--labels-per-case",
                               "levels.json", "-o", str(out / "measure.csv"), "--qc-dir", str(out / "qc"),
                               "--no-progress", "--overwrite"])
    for dataset_id, extra in (("901", []), ("902", ["--crop-ap", "0.3", "--binary"])):
        _run(code, "dataset_conversion.convert_cli", [str(export), "--out", str(out / "raw"), "--id", dataset_id,
                                                      "--name", "Compare", "--folds", "2", "--no-progress", *extra])


def _same_text(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        def strip(value):
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
            return [strip(v) for v in value] if isinstance(value, list) else value
        return strip(json.loads(a.read_text())) == strip(json.loads(b.read_text()))
    if a.suffix == ".csv":
        import pandas as pd

        x, y = pd.read_csv(a), pd.read_csv(b)
        keep = [c for c in x.columns if c not in VOLATILE_KEYS]
        return list(x.columns) == list(y.columns) and x[keep].equals(y[keep])
    return False


def differences(base: Path, work: Path) -> list[str]:
    """Relative paths of the files that differ (or exist on one side only), volatile fields ignored."""
    found = []
    names = {p.relative_to(base) for p in base.rglob("*") if p.is_file()}
    names |= {p.relative_to(work) for p in work.rglob("*") if p.is_file()}
    for name in sorted(names):
        a, b = base / name, work / name
        if not (a.is_file() and b.is_file()):
            found.append(f"{name} (only on one side)")
        elif not filecmp.cmp(a, b, shallow=False) and not _same_text(a, b):
            found.append(str(name))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="an export in the in-house layout (one folder per case)")
    parser.add_argument("--base", default="HEAD", help="git revision to compare the working tree with (default HEAD)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (emptied)")
    args = parser.parse_args(argv)
    subprocess.run(["rm", "-rf", str(args.work)], check=True)
    checkout = args.work / "checkout"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(checkout), args.base],
                   check=True, capture_output=True)
    try:
        outputs(checkout, args.export.resolve(), args.work / "base")
        outputs(ROOT, args.export.resolve(), args.work / "work")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], capture_output=True)
    found = differences(args.work / "base", args.work / "work")
    for name in found:
        print(f"differs: {name}")
    print(f"compare_outputs: {'identical' if not found else f'{len(found)} file(s) differ'} ({args.base} vs the "
          "working tree)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
