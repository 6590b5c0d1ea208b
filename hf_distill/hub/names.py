"""How models are named on cards and the Hub, and the file names of a published student folder."""

from __future__ import annotations

import re
from pathlib import Path

from hf_distill.models import resolve_model_name

README = "README.md"
# The ONNX export (hf_distill.export) lives in this subfolder, as transformers.js and optimum expect; every ONNX
# file in it (model.onnx, model_quantized.onnx, external data) is published with the student.
ONNX_FOLDER = "onnx"
ONNX_FILE = "model.onnx"
ONNX_FILES = ("*.onnx", "*.onnx.data", "*.onnx_data")

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def display_name(name_or_path: str | Path) -> str:
    """How a model is named on a card: an alias or Hub id as given, a local folder or file by its own name (never
    the absolute path of the training machine)."""
    text = str(name_or_path)
    path = Path(text)
    return path.name if path.exists() or path.is_absolute() or text.startswith(".") else text


def hub_id(name: str) -> str | None:
    """The Hub id behind an alias or id; None for local paths."""
    resolved = resolve_model_name(name)
    return resolved if not Path(name).exists() and resolved.count("/") == 1 and _HUB_ID.match(resolved) else None
