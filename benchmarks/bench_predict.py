"""Benchmark prediction: our cascade (``spine-predict``) next to nnU-Net's ``nnUNetv2_predict -c 3d_fullres`` and
``-c 2d`` on the same real volumes, same harness, test-time augmentation off unless said.

Every measurement runs a real command in a fresh process; the harness records its wall time and the peak of the
summed resident memory of its whole process tree (``/proc``, sampled every 0.1 s).

* ``ours-cohort``: one ``spine-predict`` over every volume (models loaded once per command, as a user runs a cohort);
  the per-case seconds and phases come from its output (``[12.3 s: read ..., stage1 ..., stage2 ..., write ...]``).
* ``ours-single`` / ``nnunet-3d_fullres`` / ``nnunet-2d``: one command per volume (imports and model loading
  included), for one volume of each distinct shape (``--single shapes``, default: the cost of a sliding window
  depends on the shape, not on the content) or for every volume (``--single all``). nnU-Net runs with
  ``-f 0 --disable_tta -npp 1 -nps 1`` and ``nnUNet_def_n_proc`` = the machine's cores (its thread cap), on
  initialised weights of its own plans for the dataset (``nnUNetPlans.json``: cost does not depend on the weights).
* ``ours-tta``: the cohort run with test-time mirroring on, on the volumes of ``ours-single``.
* ``default-preset``: the default (GPU) preset's networks with initialised weights, in this process: stage 1's
  sliding window at its cost, stage 2 on the boxes the trained recipe's cascade ran on the same volume (its stage
  1's box and the growths its stage 2 asked for; an untrained stage 1 finds no vertebrae, and an untrained stage 2
  labels most of the box and grows it to its limit). Per-case seconds, without imports and model loading;
  ``--precision`` and ``--step-size`` as spine-predict's; ``process_peak_mb``, this process's peak resident memory so
  far (the recipe's cascade and earlier volumes included: an upper bound; one volume per command gives each its own).

The models of the recipe are the trained ones under ``--results`` (``-d``, ``--variant``); everything else is written
into ``--work``. Results: ``--json`` and a markdown table on stdout.

Usage::

    .venv/bin/python benchmarks/bench_predict.py --work /tmp/bench_predict --results $nnUNet_results -d 701 \\
        --preprocessed $nnUNet_preprocessed [--parts ours-cohort ours-single nnunet-3d_fullres ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_measure import machine_info  # noqa: E402

from measure.runtime import dataset_folder_name, nnunet_folder  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent
PARTS = ("ours-cohort", "ours-single", "nnunet-3d_fullres", "nnunet-2d", "ours-tta", "default-preset")
CASE_LINE = re.compile(r"^(?P<case>\S+): (?P<status>ok|error): .*\[(?P<total>[\d.]+) s: (?P<phases>[^\]]*)\]$")


def default_volumes() -> list[Path]:
    real = sorted(SHARED.glob("lumbar_mri/*/*/image.nii.gz"))
    return real + sorted(SHARED.glob("extra/unlabelled_t2_lumbar/*.nii.gz"))


def case_id(path: Path) -> str:
    return path.parent.name if path.name == "image.nii.gz" else path.name.split(".")[0]


def tree_rss_mb(pid: int) -> float:
    """Summed resident memory (MB) of a process and its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total / 1024


def run_measured(command: Sequence[str], env: dict) -> dict:
    """Run a command; wall seconds, peak tree memory (MB), exit status, output."""
    start = time.perf_counter()
    process = subprocess.Popen(list(map(str, command)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               encoding="utf-8", errors="replace")
    peak = [0.0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.communicate()[0]
    wall = time.perf_counter() - start
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({process.returncode}):\n{output[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_mb": round(peak[0]), "output": output}


def link_inputs(volumes: Sequence[Path], folder: Path) -> list[Path]:
    """nnU-Net-style links ``CASE_0000.nii.gz`` to the volumes (one folder per volume too, for single runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for volume in volumes:
        link = folder / f"{case_id(volume)}_0000.nii.gz"
        if not link.exists():
            link.symlink_to(volume.resolve())
        single = folder.parent / "single" / case_id(volume)
        single.mkdir(parents=True, exist_ok=True)
        if not (single / link.name).exists():
            (single / link.name).symlink_to(volume.resolve())
        links.append(link)
    return links


def one_per_shape(volumes: Sequence[Path]) -> list[Path]:
    import SimpleITK as sitk

    chosen: dict[tuple, Path] = {}
    for volume in volumes:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(volume))
        reader.ReadImageInformation()
        chosen.setdefault(reader.GetSize(), volume)
    return list(chosen.values())


def parse_cases(output: str) -> list[dict]:
    rows = []
    for line in output.splitlines():
        match = CASE_LINE.match(line.strip())
        if match:
            phases = {f"{name}_s": float(value) for name, value in
                      (item.split() for item in match["phases"].split(", ") if item)}
            rows.append({"case": match["case"], "status": match["status"], "total_s": float(match["total"]), **phases})
    return rows


def ours_command(inputs: Path, out: Path, args: argparse.Namespace, tta: bool = False) -> list[str]:
    command = [BIN / "spine-predict", "-i", inputs, "-o", out, "-d", args.dataset, "--variant", args.variant,
               "--device", "cpu", "-f", *args.folds, *(["--box-tiles"] if args.tile_layout == "box" else [])]
    return [*map(str, command), *([] if tta else ["--disable-tta"])]


def nnunet_models(args: argparse.Namespace, work: Path) -> Path:
    """Initialised-weight models of nnU-Net's own 3d_fullres and 2d plans for the dataset (results folder)."""
    from nnunet_ext.compat import model_folder, write_initialised_model

    results = work / "nnunet_results"
    source = Path(args.preprocessed) / args.dataset_name
    plans = json.loads((source / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((source / "dataset.json").read_text())
    for configuration, axes in (("3d_fullres", (0, 1, 2)), ("2d", (0, 1))):
        folder = model_folder(results, args.dataset_name, "nnUNetTrainer", "nnUNetPlans", configuration)
        if not (folder / "fold_0" / "checkpoint_final.pth").is_file():
            write_initialised_model(folder, plans, dataset_json, configuration, "nnUNetTrainer", axes)
    return results


def nnunet_single(volume_folder: Path, configuration: str, results: Path, args: argparse.Namespace, work: Path
                  ) -> dict:
    env = {**os.environ, "nnUNet_results": str(results), "nnUNet_def_n_proc": str(os.cpu_count() or 2),
           "nnUNet_compile": "f"}
    out = work / f"out_nnunet_{configuration}" / volume_folder.name
    command = [BIN / "nnUNetv2_predict", "-i", volume_folder, "-o", out, "-d", args.dataset, "-c", configuration,
               "-tr", "nnUNetTrainer", "-p", "nnUNetPlans", "-f", "0", "--disable_tta", "-npp", "1", "-nps", "1",
               "-device", "cpu"]
    result = run_measured(command, env)
    result.pop("output")
    return result


def default_preset(volumes: Sequence[Path], args: argparse.Namespace, work: Path) -> list[dict]:
    """Per-case seconds of the default preset's cascade (initialised weights; stage 2 on the boxes the trained
    recipe's cascade ran), in this process."""
    import numpy as np
    import SimpleITK as sitk

    from nnunet_ext.compat import model_folder, write_initialised_model
    from nnunet_ext.plans import COARSE_CONFIGURATION, FINE_CONFIGURATION, CascadeMetadata
    from nnunet_ext.segment import load_cascade, run_stage1, run_stage2

    source = Path(args.preprocessed) / args.dataset_name
    plans = json.loads((source / f"{args.default_plans}.json").read_text())
    dataset_json = json.loads((source / "dataset.json").read_text())
    folders = {}
    cascade = CascadeMetadata.from_plans(plans)
    lr_axis = cascade.left_right_axis_after_transpose if cascade else 0
    for configuration, trainer, axes in ((COARSE_CONFIGURATION, "nnUNetTrainerSpineCoarse", (lr_axis,)),
                                         (FINE_CONFIGURATION, "nnUNetTrainerSpineFine", None)):
        folders[configuration] = model_folder(work / "default_results", args.dataset_name, trainer,
                                              args.default_plans, configuration)
        if not (folders[configuration] / "fold_0" / "checkpoint_final.pth").is_file():
            write_initialised_model(folders[configuration], plans, dataset_json, configuration, trainer, axes)
    start = time.perf_counter()
    default = load_cascade(folders[COARSE_CONFIGURATION], folders[FINE_CONFIGURATION], [0], [0], mirroring=False,
                           precision=args.precision, tile_step_size=args.step_size, tile_layout=args.tile_layout)
    load_s = time.perf_counter() - start
    recipe = load_cascade(*(model_folder(Path(args.results), args.dataset_name, f"{trainer}{args.variant}",
                                         "nnUNetPlans_spine", configuration)
                            for trainer, configuration in (("nnUNetTrainerSpineCoarse", COARSE_CONFIGURATION),
                                                           ("nnUNetTrainerSpineFine", FINE_CONFIGURATION))),
                          [0], [0], mirroring=False, tile_layout=args.tile_layout)
    same_grid = [predictor.configuration_manager.spacing for predictor in (recipe.fine, default.fine)]
    if same_grid[0] != same_grid[1]:
        raise ValueError(f"the recipe's stage 2 ({same_grid[0]} mm) and the default preset's ({same_grid[1]} mm) "
                         "are on different grids: the recipe's boxes do not apply")
    rows = []
    for volume in volumes:
        image = sitk.ReadImage(str(volume))
        array, spacing = sitk.GetArrayFromImage(image).astype(np.float32)[None], image.GetSpacing()[::-1]
        # not timed: where trained models put stage 2's box and how far it grew (untrained ones find no vertebrae,
        # or grow the box to its limit on noise)
        boxes: list = []
        run_stage2(recipe, array, spacing, run_stage1(recipe, array, spacing), image.GetDirection(), boxes)
        start = time.perf_counter()
        coarse = run_stage1(default, array, spacing)
        middle = time.perf_counter()
        run_stage2(default, array, spacing, coarse, image.GetDirection(), boxes or None)
        end = time.perf_counter()
        rows.append({"case": case_id(volume), "stage1_s": round(middle - start, 2), "stage2_s": round(end - middle, 2),
                     "total_s": round(end - start, 2), "load_s": round(load_s, 2), "precision": args.precision,
                     "step_size": args.step_size, "tile_layout": args.tile_layout,
                     "stage2_slices": boxes[-1][0].stop - boxes[-1][0].start if boxes else "all",
                     "box_growths": max(0, len(boxes) - 1),
                     "process_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
        print(f"default preset {rows[-1]}", flush=True)
    return rows


def summary(values: Sequence[float]) -> str:
    return f"median {statistics.median(values):.1f}, worst {max(values):.1f}" if values else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="scratch folder (models, links, outputs)")
    parser.add_argument("--results", default=nnunet_folder("nnUNet_results"), help="trained recipe's results")
    parser.add_argument("--preprocessed", default=nnunet_folder("nnUNet_preprocessed"))
    parser.add_argument("-d", "--dataset", default="701")
    parser.add_argument("--variant", default="Cpu", help="trainer variant of the trained recipe")
    parser.add_argument("--folds", nargs="+", default=["0"], help="folds of the recipe spine-predict uses (default 0, "
                        "one model as nnU-Net's -f 0)")
    parser.add_argument("--default-plans", default="nnUNetPlans_spineDefault",
                        help="plans of the default preset (spine-nnunet plan --preset default --plans-name ...)")
    parser.add_argument("--volumes", nargs="*", help="default: the 53 real volumes and the unlabelled scan")
    parser.add_argument("--single", choices=("shapes", "all"), default="shapes")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="network compute of the default preset's part (spine-predict --precision)")
    parser.add_argument("--step-size", type=float, default=0.5,
                        help="sliding-window step of the default preset's part, a fraction of the patch "
                             "(spine-predict --step-size; 1.0: tiles that only touch, fewer of them)")
    parser.add_argument("--tile-layout", choices=("grid", "box"), default="grid",
                        help="stage 2's tiles in the box, ours and the default preset's: the whole slice's grid tiles "
                             "that overlap it (default) or nnU-Net's grid laid over the box (spine-predict "
                             "--box-tiles)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    args.dataset_name = dataset_folder_name(args.dataset, Path(args.preprocessed))
    work = Path(args.work)
    volumes = [Path(v) for v in args.volumes] if args.volumes else default_volumes()
    link_inputs(volumes, work / "inputs")
    singles = volumes if args.single == "all" else one_per_shape(volumes)
    env = {**os.environ, "nnUNet_results": str(args.results), "nnUNet_compile": "f"}
    results: dict = {"machine": machine_info(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "volumes": len(volumes), "single_volumes": [case_id(v) for v in singles], "parts": {}}
    for part in args.parts:
        print(f"== {part}", flush=True)
        if part in ("ours-cohort", "ours-tta"):
            tta = part == "ours-tta"
            inputs = work / "inputs"
            if tta:
                inputs = work / "inputs_tta"
                link_inputs(singles, inputs)
            run = run_measured(ours_command(inputs, work / f"out_{part}", args, tta), env)
            cases = parse_cases(run.pop("output"))
            results["parts"][part] = {**run, "cases": cases}
            print(f"{part}: {summary([c['total_s'] for c in cases])} s per case; wall {run['wall_s']} s, "
                  f"peak {run['peak_mb']} MB", flush=True)
        elif part == "ours-single":
            rows = []
            for volume in singles:
                run = run_measured(ours_command(work / "single" / case_id(volume), work / "out_single", args), env)
                run.pop("output")
                rows.append({"case": case_id(volume), **run})
                print(f"ours single {rows[-1]}", flush=True)
            results["parts"][part] = rows
        elif part.startswith("nnunet-"):
            configuration = part.split("-", 1)[1]
            models = nnunet_models(args, work)
            rows = []
            for volume in singles:
                rows.append({"case": case_id(volume),
                             **nnunet_single(work / "single" / case_id(volume), configuration, models, args, work)})
                print(f"{part} {rows[-1]}", flush=True)
            results["parts"][part] = rows
        elif part == "default-preset":
            results["parts"][part] = default_preset(volumes if args.single == "all" else singles, args, work)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
