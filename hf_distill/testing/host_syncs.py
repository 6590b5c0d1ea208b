"""Count the tensor calls that make the host wait for an accelerator (device -> host synchronisations).

On a GPU, a call whose result the host needs (a Python number or bool, a list, a numpy array, an output whose size
depends on the data) waits until every kernel queued before it has run, so the CPU can no longer queue work ahead of
the GPU. On CPU nothing waits, but the same Python calls happen: counting them on CPU measures what a GPU step would
wait for. Counted (by the name in :data:`SYNC_CALLS`):

- values read on the host: ``item``, ``tolist``, ``numpy``, ``cpu``, ``to('cpu')``, ``__bool__`` (``if t:``,
  ``bool(t.any())``), ``__int__``, ``__float__``, ``__index__``, ``__format__``/``__repr__``, ``torch.equal``,
  ``torch.allclose``, ``torch.is_nonzero``;
- outputs sized by the data: ``nonzero`` (method and function), ``argwhere``, ``torch.where`` with one argument,
  ``unique``, ``unique_consecutive``, ``masked_select``, boolean-mask indexing ``t[mask]`` (``getitem[mask]``) and
  assignment ``t[mask] = v`` (``setitem[mask]``), ``repeat_interleave`` with tensor repeats and no
  ``output_size``;
- kernels that read their input range back to the host on CUDA: ``bincount``, ``histc``;
- blocking copies from the host to an accelerator (``to(device)`` of a CPU tensor without ``non_blocking``,
  ``torch.tensor(..., device=...)``): CUDA waits for the stream before copying from pageable memory. On a CPU-only
  run the target is the host, so these are only counted where an accelerator is used.

A call made inside another counted call (``Tensor.unique`` calling ``torch.unique``) counts once.

Usage::

    with count_host_syncs() as syncs:
        ...
    syncs.counts  # Counter({'nonzero': 2, ...})

    with count_host_syncs(inside=(trainer, "training_step")) as syncs:
        trainer.train()
    syncs.total / syncs.calls  # host syncs per micro-batch
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

# Tensor methods that always synchronise.
_ALWAYS_METHODS = (
    "item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__format__", "__repr__",
    "__array__", "nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "bincount", "histc",
)
# torch functions that always synchronise.
_ALWAYS_FUNCTIONS = (
    "nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "bincount", "histc", "equal", "allclose",
    "is_nonzero",
)
SYNC_CALLS = tuple(sorted(set(_ALWAYS_METHODS + _ALWAYS_FUNCTIONS) | {
    "to('cpu')", "to(device)", "tensor(device)", "where(condition)", "repeat_interleave", "getitem[mask]",
    "setitem[mask]"}))


def _is_mask(index: Any) -> bool:
    """Whether an index holds a boolean (or uint8) tensor, alone or in a tuple/list of indices."""
    if isinstance(index, torch.Tensor):
        return index.dtype in (torch.bool, torch.uint8)
    if isinstance(index, (tuple, list)):
        return any(_is_mask(part) for part in index)
    return False


def _repeats_are_tensor(args: tuple, kwargs: dict, first: int) -> bool:
    """``repeat_interleave`` waits when its repeats are a tensor and no ``output_size`` is given."""
    repeats = args[first] if len(args) > first else kwargs.get("repeats")
    if len(args) == first and repeats is None:  # torch.repeat_interleave(repeats): the tensor is the repeats
        repeats = args[first - 1] if first else None
    output_size = kwargs.get("output_size")
    return isinstance(repeats, torch.Tensor) and output_size is None


def _device_of(target: Any) -> torch.device | None:
    if isinstance(target, torch.device):
        return target
    if isinstance(target, str):
        return torch.device(target)
    return None


def _classify_to(args: tuple, kwargs: dict) -> str | None:
    """``Tensor.to``: an explicit copy back to the host (the host named as a string, ``'cpu'``), or a blocking copy
    of a host tensor to an accelerator."""
    tensor, target = args[0], args[1] if len(args) > 1 else kwargs.get("device")
    if isinstance(target, str) and target.split(":")[0] == "cpu":
        return "to('cpu')"
    device = _device_of(target)
    non_blocking = kwargs.get("non_blocking", len(args) > 3 and args[3])
    if device is not None and device.type != "cpu" and tensor.device.type == "cpu" and not non_blocking:
        return "to(device)"
    return None


def _classify_tensor(args: tuple, kwargs: dict) -> str | None:
    device = _device_of(kwargs.get("device"))
    return "tensor(device)" if device is not None and device.type != "cpu" else None


@dataclass
class HostSyncCounter:
    """Host synchronisations counted by call name; ``calls``: how often the ``inside`` method ran."""

    counts: Counter = field(default_factory=Counter)
    calls: int = 0
    _state: threading.local = field(default_factory=threading.local, repr=False)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def per_call(self) -> float:
        """Host syncs per call of the ``inside`` method (0 when it never ran)."""
        return self.total / self.calls if self.calls else 0.0

    def _enabled(self) -> bool:
        return getattr(self._state, "enabled", 0) > 0

    def _wrap(self, name: str | None, original: Callable, condition: Callable[[tuple, dict], Any] | None) -> Callable:
        """``condition``: whether a call synchronises; with ``name`` None, the name it is counted under (None: not)."""
        state = self._state

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            depth = getattr(state, "depth", 0)
            if depth == 0 and self._enabled():
                verdict = True if condition is None else condition(args, kwargs)
                if verdict:
                    self.counts[name or verdict] += 1
            state.depth = depth + 1
            try:
                return original(*args, **kwargs)
            finally:
                state.depth = depth

        return wrapper


def _method_conditions() -> dict[str, tuple[str | None, Callable[[tuple, dict], Any]]]:
    """Tensor methods counted only on some arguments (``self`` is args[0]): method -> (counted name, condition), or
    (None, a function giving the name or None)."""
    return {
        "cuda": ("to(device)", lambda args, kwargs: args[0].device.type == "cpu" and not kwargs.get("non_blocking")),
        "to": (None, _classify_to),
        "repeat_interleave": ("repeat_interleave", lambda args, kwargs: _repeats_are_tensor(args, kwargs, 1)),
        "__getitem__": ("getitem[mask]", lambda args, kwargs: _is_mask(args[1])),
        "__setitem__": ("setitem[mask]", lambda args, kwargs: _is_mask(args[1])),
        "index_put_": ("setitem[mask]", lambda args, kwargs: _is_mask(args[1])),
        "index_put": ("setitem[mask]", lambda args, kwargs: _is_mask(args[1])),
    }


def _function_conditions() -> dict[str, tuple[str | None, Callable[[tuple, dict], Any]]]:
    return {
        "where": ("where(condition)", lambda args, kwargs: len(args) + len(kwargs) == 1),
        "tensor": (None, _classify_tensor),
        "repeat_interleave": ("repeat_interleave", lambda args, kwargs: _repeats_are_tensor(args, kwargs, 1)),
    }


@contextmanager
def count_host_syncs(inside: tuple[object, str] | None = None) -> Iterator[HostSyncCounter]:
    """Patch the synchronising tensor calls for the duration of the block and count them.

    ``inside``: ``(obj, method_name)``: count only while that method of ``obj`` runs (e.g. ``(trainer,
    "training_step")``, one call per micro-batch), and count its calls in ``HostSyncCounter.calls``. Without it,
    everything in the block is counted. Patches ``torch.Tensor`` and ``torch`` globally: not thread-safe against
    other code patching them at the same time.
    """
    counter = HostSyncCounter()
    patched: list[tuple[object, str, object, bool]] = []  # (owner, name, original, owned its own attribute)

    def patch(owner: object, attribute: str, name: str, condition=None) -> None:
        original = getattr(owner, attribute)
        owned = attribute in vars(owner)
        patched.append((owner, attribute, vars(owner).get(attribute), owned))
        setattr(owner, attribute, counter._wrap(name, original, condition))

    for method in _ALWAYS_METHODS:
        patch(torch.Tensor, method, method)
    for method, (name, condition) in _method_conditions().items():
        patch(torch.Tensor, method, name, condition)
    for function in _ALWAYS_FUNCTIONS:
        patch(torch, function, function)
    for function, (name, condition) in _function_conditions().items():
        patch(torch, function, name, condition)

    if inside is None:
        counter._state.enabled = 1
    else:
        obj, method_name = inside
        bound = getattr(obj, method_name)

        @functools.wraps(bound)
        def counted(*args, **kwargs):
            counter.calls += 1
            counter._state.enabled = getattr(counter._state, "enabled", 0) + 1
            try:
                return bound(*args, **kwargs)
            finally:
                counter._state.enabled -= 1

        instance_had = method_name in vars(obj)
        setattr(obj, method_name, counted)
    try:
        yield counter
    finally:
        if inside is not None:
            if instance_had:
                setattr(obj, method_name, bound)
            else:
                delattr(obj, method_name)
        for owner, attribute, original, owned in reversed(patched):
            if owned:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)
