"""docs/own-domain.md as a new user runs it: every command of its ```bash blocks, in order, on generated stand-ins
of the folders it names (phone photographs of every awkward kind, an RGB-D folder, a stereo folder, a dataset),
with tiny models in place of the Hub aliases and a few steps in place of thousands (``STAND_INS``)."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image

from conftest import load_file_module
from hf_distill.testing import write_image_folder
from hf_distill.testing.photos import write_phone_photos, write_rgbd_folder

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "own-domain.md"


def page_commands() -> list[list[str]]:
    """The page's commands: ```bash blocks, continuations joined, one command per line."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(shlex.split(line, comments=True))
    return commands


def stand_ins(assets) -> dict[str, str]:
    """What the test swaps in: tiny local models for the Hub aliases, sizes and step counts a CPU runs in seconds."""
    return {
        "depthanything-large": str(assets["teacher_large"]),
        "depthanything-small": str(assets["student"]),
        "--max_steps 2000": "--max_steps 2",
        "--per_device_train_batch_size 4": "--per_device_train_batch_size 2",
        "--global_crop_size 518 --local_crop_size 518 --min_region 518":
            "--global_crop_size 56 --local_crop_size 42 --min_region 80",
        "--eval_steps 500 --save_steps 500": "--eval_steps 1 --save_steps 1",
        "--port 7860": "--port 0",
    }


def substitute(tokens: list[str], swaps: dict[str, str]) -> list[str]:
    text = shlex.join(tokens)
    for old, new in swaps.items():
        text = re.sub(rf"(?<![\w/-]){re.escape(old)}(?![\w-])", new, text)
    return shlex.split(text)


def write_stand_ins(folder: Path) -> None:
    """The folders the page names, generated: photos/, my_rgbd/, stereo/ (Middlebury .pfm), my_rgbd_dataset/."""
    write_image_folder(folder / "photos" / "trip", num_images=4, size=(96, 128), seed=1)
    write_phone_photos(folder / "photos", panorama_width=1600)
    write_rgbd_folder(folder / "my_rgbd", 3, size=(72, 96), seed=2, bad=("size",))
    write_rgbd_folder(folder / "stereo", 2, size=(72, 96), seed=3, gt_format="pfm", kind="disparity", scale=1.0,
                      focal_baseline=40.0, invalid=np.inf)
    stems = ["sample_1", "sample_2"]
    table = datasets.Dataset.from_dict({
        "image": [str(folder / "my_rgbd" / "images" / f"{s}.jpg") for s in stems],
        "depth": [str(folder / "my_rgbd" / "depth" / f"{s}.png") for s in stems],
    }).cast_column("image", datasets.Image()).cast_column("depth", datasets.Image())
    datasets.DatasetDict({"test": table}).save_to_disk(folder / "my_rgbd_dataset")


def run_in_process(script: str, argv: list[str], monkeypatch) -> int:
    """A script's ``main`` in this process (no interpreter start). The app serves forever: Gradio's launch is
    recorded instead of serving."""
    import gradio

    launched = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    status = load_file_module(ROOT / script, Path(script).stem + "_own_domain").main(argv)
    if script == "scripts/app.py":
        assert launched.get("server_port") == 0, launched
    return status


@pytest.mark.slow
def test_every_command_of_the_page_runs(assets, tmp_path, monkeypatch, capsys):
    write_stand_ins(tmp_path)
    swaps = stand_ins(assets)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    commands = page_commands()
    assert [c[1] for c in commands] == [
        "scripts/distill.py", "scripts/distill.py", "scripts/evaluate.py", "scripts/evaluate.py", "scripts/evaluate.py",
        "scripts/evaluate.py", "scripts/infer.py", "scripts/export.py", "scripts/app.py"]
    outputs = {}
    monkeypatch.chdir(tmp_path)
    for index, tokens in enumerate(commands):
        tokens = substitute(tokens, swaps)
        assert tokens[0] == "python", tokens
        if tokens[1] != "scripts/distill.py":  # training runs as a user runs it; the others in this process
            status = run_in_process(tokens[1], tokens[2:], monkeypatch)
            captured = capsys.readouterr()
            assert status == 0, f"{shlex.join(tokens)}\n{captured.out[-3000:]}\n{captured.err[-3000:]}"
            outputs[index] = captured.out + captured.err
            continue
        result = subprocess.run([sys.executable, str(ROOT / tokens[1]), *tokens[2:]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{shlex.join(tokens)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        outputs[index] = result.stdout + result.stderr

    preflight = outputs[0]
    assert "preflight: passed" in preflight
    photographs = next(line for line in preflight.splitlines() if line.startswith("photographs"))
    assert "portrait_exif6.jpg" in photographs and "small.png 28x20" in photographs and "cmyk.jpg" in photographs
    assert "1 of the first 4 cannot be scored" in preflight  # my_rgbd's bad_size sample, named
    student = tmp_path / "students" / "indoor"
    assert (student / "student_best.safetensors").is_file() and (student / "onnx" / "model.onnx").is_file()
    indoor = json.loads((tmp_path / "results" / "indoor.json").read_text())
    assert indoor["dataset"] == "my_rgbd" and indoor["num_samples"] == 3 and indoor["num_skipped"] == 1
    assert (tmp_path / "results" / "indoor_my_rgbd_samples.csv").is_file()
    names = {e.dataset_name for e in ModelCard.load(student / "README.md").data.eval_results}
    assert "my_rgbd" in names
    stereo = json.loads((tmp_path / "results" / "stereo.json").read_text())
    assert stereo["num_samples"] == 2 and "relative" in stereo["ground_truth"]
    dataset = json.loads((tmp_path / "results" / "dataset.json").read_text())
    assert dataset["dataset"] == "my_rgbd_dataset" and dataset["num_samples"] == 2
    compare = json.loads((tmp_path / "results" / "compare.json").read_text())
    assert set(compare["models"]) == {swaps["depthanything-large"], "students/indoor"}
    portrait = np.load(tmp_path / "depth_maps" / "portrait_exif6_depth.npy")
    assert portrait.shape == (128, 96)  # upright, as the photo is displayed (stored 96 high, 128 wide)
    assert Image.open(tmp_path / "depth_maps" / "trip" / "room_0" / "view_0" / "img_00000_depth.png").size == (128, 96)
    assert "1 unreadable images skipped" in outputs[6]  # broken.jpg
