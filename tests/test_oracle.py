"""Oracle teachers (hf_distill.oracle): each flaw on a hand-built scene, the teacher interface, and the exact depth of
the views handed to them (same crops as the images), refused on data without exact depth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from hf_distill.data import ViewSampler, collate_views
from hf_distill.data.sources import load_generated_scenes
from hf_distill.oracle import OracleSpec, biased_region, degrade, exact_disparity, parse_oracle_spec
from hf_distill.teachers import OracleTeacher, build_teacher, teacher_family, teacher_needs_depth
from hf_distill.training.arguments import DataArguments, DistillationArguments
from hf_distill.training.data import build_training_source


def checker_depth(side: int, cell: int, near: float = 2.0, far: float = 4.0) -> torch.Tensor:
    """(1, side, side) depth: a checkerboard of `cell`-pixel squares at two depths."""
    index = torch.arange(side) // cell
    return torch.where((index[:, None] + index[None, :]) % 2 == 0, near, far)[None].float()


# ---- the spec ----------------------------------------------------------------------------------------------


def test_spec_parses_every_flaw_and_prints_back():
    spec = parse_oracle_spec("oracle:resolution=28,affine=0.5,bias=far:0.8,split=2.5,noise=0.02,seed=3")
    assert spec == OracleSpec(resolution=28, affine=0.5, bias="far", bias_strength=0.8, split=2.5, noise=0.02, seed=3)
    assert parse_oracle_spec(str(spec)) == spec
    assert parse_oracle_spec("oracle") == OracleSpec() and str(OracleSpec()) == "oracle"
    assert parse_oracle_spec("oracle:bias=near").bias_strength == 1.0


@pytest.mark.parametrize("name, part", [("oracle:blur=3", "blur=3"), ("oracle:resolution=0", "resolution=0"),
                                        ("oracle:bias=left:1", "bias=left:1"), ("oracle:bias=far:2", "bias=far:2"),
                                        ("oracle:noise", "noise"), ("oracle:affine=-1", "affine=-1")])
def test_bad_spec_names_its_part(name, part):
    with pytest.raises(ValueError, match=f"'{part}'"):
        parse_oracle_spec(name)


# ---- each flaw on a hand-built scene ----------------------------------------------------------------------------


def test_no_flaw_is_exact_disparity_and_invalid_depth_stays_zero():
    depth = torch.tensor([[[2.0, 4.0], [0.0, float("inf")]]])
    assert torch.equal(degrade(depth, OracleSpec()), torch.tensor([[[0.5, 0.25], [0.0, 0.0]]]))


def test_resolution_limit_loses_fine_detail_that_a_zoomed_patch_shows():
    spec = OracleSpec(resolution=16)
    view = checker_depth(64, cell=2)  # detail of 2 pixels: finer than view / input = 4 pixels
    exact = exact_disparity(view)
    seen = degrade(view, spec)
    assert seen.shape == view.shape
    assert seen.std() < 0.05 * exact.std()  # the checker is gone: about its mean everywhere
    assert seen.mean().item() == pytest.approx(exact.mean().item(), rel=1e-4)
    # The same 8x8 corner zoomed 8x (as a local patch is): 16-pixel cells, coarser than 4, survive.
    patch = view[:, :8, :8].repeat_interleave(8, 1).repeat_interleave(8, 2)
    patch_seen = degrade(patch, spec)
    assert patch_seen.std() > 0.6 * exact_disparity(patch).std()
    assert torch.equal(patch_seen > 0.375, exact_disparity(patch) > 0.375)  # every cell on its side of the mean
    # A coarse scene at the input size itself is kept exactly.
    assert torch.allclose(degrade(checker_depth(16, cell=4), spec), exact_disparity(checker_depth(16, cell=4)))


def test_affine_gives_each_view_its_own_scale_and_shift():
    depth = (torch.rand(6, 20, 20, generator=torch.Generator().manual_seed(0)) * 5 + 1)
    exact = exact_disparity(depth)
    seen = degrade(depth, OracleSpec(affine=0.5), torch.Generator().manual_seed(1))
    scales, shifts = [], []
    for d, s in zip(exact, seen):
        design = torch.stack([d.flatten(), torch.ones(d.numel())], 1).double()
        solution = torch.linalg.lstsq(design, s.flatten().double()[:, None]).solution
        assert torch.allclose(design @ solution, s.flatten().double()[:, None], atol=1e-5)  # exactly affine
        scale, shift = solution[:, 0]
        scales.append(float(scale))
        shifts.append(float(shift) / float(d.mean()))
    assert all(math.exp(-0.5) - 1e-5 <= s <= math.exp(0.5) + 1e-5 for s in scales)
    assert all(abs(t) <= 0.5 + 1e-5 for t in shifts)
    assert len({round(s, 4) for s in scales}) == 6 and np.std(np.log(scales)) > 0.1  # one draw per view


@pytest.mark.parametrize("region", ["far", "near"])
def test_regional_bias_flattens_only_its_region(region):
    depth = torch.tensor([[[1.0, 2.0, 4.0, 8.0]]])  # split 3 m: near 1 and 2 m, far 4 and 8 m
    exact = exact_disparity(depth)
    seen = degrade(depth, parse_oracle_spec(f"oracle:bias={region}:0.75,split=3"))
    mask = biased_region(depth, parse_oracle_spec(f"oracle:bias={region},split=3"))
    assert mask.tolist() == [[[False, False, True, True]]] if region == "far" else [[[True, True, False, False]]]
    assert torch.equal(seen[~mask], exact[~mask])
    c = 1.0 / 3.0
    assert torch.allclose(seen[mask], c + 0.25 * (exact[mask] - c))
    flat = degrade(depth, parse_oracle_spec(f"oracle:bias={region}:1,split=3"))
    assert torch.allclose(flat[mask], torch.full_like(flat[mask], c))  # strength 1: a plane at the split


def test_far_and_near_teachers_are_wrong_on_disjoint_regions():
    depth = torch.linspace(0.5, 10.0, 400).reshape(1, 20, 20)
    far, near = parse_oracle_spec("oracle:bias=far:1"), parse_oracle_spec("oracle:bias=near:1")
    exact = exact_disparity(depth)
    wrong_far = (degrade(depth, far) - exact).abs() > 1e-6
    wrong_near = (degrade(depth, near) - exact).abs() > 1e-6
    assert wrong_far.any() and wrong_near.any() and not (wrong_far & wrong_near).any()


def test_noise_is_per_pixel_with_the_spec_strength():
    depth = torch.full((4, 64, 64), 2.0)
    seen = degrade(depth, OracleSpec(noise=0.1), torch.Generator().manual_seed(0))
    relative = seen / 0.5 - 1.0
    assert relative.std().item() == pytest.approx(0.1, rel=0.03) and abs(float(relative.mean())) < 0.003
    neighbours = torch.corrcoef(torch.stack([relative[..., :-1].flatten(), relative[..., 1:].flatten()]))[0, 1]
    assert abs(float(neighbours)) < 0.02  # independent pixels


def test_flaws_combine_in_order_bias_resolution_noise_affine():
    depth = checker_depth(32, cell=8) * torch.linspace(0.5, 2.0, 32)[None, None, :]
    spec = parse_oracle_spec("oracle:bias=far:0.5,resolution=8,noise=0.05,affine=0.3,seed=4")
    got = degrade(depth, spec, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    step = degrade(depth, OracleSpec(bias="far", bias_strength=0.5, resolution=8))
    step = step * (1.0 + 0.05 * torch.randn(step.shape, generator=g))
    u, v = torch.rand((2, 1), generator=g) * 2.0 - 1.0
    assert torch.allclose(got, step * torch.exp(0.3 * u) + 0.3 * v * step.mean(), atol=1e-6)


# ---- the teacher ---------------------------------------------------------------------------------------------


def test_oracle_teacher_is_a_declared_family_that_reads_depth():
    teacher = build_teacher("oracle:noise=0.1,seed=2")
    assert isinstance(teacher, OracleTeacher) and teacher.needs_depth and teacher.token_width is None
    assert teacher_family("oracle:noise=0.1").needs_depth and teacher_family("oracle").needs_depth
    assert teacher_needs_depth("oracle:resolution=28") and teacher_needs_depth("oracle")
    assert not teacher_needs_depth("demo-teacher") and not teacher_needs_depth("genpercept-disparity")
    views, depth = torch.rand(2, 3, 8, 8), torch.full((2, 8, 8), 4.0)
    disparity, tokens = teacher(views, depth=depth)
    assert disparity.shape == (2, 8, 8) and tokens is None
    again, _ = build_teacher("oracle:noise=0.1,seed=2")(views, depth=depth)
    assert torch.equal(disparity, again)  # the spec's seed fixes the draws
    with pytest.raises(ValueError, match="needs the exact depth"):
        teacher(views)
    with pytest.raises(ValueError, match="does not match"):
        teacher(views, depth=depth[:, :4])
    with pytest.raises(ValueError, match="no weights"):
        build_teacher("oracle", checkpoint="weights.safetensors")
    with pytest.raises(ValueError, match="encoder tokens"):
        teacher(views, want_tokens=True, depth=depth)


def test_oracle_refused_on_data_without_exact_depth(tmp_path):
    data = DataArguments(dataset_dir=str(tmp_path), dataset_format="images")
    with pytest.raises(ValueError, match="only generated scenes carry"):
        build_training_source(data, DistillationArguments(output_dir=str(tmp_path)), with_depth=True)
    sampler = ViewSampler(56, 56, 1, min_region=64, view_depth=True)
    with pytest.raises(ValueError, match="has no depth"):
        sampler(Image.new("RGB", (80, 64)), epoch=0, index=0)


# ---- the views' exact depth ------------------------------------------------------------------------------------


def test_view_depth_crops_have_the_image_crops_geometry():
    """An image that is its own depth map (grey level = depth code): the depth handed to the teacher must equal the
    views' pixels, for the global view and every patch, up to the image's 8-bit rounding."""
    rng = np.random.default_rng(0)
    cells = rng.uniform(1.0, 9.0, size=(12, 15))
    depth = np.kron(cells, np.ones((17, 17)))[:200, :250].astype(np.float32)  # sharp 17-pixel blocks
    image = Image.fromarray(np.round((depth - 1.0) / 8.0 * 255.0).astype(np.uint8)).convert("RGB")
    sampler = ViewSampler(56, 42, 3, min_region=100, min_local_crop=30, view_depth=True, reduced_decoding=False)
    for index in range(4):
        sample = sampler(image, depth, epoch=0, index=index)
        assert sample["view_depth"].shape == (56, 56) and sample["local_depth"].shape == (3, 42, 42)
        code = lambda d: (d - 1.0) / 8.0 * 255.0  # noqa: E731
        assert np.abs(code(sample["view_depth"]) - sample["global_view"][0] * 255.0).max() < 1.6
        assert np.abs(code(sample["local_depth"]) - sample["local_views"][:, 0] * 255.0).max() < 1.6
    batch = collate_views([sampler(image, depth, epoch=0, index=i) for i in range(2)])
    assert batch["view_depth"].shape == (2, 56, 56) and batch["local_depth"].shape == (2, 3, 42, 42)


def test_no_view_depth_unless_asked():
    scenes = load_generated_scenes(2, size=(64, 64))
    assert "depth" not in scenes[0]
    sample = ViewSampler(56, 56, 1, min_region=56)(scenes[0]["image"], epoch=0, index=0)
    assert "view_depth" not in sample and "local_depth" not in sample
    with_depth = load_generated_scenes(2, size=(64, 64), with_depth=True)
    sample = ViewSampler(56, 56, 1, min_region=56, view_depth=True)(with_depth[0]["image"], with_depth[0]["depth"],
                                                                    epoch=0, index=0)
    assert sample["view_depth"].min() > 0 and sample["local_depth"].shape == (1, 56, 56)


# ---- the trainer hands each view its own depth --------------------------------------------------------------


def test_trainer_gives_the_oracle_the_depth_of_each_view_it_sees(assets, tmp_path):
    """Global views and patches of different sizes (two teacher calls): each call gets the depth of exactly its views;
    with an images folder the oracle is refused before any model loads."""
    from hf_distill.training.cli import parse_distill_args
    from hf_distill.training.run import build_trainer

    argv = ["--config", "demo", "--teacher_models", "oracle", "--student_arch", str(assets["student"]),
            "--output_dir", str(tmp_path), "--generated_scene_size", "96", "96", "--num_generated_scenes", "4",
            "--global_crop_size", "56", "--local_crop_size", "42", "--min_region", "64", "--min_local_crop", "30",
            "--per_device_train_batch_size", "2", "--max_steps", "1", "--save_strategy", "no", "--visualize_steps",
            "0", "--report_to", "none"]
    trainer = build_trainer(*parse_distill_args(argv))
    batch = next(iter(trainer.get_train_dataloader()))
    teacher, calls = trainer.teachers[0], []
    forward = teacher.forward
    teacher.forward = lambda views, want_tokens=False, depth=None: calls.append((views, depth)) or forward(
        views, want_tokens, depth)
    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)
    (global_views, global_depth), (patches, patch_depth) = calls
    assert torch.equal(global_views, batch["global_view"]) and torch.equal(global_depth, batch["view_depth"])
    assert torch.equal(patches, batch["local_views"].flatten(0, 1))
    assert torch.equal(patch_depth, batch["local_depth"].flatten(0, 1))

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (96, 96)).save(images / "a.png")
    refused = argv[:argv.index("--generated_scene_size")] + ["--dataset_dir", str(images), "--dataset_format",
                                                               "images"]
    with pytest.raises(ValueError, match="only generated scenes carry"):
        build_trainer(*parse_distill_args(refused))


def test_a_model_folder_cannot_declare_itself_an_oracle(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "teacher_config.json").write_text('{"family": "oracle"}')
    with pytest.raises(ValueError, match="'family' must be one of genpercept-disparity"):
        teacher_family(str(tmp_path))
