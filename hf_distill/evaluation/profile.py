"""Size and speed of a depth model, measured the same way for every model: PyTorch eager or onnxruntime.

``profile_model`` (a ``DepthAnythingForDepthEstimation`` or any module taking ``pixel_values``) and ``profile_onnx``
(a ``.onnx`` file, or a folder holding ``onnx/model.onnx``) return a ``ModelProfile``:

- parameters: the sum of ``numel`` over the parameters (ONNX: over the floating-point initializers);
- GFLOPs of one image at the profiled size, counted by ``torch.utils.flop_counter.FlopCounterMode`` on a real
  forward (a multiply-add counts 2); not counted for ONNX graphs;
- latency at batch 1: median and 90th percentile of ``repeats`` timed forwards after ``warmup`` untimed ones
  (CUDA synchronised before and after each);
- throughput: images per second at ``batch_size``, from the median of ``throughput_repeats`` timed forwards;
- peak memory at ``batch_size``: on CUDA ``torch.cuda.max_memory_allocated`` over one forward (weights, input and
  activations); on CPU the same quantity counted from the dispatcher: the bytes of the weights and the input plus
  the peak of the live tensor storages that the forward's operators return (``TensorMemoryCounter``). Scratch
  buffers a kernel allocates and frees inside itself and allocator caching are not seen, which
  ``tracemalloc`` (blind to torch) and the process RSS (allocator reuse, other threads) would get wrong in other
  ways. Not measured for onnxruntime (None).

The device text states what the figures depend on: ``cpu (2 threads)`` (torch's intra-op thread count, which the
onnxruntime session is given too) or the CUDA device's name.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

MIB = 2**20
ONNX_FILE = Path("onnx") / "model.onnx"  # where scripts/export.py writes a student's ONNX model
ONNX_INPUT = "pixel_values"


@dataclass
class ProfileSettings:
    """How models are profiled. ``height`` x ``width``: the input size (the processing resolution, multiples of the
    patch size); ``batch_size``: the batch of the throughput and peak-memory figures; ``threads``: CPU intra-op
    threads during the measurement (None: torch's current count)."""

    height: int
    width: int
    batch_size: int = 4
    warmup: int = 2
    repeats: int = 10
    throughput_repeats: int = 3
    threads: int | None = None

    def __post_init__(self):
        for name in ("height", "width", "batch_size", "repeats", "throughput_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"profile {name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"profile warmup must be at least 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"profile threads must be at least 1, got {self.threads}")


@dataclass
class ModelProfile:
    """The measured size and speed of one model (see the module docstring for how each figure is measured)."""

    name: str
    backend: str  # "pytorch" or "onnxruntime"
    device: str
    input_size: tuple[int, int]  # (height, width)
    parameters: int
    gflops: float | None
    latency_ms: dict[str, float]  # {"median": ..., "p90": ...} at batch 1
    throughput: float  # images per second at throughput_batch_size
    throughput_batch_size: int
    peak_memory_mb: float | None  # MiB at throughput_batch_size
    memory_measure: str
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        result = asdict(self)
        result["input_size"] = list(self.input_size)
        return result

    @classmethod
    def from_dict(cls, record: dict) -> ModelProfile:
        """The inverse of ``to_dict`` (extra keys, such as a comparison's ``metrics``, are ignored)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        return cls(**{**values, "input_size": tuple(values["input_size"])})


def count_parameters(model: torch.nn.Module) -> int:
    """The number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def _forward(model: torch.nn.Module, pixel_values: torch.Tensor):
    return model(pixel_values=pixel_values)


@torch.no_grad()
def count_flops(model: torch.nn.Module, pixel_values: torch.Tensor) -> int:
    """FLOPs of one forward on ``pixel_values`` (B, 3, H, W) as ``FlopCounterMode`` counts them (2 per multiply-add
    of matmuls and convolutions; element-wise operators are not counted)."""
    with FlopCounterMode(display=False) as counter:
        _forward(model, pixel_values)
    return int(counter.get_total_flops())


class TensorMemoryCounter(TorchDispatchMode):
    """Counts the bytes of tensor storages returned by operators while active, and their peak.

    A storage is counted once however many views of it exist, and released when the last tensor that an operator
    returned on it is garbage-collected. Storages of ``resident`` tensors (weights, inputs: counted by the caller)
    are never counted, nor views of them.
    """

    def __init__(self, resident: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self._resident = {t.untyped_storage().data_ptr() for t in resident}
        self._live: dict[int, list[int]] = {}  # data_ptr -> [nbytes, tensors alive]
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._resident:
                continue
            entry = self._live.get(key)
            if entry is None:
                self._live[key] = [storage.nbytes(), 1]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            else:
                entry[1] += 1
            weakref.finalize(tensor, self._release, key)
        return out

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]


def _storage_bytes(tensors: tuple[torch.Tensor, ...]) -> int:
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


@torch.no_grad()
def peak_memory_bytes(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[int, str]:
    """Peak memory of one forward on ``pixel_values`` and what was measured (see the module docstring)."""
    device = pixel_values.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        _forward(model, pixel_values)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated over one forward"
    resident = (*model.parameters(), *model.buffers(), pixel_values)
    with TensorMemoryCounter(resident) as counter:
        output = _forward(model, pixel_values)
        del output
    return _storage_bytes(resident) + counter.peak, "weights + input + peak of live operator outputs (torch dispatcher)"


def time_calls(call: Callable[[], object], *, warmup: int, repeats: int, synchronize: Callable[[], None] | None = None
               ) -> list[float]:
    """Wall time in milliseconds of each of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        if synchronize:
            synchronize()
        start = time.perf_counter()
        call()
        if synchronize:
            synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def latency_summary(times_ms: list[float]) -> dict[str, float]:
    """``{"median": ..., "p90": ...}`` of timings in milliseconds (p90 by linear interpolation)."""
    return {"median": float(np.median(times_ms)), "p90": float(np.percentile(times_ms, 90))}


def device_description(device: torch.device | str) -> str:
    """``cpu (N threads)`` or ``cuda (device name)``: what the figures were measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"{device.type} ({threads} thread{'s' if threads != 1 else ''})"


@contextmanager
def cpu_threads(threads: int | None):
    """torch's intra-op thread count set to ``threads`` inside the block (unchanged for None)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _inputs(settings: ProfileSettings, batch_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, 3, settings.height, settings.width, generator=generator)


def profile_model(model: torch.nn.Module, settings: ProfileSettings, *, name: str = "model") -> ModelProfile:
    """Measure a PyTorch model in eager mode on the device and dtype of its parameters (it is put in eval mode for
    the measurement and restored after), with ``settings.threads`` CPU threads."""
    with cpu_threads(settings.threads), torch.no_grad():
        return _profile_model(model, settings, name)


def _profile_model(model: torch.nn.Module, settings: ProfileSettings, name: str) -> ModelProfile:
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    was_training = model.training
    model.eval()
    try:
        single = _inputs(settings, 1).to(device=device, dtype=dtype)
        batch = _inputs(settings, settings.batch_size).to(device=device, dtype=dtype)
        synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        latency = time_calls(lambda: _forward(model, single), warmup=settings.warmup, repeats=settings.repeats,
                             synchronize=synchronize)
        batch_times = time_calls(lambda: _forward(model, batch), warmup=1, repeats=settings.throughput_repeats,
                                 synchronize=synchronize)
        flops = count_flops(model, single)
        memory, measure = peak_memory_bytes(model, batch)
    finally:
        model.train(was_training)
    return ModelProfile(
        name=name, backend="pytorch", device=device_description(device), input_size=(settings.height, settings.width),
        parameters=count_parameters(model), gflops=flops / 1e9, latency_ms=latency_summary(latency),
        throughput=settings.batch_size * 1e3 / float(np.median(batch_times)),
        throughput_batch_size=settings.batch_size, peak_memory_mb=memory / MIB, memory_measure=measure,
        settings={**asdict(settings), "dtype": str(dtype).removeprefix("torch.")},
    )


def onnx_model_path(path: str | Path) -> Path:
    """The ``.onnx`` file itself, or ``onnx/model.onnx`` inside a model folder; FileNotFoundError otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / ONNX_FILE
    if not path.is_file() or path.suffix != ".onnx":
        raise FileNotFoundError(f"{path} not found: give a .onnx file or a folder holding {ONNX_FILE}")
    return path


def is_onnx_model(name_or_path: str | Path) -> bool:
    """Whether a model reference names an ONNX model (a path ending in ``.onnx``)."""
    return str(name_or_path).endswith(".onnx")


def onnx_session(path: str | Path, *, threads: int | None = None):
    """An onnxruntime CPU session of the model at ``path`` (a .onnx file or a folder with ``onnx/model.onnx``) with
    ``threads`` intra-op threads (default: torch's, so that both run on the same cores)."""
    try:
        import onnxruntime
    except ImportError as error:  # the optional onnx extra
        raise ImportError("profiling an ONNX model needs onnxruntime: pip install 'hf_distill[onnx]'") from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(onnx_model_path(path)), options, providers=["CPUExecutionProvider"])


def onnx_parameters(path: str | Path) -> int:
    """The number of values in the floating-point initializers of an ONNX graph (its weights; parameters the graph
    never uses, such as Depth Anything's ``mask_token``, are not in it)."""
    try:
        import onnx
    except ImportError as error:  # the optional onnx extra
        raise ImportError("counting an ONNX model's parameters needs onnx: pip install 'hf_distill[onnx]'") from error

    model = onnx.load(str(onnx_model_path(path)))
    floating = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    return sum(math.prod(init.dims) for init in model.graph.initializer if init.data_type in floating)


def profile_onnx(path: str | Path, settings: ProfileSettings, *, name: str | None = None) -> ModelProfile:
    """Measure an ONNX model with onnxruntime on CPU (input ``pixel_values``, float32), as ``profile_model`` does
    (no FLOP count, no peak memory). A graph with a fixed height and width is measured at its own size."""
    session = onnx_session(path, threads=settings.threads)
    graph_input = session.get_inputs()[0]
    input_name, (*_, height, width) = graph_input.name, graph_input.shape
    if isinstance(height, int) and isinstance(width, int):
        settings = replace(settings, height=height, width=width)
    single = _inputs(settings, 1).numpy()
    batch = _inputs(settings, settings.batch_size).numpy()
    latency = time_calls(lambda: session.run(None, {input_name: single}), warmup=settings.warmup,
                         repeats=settings.repeats)
    batch_times = time_calls(lambda: session.run(None, {input_name: batch}), warmup=1,
                             repeats=settings.throughput_repeats)
    threads = session.get_session_options().intra_op_num_threads
    return ModelProfile(
        name=name or str(path), backend="onnxruntime",
        device=f"cpu ({threads} thread{'s' if threads != 1 else ''})", input_size=(settings.height, settings.width),
        parameters=onnx_parameters(path), gflops=None, latency_ms=latency_summary(latency),
        throughput=settings.batch_size * 1e3 / float(np.median(batch_times)),
        throughput_batch_size=settings.batch_size, peak_memory_mb=None, memory_measure="not measured",
        settings={**asdict(settings), "dtype": "float32"},
    )
