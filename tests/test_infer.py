"""scripts/infer.py end to end on a tiny model: folder, and .safetensors + --arch_name (seed usage)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file
from transformers import DepthAnythingForDepthEstimation

from hf_distill.evaluation import load_model_and_processor, predict_depth
from hf_distill.models import default_image_processor, tiny_depth_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "infer.py"


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    model = DepthAnythingForDepthEstimation(tiny_depth_config()).eval()
    model.save_pretrained(root / "model")
    default_image_processor().save_pretrained(root / "model")
    (root / "arch").mkdir()
    model.config.save_pretrained(root / "arch")  # structure only: config.json
    save_file(model.state_dict(), root / "student_final.safetensors")
    inputs = root / "inputs"
    (inputs / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(inputs / "a.png")
    Image.fromarray(rng.integers(0, 255, (28, 50, 3), dtype=np.uint8)).save(inputs / "nested" / "b.jpg")
    (inputs / "broken.jpg").write_bytes(b"not an image")
    return root


def test_model_folder_writes_colour_raw_and_side_by_side(tiny):
    out = tiny / "out_folder"
    result = _run("--checkpoint", str(tiny / "model"), "--input_dir", str(tiny / "inputs"), "--output_dir", str(out),
                  "--processing_res", "56", "--save_raw", "png16", "--side_by_side")
    assert result.returncode == 0, result.stderr
    assert "skipping unreadable image" in result.stderr and "broken.jpg" in result.stderr
    colour = np.asarray(Image.open(out / "a_depth.png"))
    assert colour.shape == (30, 40, 3) and colour.dtype == np.uint8
    raw16 = np.asarray(Image.open(out / "nested" / "b_depth16.png"))
    assert raw16.dtype == np.uint16 and raw16.shape == (28, 50)
    assert raw16.min() == 0 and raw16.max() == 65535  # min-max scaled to the full range
    assert Image.open(out / "nested" / "b_side_by_side.png").size == (2 * 50 + 2, 28)
    assert not (out / "broken_depth.png").exists()


def test_safetensors_with_arch_folder_matches_model_folder(tiny, tmp_path):
    # Seed usage: --checkpoint FILE --arch_name ARCH --output_dir OUT, reading data/input/ by default.
    (tmp_path / "data" / "input").mkdir(parents=True)
    Image.open(tiny / "inputs" / "a.png").save(tmp_path / "data" / "input" / "a.png")
    result = _run("--checkpoint", str(tiny / "student_final.safetensors"), "--arch_name", str(tiny / "arch"),
                  "--output_dir", "out", "--processing_res", "56", "--save_raw", "npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    raw = np.load(tmp_path / "out" / "a_depth.npy")
    assert raw.shape == (30, 40) and raw.dtype == np.float32
    assert np.asarray(Image.open(tmp_path / "out" / "a_depth.png")).shape == (30, 40, 3)
    # Same weights as the model folder: the library's prediction from the folder.
    model, processor = load_model_and_processor(str(tiny / "model"))
    image = Image.open(tiny / "inputs" / "a.png").convert("RGB")
    expected = predict_depth(model, processor, [image], processing_res=56)[0]
    assert np.abs(raw - expected).max() <= 1e-4 * np.abs(expected).max()  # values are tiny (~1e-8)


def test_errors_are_one_line_and_nonzero(tiny, tmp_path):
    result = _run("--checkpoint", str(tiny / "student_final.safetensors"), "--input", str(tiny / "inputs" / "a.png"),
                  "--output_dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tiny / 'student_final.safetensors'} is a weights file: also give the architecture "
        "(an alias or a config folder)"
    ]
