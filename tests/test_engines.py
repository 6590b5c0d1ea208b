"""Distributed engines run for real on CPU (gloo): DeepSpeed ZeRO-2 and ZeRO-3 through the shipped accelerate configs,
DDP as the reference, two local "machines", FSDP refused. Each run is launched once per module and shared."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import DepthAnythingForDepthEstimation, pipeline

from conftest import accelerate_launch, free_port, tiny_argv
from hf_distill.testing import write_eval_benchmark
from hf_distill.training.checkpoints import MANIFEST_NAME
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import build_trainer

ROOT = Path(__file__).resolve().parents[1]
ZERO2 = ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml"
ZERO3 = ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml"
ENGINE_FILES = ("latest", "zero_to_fp32.py")
# Same recipe, other engine: the reductions sum in another order (float32), over 4 AdamW steps.
ENGINE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}

def run(command: list[str], timeout: int = 900) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    messages = "\n".join(line for line in (result.stdout + result.stderr).splitlines() if "it/s]" not in line)
    errors = "\n".join(line for line in messages.splitlines() if "Error" in line or "error" in line)
    assert result.returncode == 0, messages[-6000:] + "\n--- error lines ---\n" + errors[-4000:]
    return messages


def write_mixed_size_kitti(root: Path) -> Path:
    """KITTI Eigen layout with the two frame sizes of the real split (375x1242 and 376x1241): with 2 images per rank
    the first rank's batch has one size and the second's two, so their numbers of forwards differ."""
    split = write_eval_benchmark("kitti", root, 3, seed=0, size=(375, 1242))
    other = write_eval_benchmark("kitti", root.parent / "kitti_other", 1, seed=1, size=(376, 1241))
    rgb, gt, focal = other.read_text().splitlines()[0].split()
    moved = []
    for path in (rgb, gt):
        target = path.replace("0000000000.png", "0000000010.png")
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root.parent / "kitti_other" / path, root / target)
        moved.append(target)
    lines = split.read_text().splitlines()
    split.write_text("\n".join([*lines[:3], f"{moved[0]} {moved[1]} {focal}", *lines[3:]]) + "\n")
    return split


def demo_argv(assets, output_dir, kitti_split, *extra, evaluate: bool = True) -> list[str]:
    """The demo recipe at test size: two teachers, 4 steps, checkpoints, evaluation and visualisations at 2 and 4.

    No feature term: a projector whose teacher a step did not draw gets no gradient, which torch's AdamW (DDP) skips
    while DeepSpeed's flat partitions step it with a zero gradient (moments decay, its step count and weight decay
    advance), so with projectors the engines' students differ by design (README), not by rounding."""
    evaluation = [
        "--eval_benchmark", "kitti", "--eval_dataset_dir", str(kitti_split.parent), "--eval_split_file",
        str(kitti_split), "--eval_strategy", "steps", "--eval_steps", "2", "--per_device_eval_batch_size", "2",
        "--metric_for_best_model", "abs_rel"]
    return [
        "--teacher_models", str(assets["teacher_large"]), str(assets["teacher_base"]),
        "--student_arch", str(assets["student"]), "--num_generated_scenes", "16", "--generated_scene_size", "96", "128",
        "--global_crop_size", "56", "--local_crop_size", "42", "--min_local_crop", "28", "--min_region", "80",
        "--per_device_train_batch_size", "2", "--max_steps", "4", "--warmup_steps", "0", "--save_steps", "2",
        "--save_total_limit", "4", "--logging_steps", "2", "--visualize_steps", "2", "--lambda_feat", "0",
        *(evaluation if evaluate else []), "--output_dir", str(output_dir), *extra,
    ]


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    return write_mixed_size_kitti(tmp_path_factory.mktemp("eval") / "kitti")


def launch_demo(assets, kitti, out: Path, config_file=None) -> Path:
    run(accelerate_launch(str(ROOT / "scripts/distill.py"), "--demo", *demo_argv(assets, out, kitti),
                          config_file=config_file))
    return out


@pytest.fixture(scope="module")
def ddp_run(assets, kitti, tmp_path_factory) -> Path:
    return launch_demo(assets, kitti, tmp_path_factory.mktemp("ddp") / "out")


@pytest.fixture(scope="module")
def zero3_run(assets, kitti, tmp_path_factory) -> Path:
    return launch_demo(assets, kitti, tmp_path_factory.mktemp("zero3") / "out", ZERO3)


def trainer_state(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())


# ---- ZeRO-3: sharded student and teachers ------------------------------------------------------------------------


@pytest.mark.slow
def test_zero3_student_folder_holds_the_gathered_weights(zero3_run, ddp_run, assets):
    out = zero3_run
    assert not any((out / name).exists() for name in ENGINE_FILES) and not list(out.glob("global_step*"))
    model, info = DepthAnythingForDepthEstimation.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    final = load_file(out / "student_final.safetensors")
    torch.testing.assert_close(model.state_dict(), final, rtol=0, atol=0)
    for step in (2, 4):  # every flat export is its checkpoint's gathered student
        checkpoint = DepthAnythingForDepthEstimation.from_pretrained(out / f"checkpoint-{step}")  # on-disk key names
        torch.testing.assert_close(load_file(out / f"student_checkpoint_{step}.safetensors"), checkpoint.state_dict(),
                                   rtol=0, atol=0)
    # ... and the trained weights: the same recipe under DDP gives the same student
    for name in ("student_checkpoint_2", "student_checkpoint_4", "student_final", "student_best"):
        torch.testing.assert_close(load_file(out / f"{name}.safetensors"), load_file(ddp_run / f"{name}.safetensors"),
                                   **ENGINE_TOLERANCE, msg=name)
    untrained = DepthAnythingForDepthEstimation.from_pretrained(assets["student"]).state_dict()
    assert any(not torch.equal(final[k], untrained[k]) for k in final)
    depth = pipeline("depth-estimation", model=str(out), device="cpu")(str(next((out / "visualizations").iterdir())))
    assert depth["predicted_depth"].ndim == 2


@pytest.mark.slow
def test_zero3_shards_parameters_and_optimizer_state(zero3_run):
    # Each rank's optimizer file holds its own fp32 partition: together, about every trainable value once.
    checkpoint = zero3_run / "checkpoint-4"
    [engine_dir] = checkpoint.glob("global_step*")
    sizes = []
    for rank in (0, 1):
        state = torch.load(engine_dir / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", weights_only=False,
                           map_location="cpu")["optimizer_state_dict"]
        sizes.append(sum(t.numel() for t in state["fp32_flat_groups"]))
    student = load_file(checkpoint / "model.safetensors")
    projectors = load_file(checkpoint / "projectors.safetensors")
    trainable = sum(v.numel() for v in student.values()) + sum(v.numel() for v in projectors.values())
    assert all(0 < size < 0.6 * trainable for size in sizes)  # neither rank holds it all
    # the manifest covers DeepSpeed's files too
    listed = json.loads((checkpoint / MANIFEST_NAME).read_text())["files"]
    assert {f"{engine_dir.name}/zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1)
            for kind in ("model", "optim")} <= set(listed)
    assert {"latest", "zero_to_fp32.py", "projectors.safetensors"} <= set(listed)


@pytest.mark.slow
def test_zero3_evaluates_mixed_sizes_on_every_rank_and_tracks_the_best(zero3_run, ddp_run):
    state, reference = trainer_state(zero3_run / "checkpoint-4"), trainer_state(ddp_run / "checkpoint-4")
    evaluations = [log for log in state["log_history"] if "eval_abs_rel" in log]
    assert [log["step"] for log in evaluations] == [2, 4]
    assert all(log["eval_num_samples"] == 4 for log in evaluations)
    expected = [log for log in reference["log_history"] if "eval_abs_rel" in log]
    for log, ddp in zip(evaluations, expected):
        assert log["eval_abs_rel"] == pytest.approx(ddp["eval_abs_rel"], rel=1e-4)
    assert state["best_metric"] == min(log["eval_abs_rel"] for log in evaluations)
    best = min(evaluations, key=lambda log: log["eval_abs_rel"])["step"]
    torch.testing.assert_close(load_file(zero3_run / "student_best.safetensors"),
                               load_file(zero3_run / f"student_checkpoint_{best}.safetensors"), rtol=0, atol=0)
    # both teachers were drawn (two ZeRO-3 inference engines)
    fractions = [log for log in state["log_history"] if "teacher_frac/teacher_large" in log]
    assert sum(log["teacher_frac/teacher_base"] for log in fractions) > 0
    assert sum(log["teacher_frac/teacher_large"] for log in fractions) > 0


@pytest.mark.slow
def test_zero3_demo_report_card_and_visualizations(zero3_run, ddp_run):
    report, reference = (json.loads((out / "demo_report.json").read_text()) for out in (zero3_run, ddp_run))
    assert set(report) == {"teacher", "student_before", "student_after"}
    for name in report:
        assert report[name]["abs_rel"] == pytest.approx(reference[name]["abs_rel"], rel=1e-4), name
    assert report["student_after"] != report["student_before"]
    card = (zero3_run / "README.md").read_text()
    assert "| `world_size` | `2` |" in card and "pipeline_tag: depth-estimation" in card
    assert sorted(p.name for p in (zero3_run / "visualizations").iterdir()) == ["step_0000002.png",
                                                                                 "step_0000004.png"]


@pytest.mark.slow
def test_zero3_resumes_a_killed_run_from_its_last_complete_checkpoint(zero3_run, assets, kitti, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(zero3_run / "checkpoint-2", out / "checkpoint-2")
    shutil.copytree(zero3_run / "checkpoint-4", out / "checkpoint-4")  # killed while this one was being copied:
    [engine_dir] = (out / "checkpoint-4").glob("global_step*")
    optimizer_file = engine_dir / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    optimizer_file.write_bytes(optimizer_file.read_bytes()[:100])  # a DeepSpeed file is truncated
    messages = run(accelerate_launch(str(ROOT / "scripts/distill.py"), "--config", "demo",
                                     *demo_argv(assets, out, kitti), config_file=ZERO3))
    assert "Not resuming from" in messages and "truncated" in messages and "Resuming from" in messages
    state = trainer_state(out / "checkpoint-4")
    assert state["global_step"] == 4 and [log["step"] for log in state["log_history"] if "loss" in log] == [2, 4]
    torch.testing.assert_close(load_file(out / "student_final.safetensors"),
                               load_file(zero3_run / "student_final.safetensors"), **ENGINE_TOLERANCE)


# ---- ZeRO-2, bf16 as shipped, streamed data, non-finite steps ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("config", [ZERO2, ZERO3], ids=["zero2", "zero3"])
def test_nonfinite_steps_leave_weights_and_optimizer_state_untouched(config, assets, nan_teacher, tmp_path):
    """Every step's teacher gives NaN: DeepSpeed runs engine.step() inside training_step, yet nothing moves."""
    out = tmp_path / "out"
    argv = tiny_argv(assets, out, "--teacher_models", str(nan_teacher), "--num_iterations", "2",
                     "--max_nonfinite_steps", "5", "--dataset_dir", str(assets["shards"]), "--dataset_format",
                     "webdataset", "--bf16")  # the shipped configs' precision; the Trainer wants the flag too
    run(accelerate_launch(str(ROOT / "scripts/distill.py"), *argv, config_file=config, mixed_precision="bf16"))
    state = trainer_state(out / "checkpoint-2")
    assert state["log_history"][-1]["nonfinite_steps"] == 2
    saved = load_file(out / "student_checkpoint_2.safetensors")
    initial = build_trainer(*parse_distill_args(argv)).model.student.state_dict()  # the same random initialisation
    torch.testing.assert_close(saved, {k: v.to(torch.bfloat16) for k, v in initial.items()}, rtol=0, atol=0)
    [engine_dir] = (out / "checkpoint-2").glob("global_step*")
    for rank in (0, 1):  # bf16 runs prefix the files with bf16_
        [path] = engine_dir.glob(f"*zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
        optimizer = torch.load(path, weights_only=False, map_location="cpu")["optimizer_state_dict"]
        inner = optimizer.get("base_optimizer_state") or optimizer["optimizer_state_dict"]  # ZeRO-2 / ZeRO-3
        assert inner["state"] == {}  # AdamW never stepped: no moments, no step count
    assert all(torch.isfinite(v.float()).all() for v in saved.values())
    assert (out / "checkpoint-2" / "stream_state_1.json").is_file()


# ---- more than one machine ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_machines_train_the_same_student_as_one(ddp_run, assets, kitti, tmp_path):
    """Two local "machines" of one process each (machine_rank 0 and 1 on 127.0.0.1, one shared output folder)."""
    out = tmp_path / "out"
    port = free_port()
    argv = [str(ROOT / "scripts/distill.py"), "--config", "demo", *demo_argv(assets, out, kitti, evaluate=False)]
    machines = [subprocess.Popen(accelerate_launch(*argv, num_machines=2, machine_rank=rank, port=port),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [machine.communicate(timeout=900)[0] for machine in machines]
    for machine, output in zip(machines, outputs):
        assert machine.returncode == 0, output[-6000:]
    # the global batch is split by global rank: the same student as one machine with two processes
    torch.testing.assert_close(load_file(out / "student_final.safetensors"),
                               load_file(ddp_run / "student_final.safetensors"), **ENGINE_TOLERANCE)
    # files are written once per run: one log line per logging step, not one per machine
    logged = [json.loads(line) for line in (out / "train.log").read_text().splitlines() if line.startswith("{")]
    assert [entry["step"] for entry in logged if "loss" in entry] == [2, 4]
    assert sorted(p.name for p in (out / "checkpoint-4").glob("rng_state_*.pth")) == ["rng_state_0.pth",
                                                                                       "rng_state_1.pth"]
    assert sum("Student written to" in output for output in outputs) == 1


def test_slurm_script_launches_one_accelerate_per_node(tmp_path):
    """Run the batch script with stand-ins for srun/scontrol/accelerate and parse what reaches accelerate launch."""
    from accelerate.commands.launch import launch_command_parser

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A large allocation's node list outlasts a reader that stops at the first line: under `set -o pipefail` a
    # `| head -n 1` there kills the script with SIGPIPE (exit 141), so the stand-in lists many nodes.
    stand_ins = {"srun": '#!/bin/bash\nexec "$@"\n',
                 "scontrol": "#!/bin/bash\nprintf 'gpu-a\\ngpu-b\\n'\nseq -f 'gpu-%g' 1 200000\n",
                 "accelerate": f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n"}
    for name, text in stand_ins.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
           "SLURM_JOB_NODELIST": "gpu-[a-b]"}
    result = subprocess.run(["bash", str(ROOT / "scripts/slurm_distill.sbatch"), "--config", "demo",
                             "--output_dir", "runs/my run"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    args = json.loads(result.stdout)
    assert args[0] == "launch"
    parsed = launch_command_parser().parse_args(args[1:])
    assert (parsed.num_machines, parsed.machine_rank, parsed.num_processes) == (2, 1, 16)
    assert (parsed.main_process_ip, parsed.main_process_port) == ("gpu-a", 29500)
    assert parsed.config_file == "configs/accelerate/multi_gpu.yaml" and (ROOT / parsed.config_file).is_file()
    assert parsed.training_script == "scripts/distill.py"
    assert parsed.training_script_args == ["--config", "demo", "--output_dir", "runs/my run"]


# ---- FSDP -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fsdp_is_refused_with_a_clear_message(assets, tmp_path):
    command = accelerate_launch("--use_fsdp", "--fsdp_version", "2", str(ROOT / "scripts/distill.py"),
                                *tiny_argv(assets, tmp_path / "out", "--num_iterations", "1"))
    command.remove("--multi_gpu")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "FSDP is not supported by hf_distill" in result.stderr and "--use_fsdp" in result.stderr


# ---- dtypes ------------------------------------------------------------------------------------------------------

BOX_SPY = '''
import json, sys
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import build_trainer

trainer = build_trainer(*parse_distill_args(sys.argv[1:]))
loss_fn, seen = trainer.loss_fn, []

def spy(student_global, teacher_global, **kwargs):
    boxes = kwargs["global_boxes"]
    seen.append({"student": str(student_global.dtype), "boxes": str(boxes.dtype),
                 "exact_in_bf16": bool((boxes.bfloat16().float() == boxes.float()).all())})
    return loss_fn(student_global, teacher_global, **kwargs)

trainer.loss_fn = spy
trainer.train()
print("SEEN " + json.dumps(seen))
'''


@pytest.mark.slow
def test_crop_boxes_reach_the_loss_in_float32_under_bf16_deepspeed(assets, tmp_path):
    script = tmp_path / "spy.py"
    script.write_text(BOX_SPY)
    output = run(accelerate_launch(str(script), *tiny_argv(assets, tmp_path / "out", "--num_iterations", "2",
                                                           "--checkpoint_interval", "100", "--bf16"),
                                   config_file=ZERO2, num_processes=1, mixed_precision="bf16"))
    seen = json.loads(next(line for line in output.splitlines() if line.startswith("SEEN "))[5:])
    assert len(seen) == 2
    assert all(step["student"] == "torch.bfloat16" for step in seen)  # the engine runs in bf16 ...
    assert all(step["boxes"] == "torch.float32" for step in seen)  # ... the boxes do not
    assert not all(step["exact_in_bf16"] for step in seen)  # and were never rounded to bf16 on the way


# ---- equal numbers of forwards ---------------------------------------------------------------------------------


def test_prediction_pads_the_forwards_that_sharded_ranks_must_share(assets):
    from PIL import Image

    from hf_distill.evaluation.predict import forward_groups, predict_depth_tensors
    from hf_distill.models import load_image_processor

    model = DepthAnythingForDepthEstimation.from_pretrained(assets["student"]).eval()
    processor = load_image_processor(str(assets["student"]))
    images = [Image.new("RGB", size) for size in ((64, 48), (64, 48), (60, 50))]
    assert list(forward_groups(images).values()) == [[0, 1], [2]]
    calls = []
    model.register_forward_hook(lambda module, args, kwargs_or_output: calls.append(1))
    plain = predict_depth_tensors(model, processor, images)
    assert len(calls) == 2
    padded = predict_depth_tensors(model, processor, images, num_forwards=5)
    assert len(calls) == 2 + 5  # the predictions are those of the unpadded call
    for a, b in zip(plain, padded):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    predict_depth_tensors(model, processor, [], num_forwards=1)  # a rank with no image still takes part
    assert len(calls) == 8
    with pytest.raises(ValueError, match="num_forwards=1 is fewer than the 2 image sizes"):
        predict_depth_tensors(model, processor, images, num_forwards=1)
