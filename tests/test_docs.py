"""The documentation as a user meets it: every ```python snippet of README.md and docs/*.md runs against a tiny local
student, every relative link and anchor resolves, the site builds with `mkdocs build --strict`, the CLI reference is
the one the argument dataclasses generate, and no user document tells development history.

(The commands of the same documents are checked by tests/test_readme.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from transformers import DepthAnythingForDepthEstimation

from conftest import load_file_module

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
USER_DOCUMENTS = [ROOT / "README.md", *PAGES, ROOT / "BENCHMARKS.md", *sorted((ROOT / "model_cards").glob("*.md"))]
LINKED_DOCUMENTS = [*USER_DOCUMENTS, ROOT / "CHANGELOG.md", ROOT / "CONTRIBUTING.md",
                    *sorted((ROOT / "hf_distill").rglob("README.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def python_snippets(path: Path) -> list[tuple[str, str]]:
    """(where, code) of every ```python block of a Markdown file."""
    text = path.read_text()
    return [(f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 2}", m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


SNIPPETS = [snippet for path in [ROOT / "README.md", *PAGES] for snippet in python_snippets(path)]
CARD_SNIPPETS = [snippet for path in sorted((ROOT / "model_cards").glob("*.md")) for snippet in python_snippets(path)]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, assets) -> Path:
    """A working directory as the documents assume it: a trained student in output/mine (a tiny one, with its ONNX
    export) and photo.jpg (the shipped photograph, made small)."""
    folder = tmp_path_factory.mktemp("user")
    student = folder / "output" / "mine"
    shutil.copytree(assets["student"], student)
    photo = Image.open(ROOT / "hf_distill" / "assets" / "examples" / "coffee.jpg").convert("RGB").resize((80, 60))
    photo.save(folder / "photo.jpg")
    photo.save(folder / "image.jpg")  # the name the model cards' snippets use
    from hf_distill.export import export_onnx

    export_onnx(DepthAnythingForDepthEstimation.from_pretrained(student).eval(), student / "onnx" / "model.onnx")
    return folder


def test_the_documents_have_python_snippets():
    where = {w.split(":")[0] for w, _ in SNIPPETS}
    assert {"README.md", "docs/quickstart.md", "docs/deployment.md", "docs/evaluation.md"} <= where
    assert len(CARD_SNIPPETS) >= 6  # two per shipped recipe's card


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s[0])
def test_python_snippet_runs(snippet, user_folder, monkeypatch):
    where, code = snippet
    monkeypatch.chdir(user_folder)
    namespace: dict = {}
    exec(compile(code, where, "exec"), namespace)
    # What the snippets promise, where they define it: a map at the photograph's size, a pipeline's two outputs.
    if "disparity" in namespace:
        assert np.asarray(namespace["disparity"]).shape == (60, 80), where
    if isinstance(namespace.get("result"), dict):
        assert isinstance(namespace["result"]["depth"], Image.Image), where
        assert namespace["result"]["predicted_depth"].ndim == 2, where


@pytest.mark.parametrize("snippet", CARD_SNIPPETS, ids=lambda s: s[0])
def test_model_card_snippet_runs(snippet, user_folder, monkeypatch):
    """A card's snippets name its repository (``you/dav2-base-nyu-distilled``) or, for a local run, its folder
    (``demo``): a local folder of that name, next to the snippet, stands in for it."""
    where, code = snippet
    for name in set(re.findall(r'(?:model=|from_pretrained\(|model_id = )"([^"]+)"', code)):
        if not (user_folder / name).exists():
            shutil.copytree(user_folder / "output" / "mine", user_folder / name)
    monkeypatch.chdir(user_folder)
    exec(compile(code, where, "exec"), {})


# ---- links and anchors --------------------------------------------------------------------------------------------


def mkdocs_slug(heading: str) -> str:
    """Python-Markdown's toc slugify (what mkdocs uses)."""
    import unicodedata

    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def github_slug(heading: str) -> str:
    """The code host's anchors: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    return [re.sub(r"[`*]", "", m.group(1)).strip() for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*$", text, re.M)]


def test_slugs_match_the_two_renderers_on_known_headings():
    assert mkdocs_slug("Several GPUs (DDP)") == github_slug("Several GPUs (DDP)") == "several-gpus-ddp"
    assert mkdocs_slug("The paper's recipe") == "the-papers-recipe"
    assert mkdocs_slug("A & B") != github_slug("A & B")  # why headings avoid '&'


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    """Relative links of a Markdown file (outside code) whose file or heading anchor does not exist."""
    problems = []
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: outside the repository
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.relative_to(root)}: {target}: no such file")
            continue
        if anchor and linked.suffix == ".md":
            titles = headings(linked)
            if anchor not in {mkdocs_slug(t) for t in titles} or anchor not in {github_slug(t) for t in titles}:
                problems.append(f"{path.relative_to(root)}: {target}: no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("path", [p for p in LINKED_DOCUMENTS if p.exists()],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    assert link_problems(path) == []


def test_the_link_check_catches_a_missing_file_and_a_missing_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Some section\n\n[a](#some-section) [b](#nowhere) [c](missing.md)\n"
                    "[d](page.md#title) `[code](missing_too.md)`\n```\n[not a link](missing_too.md)\n```\n")
    problems = link_problems(page, root=tmp_path)
    assert problems == ["page.md: #nowhere: no heading with anchor #nowhere", "page.md: missing.md: no such file"]


# ---- the site -----------------------------------------------------------------------------------------------------


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_navigation_and_method_has_the_cited_sections():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert sorted(nav_pages(config["nav"])) == sorted(p.name for p in PAGES)
    sections = headings(DOCS / "method.md")
    for cited in ("Models and teachers", "Views", "Losses", "Training", "Data", "Evaluation protocol"):
        assert cited in sections, cited


def test_mkdocs_builds_the_site_in_strict_mode(tmp_path):
    pytest.importorskip("material", reason="mkdocs-material (the docs and dev extras)")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env={
                                **__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "method" / "index.html").is_file()
    assert (tmp_path / "site" / "assets" / "teacher_student.png").is_file()


def test_the_cli_reference_is_generated_from_the_argument_dataclasses():
    render = load_file_module(ROOT / "scripts" / "render_cli_reference.py", "render_cli_reference")
    assert (DOCS / "cli.md").read_text() == render.render(), "run python scripts/render_cli_reference.py"
    from hf_distill.training.arguments import DataArguments, ModelArguments

    text = (DOCS / "cli.md").read_text()
    for cls in (ModelArguments, DataArguments):
        for field in cls.__dataclass_fields__:
            assert f"`--{field}`" in text, field


def test_the_picture_script_puts_photograph_teacher_and_student_side_by_side(tmp_path):
    script = load_file_module(ROOT / "scripts" / "render_readme_picture.py", "render_readme_picture")
    output = tmp_path / "picture.png"
    assert script.main(["--student", "demo-teacher", "--output", str(output), "--width", "120"]) == 0
    with Image.open(output) as picture:
        assert picture.size == (3 * 120 + 2 * 2, 80)  # three 120x80 panels (the photograph is 600x400), 2-pixel gaps
        panels = [np.asarray(picture.convert("RGB"))[40:, x:x + 120] for x in (0, 122, 244)]
    assert np.abs(panels[1].astype(int) - panels[2].astype(int)).max() <= 1  # the same model twice: the same colours
    assert np.abs(panels[0].astype(int) - panels[1].astype(int)).mean() > 20  # the photograph is not a depth map


def test_the_readme_picture_is_small_and_committed():
    picture = DOCS / "assets" / "teacher_student.png"
    assert picture.stat().st_size < 300_000
    with Image.open(picture) as image:
        assert image.width >= 3 * 100 and image.height >= 100  # photograph | teacher | student


# ---- history stays out of the user documents ----------------------------------------------------------------------

HISTORY = re.compile(r"\bissues? \d+\b|\bthis round\b|\brounds? of issues\b|\bafter issues\b|\bpilot"
                     r"|\bcommit [0-9a-f]{7,40}\b|\(\s*[0-9a-f]{7,40}\s*\)|\bgit show [0-9a-f]{7}", re.I)


@pytest.mark.parametrize("path", USER_DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_documents_tell_no_development_history(path):
    found = [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for text in [path.read_text()] for m in HISTORY.finditer(text)]
    assert found == []


def test_the_history_pattern_catches_what_it_should():
    for text in ("measured after issues 19-22", "the code before this round (49a91f1)", "issue 21 fixed it",
                 "Two pilot seeds"):
        assert HISTORY.search(text), text
    for text in ("the authors' issues #32 and #40", "rounded to 4 decimals"):
        assert not HISTORY.search(text), text


@pytest.mark.parametrize("path", LINKED_DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_cite_the_method_inside_the_repository(path):
    """The method is docs/method.md: no document points at a design file outside the checkout."""
    if path.exists():
        assert not re.search(r"DESIGN\.md|\.\./shared/", path.read_text()), path
