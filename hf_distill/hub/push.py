"""Pushing a student folder and its card to the Hub in one commit."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

from hf_distill import __version__
from hf_distill.hub.names import ONNX_FILES, ONNX_FOLDER, README

# The files of a student folder that reach the Hub (weights possibly sharded); README.md is added as the card.
STUDENT_FILES = (
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "preprocessor_config.json",
)


def student_files(folder: str | Path) -> list[Path]:
    """The files of a student folder that are published (``STUDENT_FILES``, and ``ONNX_FILES`` in ``onnx/``),
    sorted; raises FileNotFoundError when the folder lacks its config or weights."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, g) for g in STUDENT_FILES))
    onnx_folder = folder / ONNX_FOLDER
    if onnx_folder.is_dir():
        files += sorted(p for p in onnx_folder.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, g)
                                                                                for g in ONNX_FILES))
    names = {p.name for p in files}
    if "config.json" not in names:
        raise FileNotFoundError(f"{folder / 'config.json'} not found: save the student first")
    if not any(fnmatch.fnmatch(n, "model*.safetensors") for n in names):
        raise FileNotFoundError(f"no model*.safetensors in {folder}: save the student first")
    return files


def upload_student(
    repo_id: str,
    folder: str | Path,
    card: str | Path,
    *,
    checkpoint: str | Path | None = None,
    checkpoint_path_in_repo: str | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload distilled depth student",
):
    """One commit to an existing model repo: the student files of ``folder``, the card as ``README.md`` and, with
    ``checkpoint``, every file of that folder under ``checkpoint_path_in_repo/``. ``card`` is the card's text or
    the path of a README.md. Returns the ``CommitInfo``."""
    operations = [CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=path)
                  for path in student_files(folder)]
    card_bytes = Path(card).read_bytes() if isinstance(card, Path) else card.encode("utf-8")
    operations.append(CommitOperationAdd(path_in_repo=README, path_or_fileobj=card_bytes))
    if checkpoint is not None:
        root = Path(checkpoint)
        prefix = (checkpoint_path_in_repo or root.name).strip("/")
        operations += [
            CommitOperationAdd(path_in_repo=f"{prefix}/{path.relative_to(root).as_posix()}", path_or_fileobj=path)
            for path in sorted(root.rglob("*")) if path.is_file()
        ]
    api = HfApi(token=token, library_name="hf_distill", library_version=__version__)
    return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)


def push_student_to_hub(
    output_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload distilled depth student",
) -> str:
    """Create (or reuse) the model repo and upload the student folder in one commit: config, weights, processor,
    README.md card and the ONNX export in ``onnx/`` when there is one, nothing else (Trainer checkpoints,
    ``student_*.safetensors`` exports, logs and visualisations stay local). Returns the commit URL."""
    output_dir = Path(output_dir)
    if not (output_dir / README).is_file():
        raise FileNotFoundError(f"{output_dir / README} not found: write the student's card first")
    student_files(output_dir)  # fails before the repo is created
    api = HfApi(token=token, library_name="hf_distill", library_version=__version__)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = upload_student(repo.repo_id, output_dir, output_dir / README, token=token, revision=revision,
                            commit_message=commit_message)
    return str(commit.commit_url)
