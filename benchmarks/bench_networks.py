"""Benchmark the cascade's networks against nnU-Net's default PlainConvUNet built from the same plans.

For each network: parameters, forward+backward patches per second (SGD step included, best of ``--repeat`` timed
iterations after one warm-up) and peak memory (CPU: the process's peak RSS above the baseline after imports and
building the network; CUDA: ``torch.cuda.max_memory_allocated``), each in a fresh process. Patch sizes come from an
nnU-Net plans file (``--plans``; produced by ``nnUNetv2_plan_experiment`` on the converted real dataset):

* 3D: the ``3d_fullres`` patch: ``CoarseDeepLabGCN3D`` (arch_kwargs from ``coarse_arch_kwargs``) vs the plans'
  3D ``PlainConvUNet``, one input channel, 10 output classes, deep supervision on (as in training);
* 2D: the ``2d`` patch: ``ResidualUNet2D`` vs the plans' 2D ``PlainConvUNet``, both with 10 input channels (the
  image plus the one-hot of 9 coarse foreground classes, the cascade's input), 10 outputs, deep supervision on.

Usage::

    .venv/bin/python benchmarks/bench_networks.py --plans PATH/nnUNetPlans.json [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
CLASS_NAMES = ["background", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2"]


def _networks(plans: dict) -> list[dict]:
    from nnunet_ext.networks.factory import COARSE_CLASS, FINE_CLASS, coarse_arch_kwargs, fine_arch_kwargs

    full, flat = plans["configurations"]["3d_fullres"], plans["configurations"]["2d"]
    return [
        {"name": "CoarseDeepLabGCN3D", "dim": 3, "patch": full["patch_size"], "inputs": 1,
         "architecture": {"network_class_name": COARSE_CLASS, "_kw_requires_import": [],
                          "arch_kwargs": coarse_arch_kwargs(full["patch_size"], full["spacing"], CLASS_NAMES)}},
        {"name": "PlainConvUNet 3d_fullres (nnU-Net default)", "dim": 3, "patch": full["patch_size"], "inputs": 1,
         "architecture": full["architecture"]},
        {"name": "ResidualUNet2D", "dim": 2, "patch": flat["patch_size"], "inputs": 10,
         "architecture": {"network_class_name": FINE_CLASS, "_kw_requires_import": [],
                          "arch_kwargs": fine_arch_kwargs(flat["patch_size"], flat["spacing"])}},
        {"name": "PlainConvUNet 2d (nnU-Net default)", "dim": 2, "patch": flat["patch_size"], "inputs": 10,
         "architecture": flat["architecture"]},
    ]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(spec: dict, device: str, batch: int, repeat: int, threads: int) -> dict:
    """One network in this process: parameters, patches/s of forward+backward+step, peak memory."""
    import torch

    from nnunet_ext.networks.factory import build_network

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(spec["architecture"], spec["inputs"], len(CLASS_NAMES), deep_supervision=True).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    x = torch.randn(batch, spec["inputs"], *spec["patch"], device=device)
    baseline = _peak_rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for iteration in range(repeat + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=device == "cuda"):
            outputs = net(x)
            loss = sum(o.float().square().mean() for o in (outputs if isinstance(outputs, list) else [outputs]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if iteration:  # the first iteration warms up (allocator, kernels)
            times.append(time.perf_counter() - start)
    return {
        "network": spec["name"], "patch": spec["patch"], "input_channels": spec["inputs"], "batch": batch,
        "parameters_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "seconds_per_iteration": min(times), "patches_per_second": batch / min(times),
        "peak_memory_mib": (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                            else _peak_rss_mib() - baseline),
        "memory_kind": "CUDA max allocated" if device == "cuda" else "peak RSS above baseline",
    }


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    import os

    from bench_measure import cpu_model

    return f"{cpu_model('CPU')}, {len(os.sched_getaffinity(0))} cores"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=Path, required=True, help="nnUNetPlans.json with 2d and 3d_fullres")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-3d", type=int, default=2, help="3D batch (default 2, as planned)")
    parser.add_argument("--batch-2d", type=int, default=8, help="2D batch (default 8; the plans' batch is larger)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # worker: measure network number N
    args = parser.parse_args(argv)
    plans = json.loads(args.plans.read_text())
    specs = _networks(plans)
    if args.one is not None:
        spec = specs[args.one]
        batch = args.batch_3d if spec["dim"] == 3 else args.batch_2d
        print(json.dumps(measure(spec, args.device, batch, args.repeat, args.threads)))
        return 0
    import torch

    rows = []
    for n, spec in enumerate(specs):
        command = [sys.executable, __file__, "--plans", str(args.plans), "--device", args.device, "--repeat",
                   str(args.repeat), "--threads", str(args.threads), "--batch-3d", str(args.batch_3d),
                   "--batch-2d", str(args.batch_2d), "--one", str(n)]
        done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace")
        if done.returncode != 0:
            print(f"{spec['name']}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"done: {spec['name']}", file=sys.stderr)
    header = {"device": args.device, "hardware": _device_name(args.device), "torch": torch.__version__,
              "threads": args.threads, "plans": str(args.plans), "date": time.strftime("%Y-%m-%d")}
    print(f"{header['hardware']}; torch {header['torch']}; {args.threads} threads; "
          f"{'fp16 autocast' if args.device == 'cuda' else 'fp32'}")
    print("| network | patch | input ch. | batch | parameters (M) | s / iteration | patches / s | peak memory (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['network']} | {'x'.join(map(str, r['patch']))} | {r['input_channels']} | {r['batch']} | "
              f"{r['parameters_m']:.2f} | {r['seconds_per_iteration']:.2f} | {r['patches_per_second']:.2f} | "
              f"{r['peak_memory_mib']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
