"""ONNX export of a depth student, verified against PyTorch, with optional int8 dynamic quantisation.

``export_student(folder)`` writes ``onnx/model.onnx`` into a ``save_pretrained`` folder (the layout transformers.js
and optimum read): input ``pixel_values`` (batch, 3, height, width), output ``predicted_depth`` (batch, height,
width), batch, height and width dynamic (sides multiples of the patch size, 14). The file is kept only once
``verify_onnx`` has run it through onnxruntime beside PyTorch on a real photograph and on held-out generated scenes
at several sizes and batch sizes; a disagreement raises ``ExportVerificationError`` and removes the file.

Exporter: ``torch.onnx.export(dynamo=True)``. optimum (optimum-onnx 0.1.0, the newest) has no ONNX config for
``depth_anything`` and needs transformers < 4.58. The model is exported through ``OnnxDepthModel``:
transformers' depth head sizes its last interpolation with ``int(patch_height * patch_size)``, which both exporters
record as the example's constant (the TorchScript exporter with a warning, ``torch.export`` silently), so every
other input size would come out at the example's size. ``OnnxDepthModel`` runs the same modules with that size
taken from the input's shape.

Attention: at the default opset (23) the encoder's scaled-dot-product attention is exported as the standard ONNX
``Attention`` operator, which onnxruntime's CPU kernel runs fused and which onnxruntime-web (the runtime of
transformers.js) runs too; one graph, ``onnx/model.onnx``, serves both, with no slower portable copy beside it. At
an older ``opset`` (for runtimes before onnxruntime 1.23) the encoder is exported with transformers' eager attention
(MatMul, Softmax, MatMul): the exporter's decomposition of SDPA wraps every softmax in an ``IsNaN``/``Where`` guard
against fully masked rows, which cost 40% of the CPU time although this encoder has no mask.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import DepthAnythingForDepthEstimation

from hf_distill.data.images import open_rgb
from hf_distill.data.synthetic import render_scene
from hf_distill.evaluation.metrics import mean_depth_metrics
from hf_distill.hub import ONNX_FILE, ONNX_FOLDER, README, add_onnx_usage, push_student_to_hub
from hf_distill.models import EXAMPLE_PHOTO, load_depth_model, load_image_processor

try:
    import onnxruntime
    import onnxscript  # noqa: F401  (the dynamo exporter translates through it)
    from onnxruntime.quantization import QuantType, quantize_dynamic
except ImportError as error:  # an optional extra
    raise ImportError(
        f"ONNX export needs onnx, onnxruntime and onnxscript ({error}): pip install 'hf_distill[onnx]'"
    ) from error

logger = logging.getLogger(__name__)

QUANTIZED_FILE = "model_quantized.onnx"
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "predicted_depth"
ATTENTION_OPSET = 23  # the standard Attention operator: onnx >= 1.18, onnxruntime >= 1.23 (the onnx extra's pins)
OPSET = ATTENTION_OPSET
# A real photograph: "Coffee cup" by Rachel Michetti, CC0 (scikit-image's data; see assets/examples/README.md).
# Held-out generated scenes: seeds 0, 1, ... as the demo's held-out evaluation (training scenes use other seeds).
# (height, width, batch): three sizes, two batch sizes, non-square both ways.
VERIFY_SCENES: tuple[tuple[int, int, int], ...] = ((126, 168, 2), (182, 140, 1), (98, 98, 1))
QUANTIZATION_SCENES: tuple[int, int, int] = (168, 224, 8)  # the demo's held-out evaluation size, 8 scenes
SCENE_DEPTH_RANGE = (1e-3, 20.0)  # generated rooms span about 0.3-12 m
# float32 onnxruntime vs eager: the same arithmetic in another order and with other kernels. Measured: at most one
# float32 ulp of the map's largest value (1.2e-7 of 1.02 on the demo teacher), far below this tolerance.
DEFAULT_TOLERANCE = 1e-4  # of the largest |depth| of the PyTorch map
# |abs_rel(onnx) - abs_rel(torch)| on the generated scenes, beyond what the measured difference causes as noise:
# maps that vary little around a large value (the demo teacher: by ~2.5e-5 around 1.018, as the scale-invariant
# loss allows) turn one-ulp differences into abs_rel changes up to 1e-3, and so would any float32 re-computation.
DEFAULT_METRIC_TOLERANCE = 1e-4
DEFAULT_MAX_ABS_REL_INCREASE = 0.01  # quantised abs_rel - float abs_rel on the held-out scenes


class ExportVerificationError(RuntimeError):
    """The ONNX model disagrees with PyTorch (or its quantised version lost too much accuracy)."""


class OnnxDepthModel(torch.nn.Module):
    """``DepthAnythingForDepthEstimation`` as the exporter should see it: ``pixel_values`` (B, 3, H, W) ->
    ``predicted_depth`` (B, H', W') with H' = (H // patch) * patch (W' likewise), the model's own modules in the
    model's order. Only the head is re-stated: its upsampling size comes from the input's shape instead of
    ``int()`` of it, so it stays symbolic in the exported graph."""

    def __init__(self, model: DepthAnythingForDepthEstimation) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model = self.model
        patch = model.config.patch_size
        height, width = pixel_values.shape[-2:]
        patch_height, patch_width = height // patch, width // patch
        features = model.backbone.forward_with_filtered_kwargs(pixel_values).feature_maps
        features = model.neck(features, patch_height, patch_width)
        head = model.head
        depth = head.conv1(features[head.head_in_index])
        depth = F.interpolate(depth, size=(patch_height * patch, patch_width * patch), mode="bilinear",
                              align_corners=True)
        depth = head.activation2(head.conv3(head.activation1(head.conv2(depth)))) * head.max_depth
        return depth.squeeze(1)


def export_onnx(model: DepthAnythingForDepthEstimation, path: str | Path, *, opset: int = OPSET) -> Path:
    """Write ``model`` as ONNX to ``path`` with dynamic batch, height and width (sides multiples of the patch size,
    at least two patches). Weights go into the file itself (external data only past protobuf's 2 GB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    patch = model.config.patch_size
    # An example that is neither square nor the position embeddings' own grid, so that no size-dependent branch
    # is taken for it (DINOv2 skips interpolating the position embeddings at its own square grid).
    example = torch.zeros(2, 3, 7 * patch, 9 * patch, dtype=next(model.parameters()).dtype)
    dim = torch.export.Dim
    dynamic_shapes = {INPUT_NAME: {0: dim("batch", min=1, max=4096), 2: patch * dim("patch_rows", min=2, max=4096),
                                   3: patch * dim("patch_columns", min=2, max=4096)}}
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    wrapper = OnnxDepthModel(model).eval()
    backbone = model.backbone
    previous = backbone.config._attn_implementation
    backbone.set_attn_implementation(attention_implementation(opset))
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper, (example,), str(path), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes, opset_version=opset, external_data=size > 1.8e9, verbose=False,
            )
    finally:
        backbone.set_attn_implementation(previous)
    return path


def attention_implementation(opset: int) -> str:
    """The encoder's attention implementation exported at ``opset``: "sdpa" (one ``Attention`` node per layer) from
    opset 23 on, else "eager" (MatMul, Softmax, MatMul without the exporter's NaN guard; see the module docstring)."""
    return "sdpa" if opset >= ATTENTION_OPSET else "eager"


def onnx_session(path: str | Path) -> onnxruntime.InferenceSession:
    """A CPU onnxruntime session using torch's intra-op thread count (so one thread setting governs both)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: onnxruntime.InferenceSession, pixel_values: np.ndarray) -> np.ndarray:
    """``predicted_depth`` (B, H, W) float32 of ``pixel_values`` (B, 3, H, W)."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixel_values, dtype=np.float32)})[0]


# ---- verification -------------------------------------------------------------------------------------------


@dataclass
class VerificationCase:
    """One input of the verification: ``pixel_values`` (B, 3, H, W) and, for generated scenes, each image's exact
    depth (H, W) in metres (None for the photograph)."""

    name: str
    pixel_values: np.ndarray
    depths: list[np.ndarray] | None = None


@dataclass
class CaseResult:
    """ONNX vs PyTorch on one case: the largest absolute difference, the tolerance it was held to, and (scenes)
    the mean abs_rel of both against the exact depth. ``metric_noise``: how far abs_rel moves when PyTorch's map
    gets random +-``max_abs_diff`` noise (the metric's sensitivity to a difference of that size); the abs_rel
    difference may reach ``metric_tolerance + 2 * metric_noise``."""

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float
    abs_rel_torch: float | None = None
    abs_rel_onnx: float | None = None
    metric_noise: float = 0.0
    metric_tolerance: float = DEFAULT_METRIC_TOLERANCE

    @property
    def abs_rel_diff(self) -> float | None:
        return None if self.abs_rel_torch is None else abs(self.abs_rel_onnx - self.abs_rel_torch)

    @property
    def passed(self) -> bool:
        metric_ok = self.abs_rel_diff is None or self.abs_rel_diff <= self.metric_tolerance + 2 * self.metric_noise
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance and metric_ok


@dataclass
class VerificationReport:
    path: Path
    results: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(result.passed for result in self.results)

    @property
    def max_abs_diff(self) -> float:
        return max(result.max_abs_diff for result in self.results)

    @property
    def max_abs_rel_diff(self) -> float:
        return max((r.abs_rel_diff for r in self.results if r.abs_rel_diff is not None), default=0.0)

    def format(self) -> str:
        lines = [f"ONNX vs PyTorch ({self.path}):",
                 "| input | shape | max abs diff | tolerance | abs_rel torch | abs_rel onnx | abs_rel diff | "
                 "allowed | ok |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in self.results:
            metric = (["", "", "", ""] if r.abs_rel_torch is None else
                      [f"{r.abs_rel_torch:.6f}", f"{r.abs_rel_onnx:.6f}", f"{r.abs_rel_diff:.2e}",
                       f"{r.metric_tolerance + 2 * r.metric_noise:.2e}"])
            lines.append(f"| {r.name} | {'x'.join(map(str, r.shape))} | {r.max_abs_diff:.2e} | {r.tolerance:.2e} | "
                         + " | ".join(metric) + f" | {'yes' if r.passed else 'NO'} |")
        return "\n".join(lines)


def _pixel_values(processor, images: Sequence[Image.Image], size: tuple[int, int] | None = None) -> np.ndarray:
    overrides = {} if size is None else {"size": {"height": size[0], "width": size[1]}, "keep_aspect_ratio": False}
    return processor(images=list(images), return_tensors="pt", **overrides)["pixel_values"].float().numpy()


def scene_case(processor, height: int, width: int, batch: int, first_seed: int = 0) -> VerificationCase:
    """``batch`` held-out generated scenes (seeds ``first_seed``, ...) rendered at ``height`` x ``width``."""
    scenes = [render_scene(seed, height, width) for seed in range(first_seed, first_seed + batch)]
    pixel_values = _pixel_values(processor, [Image.fromarray(s.image) for s in scenes], (height, width))
    return VerificationCase(f"scenes {first_seed}-{first_seed + batch - 1}", pixel_values, [s.depth for s in scenes])


def verification_cases(
    processor, *, photo: str | Path = EXAMPLE_PHOTO, scenes: Sequence[tuple[int, int, int]] = VERIFY_SCENES
) -> list[VerificationCase]:
    """The photograph at the processor's own size (batch 1, and batch 2 with its mirror image) and the held-out
    scenes (height, width, batch) of ``scenes``."""
    image = open_rgb(photo)
    cases = [
        VerificationCase(f"photo {Path(photo).name}", _pixel_values(processor, [image])),
        VerificationCase(f"photo {Path(photo).name} + mirror",
                         _pixel_values(processor, [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])),
    ]
    seed = 0
    for height, width, batch in scenes:
        cases.append(scene_case(processor, height, width, batch, seed))
        seed += batch
    return cases


def _abs_rel(predictions: np.ndarray, depths: list[np.ndarray]) -> float:
    return mean_depth_metrics(list(predictions), depths, min_depth=SCENE_DEPTH_RANGE[0],
                              max_depth=SCENE_DEPTH_RANGE[1])["abs_rel"]


def verify_onnx(
    model: DepthAnythingForDepthEstimation,
    path: str | Path,
    cases: Sequence[VerificationCase],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    metric_tolerance: float = DEFAULT_METRIC_TOLERANCE,
) -> VerificationReport:
    """Run every case through onnxruntime and through ``model`` (eager, float32) and compare.

    A case passes when the shapes match, ``max |onnx - torch| <= tolerance * max |torch|`` and, for scenes with
    depth, ``|abs_rel(onnx) - abs_rel(torch)| <= metric_tolerance + 2 * metric_noise`` (``CaseResult``).
    Returns the report (``report.passed``);
    raising is the caller's choice (``check_verification``).
    """
    session = onnx_session(path)
    report = VerificationReport(Path(path))
    model = model.eval()
    parameter = next(model.parameters())
    for case in cases:
        with torch.no_grad():
            pixel_values = torch.from_numpy(case.pixel_values).to(parameter.device, parameter.dtype)
            expected = model(pixel_values=pixel_values).predicted_depth.float().cpu().numpy()
        actual = run_onnx(session, case.pixel_values)
        limit = tolerance * float(np.abs(expected).max())
        diff = float(np.abs(actual - expected).max()) if actual.shape == expected.shape else math.inf
        result = CaseResult(case.name, tuple(case.pixel_values.shape), diff, limit, metric_tolerance=metric_tolerance)
        if case.depths is not None and actual.shape == expected.shape:
            result.abs_rel_torch, result.abs_rel_onnx = _abs_rel(expected, case.depths), _abs_rel(actual, case.depths)
            signs = np.random.default_rng(0).choice(np.array([-1.0, 1.0], np.float32), size=expected.shape)
            result.metric_noise = abs(_abs_rel(expected + signs * np.float32(diff), case.depths) - result.abs_rel_torch)
        elif actual.shape != expected.shape:
            logger.error("%s: ONNX output %s, PyTorch %s", case.name, actual.shape, expected.shape)
        report.results.append(result)
    return report


def check_verification(report: VerificationReport) -> VerificationReport:
    """``report``, or ExportVerificationError with its table when any case failed."""
    if not report.passed:
        raise ExportVerificationError(f"the ONNX model does not reproduce PyTorch:\n{report.format()}")
    return report


# ---- quantisation -----------------------------------------------------------------------------------------


@dataclass
class QuantizationReport:
    """Mean abs_rel of the float and the int8 ONNX models on held-out generated scenes with exact depth."""

    path: Path
    num_scenes: int
    abs_rel_float: float
    abs_rel_quantized: float
    max_abs_rel_increase: float

    @property
    def increase(self) -> float:
        return self.abs_rel_quantized - self.abs_rel_float

    @property
    def accepted(self) -> bool:
        return math.isfinite(self.abs_rel_quantized) and self.increase <= self.max_abs_rel_increase

    def format(self) -> str:
        return (f"int8 quantisation ({self.path}), {self.num_scenes} held-out scenes: abs_rel {self.abs_rel_float:.6f} "
                f"(float32) -> {self.abs_rel_quantized:.6f} (int8), change {self.increase:+.6f} "
                f"(allowed: +{self.max_abs_rel_increase:g}): {'accepted' if self.accepted else 'REFUSED'}")


def quantize_onnx(path: str | Path, quantized_path: str | Path) -> Path:
    """int8 dynamic quantisation of the MatMul/Gemm weights (the transformer's linear layers: most parameters).
    Convolutions stay float: onnxruntime's CPU ConvInteger takes no int8 weights."""
    quantize_dynamic(Path(path), Path(quantized_path), op_types_to_quantize=["MatMul", "Gemm"],
                     weight_type=QuantType.QInt8)
    return Path(quantized_path)


def measure_quantization(
    processor,
    float_path: str | Path,
    quantized_path: str | Path,
    *,
    scenes: tuple[int, int, int] = QUANTIZATION_SCENES,
    max_abs_rel_increase: float = DEFAULT_MAX_ABS_REL_INCREASE,
) -> QuantizationReport:
    """abs_rel of both models (disparity-aligned, as the demo evaluates) on ``scenes`` = (height, width, count)
    held-out scenes."""
    height, width, count = scenes
    case = scene_case(processor, height, width, count)
    values = [_abs_rel(run_onnx(onnx_session(p), case.pixel_values), case.depths) for p in (float_path, quantized_path)]
    return QuantizationReport(Path(quantized_path), count, values[0], values[1], max_abs_rel_increase)


# ---- a student folder -------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path
    verification: VerificationReport
    quantization: QuantizationReport | None = None


def export_student(
    folder: str | Path,
    *,
    quantize: bool = False,
    max_abs_rel_increase: float = DEFAULT_MAX_ABS_REL_INCREASE,
    tolerance: float = DEFAULT_TOLERANCE,
    metric_tolerance: float = DEFAULT_METRIC_TOLERANCE,
    opset: int = OPSET,
) -> ExportResult:
    """Export the model of ``folder`` to ``folder/onnx/model.onnx``, verify it (``verify_onnx`` on
    ``verification_cases``) and, with ``quantize``, write ``onnx/model_quantized.onnx`` when its abs_rel rises by at
    most ``max_abs_rel_increase``. The card (``README.md``), when there is one, gains the onnxruntime snippet.

    Raises ExportVerificationError (after removing the file it refuses) when the export disagrees with PyTorch or
    quantisation costs more than allowed; FileNotFoundError when ``folder`` is not a model folder.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder / 'config.json'} not found: --model must be a save_pretrained folder")
    model = load_depth_model(str(folder)).float().eval()
    processor = load_image_processor(str(folder))
    path = folder / ONNX_FOLDER / ONNX_FILE
    export_onnx(model, path, opset=opset)
    report = verify_onnx(model, path, verification_cases(processor), tolerance=tolerance,
                         metric_tolerance=metric_tolerance)
    logger.info("%s", report.format())
    if not report.passed:
        _remove(path)
        check_verification(report)
    result = ExportResult(path, report)
    quantized = folder / ONNX_FOLDER / QUANTIZED_FILE
    _remove(quantized)  # never leave a quantised model of other weights beside the new export
    if quantize:
        quantize_onnx(path, quantized)
        result.quantization = measure_quantization(processor, path, quantized,
                                                   max_abs_rel_increase=max_abs_rel_increase)
        logger.info("%s", result.quantization.format())
        if not result.quantization.accepted:
            _remove(quantized)
            raise ExportVerificationError(
                f"{result.quantization.format()}; the quantised model is not kept (raise --max_abs_rel_increase "
                "to accept it)")
    if (folder / README).is_file():
        add_onnx_usage(folder / README)
    return result


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".data")):
        if leftover.exists():
            os.remove(leftover)


# ---- the script's arguments -------------------------------------------------------------------------------


@dataclass
class ExportArguments:
    """``scripts/export.py``: which folder, quantisation, tolerances, Hub upload."""

    model: str = field(metadata={"help": "Student folder (save_pretrained); onnx/model.onnx is written into it."})
    quantize: bool = field(default=False, metadata={
        "help": "Also write onnx/model_quantized.onnx (int8 dynamic quantisation), kept only if its abs_rel on "
                "held-out generated scenes rises by at most --max_abs_rel_increase."})
    max_abs_rel_increase: float = field(default=DEFAULT_MAX_ABS_REL_INCREASE, metadata={
        "help": "Largest abs_rel increase (absolute) accepted from quantisation."})
    tolerance: float = field(default=DEFAULT_TOLERANCE, metadata={
        "help": "Largest |onnx - torch| accepted, as a fraction of the PyTorch map's largest value."})
    metric_tolerance: float = field(default=DEFAULT_METRIC_TOLERANCE, metadata={
        "help": "Largest |abs_rel(onnx) - abs_rel(torch)| accepted on the generated scenes, beyond twice the change "
                "that noise of the measured difference's size causes."})
    opset: int = field(default=OPSET, metadata={
        "help": f"ONNX opset. From {ATTENTION_OPSET} on, attention is one standard Attention node per layer (fast on "
                "onnxruntime's CPU, run by onnxruntime-web too); below it, MatMul/Softmax/MatMul for older runtimes."})
    push_to_hub: bool = field(default=False, metadata={
        "help": "Upload the student with onnx/ (and its card) to --hub_model_id."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repository to push to."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in one)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repository as private."})

    def __post_init__(self) -> None:
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")
        for name in ("max_abs_rel_increase", "tolerance", "metric_tolerance"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")


def run_export(args: ExportArguments) -> ExportResult:
    """Export, verify, optionally quantise and push, printing the verification table."""
    result = export_student(args.model, quantize=args.quantize, max_abs_rel_increase=args.max_abs_rel_increase,
                            tolerance=args.tolerance, metric_tolerance=args.metric_tolerance, opset=args.opset)
    print(result.verification.format())
    if result.quantization is not None:
        print(result.quantization.format())
    print(f"wrote {result.path}" + (f" and {result.quantization.path}" if result.quantization else ""))
    if args.push_to_hub:
        url = push_student_to_hub(args.model, args.hub_model_id, token=args.hub_token,
                                  private=args.hub_private_repo or None,
                                  commit_message="Upload distilled depth student with its ONNX export")
        print(f"pushed: {url}")
    return result
