#!/usr/bin/env python
"""Render model_cards/: the card each shipped recipe publishes, from its YAML, with the trainer's own card code.

    python scripts/render_model_cards.py            # rewrite model_cards/*.md
    python scripts/render_model_cards.py --check    # exit 1 when a card is out of date with its recipe or template

Each card is what the recipe's README command writes as the student's README.md before training-time results
exist (``hf_distill.training.card``): teachers, initial weights, data, licence and hyper-parameters come from the
arguments alone, so nothing is downloaded and no weights are loaded.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from hf_distill.training.cli import parse_distill_args
from hf_distill.training.card import CardInfo, build_student_card, card_model_name

CARDS_DIR = Path(__file__).resolve().parents[1] / "model_cards"

# Recipe -> the command line of the README that trains and publishes it (after `scripts/distill.py`).
RECIPES: dict[str, list[str]] = {
    "demo": ["--config", "demo"],  # what `python scripts/distill.py` trains (output/demo/)
    "nyu": ["--config", "nyu", "--dataset_dir", "data/nyu", "--push_to_hub",
            "--hub_model_id", "you/dav2-base-nyu-distilled"],
    "sa1b_multiteacher": ["--config", "sa1b_multiteacher", "--dataset_dir", "/data/sa1b", "--push_to_hub",
                          "--hub_model_id", "you/dav2-base-sa1b-distilled"],
}


def recipe_arguments(name: str):
    """The three argument dataclasses of a recipe's README command."""
    # The recipes ask for bf16, which TrainingArguments checks against this machine; the card does not depend on it.
    return parse_distill_args([*RECIPES[name], "--use_cpu"])


def render_recipe_card(name: str) -> str:
    """The card text of recipe ``name`` (a key of ``RECIPES``)."""
    model_args, data_args, args = recipe_arguments(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the licence warnings are meant for training runs
        card = build_student_card(CardInfo.from_arguments(model_args, data_args, args), args,
                                  model_name=card_model_name(args))
    return str(card)


def recipe_names() -> list[str]:
    return list(RECIPES)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a card differs")
    args = parser.parse_args(argv)
    stale = []
    for name in recipe_names():
        path = CARDS_DIR / f"{name}.md"
        text = render_recipe_card(name)
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path.relative_to(CARDS_DIR.parent)}")
    if args.check and stale:
        print("out of date: " + ", ".join(str(p.relative_to(CARDS_DIR.parent)) for p in stale) +
              " (run python scripts/render_model_cards.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
