"""A distilled student's licence, from the licences of its teachers and initial weights."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import ModelCard

from hf_distill.hub.names import README, display_name
from hf_distill.models import resolve_model_name
from hf_distill.repositories import NON_COMMERCIAL, Repository, repository


def _source_repository(name: str) -> Repository | None:
    """The table entry of a teacher / base model: an alias or Hub id, or a local GenPercept folder (its
    teacher_config.json family: the folder holds GenPercept's weights)."""
    path = Path(resolve_model_name(name))
    if path.is_dir():
        config = path / "teacher_config.json"
        if not config.is_file():
            return None
        try:
            return repository(json.loads(config.read_text()).get("family", ""))
        except json.JSONDecodeError:
            return None
    return repository(name) or repository(str(path))


def known_license(name: str) -> str | None:
    """The licence a model is published under: the table's (``hf_distill.repositories``) for aliases and Hub ids,
    the ``license`` of a local folder's own README.md card (else its GenPercept family's); None when unknown."""
    path = Path(resolve_model_name(name))
    if path.is_dir() and (path / README).is_file():  # a local folder, or a model shipped in the package
        return ModelCard.load(path / README).data.license
    repo = _source_repository(name)
    return repo.license if repo is not None else None


def _non_commercial(name: str, declared: str | None) -> bool:
    repo = _source_repository(name)
    return declared == NON_COMMERCIAL or (repo is not None and repo.non_commercial and declared == repo.license)


def resolve_license(
    teachers: Sequence[str], base_model: str | None, license: str | None
) -> tuple[str | None, str]:
    """The student's licence given the teachers and the initial weights it derives from, and why.

    A non-commercial source makes the student non-commercial whatever ``license`` asks (with a warning): a
    CC-BY-NC-4.0 source makes it cc-by-nc-4.0; GenPercept (non-commercial academic terms, not a CC licence) makes it
    ``other``. Each restricting source's reason is on the card. Otherwise ``license`` is kept; without one, the
    sources' licence when they all share a known one, else None (with a warning asking for an explicit licence).

    Returns:
        ``(licence or None, a sentence for the card saying which source constrains it and why)``.
    """
    roles = {name: "the teacher" for name in teachers}
    if base_model:
        roles[base_model] = "the teacher and initial weights" if base_model in roles else "the initial weights"
    declared = {name: known_license(name) for name in roles}

    def named(names: list[str]) -> str:
        return " and ".join(f"{roles[n]} {display_name(n)} ({declared[n] or 'licence unknown'})" for n in names)

    restricted = [name for name, value in declared.items() if _non_commercial(name, value)]
    if restricted:
        # A licence other than CC-BY-NC (GenPercept's academic terms) is stricter: the student says `other`.
        resolved = NON_COMMERCIAL if all(declared[n] == NON_COMMERCIAL for n in restricted) else "other"
        message = (
            f"{', '.join(display_name(n) for n in restricted)} is licensed "
            f"{' / '.join(sorted({declared[n] for n in restricted}))}: the distilled student is for non-commercial "
            f"use only and its card declares {resolved}"
        )
        if license not in (None, resolved):
            message += f" (instead of the requested {license})"
        warnings.warn(message, UserWarning, stacklevel=3)
        reasons = list(dict.fromkeys(repo.license_reason for n in restricted  # one sentence per distinct reason
                                     if (repo := _source_repository(n)) is not None and declared[n] == repo.license))
        return resolved, (
            f"non-commercial, set by {named(restricted)}: a model distilled from another's predictions or initialised "
            "from its weights is a derived work and keeps its non-commercial terms."
            + (f" ({'; '.join(reasons)}.)" if reasons else "")
        )
    if license is not None:
        return license, f"declared for this model (sources: {named(list(roles))})." if roles else \
            "declared for this model."
    values = set(declared.values())
    if roles and len(values) == 1 and None not in values:
        return values.pop(), f"the licence of {named(list(roles))}."
    unknown = [name for name, value in declared.items() if value is None]
    names = ", ".join(display_name(n) for n in unknown) or "the student's sources"
    warnings.warn(f"the licence of {names} is unknown: pass --license (license=) to declare one", UserWarning,
                  stacklevel=3)
    return None, f"not declared: the licence of {names} is unknown (declare one with `--license`)."
