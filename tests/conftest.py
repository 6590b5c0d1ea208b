"""Test-wide settings (no network, quiet libraries, small thread pools), the tiny models and data most tests
share, and the fake Hub API boundary."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# Test models are tiny: one intra-op thread per process is faster than two fighting over two cores, and the
# subprocess tests (scripts, 2-process DDP) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import concurrent.futures  # noqa: E402  (after the environment above)
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, RepoUrl  # noqa: E402
from PIL import Image  # noqa: E402

from transformers import DepthAnythingForDepthEstimation  # noqa: E402

from hf_distill.testing import write_image_folder, write_webdataset_shards  # noqa: E402
from hf_distill.hub import CARD_DECIMALS  # noqa: E402
from hf_distill.models import default_image_processor, tiny_depth_config  # noqa: E402

# pytest.approx compares Python numbers and numpy arrays; what it does with a torch tensor changes between pytest
# releases (9.2 iterates over a 0-d tensor and raises). Every approx in the suite takes numbers (`.item()`,
# `float(...)`) or `torch.testing.assert_close` compares tensors; this guard fails a test that passes a tensor on
# either side, on every pytest version, with a message that says so.
_pytest_approx = pytest.approx


class _TensorFreeApprox:
    # numpy defers `array == approx` to __eq__ below, as it does for pytest's own approx objects.
    __array_ufunc__ = None
    __array_priority__ = 100

    def __init__(self, approx):
        self._approx = approx

    def __eq__(self, actual):
        if isinstance(actual, torch.Tensor):
            raise TypeError("pytest.approx compared with a torch.Tensor: compare numbers (.item()) or use "
                            "torch.testing.assert_close")
        return self._approx == actual

    def __ne__(self, actual):
        return not self == actual

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self._approx)


def _approx_of_numbers(expected, *args, **kwargs):
    leaves = expected.values() if isinstance(expected, dict) else expected if isinstance(expected, (list, tuple)) else [expected]
    if any(isinstance(leaf, torch.Tensor) for leaf in leaves):
        raise TypeError("pytest.approx given a torch.Tensor: pass numbers (.item()) or use torch.testing.assert_close")
    return _TensorFreeApprox(_pytest_approx(expected, *args, **kwargs))


pytest.approx = _approx_of_numbers

# A model-card metric is the measured value rounded to CARD_DECIMALS: off by at most half its last digit.
CARD_ROUNDING = 0.5 * 10**-CARD_DECIMALS + 1e-12


# ---- tiny runs -----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Two tiny teachers (large-like and base-like), a small-like student folder, 8 generated images."""
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    for name, like in (("teacher_large", "large"), ("teacher_base", "base"), ("student", "small")):
        DepthAnythingForDepthEstimation(tiny_depth_config(like)).save_pretrained(root / name)
        default_image_processor(size=56).save_pretrained(root / name)
    data = write_image_folder(root / "images", num_images=8, size=(96, 128), seed=3)
    write_webdataset_shards(root / "shards", num_shards=2, per_shard=4, size=(96, 128), seed=4)
    return {"root": root, "data": data, "shards": root / "shards", **{n: root / n for n in ("teacher_large", "teacher_base", "student")}}


@pytest.fixture(scope="session")
def nan_teacher(tmp_path_factory) -> Path:
    """A tiny teacher whose depth head outputs NaN everywhere (non-finite steps)."""
    folder = tmp_path_factory.mktemp("nan_teacher")
    model = DepthAnythingForDepthEstimation(tiny_depth_config("base"))
    with torch.no_grad():
        model.head.conv3.bias.fill_(float("nan"))
    model.save_pretrained(folder)
    default_image_processor(size=56).save_pretrained(folder)
    return folder


def tiny_argv(assets, output_dir, *extra: str) -> list[str]:
    """A 4-step CPU distillation of ``assets`` (checkpoints and visualisations at steps 2 and 4); ``extra`` flags
    override."""
    return [
        "--teacher_models", str(assets["teacher_large"]), "--student_arch", str(assets["student"]),
        "--student_init", "random", "--dataset_dir", str(assets["data"]), "--output_dir", str(output_dir),
        "--global_crop_size", "56", "--local_crop_size", "42", "--min_region", "80", "--num_local_patches", "2",
        "--batch_size", "2", "--num_iterations", "4", "--checkpoint_interval", "2", "--logging_steps", "2",
        "--visualize_steps", "2", "--use_cpu", "--report_to", "none", "--seed", "0", *extra,
    ]


def free_port() -> int:
    """A free local TCP port (for a rendezvous that concurrent suites never share)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_file_module(path: Path, name: str):
    """A script or benchmark (not a package module) imported from its file as module ``name``; registered in
    ``sys.modules`` first, as its dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def accelerate_launch(*args: str, num_processes: int = 2, config_file: str | Path | None = None,
                      num_machines: int = 1, machine_rank: int = 0, port: int | None = None,
                      mixed_precision: str = "no") -> list[str]:
    """The command line of a CPU multi-process ``accelerate launch`` (gloo) on a free local port, so that runs of
    the suite (or of several checkouts) on one machine never share a rendezvous. ``args``: the launch options
    that follow (``--use_deepspeed ...``) and then the script with its flags. ``config_file``: an accelerate config
    (the shipped DeepSpeed ones) instead of plain DDP, with its mixed precision and process count overridden.
    ``num_machines`` > 1: this command is machine ``machine_rank`` of a multi-node run on 127.0.0.1 (``port``
    shared by all machines; ``num_processes`` counts all of them)."""
    engine = ["--config_file", str(config_file)] if config_file is not None else ["--multi_gpu"]
    machines = ["--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1"] if num_machines > 1 else []
    return [sys.executable, "-m", "accelerate.commands.launch", *engine, "--num_processes", str(num_processes),
            "--num_machines", str(num_machines), *machines, "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
            "--main_process_port", str(port or free_port()), *args]


# ---- the Hub API boundary ---------------------------------------------------------------------------------

FAKE_USER = "fake-user"


class FakeHub:
    """Records what would reach the Hub: ``HfApi.create_repo`` and ``HfApi.create_commit`` are replaced (for every
    HfApi instance, transformers' own included); everything above them runs for real.

    ``repos``: repo ids created. ``commits``: one dict per commit: repo_id, message, paths (sorted paths in the
    repo) and files ({path: bytes}).
    """

    def __init__(self) -> None:
        self.repos: list[str] = []
        self.commits: list[dict] = []

    def create_repo(self, api, repo_id, *, private=None, exist_ok=False, repo_type=None, **kwargs):
        full_id = repo_id if "/" in repo_id else f"{FAKE_USER}/{repo_id}"  # the Hub puts it in the user's namespace
        self.repos.append(full_id)
        return RepoUrl(f"https://huggingface.co/{full_id}")

    def create_commit(self, api, repo_id, operations, *, commit_message, run_as_future=False, **kwargs):
        files = {}
        for operation in operations:
            assert isinstance(operation, CommitOperationAdd), operation
            with operation.as_file() as handle:
                files[operation.path_in_repo] = handle.read()
        self.commits.append({"repo_id": repo_id, "message": commit_message, "paths": sorted(files), "files": files})
        oid = hashlib.sha1(repr(len(self.commits)).encode()).hexdigest()
        info = CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}", commit_message=commit_message,
                          commit_description="", oid=oid)
        if run_as_future:
            future = concurrent.futures.Future()
            future.set_result(info)
            return future
        return info


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    hub = FakeHub()
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: hub.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_commit", lambda api, repo_id, operations, **kw: hub.create_commit(
        api, repo_id, operations, **kw))
    return hub


def run_python_snippets(card_text: str, folder, monkeypatch) -> int:
    """Execute every ```python block of a card in ``folder`` (where an image.jpg is written); returns how many ran."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / "image.jpg")
    monkeypatch.chdir(folder)
    blocks = re.findall(r"```python\n(.*?)```", card_text, flags=re.S)
    for block in blocks:
        exec(compile(block, "<model card snippet>", "exec"), {})
    return len(blocks)
