"""model_cards/ holds the card each shipped recipe publishes, rendered by the trainer's card code from the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from conftest import load_file_module

ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_file_module(ROOT / "scripts" / "render_model_cards.py", "render_model_cards")


RENDER = _script()


@pytest.mark.parametrize("name", RENDER.recipe_names())
def test_card_is_up_to_date_with_its_recipe_and_the_template(name):
    path = ROOT / "model_cards" / f"{name}.md"
    assert path.read_text() == RENDER.render_recipe_card(name), (
        f"{path.relative_to(ROOT)} is out of date with its recipe (hf_distill/configs/) or the template: run "
        "python scripts/render_model_cards.py")


def test_cards_say_what_the_recipes_are():
    cards = {name: ModelCard.load(ROOT / "model_cards" / f"{name}.md") for name in RENDER.recipe_names()}
    demo, nyu, paper = cards["demo"], cards["nyu"], cards["sa1b_multiteacher"]
    assert demo.data.license == "apache-2.0" and demo.data.teachers == ["demo-teacher"] and demo.data.base_model is None
    assert nyu.data.model_name == "you/dav2-base-nyu-distilled" and nyu.data.license == "cc-by-nc-4.0"
    assert nyu.data.base_model == "depth-anything/Depth-Anything-V2-Base-hf"
    assert paper.data.teachers == ["depth-anything/Depth-Anything-V2-Large-hf", "genpercept-disparity"]
    assert "| `teacher_probabilities` | `[0.7, 0.3]` |" in paper.text
    assert "| `max_steps` | `20000` |" in paper.text and "| `num_train_epochs` | `30` |" in nyu.text
    for card in cards.values():
        assert "/data/" not in card.content and str(ROOT) not in card.content  # no path of any machine


def test_check_mode_reports_a_stale_card(tmp_path, monkeypatch, capsys):
    for name in RENDER.recipe_names():
        (tmp_path / f"{name}.md").write_text(RENDER.render_recipe_card(name))
    monkeypatch.setattr(RENDER, "CARDS_DIR", tmp_path)
    assert RENDER.main(["--check"]) == 0
    (tmp_path / "nyu.md").write_text("stale")
    assert RENDER.main(["--check"]) == 1 and "nyu.md" in capsys.readouterr().err
    assert RENDER.main([]) == 0 and (tmp_path / "nyu.md").read_text() == RENDER.render_recipe_card("nyu")
