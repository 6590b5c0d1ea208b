#!/usr/bin/env python
"""The GPU performance suite: the paper's recipe (``--config sa1b_multiteacher``) as it trains, in one command.

    python -m benchmarks.gpu_suite --output_dir output/gpu_suite            # 1 GPU, then all GPUs when several
    python -m benchmarks.gpu_suite --tiny --processes 2 --output_dir /tmp/s  # CPU: the same code, tiny stand-ins

What runs is ``scripts/distill.py --config sa1b_multiteacher`` as built by ``build_trainer``: Depth Anything V2
Large and GenPercept disparity (SD 2.1's UNet, VAE and text encoder) drawn 7:3 per step, a Depth Anything V2 Base
student, global view + 2 local patches at 560 (GenPercept processes them at 768), batch 8 per device, bf16
teachers and bf16 autocast, ``--dataloader_num_workers 8``, streamed webdataset shards laid out as SA-1B's
(``sa_N.jpg`` of 1500 x 2250 + ``sa_N.json``). Weights are random (built from constants: no download); only
saving, logging and visualisation are moved out of the timed steps. With several GPUs the same case runs again
on all of them through ``accelerate launch`` (DDP), one shard per reader (ranks x workers).

Steps of each case, drawn teacher by drawn teacher (the draws are the trainer's own, known in advance):
  warm-up       until --warmup_steps have run and every teacher has run once (reported as warmup_s)
  count         until every teacher has been drawn once: FLOPs (``FlopCounterMode``, teacher forward counted
                apart) and host synchronisations inside ``training_step`` (``hf_distill.testing.host_syncs``)
  clean         one device synchronisation per step (at its end): step time per teacher, and the time the host
                waits for the loader's next batch (data-loader wait share = wait / step time)
  instrumented  synchronised timers split each step into data, teacher fwd, student fwd+bwd, loss fwd+bwd,
                optimizer and other (the rest of the Trainer loop)

Figures (per case): expected step time t = sum_i w_i t_i over the teachers' sampling weights w_i and their clean
step times t_i; steps/s = 1 / t; images/s = batch x processes / t; FLOPs per step F = sum_i w_i F_i per device;
MFU = F / t / the device's dense bf16 peak (PEAK_BF16_TFLOPS, or --peak_tflops); projected wall time of
--project_steps (the recipe's 20k) steps = that many x t, without evaluation, checkpoints and logging. Peak
memory per device: ``torch.cuda.max_memory_allocated`` of each rank (CPU: the process's max RSS).
gpu_suite.json and gpu_suite.md are rewritten after every case. Exit status 1 when a case failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate.utils import is_compiled_module

from benchmarks.gpu_report import PEAK_BF16_TFLOPS, add_mfu, lookup_peak, markdown_table, summarise, write_report
from benchmarks.gpu_timer import StepTimer, plan_phases, register_cpu_sdpa_flops, teacher_draws
from hf_distill.data.views import check_crop_size
from hf_distill.models import default_image_processor, depth_config, load_depth_model, tiny_depth_config
from hf_distill.testing import write_webdataset_shards
from hf_distill.testing.genpercept import write_genpercept_folder
from hf_distill.training.arguments import DistillationArguments
from hf_distill.training.cli import load_config_file, parse_distill_args
from hf_distill.training.run import build_trainer

RECIPE = "sa1b_multiteacher"  # a shipped recipe, by name
SA1B_IMAGE_SIZE = (1500, 2250)  # SA-1B's images are about 1500 x 2250 (height x width)


# ---- models and data ----------------------------------------------------------------------------------------


def write_models(root: Path, student: str, tiny: bool) -> dict[str, Path]:
    """The recipe's structures with random weights: Depth Anything V2 Large and GenPercept teachers (weights
    saved), the student (config only: it starts random)."""
    folders = {"depthanything": root / "depthanything-large", "genpercept": root / "genpercept-disparity",
               "student": root / f"student-{student}"}
    teacher_config = tiny_depth_config("large") if tiny else depth_config("depthanything-large")
    student_config = tiny_depth_config(student) if tiny else depth_config(f"depthanything-{student}")
    for config, folder in ((teacher_config, folders["depthanything"]), (student_config, folders["student"])):
        config.save_pretrained(folder)
        default_image_processor().save_pretrained(folder)
    load_depth_model(str(folders["depthanything"]), init="random").save_pretrained(folders["depthanything"])
    # GenPercept's 768 keeps the tiny stand-in at the views' own side (0): the smoke run stays small.
    write_genpercept_folder(folders["genpercept"], "tiny" if tiny else "sd21",
                            processing_resolution=0 if tiny else 768)
    return folders


def write_shards(root: Path, num_shards: int, per_shard: int, size: tuple[int, int], distinct: int) -> Path:
    """``num_shards`` SA-1B-style shards of ``per_shard`` samples in ``root/shards``: ``sa_N.jpg`` (``distinct``
    generated scenes rendered at a quarter size and enlarged, JPEG quality 90) and an ``sa_N.json`` of about 100 kB of
    mask annotations, which the loader must skip (``hf_distill.testing.write_webdataset_shards``)."""
    shards = root / "shards"
    write_webdataset_shards(shards, num_shards, per_shard, size=size, distinct=distinct, annotations=50)
    return shards


# ---- one case -------------------------------------------------------------------------------------------------


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kiB on Linux


def _release(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()  # compiled graphs hold the case's models; later cases must compile afresh anyway
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _gather(value: Any) -> list[Any]:
    """``value`` of every rank (rank order); ``[value]`` in a single process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values



def run_case(case: dict[str, Any], argv: list[str], phases: list[str], draws: list[int], device: torch.device,
             batch_size: int, processes: int, project_steps: int) -> dict[str, Any]:
    """Build the case's trainer, run ``len(phases)`` steps of ``Trainer.train()`` and summarise them."""
    start = time.perf_counter()
    trainer = build_trainer(*parse_distill_args(argv))
    build_s = time.perf_counter() - start
    timer = StepTimer(trainer, phases, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    drawn = [s["teacher"] for s in timer.steps]
    if drawn != draws[: len(drawn)]:
        raise RuntimeError(f"the trainer drew teachers {drawn}, the plan expected {draws[: len(drawn)]}")
    model, run_dir = trainer.model_wrapped, trainer.args.output_dir
    unwrapped = trainer.accelerator.unwrap_model(model)
    summary = {
        **case,
        "status": "ok",
        "processes": processes,
        "teachers": [Path(name).name for name in trainer.card_info.teachers],
        "teacher_weights": list(trainer.teacher_probabilities),
        "student_compiled": is_compiled_module(model),
        "student_activation_checkpointing": unwrapped.is_activation_checkpointing,
        "teacher_dtypes": [str(next(t.parameters()).dtype).removeprefix("torch.") for t in trainer.teachers],
        "mixed_precision": trainer.accelerator.mixed_precision,
        "build_s": build_s,
        **summarise(timer, trainer.teacher_probabilities, batch_size, processes, project_steps),
    }
    summary["peak_memory_gib_per_device"] = _gather(_peak_memory_gib(device))
    del trainer, timer, model, unwrapped
    _release(device)
    return summary | {"_run_dir": str(run_dir)}



def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="output/gpu_suite", help="Where gpu_suite.json/.md are written.")
    parser.add_argument("--tiny", action="store_true",
                        help="Tiny stand-ins of the same structures at 56 px, batch 2, on CPU: the suite's smoke "
                             "test (no figures).")
    parser.add_argument("--processes", type=int, nargs="+", default=None,
                        help="Process counts to run the cases with (default: 1, and the GPU count when there are "
                             "several; more than 1 runs through accelerate launch).")
    parser.add_argument("--student", default="base", choices=["small", "base", "large"],
                        help="Student structure (the recipe's: base).")
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"],
                        help="Cases without and/or with --torch_compile.")
    parser.add_argument("--activation_checkpointing", nargs="+", default=["off"], choices=["off", "on"],
                        help="Cases with the student's activation checkpointing off and/or on.")
    parser.add_argument("--compile_backend", default=None, help="--torch_compile_backend (default inductor; tiny "
                                                                 "aot_eager).")
    parser.add_argument("--size", type=int, default=None, help="Global view and patch side (default 560, tiny 56).")
    parser.add_argument("--batch_size", type=int, default=None, help="Per-device batch (default 8, tiny 2).")
    parser.add_argument("--num_local_patches", type=int, default=2)
    parser.add_argument("--warmup_steps", type=int, default=None, help="Untimed steps first (default 3, tiny 1).")
    parser.add_argument("--steps", type=int, default=None,
                        help="Clean steps (at least; until every teacher was timed), then as many instrumented "
                             "steps (default 10, tiny 1).")
    parser.add_argument("--dataloader_num_workers", type=int, default=None,
                        help="Loader worker processes (default: the recipe's 8; tiny 0).")
    parser.add_argument("--project_steps", type=int, default=None,
                        help="Steps the projected wall time is for (default: the recipe's max_steps, 20000).")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="Dense bf16 peak of the device in TFLOP/s (overrides the table).")
    parser.add_argument("--recipe", default=RECIPE, help="The training recipe the cases run.")
    parser.add_argument("--launched", action="store_true", help=argparse.SUPPRESS)  # a rank of accelerate launch
    args = parser.parse_args(argv)
    tiny_defaults = {"size": 56, "batch_size": 2, "warmup_steps": 1, "steps": 1, "dataloader_num_workers": 0,
                     "compile_backend": "aot_eager"}
    gpu_defaults = {"size": 560, "batch_size": 8, "warmup_steps": 3, "steps": 10, "compile_backend": "inductor",
                    "dataloader_num_workers": None}
    for name, value in (tiny_defaults if args.tiny else gpu_defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    recipe = load_config_file(args.recipe)
    if args.dataloader_num_workers is None:
        args.dataloader_num_workers = int(recipe.get("dataloader_num_workers", 0))
    if args.project_steps is None:
        args.project_steps = int(recipe.get("max_steps", 20000))
    try:
        check_crop_size("--size", args.size)
    except ValueError as error:
        parser.error(str(error))
    if args.steps < 1 or args.warmup_steps < 1:
        parser.error("--steps and --warmup_steps must be >= 1 (the first step compiles and warms up)")
    if args.processes is not None and min(args.processes) < 1:
        parser.error(f"--processes must be >= 1, got {args.processes}")
    return args


def case_argv(args: argparse.Namespace, case: dict[str, Any], folders: dict[str, Path], shards: Path,
              output_dir: Path, num_steps: int) -> list[str]:
    """The ``scripts/distill.py`` command line of one case: the recipe with the stand-in models and shards, and no
    saving, logging or visualisation inside the timed steps."""
    argv = [
        "--config", args.recipe,
        "--teacher_models", str(folders["depthanything"]), str(folders["genpercept"]),
        "--student_arch", str(folders["student"]), "--student_init", "random",
        "--dataset_dir", str(shards), "--dataset_format", "webdataset", "--output_dir", str(output_dir),
        "--global_crop_size", str(args.size), "--local_crop_size", str(args.size),
        "--num_local_patches", str(args.num_local_patches), "--per_device_train_batch_size", str(args.batch_size),
        "--max_steps", str(num_steps), "--warmup_steps", "0", "--save_strategy", "no",
        "--logging_steps", str(num_steps + 1), "--visualize_steps", "0", "--report_to", "none",
        "--disable_tqdm", "true", "--dataloader_num_workers", str(args.dataloader_num_workers),
    ]
    if args.tiny:
        argv += ["--use_cpu", "--bf16", "false", "--min_region", "80"]
    if case["activation_checkpointing"]:
        argv += ["--activation_checkpointing"]
    if case["torch_compile"]:
        argv += ["--torch_compile", "--torch_compile_backend", args.compile_backend]
    return argv


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(processes: int, tiny: bool, argv: list[str]) -> list[str]:
    """``accelerate launch`` of this script on ``processes`` ranks (DDP; gloo on CPU), bf16 on GPUs."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no" if tiny else "bf16", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "--module", "benchmarks.gpu_suite", *argv]


def run_cases(args: argparse.Namespace, processes: int, root: Path, device: torch.device) -> list[dict[str, Any]]:
    """Every case with ``processes`` processes (this one, or one rank of ``accelerate launch``)."""
    folders = {name: root / "models" / folder for name, folder in (
        ("depthanything", "depthanything-large"), ("genpercept", "genpercept-disparity"),
        ("student", f"student-{args.student}"))}
    plan = json.loads((root / "plan.json").read_text())
    results = []
    cases = [{"name": f"{args.recipe}, compile {compiled}, ckpt {checkpointing}, {processes} proc",
              "torch_compile": compiled == "on", "activation_checkpointing": checkpointing == "on"}
             for compiled in args.compile for checkpointing in args.activation_checkpointing]
    for index, case in enumerate(cases):
        phases = [p if p != "count" or not case["torch_compile"] else "warmup" for p in plan["phases"]]
        shards, run_dir = root / "data" / f"shards-{processes}", root / "runs" / f"{processes}-{index}"
        argv = case_argv(args, case, folders, shards, run_dir, len(phases))
        print(f"== {case['name']}", flush=True)
        try:
            result = run_case(case, argv, phases, plan["draws"], device, args.batch_size, processes,
                              args.project_steps)
        except Exception as error:  # one failing case must not lose the others' figures
            traceback.print_exc()
            result = {**case, "processes": processes, "status": f"error: {type(error).__name__}: {error}"[:500]}
            _release(device)
        results.append(result)
    return results


def prepare(args: argparse.Namespace, root: Path, process_counts: list[int]) -> None:
    """Models, the plan of phases (from the trainer's teacher draws) and one set of shards per process count:
    one shard per reader (ranks x workers), each long enough for its reader's share of the steps."""
    recipe = load_config_file(args.recipe)
    weights = [float(w) for w in recipe["teacher_sampling_weights"]]
    probabilities = [w / sum(weights) for w in weights]
    seed = int(recipe.get("seed", DistillationArguments.__dataclass_fields__["seed"].default))
    limit = args.warmup_steps + 200 + 2 * args.steps
    draws = teacher_draws(seed, probabilities, limit)
    phases = plan_phases(draws, len(weights), args.warmup_steps, args.steps)
    (root / "plan.json").write_text(json.dumps({"draws": draws[: len(phases)], "phases": phases}))
    write_models(root / "models", args.student, args.tiny)
    size = (96, 128) if args.tiny else SA1B_IMAGE_SIZE
    for processes in process_counts:
        workers = max(1, args.dataloader_num_workers)
        per_shard = (-(-len(phases) // workers) + 1) * args.batch_size
        write_shards(root / "data" / f"tmp-{processes}", processes * workers, per_shard, size,
                     distinct=2 if args.tiny else 8).rename(root / "data" / f"shards-{processes}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.launched:  # one rank of a multi-process case: the parent prepared everything in --output_dir
        root = Path(args.output_dir) / "work"
        device = torch.device("cpu") if args.tiny else torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        register_cpu_sdpa_flops()
        world = int(os.environ["WORLD_SIZE"])
        results = run_cases(args, world, root, device)
        if int(os.environ.get("RANK", 0)) == 0:
            (root / f"results-{world}.json").write_text(json.dumps(results))
        return 0

    started = time.perf_counter()
    if args.tiny:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("gpu_suite: error: no CUDA device (use --tiny for the CPU smoke run)", file=sys.stderr)
        return 2
    register_cpu_sdpa_flops()
    device_count = torch.cuda.device_count() if device.type == "cuda" else 1
    process_counts = args.processes or sorted({1, device_count})
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops, "--peak_tflops"
    else:
        found = lookup_peak(device_name) if device.type == "cuda" else None
        peak, peak_source = (found[1], f"table: {found[0]}") if found else (None, "not in the table")
    print("Dense bf16 peaks (TFLOP/s): " + ", ".join(f"{label} {tflops:g}" for _, label, tflops in PEAK_BF16_TFLOPS))
    print(f"Device: {device_name} x {device_count}; bf16 peak {peak or 'unknown'} TFLOP/s ({peak_source})")

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "device": device_name, "device_count": device_count, "peak_bf16_tflops": peak, "peak_source": peak_source,
        "tiny": args.tiny, "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "command": " ".join(["python", "-m", "benchmarks.gpu_suite", *argv]),
        "settings": {key: getattr(args, key) for key in (
            "recipe", "student", "size", "batch_size", "num_local_patches", "warmup_steps", "steps",
            "dataloader_num_workers", "compile_backend", "project_steps")},
        "cases": [],
    }
    root = output_dir / "work"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    try:
        prepare(args, root, process_counts)
        report["plan"] = json.loads((root / "plan.json").read_text())
        print(f"Prepared models and shards in {time.perf_counter() - started:.0f} s", flush=True)
        for processes in process_counts:
            if processes == 1:
                results = run_cases(args, 1, root, device)
            else:
                command = launch_command(processes, args.tiny, [*argv, "--launched"])
                print(" ".join(command), flush=True)
                completed = subprocess.run(command)
                path = root / f"results-{processes}.json"
                results = json.loads(path.read_text()) if completed.returncode == 0 and path.is_file() else [
                    {"name": f"{args.recipe}, {processes} proc", "processes": processes,
                     "status": f"error: accelerate launch exited with {completed.returncode}"}]
            for result in results:
                result.pop("_run_dir", None)
            report["cases"] += results
            add_mfu(report["cases"], peak)
            write_report(report, output_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["total_s"] = time.perf_counter() - started
    write_report(report, output_dir)
    print(markdown_table(report))
    print(f"Wrote {output_dir / 'gpu_suite.json'} and {output_dir / 'gpu_suite.md'} in {report['total_s']:.0f} s")
    return 0 if all(case["status"] == "ok" for case in report["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
