#!/usr/bin/env python
"""Exported students against PyTorch eager on the CPU: latency ratios of onnxruntime float32 and int8.

    python -m benchmarks.bench_export \
        --models depthanything-small,depthanything-base,demo-student --size 518 --threads 2 --repeats 5

For every model (an alias or a model folder; random weights, so nothing is downloaded): the student is exported with
``hf_distill.export.export_onnx`` (the graph ``scripts/export.py`` writes as ``onnx/model.onnx``) and quantised with
``quantize_onnx`` (``onnx/model_quantized.onnx``); then PyTorch eager, onnxruntime float32 and onnxruntime int8 run
the same random batch-1 input at ``--size`` x ``--size`` interleaved in this process (one call of each per round,
the order rotating every round), with ``--threads`` intra-op threads for both runtimes. Printed per model:
parameters, GFLOPs (``FlopCounterMode``, a multiply-add counts 2), the median latency of each runtime, the ratios
``onnx_fp32/pytorch`` and ``onnx_int8/pytorch`` (goal: at most 1.0 and 0.8), the largest float32 difference
(relative to the map's largest value) and the int8 model's abs_rel change on 8 held-out generated scenes
(``measure_quantization``). With ``--threads 1`` the CPU time of each call (``time.process_time``) is printed too:
on a machine that other processes share, it leaves out the time they held the core (with several threads it would
count threads spinning while they wait). Random weights are those of ``--student_init random``: a head calibrated on
generated scenes, so that the maps vary. ``--profile`` adds onnxruntime's time per operator type and PyTorch's per
aten operator.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hf_distill.evaluation.profile import count_flops, count_parameters
from hf_distill.export import export_onnx, measure_quantization, quantize_onnx
from hf_distill.models import load_depth_model, load_image_processor, resolve_model_name

BACKENDS = ("pytorch", "onnx_fp32", "onnx_int8")


def random_student(name: str) -> torch.nn.Module:
    """``name``'s structure with random weights as ``--student_init random`` starts it (the fresh head calibrated
    on generated scenes, so that its maps vary)."""
    torch.manual_seed(0)
    return load_depth_model(name, init="random").float().eval()


def ort_session(path: Path, threads: int, profile: bool = False):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = profile
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_operator_ms(path: Path, pixel_values: np.ndarray, threads: int, runs: int = 2) -> dict[str, float]:
    """Milliseconds per run spent in each onnxruntime operator type (its own profiler), largest first."""
    session = ort_session(path, threads, profile=True)
    session.run(None, {"pixel_values": pixel_values})
    for _ in range(runs):
        session.run(None, {"pixel_values": pixel_values})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    totals: collections.Counter[str] = collections.Counter()
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    for event in kernels[len(kernels) // (runs + 1):]:  # without the first (warm-up) run
        totals[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
    return dict(totals.most_common())


def torch_operator_ms(model: torch.nn.Module, pixel_values: torch.Tensor, runs: int = 2) -> dict[str, float]:
    """Milliseconds per run of PyTorch's own time per aten operator (self CPU time), largest first."""
    with torch.no_grad():
        model(pixel_values=pixel_values)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(runs):
                model(pixel_values=pixel_values)
    rows = sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return {e.key: e.self_cpu_time_total / 1e3 / runs for e in rows if e.self_cpu_time_total > 0}


def bench_model(name: str, args: argparse.Namespace, folder: Path) -> dict:
    model = random_student(name)
    processor = load_image_processor(resolve_model_name(name))
    float_path, int8_path = folder / "model.onnx", folder / "model_quantized.onnx"
    start = time.perf_counter()
    export_onnx(model, float_path)
    quantize_onnx(float_path, int8_path)
    export_s = time.perf_counter() - start
    quantization = measure_quantization(processor, float_path, int8_path)

    pixel_values = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size), dtype=np.float32)
    tensor = torch.from_numpy(pixel_values)
    sessions = {"onnx_fp32": ort_session(float_path, args.threads), "onnx_int8": ort_session(int8_path, args.threads)}

    def call(backend: str):
        if backend == "pytorch":
            with torch.no_grad():
                return model(pixel_values=tensor).predicted_depth.numpy()
        return sessions[backend].run(None, {"pixel_values": pixel_values})[0]

    outputs = {backend: call(backend) for backend in BACKENDS}  # warm-up, and the outputs compared below
    scale = float(np.abs(outputs["pytorch"]).max())
    times: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    cpu_times: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    for round_ in range(args.repeats):
        for i in range(len(BACKENDS)):
            backend = BACKENDS[(round_ + i) % len(BACKENDS)]
            start, cpu_start = time.perf_counter(), time.process_time()
            call(backend)
            times[backend].append((time.perf_counter() - start) * 1e3)
            cpu_times[backend].append((time.process_time() - cpu_start) * 1e3)
    median = {backend: float(np.median(times[backend])) for backend in BACKENDS}
    cpu = {backend: float(np.median(cpu_times[backend])) for backend in BACKENDS}
    row = {
        "model": name,
        "parameters": count_parameters(model),
        "gflops": count_flops(model, tensor) / 1e9,
        "latency_ms": median,
        "times_ms": times,
        "cpu_ms": cpu,
        "cpu_times_ms": cpu_times,
        "fp32_over_pytorch_cpu": cpu["onnx_fp32"] / cpu["pytorch"],
        "int8_over_pytorch_cpu": cpu["onnx_int8"] / cpu["pytorch"],
        "fp32_over_pytorch": median["onnx_fp32"] / median["pytorch"],
        "int8_over_pytorch": median["onnx_int8"] / median["pytorch"],
        "fp32_max_rel_diff": float(np.abs(outputs["onnx_fp32"] - outputs["pytorch"]).max()) / scale,
        "int8_abs_rel_float": quantization.abs_rel_float,
        "int8_abs_rel_change": quantization.increase,
        "file_mb": {"fp32": float_path.stat().st_size / 2**20, "int8": int8_path.stat().st_size / 2**20},
        "export_and_quantize_s": export_s,
    }
    if args.profile:
        row["operators_ms"] = {"pytorch": torch_operator_ms(model, tensor),
                               "onnx_fp32": ort_operator_ms(float_path, pixel_values, args.threads),
                               "onnx_int8": ort_operator_ms(int8_path, pixel_values, args.threads)}
    return row


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"{args.size} x {args.size}, batch 1, {args.threads} threads, median of {args.repeats} interleaved rounds",
             "| model | parameters | GFLOPs | PyTorch eager ms | onnxruntime fp32 ms | int8 ms | fp32 / PyTorch | "
             "int8 / PyTorch | fp32 max diff | int8 abs_rel change | fp32 / int8 MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["latency_ms"]
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.1f}M | {r['gflops']:.1f} | {ms['pytorch']:.0f} | "
            f"{ms['onnx_fp32']:.0f} | {ms['onnx_int8']:.0f} | **{r['fp32_over_pytorch']:.2f}** | "
            f"**{r['int8_over_pytorch']:.2f}** | {r['fp32_max_rel_diff']:.1e} | {r['int8_abs_rel_change']:+.4f} | "
            f"{r['file_mb']['fp32']:.0f} / {r['file_mb']['int8']:.0f} |")
    if args.threads == 1:
        lines.append("CPU time per call (process time: what the call computed, without the time other processes held "
                     "the core):")
        for r in rows:
            cpu = r["cpu_ms"]
            lines.append(f"{r['model']}: PyTorch {cpu['pytorch']:.0f} ms, fp32 {cpu['onnx_fp32']:.0f} ms "
                         f"({r['fp32_over_pytorch_cpu']:.2f}x), int8 {cpu['onnx_int8']:.0f} ms "
                         f"({r['int8_over_pytorch_cpu']:.2f}x)")
    for r in rows:
        for backend, operators in r.get("operators_ms", {}).items():
            top = ", ".join(f"{op} {ms:.0f}" for op, ms in list(operators.items())[:8])
            lines.append(f"{r['model']} {backend} operators (ms per run): {top}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="depthanything-small,depthanything-base,demo-student",
                        help="Comma-separated aliases or model folders (random weights of their structure).")
    parser.add_argument("--size", type=int, default=518, help="Input height and width (a multiple of 14).")
    parser.add_argument("--threads", type=int, default=2, help="Intra-op threads of PyTorch and onnxruntime.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed rounds (one call per runtime each).")
    parser.add_argument("--profile", action="store_true", help="Also print time per operator of each runtime.")
    parser.add_argument("--output_json", default=None, help="Write every figure and timing here.")
    args = parser.parse_args(argv)
    if args.size % 14 or args.size < 28:
        parser.error(f"--size must be a multiple of 14 and at least 28, got {args.size}")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as folder:
            rows.append(bench_model(name.strip(), args, Path(folder)))
        print(format_table(rows[-1:], args), flush=True)
    print("\n" + format_table(rows, args))
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
