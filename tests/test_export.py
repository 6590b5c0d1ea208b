"""ONNX export (hf_distill.export, scripts/export.py): dynamic sizes proven through onnxruntime, verification that
fails on a wrong model, int8 quantisation measured and refused by threshold, and onnx/ on the Hub."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image
from transformers import DepthAnythingForDepthEstimation

import hf_distill.export as export
from conftest import FAKE_USER, load_file_module, run_python_snippets, tiny_argv
from hf_distill.data.synthetic import render_scene
from hf_distill.evaluation import evaluate_depth
from hf_distill.hub import build_model_card
from hf_distill.models import default_image_processor, tiny_depth_config
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import run_distillation

ROOT = Path(__file__).resolve().parents[1]


def varied_student(seed: int = 0) -> DepthAnythingForDepthEstimation:
    """A tiny student whose maps vary over about [0, 1] (a freshly initialised head outputs about 1e-7; its last
    convolution is scaled up, as training would). Maps that are nearly constant would hide a wrong graph."""
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(tiny_depth_config("small")).eval()
    with torch.no_grad():
        scale = model(pixel_values=torch.randn(1, 3, 56, 56)).predicted_depth.max()
        model.head.conv3.weight /= scale
        model.head.conv3.bias /= scale
    return model


def save_student(folder: Path) -> Path:
    model = varied_student()
    model.save_pretrained(folder)
    default_image_processor(size=56).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny student exported, verified and quantised once: (folder, ExportResult)."""
    folder = save_student(tmp_path_factory.mktemp("export") / "student")
    return folder, export.export_student(folder, quantize=True)


@pytest.fixture
def student_copy(exported, tmp_path) -> Path:
    """A fresh copy of the student folder (without onnx/) with a card."""
    folder = tmp_path / "student"
    shutil.copytree(exported[0], folder, ignore=shutil.ignore_patterns("onnx"))
    card = build_model_card(model_name="student", base_model=None, teachers=["teacher"], license="mit")
    card.save(folder / "README.md")
    return folder


def reuse_export(monkeypatch, source: Path) -> None:
    """Make ``export_student`` write a copy of ``source`` instead of exporting again (the export itself is tested
    once, in ``exported``)."""
    monkeypatch.setattr(export, "export_onnx", lambda model, path, opset=export.OPSET: Path(
        shutil.copy(source, Path(path).parent.mkdir(parents=True, exist_ok=True) or path)))


def tamper(source: Path, target: Path, name: str = "head.conv3.weight", change=lambda w: 1.05 * w) -> Path:
    """A copy of an ONNX model with ``change`` applied to the initializer ending in ``name`` (default: the head's
    last convolution 5% larger, so every map is 5% larger: the ReLU after it is positive-homogeneous)."""
    model = onnx.load(source)
    for initializer in model.graph.initializer:
        if initializer.name.endswith(name):
            initializer.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(initializer)), initializer.name))
            break
    else:
        raise AssertionError(f"no {name} initializer")
    onnx.save(model, target)
    return target


def load_script(name: str):
    return load_file_module(ROOT / "scripts" / name, name.replace(".py", "_script"))


def test_export_wrapper_is_the_model_at_any_size():
    model = varied_student(seed=1)
    with torch.no_grad():
        for shape in ((1, 3, 56, 70), (2, 3, 98, 42), (1, 3, 518, 518)):  # 518: DINOv2's own position grid
            x = torch.randn(shape)
            torch.testing.assert_close(export.OnnxDepthModel(model)(x), model(pixel_values=x).predicted_depth,
                                       rtol=0, atol=0)


def test_onnx_model_has_dynamic_batch_height_width_and_runs_them(exported):
    folder, result = exported
    assert result.path == folder / "onnx" / "model.onnx"
    graph = onnx.load(result.path).graph
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, out.name) == ("pixel_values", "predicted_depth")
    in_dims, out_dims = inp.type.tensor_type.shape.dim, out.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in in_dims] == [True, False, True, True] and in_dims[1].dim_value == 3
    assert len(out_dims) == 3 and all(d.dim_param for d in out_dims)

    model = DepthAnythingForDepthEstimation.from_pretrained(folder).eval()
    session = export.onnx_session(result.path)
    rng = np.random.default_rng(0)
    # None of these is the export's example (2, 3, 98, 126); at 518 x 518 (DINOv2's own 37 x 37 position grid)
    # PyTorch skips interpolating the position embeddings and the graph resizes them to their own size.
    for batch, height, width in ((1, 56, 70), (2, 98, 42), (2, 140, 126), (3, 42, 42), (1, 518, 518)):
        x = rng.standard_normal((batch, 3, height, width), dtype=np.float32)
        actual = export.run_onnx(session, x)
        with torch.no_grad():
            expected = model(pixel_values=torch.from_numpy(x)).predicted_depth.numpy()
        assert actual.shape == expected.shape == (batch, height, width)
        # the export's tolerance: this tiny head sums nearly cancelling terms (scaled up by 1e7), so float32
        # differences reach 5e-5 of the map at 532 x 532 (one ulp on the demo teacher)
        np.testing.assert_allclose(actual, expected, rtol=0, atol=export.DEFAULT_TOLERANCE * np.abs(expected).max())
        assert np.ptp(expected) > 1e-3  # maps that vary: a constant map would hide a wrong graph


def test_attention_is_exported_as_one_standard_attention_node_per_layer(exported):
    """Opset 23: each encoder layer's attention reaches onnxruntime as one ``Attention`` node (no MatMul/Softmax
    decomposition and no IsNaN/Where guard around it), in the float and in the int8 model."""
    folder, result = exported
    layers = DepthAnythingForDepthEstimation.from_pretrained(folder).config.backbone_config.num_hidden_layers
    for path in (result.path, result.quantization.path):
        model = onnx.load(path)
        assert {o.domain: o.version for o in model.opset_import}[""] == export.OPSET == 23
        ops = [node.op_type for node in model.graph.node]
        assert ops.count("Attention") == layers == 4
        assert "Softmax" not in ops and "IsNaN" not in ops
        assert all(node.domain in ("", "ai.onnx") for node in model.graph.node if node.op_type == "Attention")


def test_older_opset_exports_eager_attention_without_the_nan_guard(tmp_path):
    """Below opset 23 the encoder is exported with eager attention: one Softmax per layer, no IsNaN/Where guard,
    and the same maps as PyTorch (whose own SDPA attention is restored after the export)."""
    model = varied_student(seed=2)
    assert model.backbone.config._attn_implementation == "sdpa"
    path = export.export_onnx(model, tmp_path / "model.onnx", opset=18)
    assert model.backbone.config._attn_implementation == "sdpa"
    graph = onnx.load(path).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("Softmax") == 4 and "Attention" not in ops and "IsNaN" not in ops
    x = np.random.default_rng(1).standard_normal((2, 3, 70, 56), dtype=np.float32)
    with torch.no_grad():
        expected = model(pixel_values=torch.from_numpy(x)).predicted_depth.numpy()
    np.testing.assert_allclose(export.run_onnx(export.onnx_session(path), x), expected, rtol=0,
                               atol=export.DEFAULT_TOLERANCE * np.abs(expected).max())
    assert export.attention_implementation(18) == "eager" and export.attention_implementation(23) == "sdpa"


def test_export_is_verified_on_a_photograph_and_held_out_scenes(exported):
    folder, result = exported
    report = result.verification
    assert report.passed
    assert [r.name for r in report.results] == ["photo coffee.jpg", "photo coffee.jpg + mirror", "scenes 0-1",
                                                "scenes 2-2", "scenes 3-3"]
    assert [r.shape for r in report.results] == [(1, 3, 56, 84), (2, 3, 56, 84), (2, 3, 126, 168), (1, 3, 182, 140),
                                                 (1, 3, 98, 98)]  # coffee.jpg is 400x600: 56 x 84 at size 56
    for r in report.results:  # tolerance: 1e-4 of the map's largest value (about 1)
        assert r.max_abs_diff <= r.tolerance and 0.5e-4 < r.tolerance < 2e-4
    assert report.max_abs_diff < 5e-5 and report.max_abs_rel_diff < 1e-5  # float32 agreement on varied maps
    # The scenes' abs_rel is the depth metric of PyTorch's own predictions, image by image.
    model = DepthAnythingForDepthEstimation.from_pretrained(folder).eval()
    processor = default_image_processor(size=56)
    scenes = [render_scene(seed, 126, 168) for seed in (0, 1)]
    pixel_values = processor(images=[Image.fromarray(s.image) for s in scenes], return_tensors="pt",
                             size={"height": 126, "width": 168}, keep_aspect_ratio=False)["pixel_values"]
    with torch.no_grad():
        predicted = model(pixel_values=pixel_values).predicted_depth
    by_hand = np.mean([evaluate_depth(p, s.depth, s.depth > 0, min_depth=1e-3, max_depth=20.0)["abs_rel"]
                       for p, s in zip(predicted, scenes)])
    assert report.results[2].abs_rel_torch == pytest.approx(by_hand, rel=1e-6)
    table = report.format()
    assert "| scenes 0-1 | 2x3x126x168 |" in table and "NO" not in table


def test_verification_fails_loudly_on_a_tampered_model(exported, student_copy, tmp_path, monkeypatch, capsys):
    folder, result = exported
    bad = tamper(result.path, tmp_path / "bad.onnx")
    model = DepthAnythingForDepthEstimation.from_pretrained(folder).eval()
    cases = export.verification_cases(default_image_processor(size=56))
    report = export.verify_onnx(model, bad, cases)
    assert not report.passed and all(not r.passed for r in report.results)
    for r in report.results:  # 5% of the map's largest value, where the tolerance is 1e-4 of it
        assert r.max_abs_diff == pytest.approx(500 * r.tolerance, rel=1e-3)
    with pytest.raises(export.ExportVerificationError, match="does not reproduce PyTorch"):
        export.check_verification(report)

    # The script: exit status 1, the table on stderr, and no model.onnx left behind.
    reuse_export(monkeypatch, bad)
    assert load_script("export.py").main(["--model", str(student_copy)]) == 1
    error = capsys.readouterr().err
    assert "does not reproduce PyTorch" in error and "| NO |" in error
    assert not (student_copy / "onnx" / "model.onnx").exists()


def test_quantized_export_is_measured_and_kept_within_the_threshold(exported):
    folder, result = exported
    quantization = result.quantization
    assert quantization.accepted and quantization.path == folder / "onnx" / "model_quantized.onnx"
    assert quantization.num_scenes == 8 and 0 < quantization.abs_rel_float < 1
    assert abs(quantization.increase) <= export.DEFAULT_MAX_ABS_REL_INCREASE
    ops = {node.op_type for node in onnx.load(quantization.path).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops  # int8 linear layers
    # the float figure is the float model's abs_rel on the same 8 held-out scenes
    case = export.scene_case(default_image_processor(size=56), 168, 224, 8)
    float_abs_rel = np.mean([evaluate_depth(p, d, d > 0, min_depth=1e-3, max_depth=20.0)["abs_rel"] for p, d in zip(
        export.run_onnx(export.onnx_session(result.path), case.pixel_values), case.depths)])
    assert quantization.abs_rel_float == pytest.approx(float_abs_rel, rel=1e-6)
    assert "accepted" in quantization.format()


def test_quantization_that_costs_too_much_is_refused(exported, student_copy, tmp_path, monkeypatch):
    folder, result = exported
    reuse_export(monkeypatch, result.path)
    # A "quantised" model that ignores its input (patch embedding zeroed): measured here to cost +0.0055 abs_rel.
    monkeypatch.setattr(export, "quantize_onnx", lambda path, target: tamper(
        path, target, "patch_embeddings.projection.weight", lambda w: 0 * w))
    with pytest.raises(export.ExportVerificationError, match="REFUSED") as raised:
        export.export_student(student_copy, quantize=True, max_abs_rel_increase=0.001)
    assert "--max_abs_rel_increase" in str(raised.value)
    assert (student_copy / "onnx" / "model.onnx").is_file()  # the verified float export stays
    assert not (student_copy / "onnx" / "model_quantized.onnx").exists()
    # the same model under the default threshold (0.01) is kept, its cost reported
    kept = export.export_student(student_copy, quantize=True)
    assert kept.quantization.accepted and (student_copy / "onnx" / "model_quantized.onnx").is_file()
    assert 0.001 < kept.quantization.increase < 0.01


def test_export_script_pushes_onnx_beside_the_student(exported, student_copy, fake_hub, monkeypatch, capsys):
    folder, result = exported
    reuse_export(monkeypatch, result.path)
    repo = f"{FAKE_USER}/tiny-onnx"
    assert load_script("export.py").main(["--model", str(student_copy), "--push_to_hub", "--hub_model_id", repo]) == 0
    printed = capsys.readouterr().out
    assert "| photo coffee.jpg |" in printed and f"wrote {student_copy / 'onnx' / 'model.onnx'}" in printed
    assert fake_hub.repos == [repo]
    (commit,) = fake_hub.commits
    assert commit["paths"] == ["README.md", "config.json", "model.safetensors", "onnx/model.onnx",
                               "preprocessor_config.json"]
    assert commit["files"]["onnx/model.onnx"] == result.path.read_bytes()
    card = commit["files"]["README.md"].decode()
    assert "import onnxruntime as ort" in card and card.count("```python") == 3
    # every usage snippet, the onnxruntime one included, runs next to the folder the card names
    assert run_python_snippets(card, student_copy.parent, monkeypatch) == 3


def test_export_arguments_and_missing_folder_fail_clearly(tmp_path, capsys):
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        export.ExportArguments(model="x", push_to_hub=True)
    assert load_script("export.py").main(["--model", str(tmp_path / "nothing")]) == 1
    assert "config.json not found" in capsys.readouterr().err


@pytest.mark.slow
def test_training_with_export_onnx_pushes_a_verified_export(assets, tmp_path, fake_hub, monkeypatch):
    out = tmp_path / "run"
    run_distillation(*parse_distill_args(tiny_argv(assets, out, "--export_onnx", "--push_to_hub", "--license", "mit",
                                                   "--hub_strategy", "end")))
    (commit,) = fake_hub.commits
    assert "onnx/model.onnx" in commit["paths"] and "onnx/model_quantized.onnx" not in commit["paths"]
    session = export.onnx_session(out / "onnx" / "model.onnx")
    model = DepthAnythingForDepthEstimation.from_pretrained(out).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 70, 84), dtype=np.float32)
    with torch.no_grad():
        expected = model(pixel_values=torch.from_numpy(x)).predicted_depth.numpy()
    np.testing.assert_allclose(export.run_onnx(session, x), expected, rtol=0, atol=export.DEFAULT_TOLERANCE * np.abs(expected).max())
    card = commit["files"]["README.md"].decode()
    assert f'model_id = "{FAKE_USER}/run"' in card and card.count("```python") == 3
