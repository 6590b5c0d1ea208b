"""The command line of ``scripts/distill.py``: config files (or shipped recipes by name), the seed
re-implementation's flag names, and ``HfArgumentParser`` over the three argument dataclasses.

The flag names of the seed re-implementation (``--batch_size``, ``--lr``, ``--num_iterations``, ...) are translated
onto the fields by :func:`translate_seed_flags`; a ``--config`` file's values are overridden by the other flags.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from hf_distill.training.arguments import DataArguments, DistillationArguments, ModelArguments, validate_arguments

logger = logging.getLogger(__name__)

# Seed re-implementation flag -> HF field. `--use_nyu_dataset` and `--num_segments` need a value transform.
SEED_FLAG_NAMES = {
    "batch_size": "per_device_train_batch_size",
    "lr": "learning_rate",
    "num_iterations": "max_steps",
    "num_epochs": "num_train_epochs",
    "checkpoint_interval": "save_steps",
}


def _num_segments_to_levels(value: str | int) -> int:
    segments = int(value)
    if segments < 1 or segments & (segments - 1):
        raise ValueError(f"--num_segments must be a power of two (1, 2, 4, ...), got {value}.")
    return int(math.log2(segments)) + 1


def translate_seed_flags(argv: list[str]) -> list[str]:
    """Rewrite the seed's flag names onto the HF fields (``--batch_size 8`` -> ``--per_device_train_batch_size 8``).

    ``--use_nyu_dataset`` becomes ``--dataset_format nyu``; ``--num_segments N`` (a power of two, the number of
    contexts of the finest level) becomes ``--hdn_levels log2(N)+1``. HF names pass through unchanged.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, inline = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if name == "use_nyu_dataset":
            out += ["--dataset_format", "nyu"]
        elif name == "num_segments":
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise ValueError("--num_segments needs a value.")
            out += ["--hdn_levels", str(_num_segments_to_levels(value))]
        elif name in SEED_FLAG_NAMES:
            new = "--" + SEED_FLAG_NAMES[name]
            out.append(f"{new}={inline}" if eq else new)
        else:
            out.append(token)
        i += 1
    return out


def translate_seed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The same translation for the keys of a YAML/JSON config file."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "use_nyu_dataset":
            if value:
                out["dataset_format"] = "nyu"
        elif key == "num_segments":
            out["hdn_levels"] = _num_segments_to_levels(value)
        else:
            out[SEED_FLAG_NAMES.get(key, key)] = value
    return out


# The shipped recipes (package data): `--config demo` works from any install.
RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs"


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``demo``, ``nyu``, ...)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A config file path as given, else a shipped recipe by name (``demo`` or ``demo.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    recipe = RECIPES_DIR / f"{path.stem}.yaml"
    if path.parent == Path(".") and path.suffix in ("", ".yaml") and recipe.is_file():
        return recipe
    raise FileNotFoundError(f"--config: no such file {path}, and no shipped recipe of that name "
                            f"(shipped: {', '.join(shipped_recipes())})")


def load_config_file(name_or_path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file, or a shipped recipe by name, into a flat dict of field names (seed names
    translated)."""
    path = resolve_config(name_or_path)
    with path.open() as handle:
        config = json.load(handle) if path.suffix == ".json" else yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise ValueError(f"--config {path}: expected a mapping of flag names to values at the top level.")
    return translate_seed_config(config)


def drop_recipe_weights_of_replaced_teachers(config: dict[str, Any], argv: list[str]) -> None:
    """A config file's ``teacher_sampling_weights`` are one per teacher of its ``teacher_models``: when the command
    line gives a different number of teachers and no weights of its own, the file's weights are dropped (teachers
    drawn uniformly), with a note, so that ``--config sa1b_multiteacher --teacher_models depthanything-large`` runs
    with one teacher. The same number of teachers (local copies of the recipe's, say) keeps the file's weights."""
    if config.get("teacher_sampling_weights") is None:
        return
    flags = {token[2:].partition("=")[0] for token in argv if token.startswith("--")}
    if "teacher_models" not in flags or "teacher_sampling_weights" in flags:
        return
    given: list[str] = []
    for at, token in enumerate(argv):
        if token.startswith("--teacher_models="):
            given = [token.partition("=")[2]]
        elif token == "--teacher_models":
            given = []
            for value in argv[at + 1:]:
                if value.startswith("--"):
                    break
                given.append(value)
    if len(given) == len(config["teacher_sampling_weights"]):
        return
    logger.info("--teacher_models gives %d teacher(s) where the config's --teacher_sampling_weights %s has %d: its "
                "weights are dropped and teachers are drawn uniformly (pass --teacher_sampling_weights to choose).",
                len(given), config["teacher_sampling_weights"], len(config["teacher_sampling_weights"]))
    del config["teacher_sampling_weights"]


class _RaisingParser(HfArgumentParser):
    """Argument errors become a ``ValueError`` (one line for the CLI) instead of a usage dump and ``sys.exit``."""

    def error(self, message: str):
        raise ValueError(message)


def parse_distill_args(
    argv: list[str],
) -> tuple[ModelArguments, DataArguments, DistillationArguments]:
    """Parse ``argv`` (without the program name): an optional ``--config FILE`` whose values the other flags
    override, seed flag names included. Raises ``ValueError`` on invalid combinations."""
    argv = list(argv)
    config: dict[str, Any] = {}
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ValueError("--config needs a file path.")
        config = load_config_file(argv[at + 1])
        del argv[at : at + 2]
    parser = _RaisingParser((ModelArguments, DataArguments, DistillationArguments))
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"--config: unknown keys {unknown}")
    drop_recipe_weights_of_replaced_teachers(config, argv)
    parser.set_defaults(**config)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(
        args=translate_seed_flags(argv), look_for_args_file=False
    )
    validate_arguments(model_args, data_args, training_args)
    return model_args, data_args, training_args
