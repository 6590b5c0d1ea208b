"""The page to try a student (hf_distill.app, scripts/app.py): its outputs equal pipeline("depth-estimation")'s,
through Gradio's own client and in a real browser (Debian's chromium driven by playwright), and the Space folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from transformers import pipeline

from hf_distill.app import DepthComparison, build_app, example_images, write_space
from hf_distill.visualize import colorize_depth, turbo_lut

gr = pytest.importorskip("gradio")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("HF_DISTILL_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def _pipeline_depth(model: Path, image: Image.Image) -> np.ndarray:
    return pipeline("depth-estimation", model=str(model), device="cpu")(image)["predicted_depth"].float().numpy()


@pytest.fixture(scope="module")
def comparison(assets) -> DepthComparison:
    return DepthComparison(str(assets["teacher_large"]), str(assets["student"]), device="cpu")


@pytest.fixture(scope="module")
def served(comparison, tmp_path_factory):
    """The page launched locally on a free port (as scripts/app.py launches it); yields (url, examples)."""
    examples = example_images(tmp_path_factory.mktemp("examples"))
    page = build_app(comparison, examples=examples)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, url, _ = page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield url, examples
    page.close()


def test_render_shows_both_models_in_one_colour_map(comparison, assets):
    image = Image.open(example_images(assets["root"] / "app_examples")[0])  # the shipped photograph
    teacher, student, latency, raw = comparison.render(image)
    maps = np.load(raw)
    assert teacher.shape == student.shape == (image.height, image.width, 3) and teacher.dtype == np.uint8
    lut = {tuple(c) for c in turbo_lut()}
    assert {tuple(c) for c in student.reshape(-1, 3)} <= lut and {tuple(c) for c in teacher.reshape(-1, 3)} <= lut
    np.testing.assert_array_equal(student, colorize_depth(maps["student"]))
    np.testing.assert_allclose(maps["student"], _pipeline_depth(assets["student"], image), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["teacher"], _pipeline_depth(assets["teacher_large"], image), rtol=1e-5, atol=1e-6)
    rows = [line for line in latency.splitlines() if line.startswith("| teacher") or line.startswith("| student")]
    assert len(rows) == 2 and all(float(row.split("|")[3]) > 0 for row in rows)


def test_examples_are_a_photograph_and_generated_scenes(tmp_path):
    paths = example_images(tmp_path)
    assert [p.name for p in paths] == ["coffee.jpg", "generated_scene_0.png", "generated_scene_1.png"]
    assert Image.open(paths[0]).size == (600, 400)
    assert Image.open(paths[1]).size == (224, 168)


def test_client_round_trip_equals_the_pipeline(served, assets):
    """Gradio's own client against the local launch: the prediction's raw maps equal pipeline("depth-estimation")'s
    and the student image shown is exactly the colourised student map."""
    from gradio_client import Client, handle_file

    url, examples = served
    client = Client(url, verbose=False)
    teacher_png, student_png, latency, raw = client.predict(handle_file(str(examples[1])), api_name="/predict")
    image = Image.open(examples[1]).convert("RGB")
    maps = np.load(raw)
    np.testing.assert_allclose(maps["student"], _pipeline_depth(assets["student"], image), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["teacher"], _pipeline_depth(assets["teacher_large"], image), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(Image.open(student_png).convert("RGB")), colorize_depth(maps["student"]))
    assert np.asarray(Image.open(teacher_png)).shape[:2] == (image.height, image.width)
    assert "| teacher |" in latency and "| student |" in latency


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_page_in_a_real_browser(served):
    """Headless chromium loads the page, runs a shipped example and shows both depth maps; the screenshot is kept
    as a test artefact (test-artifacts/app.png, or $HF_DISTILL_TEST_ARTIFACTS)."""
    browser_path = _chromium()
    if browser_path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = served
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=browser_path, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.get_by_text("Estimate depth").wait_for(timeout=60_000)
            page.locator(".gallery-item, [data-testid='example'] button, table.examples-table td, "
                         "div.examples button").nth(1).click()  # the first generated scene
            for elem_id in ("teacher-depth", "student-depth"):
                page.locator(f"#{elem_id} img").first.wait_for(state="visible", timeout=120_000)
            page.get_by_text("latency (ms)").wait_for(timeout=60_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
            shown = [page.locator(f"#{elem_id} img").first.get_attribute("src") for elem_id in
                     ("teacher-depth", "student-depth")]
        finally:
            browser.close()
    assert all(shown) and shown[0] != shown[1]
    assert Image.open(ARTIFACTS / "app.png").size[0] == 1280


def test_space_folder(tmp_path, assets):
    """scripts/app.py --write_space: app file, requirements and Space metadata; the app builds its page from the
    library copied beside it."""
    student = Path(shutil.copytree(assets["student"], tmp_path / "student"))
    (student / "README.md").write_text("---\nlicense: apache-2.0\n---\n# student\n")
    space = tmp_path / "space"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "app.py"), "--teacher", str(assets["teacher_large"]),
                             "--student", str(student), "--write_space", str(space)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    front = yaml.safe_load((space / "README.md").read_text().split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["license"] == "apache-2.0"
    assert front["sdk_version"] == gr.__version__
    requirements = (space / "requirements.txt").read_text().splitlines()
    assert f"gradio>={gr.__version__}" in requirements and any(r.startswith("transformers") for r in requirements)
    assert not any("extra ==" in r for r in requirements)
    built = subprocess.run(
        [sys.executable, "-c", "import app, hf_distill; print(type(app.page).__name__, hf_distill.__file__)"],
        cwd=space, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    name, library = built.stdout.split()[-2:]
    assert name == "Blocks" and Path(library).resolve().is_relative_to(space.resolve())
    assert sorted(p.name for p in (space / "examples").iterdir()) == ["coffee.jpg", "generated_scene_0.png",
                                                                      "generated_scene_1.png"]


def test_space_folder_refuses_the_checkout_itself():
    with pytest.raises(ValueError, match="checkout"):
        write_space(ROOT, "a/b", "c/d")
