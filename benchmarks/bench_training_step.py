"""Where one training iteration of a trained configuration spends its time: nnU-Net's batch pipeline (loading and each
augmentation transform, in one thread as nnU-Net's augmentation worker runs it) and the trainer's step (forward, loss,
backward, optimiser), in this process, on the real preprocessed data.

The trainer is built the way ``nnUNetv2_train`` builds it (``get_trainer_from_args``), so its variant's attributes
(precision, width, 2.5D neighbours, loss terms) are those of a real run. A cascade stage needs its previous stage's
predictions; ``--previous reference`` stands in each case's reference segmentation for them (what a pipeline costs
does not depend on the labels' values), so the benchmark runs before stage 1 is trained. The nnU-Net folders come
from the environment (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``), as for ``nnUNetv2_train``.

Usage::

    .venv/bin/python benchmarks/bench_training_step.py -d 701 -c 2d_cascade -tr nnUNetTrainerSpineFineCpu \\
        -p nnUNetPlans_spine [--previous reference|FOLDER] [--iterations 20] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))


def _timer(totals: dict[str, float]):
    """A wrapper for :func:`nnunet_ext.compat.instrument_batch_pipeline` that adds each call's wall time to
    ``totals[name]``."""

    def wrap(name: str, call):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = call(*args, **kwargs)
            totals[name] += time.perf_counter() - start
            return out

        return timed

    return wrap


def bench(dataset: str, configuration: str, trainer_name: str, plans: str, previous: str | None, iterations: int,
          threads: int, fold: int = 0) -> dict:
    """Seconds per batch for the pipeline (per transform) and per training step (per phase)."""
    os.environ["nnUNet_n_proc_DA"] = "0"  # the pipeline runs in this process, timed transform by transform
    import torch
    from threadpoolctl import threadpool_limits

    from nnunet_ext.compat import (
        instrument_batch_pipeline,
        is_cascade_stage,
        reference_as_previous_stage,
        trainer_from_args,
        training_batches,
        use_previous_stage_folder,
    )

    trainer = trainer_from_args(dataset, configuration, fold, trainer_name, plans, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as scratch:
        cascaded = is_cascade_stage(trainer)
        if cascaded and previous == "reference":
            previous = str(reference_as_previous_stage(trainer, scratch))
        if cascaded and previous:
            use_previous_stage_folder(trainer, previous)
        trainer.initialize()
        if cascaded and previous:
            use_previous_stage_folder(trainer, previous)
        torch.set_num_threads(threads)
        loader, pipeline = training_batches(trainer)
        totals: dict[str, float] = collections.defaultdict(float)
        instrument_batch_pipeline(pipeline, _timer(totals))
        with threadpool_limits(1):  # as nnU-Net's data loader runs
            next(loader)
            totals.clear()
            start = time.perf_counter()
            batches = [next(loader) for _ in range(iterations)]
            batch_s = (time.perf_counter() - start) / iterations
        step = _time_steps(trainer, batches)
    per_transform = {k: v / iterations for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    return {"trainer": trainer_name, "configuration": configuration, "batch_size": trainer.batch_size,
            "input_shape": list(batches[0]["data"].shape), "threads": threads, "iterations": iterations,
            "pipeline_s_per_batch": batch_s, "pipeline_s_per_transform": per_transform,
            "step_s": step, "step_s_total": sum(step.values())}


def _time_steps(trainer, batches: Sequence[dict]) -> dict[str, float]:
    """Mean seconds of forward, loss, backward and optimiser step over ``batches`` (two warm-up steps first), as
    nnU-Net's ``train_step`` runs them on the CPU."""
    from nnunet_ext.compat import timed_train_step

    trainer.network.train()
    totals = dict.fromkeys(("forward", "loss", "backward", "optimiser"), 0.0)
    for i in range(len(batches) + 2):
        phases = timed_train_step(trainer, batches[i % len(batches)], time.perf_counter)
        if i >= 2:
            for key, value in phases.items():
                totals[key] += value
    return {key: value / len(batches) for key, value in totals.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("-c", "--configuration", required=True)
    parser.add_argument("-tr", "--trainer", required=True)
    parser.add_argument("-p", "--plans", default="nnUNetPlans_spine")
    parser.add_argument("-f", "--fold", type=int, default=0)
    parser.add_argument("--previous", default=None,
                        help="cascade stages: 'reference' (each case's reference stands in for stage 1's prediction) "
                             "or a predicted_next_stage folder (default: the trainer's own)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training step")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = bench(args.dataset, args.configuration, args.trainer, args.plans, args.previous, args.iterations,
                   args.threads, args.fold)
    result.update(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                  date=time.strftime("%Y-%m-%d"))
    print(f"{result['trainer']} ({result['configuration']}), batch {result['input_shape']}:")
    print(f"  batch pipeline (1 thread): {result['pipeline_s_per_batch']:.3f} s per batch")
    for name, seconds in result["pipeline_s_per_transform"].items():
        print(f"    {seconds:.3f} s  {name}")
    print(f"  training step ({args.threads} threads): {result['step_s_total']:.3f} s ("
          + ", ".join(f"{k} {v:.3f}" for k, v in result["step_s"].items()) + ")")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
