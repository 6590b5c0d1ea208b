"""Model cards (licence rule, model-index, updates) and the Hub upload, without network."""

import warnings

import pytest
from huggingface_hub import ModelCard

from hf_distill.hub import build_model_card, existing_size_speed, push_student_to_hub, update_model_card

NYU = {"abs_rel": 0.05, "delta1": 0.97, "rmse": 0.2, "num_samples": 654}


def _index(card: ModelCard) -> dict:
    return {(e.dataset_type, e.metric_type): e.metric_value for e in card.data.eval_results or []}


def test_card_metadata_usage_and_citation(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # apache-2.0 sources: no licence warning
        card = build_model_card(
            model_name="me/student-small",
            base_model="depthanything-small",
            teachers=["depthanything-v1-large"],
            datasets=["someone/sa1b-subset"],
            data_text=["[someone/sa1b-subset](https://huggingface.co/datasets/someone/sa1b-subset)", "`scenes` (demo)"],
            hyperparameters={"lambda_lg": 0.5, "normalization": "hybrid"},
            eval_results={"nyu": NYU},
        )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.pipeline_tag == "depth-estimation" and data.library_name == "transformers"
    assert data.base_model == "depth-anything/Depth-Anything-V2-Small-hf"
    assert data.license == "apache-2.0"
    assert data.datasets == ["someone/sa1b-subset"]  # only Hub ids in the metadata; descriptions in the text
    assert data.teachers == ["LiheYoung/depth-anything-large-hf"]
    assert ("**Training data:** [someone/sa1b-subset](https://huggingface.co/datasets/someone/sa1b-subset), "
            "`scenes` (demo)") in loaded.text
    assert ("**Licence:** apache-2.0: the licence of the teacher depthanything-v1-large (apache-2.0) and the "
            "initial weights depthanything-small (apache-2.0).") in loaded.text
    assert _index(loaded) == {("nyu_depth_v2", "abs_rel"): 0.05, ("nyu_depth_v2", "delta1"): 0.97,
                              ("nyu_depth_v2", "rmse"): 0.2}
    assert all(e.task_type == "depth-estimation" for e in data.eval_results)
    text = loaded.text
    assert 'pipeline("depth-estimation", model="me/student-small")' in text
    assert 'AutoModelForDepthEstimation.from_pretrained("me/student-small")' in text
    assert "[LiheYoung/depth-anything-large-hf](https://huggingface.co/LiheYoung/depth-anything-large-hf)" in text
    assert "| `lambda_lg` | `0.5` |" in text
    assert "| NYUv2 | 0.0500 |" in text
    assert "arXiv:2502.19204" in text and "Distill Any Depth: Distillation Creates a Stronger" in text


@pytest.mark.parametrize("teacher", ["depthanything-large", "depth-anything/Depth-Anything-V2-Base-hf"])
def test_non_commercial_teacher_makes_the_student_non_commercial(teacher):
    with pytest.warns(UserWarning, match="non-commercial.*instead of the requested mit"):
        card = build_model_card(model_name="s", base_model="depthanything-small", teachers=[teacher], license="mit")
    assert card.data.license == "cc-by-nc-4.0"
    # The card names the source that constrains the licence, and why.
    assert f"**Licence:** cc-by-nc-4.0: non-commercial, set by the teacher {teacher} (cc-by-nc-4.0): a model " \
           "distilled from another's predictions or initialised from its weights is a derived work" in card.text


def test_non_commercial_initial_weights_and_local_folders(tmp_path):
    with pytest.warns(UserWarning, match="depthanything-base is licensed cc-by-nc-4.0"):
        card = build_model_card(model_name="s", base_model="depthanything-base", teachers=["depthanything-small"])
    assert card.data.license == "cc-by-nc-4.0" and card.data.base_model == "depth-anything/Depth-Anything-V2-Base-hf"
    # A local teacher folder is known by its own card's licence and named by its folder name, never its path.
    teacher = tmp_path / "my-teacher"
    teacher.mkdir()
    (teacher / "README.md").write_text("---\nlicense: apache-2.0\n---\n# teacher\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        card = build_model_card(model_name="s", base_model=None, teachers=[str(teacher)])
    assert card.data.license == "apache-2.0" and card.data.teachers == ["my-teacher"]
    assert "**Teachers:** `my-teacher`" in card.text and str(tmp_path) not in str(card)


def test_licence_kept_or_unknown():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        card = build_model_card(model_name="s", base_model=None, teachers=["depthanything-small"], license="mit")
    assert card.data.license == "mit"
    with pytest.warns(UserWarning, match="distill-any-depth-small.*unknown"):
        card = build_model_card(model_name="s", base_model=None, teachers=["distill-any-depth-small"])
    assert card.data.license is None


def test_distill_any_depth_large_genpercept_and_sa1b_terms_reach_the_card(tmp_path):
    with pytest.warns(UserWarning, match="instead of the requested apache-2.0"):
        card = build_model_card(model_name="s", base_model="depthanything-small", license="apache-2.0",
                                teachers=["distill-any-depth-large"])
    assert card.data.license == "cc-by-nc-4.0"
    assert "initialised from Depth Anything V2 Large (CC-BY-NC-4.0); its relicensing is disputed" in card.text
    # GenPercept (alias, or a local folder declaring its family) is academic-only: never a permissive licence.
    folder = tmp_path / "gp"
    folder.mkdir()
    (folder / "teacher_config.json").write_text('{"family": "genpercept-disparity"}')
    for teacher in ("genpercept-disparity", str(folder)):
        with pytest.warns(UserWarning, match="instead of the requested mit"):
            card = build_model_card(model_name="s", base_model="depthanything-small", teachers=[teacher],
                                    license="mit", data_text=["`sa1b` (webdataset shards)"])
        assert card.data.license == "other"
        assert "non-commercial academic use only" in card.text
        assert "Training data: SA-1B (Segment Anything 1B) is released for research purposes only" in card.text


def test_update_creates_then_merges_and_keeps_existing_text(tmp_path):
    with pytest.warns(UserWarning, match="unknown"):  # a new card knows no teachers
        update_model_card(tmp_path, {"nyu": NYU})
    card = ModelCard.load(tmp_path / "README.md")
    assert _index(card)[("nyu_depth_v2", "abs_rel")] == 0.05
    card.text += "\n## Notes\n\nHand-written remark.\n"
    card.save(tmp_path / "README.md")

    update_model_card(tmp_path, {"nyu": {"abs_rel": 0.04}, "kitti": {"abs_rel": 0.08, "delta1": 0.93}})
    card = ModelCard.load(tmp_path / "README.md")
    index = _index(card)
    assert index[("nyu_depth_v2", "abs_rel")] == 0.04  # replaced
    assert index[("nyu_depth_v2", "delta1")] == 0.97  # kept
    assert index[("kitti", "delta1")] == 0.93  # added
    assert len(card.data.eval_results) == 5
    assert "Hand-written remark." in card.text
    assert "| NYUv2 | 0.0400 | 0.2000 | 0.9700 |" in card.text  # table regenerated, metric order kept
    assert card.text.count("<!-- hf_distill:evaluation:start -->") == 1


def test_update_appends_section_to_foreign_card(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\ntags:\n- mine\n---\n\n# My model\n\nSome text.\n")
    update_model_card(tmp_path, {"scannet": {"abs_rel": 0.1}})
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "mit" and card.data.tags == ["mine"]
    assert _index(card) == {("scannet", "abs_rel"): 0.1}
    assert card.text.startswith("\n# My model\n\nSome text.") or "# My model\n\nSome text." in card.text
    assert "## Evaluation" in card.text and "| ScanNet | 0.1000 |" in card.text
    with pytest.raises(FileNotFoundError, match="missing"):
        update_model_card(tmp_path / "missing", {"nyu": NYU})


def test_size_and_speed_section_is_replaced_and_kept_across_renders(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        card = build_model_card(model_name="s", base_model=None, teachers=["depthanything-small"])
    card.save(tmp_path / "README.md")
    assert "## Size and speed" in card.text and existing_size_speed(tmp_path) is None  # the placeholder
    update_model_card(tmp_path, {"nyu": NYU}, size_speed="| model | parameters |\n| --- | --- |\n| s | 0.36M |")
    update_model_card(tmp_path, {"nyu": NYU}, size_speed="| model | parameters |\n| --- | --- |\n| s | 0.30M |")
    update_model_card(tmp_path, {"nyu": NYU})  # accuracy only: the section stays
    text = (tmp_path / "README.md").read_text()
    assert text.count("<!-- hf_distill:size-speed:start -->") == 1 and "0.36M" not in text
    assert existing_size_speed(tmp_path) == "| model | parameters |\n| --- | --- |\n| s | 0.30M |"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rendered = build_model_card(model_name="s", base_model=None, teachers=["depthanything-small"],
                                    size_speed=existing_size_speed(tmp_path))
    assert "| s | 0.30M |" in rendered.text and "Not measured yet." not in rendered.text


def test_push_uploads_exactly_the_student_folder(tmp_path, fake_hub):
    with pytest.raises(FileNotFoundError, match="README.md"):
        push_student_to_hub(tmp_path, "me/student")
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# card\n")
    with pytest.raises(FileNotFoundError, match="config.json"):
        push_student_to_hub(tmp_path, "me/student")
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "training_args.bin",
                 "student_final.safetensors", "student_checkpoint_2.safetensors", "train.log"):
        (tmp_path / name).write_text(name)
    for name in ("checkpoint-2/model.safetensors", "visualizations/step_0000002.png", "runs/events"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    url = push_student_to_hub(tmp_path, "me/student", token="t", private=True)
    assert fake_hub.repos == ["me/student"]
    [commit] = fake_hub.commits
    assert url.startswith("https://huggingface.co/me/student/commit/")
    assert commit["paths"] == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert commit["files"]["README.md"] == (tmp_path / "README.md").read_bytes()
