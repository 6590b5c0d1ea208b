"""Losses of docs/method.md (Losses) against plain loop-by-loop references, invariances, geometry and gradients."""

import itertools
import math

import pytest
import torch

from hf_distill.losses import (
    CONTEXT_FAMILIES,
    ContextFamily,
    DistillationLoss,
    FeatureProjector,
    crop_boxes,
    feature_alignment_loss,
    gradient_matching_loss,
    local_global_loss,
    normalize_global,
    normalized_l1,
    shared_context_loss,
)
from hf_distill.losses import median_mad
from hf_distill.losses.median_mad import TeacherValues


@pytest.fixture(params=["cpu", "static"], autouse=True)
def engine_shapes(request, monkeypatch):
    """Every test runs on the CPU engine and on the accelerator path's fixed shapes (forced here on CPU)."""
    monkeypatch.setattr(median_mad, "STATIC_SHAPES", request.param == "static")


# ----------------------------------------------------------------------------------------------------------
# Reference: one image, one context at a time, torch.median and explicit masks.


def reference_contexts(t: torch.Tensor, valid: torch.Tensor, variant: str, level: int) -> list[torch.Tensor]:
    """(H, W) bool masks of the contexts of one image at one HDN level."""
    height, width = t.shape
    n = 2**level
    if variant == "ds":
        masks = []
        for i in range(n):
            for j in range(n):
                cell = torch.zeros(height, width, dtype=torch.bool)
                cell[i * height // n : (i + 1) * height // n, j * width // n : (j + 1) * width // n] = True
                masks.append(cell & valid)
        return masks
    if variant == "rows":  # the family registered by test_a_new_context_family_is_one_function_and_one_entry
        masks = []
        for i in range(n):
            band = torch.zeros(height, width, dtype=torch.bool)
            band[i * height // n : (i + 1) * height // n] = True
            masks.append(band & valid)
        return masks
    values = t[valid]
    if values.numel() == 0:
        return []
    if variant == "dr":
        low, high = values.min(), values.max()
        edges = [low + (high - low) * (i / n) for i in range(n + 1)]
    else:
        edges = [torch.quantile(values, i / n) for i in range(n + 1)]
    masks = []
    for i in range(n):
        inside = valid & (t >= edges[i])
        if i < n - 1:  # the top bin keeps the max
            inside &= t < edges[i + 1]
        masks.append(inside)
    return masks


def reference_normalize(x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    values = x[context]
    median = values.median()
    mad = (values - median).abs().mean()
    return (x - median) / (mad + 1e-6)


def reference_loss(student, teacher, mask, normalization, variant, levels) -> torch.Tensor:
    if mask is None:
        mask = torch.ones_like(student, dtype=torch.bool)
    if normalization == "none":
        return (student - teacher).abs()[mask].sum() / mask.sum().clamp(min=1)
    chosen = {"global": [0], "local": [levels - 1], "hybrid": list(range(levels))}[normalization]
    total = student.new_zeros(())
    for b in range(student.shape[0]):
        error_sum = torch.zeros_like(student[b])
        contexts_per_pixel = torch.zeros_like(student[b])
        for level in chosen:
            for context in reference_contexts(teacher[b], mask[b], variant, level):
                if not context.any():
                    continue
                error = (reference_normalize(student[b], context) - reference_normalize(teacher[b], context)).abs()
                error_sum = error_sum + torch.where(context, error, 0.0)
                contexts_per_pixel = contexts_per_pixel + context
        total = total + (error_sum[mask[b]] / contexts_per_pixel[mask[b]]).sum()
    return total / mask.sum().clamp(min=1)


def make_case(name: str, seed: int = 0):
    """(student, teacher, mask) on non-square 3 x 19 x 27 maps."""
    g = torch.Generator().manual_seed(seed)
    shape = (3, 19, 27)
    teacher = torch.exp(2.0 * torch.randn(shape, generator=g))  # skewed
    student = teacher + 0.5 * torch.randn(shape, generator=g)
    mask = torch.rand(shape, generator=g) > 0.3  # holes
    if name == "ties":
        teacher = torch.round(teacher * 2) / 2
        student = torch.round(student * 2) / 2
    elif name == "nearly_empty":
        mask[1] = False
        mask[1, 3, 4] = mask[1, 10, 20] = mask[1, 18, 0] = True
        mask[2] = False
        mask[2, 7, 7] = True
    elif name == "no_mask":
        mask = None
    elif name == "on_edges":  # integer teacher 0..8: range and quantile bin edges fall on pixel values
        teacher = torch.randint(0, 9, shape, generator=g).float()
        teacher[:, 0, 0], teacher[:, 0, 1] = 0.0, 8.0
    elif name == "wide_range":  # mixed signs and many octaves
        student = torch.sinh(6.0 * torch.randn(shape, generator=g)) * 1e3
        teacher = -teacher * 1e4 + 3.0
    return student, teacher, mask


CASES = ["holes", "ties", "on_edges", "nearly_empty", "no_mask", "wide_range"]
STRATEGIES = list(itertools.product(["none", "global", "local", "hybrid"], ["dr", "dp", "ds"], [1, 2, 3]))


@pytest.mark.parametrize("case", CASES)
def test_normalized_l1_matches_loop_reference(case):
    student, teacher, mask = make_case(case)
    for normalization, variant, levels in STRATEGIES:
        ours = normalized_l1(
            student, teacher, mask, normalization=normalization, hdn_variant=variant, hdn_levels=levels
        )
        expected = reference_loss(student, teacher, mask, normalization, variant, levels)
        assert ours.dtype == torch.float32
        torch.testing.assert_close(
            ours, expected, rtol=1e-5, atol=1e-6, msg=f"{case} {normalization}/{variant}/{levels}"
        )


def row_bands(teacher: TeacherValues, side: int) -> torch.Tensor:
    """A context family for the registry test: ``side`` bands of rows, split like the ``ds`` grid's rows."""
    batch, height, width = teacher.maps.shape
    band = torch.empty(height, dtype=torch.int32)
    for i in range(side):
        band[i * height // side : (i + 1) * height // side] = i
    return band[:, None].expand(height, width).reshape(1, -1).expand(batch, -1)


@pytest.mark.parametrize("case", ["holes", "no_mask", "nearly_empty"])
def test_a_new_context_family_is_one_function_and_one_entry(monkeypatch, case):
    monkeypatch.setitem(CONTEXT_FAMILIES, "rows", ContextFamily(row_bands))
    student, teacher, mask = make_case(case)
    for normalization, levels in [("local", 3), ("hybrid", 3), ("hybrid", 1)]:
        ours_input, reference_input = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
        ours = normalized_l1(ours_input, teacher, mask, normalization=normalization, hdn_variant="rows",
                             hdn_levels=levels)
        expected = reference_loss(reference_input, teacher, mask, normalization, "rows", levels)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
        ours.backward()
        expected.backward()
        torch.testing.assert_close(ours_input.grad, reference_input.grad, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="'dr', 'dp', 'ds', 'rows'"):
        normalized_l1(student, teacher, hdn_variant="rows2")


@pytest.mark.parametrize("variant", ["dr", "dp", "ds"])
def test_deep_hierarchies_with_many_empty_contexts(variant):
    # 5 levels on 19 x 27 maps: a 16 x 16 grid has empty rows of cells, value bins run empty.
    student, teacher, mask = make_case("holes", seed=6)
    ours = normalized_l1(student, teacher, mask, hdn_variant=variant, hdn_levels=5)
    torch.testing.assert_close(ours, reference_loss(student, teacher, mask, "hybrid", variant, 5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["holes", "no_mask"])
@pytest.mark.parametrize("normalization,variant", [("global", "dr"), ("local", "dp"), ("hybrid", "dr"),
                                                   ("hybrid", "dp"), ("hybrid", "ds")])
def test_gradient_matches_loop_reference(case, normalization, variant):
    # Continuous values (no ties), so both pick the same median pixel for the gradient.
    student, teacher, mask = make_case(case, seed=3)
    ours_input = student.clone().requires_grad_(True)
    ref_input = student.clone().requires_grad_(True)
    normalized_l1(ours_input, teacher, mask, normalization=normalization, hdn_variant=variant).backward()
    reference_loss(ref_input, teacher, mask, normalization, variant, 3).backward()
    torch.testing.assert_close(ours_input.grad, ref_input.grad, rtol=1e-4, atol=1e-6)


def test_spatial_contexts_on_divisible_maps_without_mask():
    # 16 x 24 is divided exactly by the 4 x 4 grid: contexts become blocks of the pixel order.
    g = torch.Generator().manual_seed(5)
    teacher = torch.rand(2, 16, 24, generator=g) + 0.1
    student = torch.randn(2, 16, 24, generator=g)
    for normalization in ["global", "local", "hybrid"]:
        ours_input = student.clone().requires_grad_(True)
        ref_input = student.clone().requires_grad_(True)
        ours = normalized_l1(ours_input, teacher, normalization=normalization, hdn_variant="ds")
        expected = reference_loss(ref_input, teacher, None, normalization, "ds", 3)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
        ours.backward()
        expected.backward()
        torch.testing.assert_close(ours_input.grad, ref_input.grad, rtol=1e-4, atol=1e-6)


def test_normalize_global_is_exact_on_large_maps():
    # Enough pixels and dynamic range for the value buckets to need several refinement passes.
    g = torch.Generator().manual_seed(7)
    shape = (4, 96, 130)
    student = torch.sinh(8.0 * torch.randn(shape, generator=g))
    # ReLU-like: exact zeros, and a median among values far below 2**-24 of the largest one.
    tiny = torch.rand(shape[1:], generator=g) * 1e-35
    student[1] = torch.where(torch.rand(shape[1:], generator=g) < 0.6, tiny, 1e3 * torch.rand(shape[1:], generator=g))
    student[1, :10] = 0.0
    student[2] = -student[1]
    teacher = torch.exp(3.0 * torch.randn(shape, generator=g))
    teacher[3, :40] = 2.5  # a block of ties
    mask = torch.rand(shape, generator=g) > 0.1
    norm_student, norm_teacher = normalize_global(student, teacher, mask)
    for b in range(shape[0]):
        torch.testing.assert_close(norm_student[b][mask[b]], reference_normalize(student[b], mask[b])[mask[b]])
        torch.testing.assert_close(norm_teacher[b][mask[b]], reference_normalize(teacher[b], mask[b])[mask[b]])
    assert (norm_student[~mask] == 0).all() and (norm_teacher[~mask] == 0).all()


# ----------------------------------------------------------------------------------------------------------
# Invariances and degenerate inputs.


@pytest.mark.parametrize("variant", ["dr", "dp", "ds"])
def test_normalised_strategies_ignore_scale_and_shift(variant):
    student, teacher, mask = make_case("holes", seed=1)
    for normalization in ["global", "local", "hybrid"]:
        kwargs = dict(normalization=normalization, hdn_variant=variant)
        base = normalized_l1(student, teacher, mask, **kwargs)
        teacher_moved = normalized_l1(student, 3.7 * teacher + 12.0, mask, **kwargs)
        student_moved = normalized_l1(0.2 * student - 5.0, teacher, mask, **kwargs)
        torch.testing.assert_close(teacher_moved, base, rtol=1e-4, atol=0)
        torch.testing.assert_close(student_moved, base, rtol=1e-4, atol=0)
    base = normalized_l1(student, teacher, mask, normalization="none")
    assert not torch.isclose(normalized_l1(student, 3.7 * teacher + 12.0, mask, normalization="none"), base)
    assert not torch.isclose(normalized_l1(0.2 * student - 5.0, teacher, mask, normalization="none"), base)


@pytest.mark.parametrize("normalization,variant", [("none", "dr"), ("global", "dr"), ("hybrid", "dr"),
                                                   ("hybrid", "dp"), ("hybrid", "ds")])
def test_degenerate_inputs_give_finite_values_and_gradients(normalization, variant):
    kwargs = dict(normalization=normalization, hdn_variant=variant)
    student = torch.randn(3, 6, 7, requires_grad=True)
    teacher = torch.full((3, 6, 7), 2.0)  # constant teacher
    mask = torch.ones(3, 6, 7, dtype=torch.bool)
    mask[1] = False
    mask[1, 2, 3] = True  # one valid pixel
    mask[2] = False  # no valid pixel
    loss = normalized_l1(student, teacher, mask, **kwargs)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert (student.grad[~mask] == 0).all()

    constant = torch.full((3, 6, 7), -1.5, requires_grad=True)
    loss = normalized_l1(constant, teacher, None, **kwargs)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(constant.grad).all()

    empty = torch.zeros(3, 6, 7, dtype=torch.bool)
    student.grad = None
    loss = normalized_l1(student, teacher, empty, **kwargs)
    loss.backward()
    assert loss.item() == 0.0 and (student.grad == 0).all()


def test_teacher_receives_no_gradient():
    student = torch.randn(2, 8, 10, requires_grad=True)
    teacher = torch.rand(2, 8, 10, requires_grad=True)
    patches = torch.rand(2, 2, 4, 5, requires_grad=True)
    boxes = torch.tensor([[[1.0, 1.0, 6.0, 5.0], [0.5, 2.0, 8.5, 7.5]]]).expand(2, -1, -1)
    total, _ = DistillationLoss(lambda_hdn=0.5, hdn_loss_variant="ds")(student, teacher, patches, boxes)
    total.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and patches.grad is None


def test_bad_options_and_shapes_raise_clear_errors():
    maps = torch.rand(2, 4, 5)
    with pytest.raises(ValueError, match="--normalization"):
        normalized_l1(maps, maps, normalization="median")
    with pytest.raises(ValueError, match="hdn_variant"):
        normalized_l1(maps, maps, hdn_variant="dx")
    with pytest.raises(ValueError, match="hdn_levels"):
        normalized_l1(maps, maps, hdn_levels=0)
    with pytest.raises(ValueError, match="one shape"):
        normalized_l1(maps, torch.rand(2, 4, 6))
    with pytest.raises(ValueError, match="mask"):
        normalized_l1(maps, maps, torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="lambda_grad"):
        DistillationLoss(lambda_grad=-1.0)
    with pytest.raises(ValueError, match="boxes"):
        local_global_loss(maps, torch.rand(2, 3, 2, 2), torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="boxes"):
        crop_boxes(maps, torch.zeros(2, 4), (2, 2))


# ----------------------------------------------------------------------------------------------------------
# Local-global geometry.


def linear_map(height: int, width: int, a: float, b: float) -> torch.Tensor:
    """s = a * x + b * y at pixel centres (x = column + 0.5, y = row + 0.5)."""
    y = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    x = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    return (a * x + b * y)[None]


def test_crop_boxes_samples_sub_pixel_boxes():
    maps = linear_map(6, 8, a=1.0, b=10.0)
    boxes = torch.tensor([[[1.5, 2.25, 5.5, 4.25]]])
    # Sample points x = 1.5 + (j + 0.5) * 4 / 4 = 2, 3, 4, 5 and y = 2.25 + (i + 0.5) * 2 / 2 = 2.75, 3.75.
    expected = torch.tensor([[29.5, 30.5, 31.5, 32.5], [39.5, 40.5, 41.5, 42.5]])
    torch.testing.assert_close(crop_boxes(maps, boxes, (2, 4))[0, 0], expected)
    # A box of the whole map at the map's size is the identity.
    torch.testing.assert_close(crop_boxes(maps, torch.tensor([[[0.0, 0.0, 8.0, 6.0]]]), (6, 8))[0, 0], maps[0])


def test_local_global_loss_is_the_mean_over_patches_of_crop_losses():
    g = torch.Generator().manual_seed(2)
    student = torch.rand(2, 20, 24, generator=g) + 0.5
    patches = torch.rand(2, 3, 8, 10, generator=g) + 0.5
    boxes = torch.tensor([[2.0, 3.5, 12.0, 11.5], [0.25, 0.0, 20.25, 16.0], [10.0, 10.0, 24.0, 20.0]])
    boxes = boxes.expand(2, -1, -1)
    crops = crop_boxes(student, boxes, (8, 10))
    for kwargs in [dict(normalization="hybrid", hdn_variant="dr"), dict(normalization="global")]:
        expected = torch.stack([normalized_l1(crops[:, p], patches[:, p], **kwargs) for p in range(3)]).mean()
        torch.testing.assert_close(local_global_loss(student, patches, boxes, **kwargs), expected)
    # A teacher patch that is an affine function of the student's crop costs nothing.
    affine = 4.0 * crops + 1.0
    assert local_global_loss(student, affine, boxes, normalization="hybrid", hdn_variant="dp") < 1e-4


def test_local_global_loss_per_patch_masks():
    student = torch.rand(2, 12, 12) + 0.5
    patches = torch.rand(2, 2, 6, 6) + 0.5
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [6.0, 6.0, 12.0, 12.0]]).expand(2, -1, -1)
    mask = torch.ones(2, 2, 6, 6, dtype=torch.bool)
    mask[:, 1, :3] = False
    crops = crop_boxes(student, boxes, (6, 6))
    expected = sum(normalized_l1(crops[:, p], patches[:, p], mask[:, p]) for p in range(2)) / 2
    torch.testing.assert_close(local_global_loss(student, patches, boxes, mask), expected)


# ----------------------------------------------------------------------------------------------------------
# Feature alignment.


def test_feature_alignment_margin_hand_case():
    student = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [2.0, 0.1]]], requires_grad=True)
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    # Cosines 1, 0.7071, 0, 0.9988: only the 2nd and 3rd are below 0.85.
    expected = ((1 - 1 / math.sqrt(2)) + 1.0) / 2
    loss = feature_alignment_loss(student, teacher, None, margin=0.85)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert student.grad[0, 0].abs().sum() == 0 and student.grad[0, 3].abs().sum() == 0
    assert student.grad[0, 1].abs().sum() > 0


def test_feature_alignment_all_aligned_is_zero_with_a_graph():
    projector = FeatureProjector(3, 5)
    student = torch.randn(2, 4, 3)
    teacher = projector(student).detach()
    loss = feature_alignment_loss(student, teacher, projector)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert projector.proj.weight.grad is not None and (projector.proj.weight.grad == 0).all()


def test_feature_projector_receives_gradient_and_identity_when_widths_match():
    projector = FeatureProjector(6, 10)
    student = torch.randn(2, 5, 6, requires_grad=True)
    teacher = torch.randn(2, 5, 10)
    feature_alignment_loss(student, teacher, projector).backward()
    assert projector.proj.weight.grad.abs().sum() > 0 and student.grad.abs().sum() > 0
    same = FeatureProjector(6, 6)
    assert isinstance(same.proj, torch.nn.Identity) and not list(same.parameters())
    with pytest.raises(ValueError, match="FeatureProjector"):
        feature_alignment_loss(student, teacher, None)


# ----------------------------------------------------------------------------------------------------------
# Gradient matching.


def reference_gradient_matching(student, teacher, mask, scales=4):
    residual = torch.zeros_like(student)
    for b in range(student.shape[0]):
        residual[b] = reference_normalize(student[b], mask[b]) - reference_normalize(teacher[b], mask[b])
    residual = residual * mask
    total = 0.0
    for k in range(scales):
        step = 2**k
        r, m = residual[:, ::step, ::step], mask[:, ::step, ::step]
        gx = ((r[:, :, 1:] - r[:, :, :-1]).abs() * (m[:, :, 1:] & m[:, :, :-1])).sum()
        gy = ((r[:, 1:] - r[:, :-1]).abs() * (m[:, 1:] & m[:, :-1])).sum()
        total = total + (gx + gy) / m.sum()
    return total


def test_gradient_matching_matches_midas_reference():
    student, teacher, mask = make_case("holes", seed=4)
    torch.testing.assert_close(
        gradient_matching_loss(student, teacher, mask), reference_gradient_matching(student, teacher, mask)
    )
    expected = reference_gradient_matching(student, teacher, torch.ones_like(mask))
    torch.testing.assert_close(gradient_matching_loss(student, teacher), expected)


def test_gradient_matching_zero_for_affine_maps_and_positive_otherwise():
    teacher = torch.rand(2, 16, 20) + 0.2
    assert gradient_matching_loss(2.5 * teacher + 7.0, teacher) < 1e-4
    assert gradient_matching_loss(teacher**2, teacher) > 1e-2
    # Pixels outside the mask never count.
    mask = torch.ones(2, 16, 20, dtype=torch.bool)
    mask[:, :, :5] = False
    changed = teacher.clone()
    changed[:, :, :5] = 100.0
    assert gradient_matching_loss(changed, teacher, mask) < 1e-4


# ----------------------------------------------------------------------------------------------------------
# The combined module.


def training_like_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    student = torch.rand(2, 14, 14, generator=g).requires_grad_(True)
    teacher = torch.rand(2, 14, 14, generator=g) + 0.1
    patches = torch.rand(2, 2, 7, 7, generator=g) + 0.1
    boxes = torch.tensor([[1.0, 2.0, 8.0, 9.0], [5.5, 4.0, 12.5, 11.0]]).expand(2, -1, -1)
    student_tokens = torch.randn(2, 9, 4, generator=g, requires_grad=True)
    teacher_tokens = torch.randn(2, 9, 6, generator=g)
    return student, teacher, patches, boxes, student_tokens, teacher_tokens


def test_distillation_loss_module_is_the_weighted_sum_of_its_terms():
    student, teacher, patches, boxes, s_tok, t_tok = training_like_inputs()
    projector = FeatureProjector(4, 6)
    criterion = DistillationLoss(
        lambda_sc=0.5, lambda_lg=0.7, lambda_feat=1.3, lambda_grad=0.2, lambda_hdn=0.8,
        normalization="local", hdn_variant="ds", hdn_levels=2, hdn_loss_variant="dp", hdn_loss_levels=3,
    )
    total, terms = criterion(student, teacher, patches, boxes, s_tok, t_tok, projector)
    norm = dict(normalization="local", hdn_variant="ds", hdn_levels=2)
    expected = {
        "sc": shared_context_loss(student, teacher, **norm),
        "lg": local_global_loss(student, patches, boxes, **norm),
        "feat": feature_alignment_loss(s_tok, t_tok, projector),
        "grad": gradient_matching_loss(student, teacher),
        "hdn": normalized_l1(student, teacher, normalization="hybrid", hdn_variant="dp", hdn_levels=3),
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value.detach())
        assert not terms[name].requires_grad
    weighted = 0.5 * expected["sc"] + 0.7 * expected["lg"] + 1.3 * expected["feat"] + 0.2 * expected["grad"]
    torch.testing.assert_close(total, weighted + 0.8 * expected["hdn"])
    total.backward()
    assert projector.proj.weight.grad.abs().sum() > 0 and s_tok.grad.abs().sum() > 0


def test_distillation_loss_module_skips_terms():
    student, teacher, patches, boxes, s_tok, t_tok = training_like_inputs(1)
    total, terms = DistillationLoss(lambda_feat=1.0)(student, teacher)  # no patches, no tokens; hdn weight 0
    assert set(terms) == {"sc", "grad"}
    torch.testing.assert_close(total, terms["sc"] + 2.0 * terms["grad"])
    total, terms = DistillationLoss(lambda_sc=0.0, lambda_grad=0.0, lambda_lg=0.0)(student, teacher, patches, boxes)
    assert terms == {} and total.item() == 0.0 and total.requires_grad
    with pytest.raises(ValueError, match="together"):
        DistillationLoss()(student, teacher, patches, None)


def test_losses_are_fp32_under_bf16_autocast():
    student, teacher, patches, boxes, s_tok, t_tok = training_like_inputs(2)
    projector = FeatureProjector(4, 6)
    criterion = DistillationLoss(lambda_hdn=0.3)
    expected_total, expected = criterion(student, teacher, patches, boxes, s_tok, t_tok, projector)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = criterion(student, teacher, patches, boxes, s_tok, t_tok, projector)
        bf16_loss = normalized_l1(student.bfloat16(), teacher.bfloat16())
    assert total.dtype == torch.float32 and bf16_loss.dtype == torch.float32
    torch.testing.assert_close(total, expected_total)
    for name in expected:
        torch.testing.assert_close(terms[name], expected[name])
    torch.testing.assert_close(bf16_loss, normalized_l1(student.bfloat16().float(), teacher.bfloat16().float()))


def test_loss_options_have_one_home(tmp_path):
    """The training arguments are a DistillationLossConfig: the loss, its validation and the card read one set of
    fields."""
    from hf_distill.losses import DistillationLossConfig
    from hf_distill.training import DistillationArguments

    args = DistillationArguments(output_dir=str(tmp_path), use_cpu=True, lambda_grad=0.3, hdn_variant="ds")
    assert args.loss_options() == {**DistillationLossConfig().loss_options(), "lambda_grad": 0.3, "hdn_variant": "ds"}
    loss = DistillationLoss.from_config(args)
    assert loss.weights["grad"] == 0.3 and loss.norm_kwargs == {"normalization": "hybrid", "hdn_variant": "ds",
                                                                  "hdn_levels": 3}
    for bad, flag in (({"hdn_loss_levels": 0}, "--hdn_loss_levels"), ({"hdn_variant": "xx"}, "--hdn_variant"),
                      ({"feature_margin": 2.0}, "--feature_margin"), ({"lambda_lg": float("nan")}, "--lambda_lg")):
        with pytest.raises(ValueError, match=flag):
            DistillationLossConfig(**bad)
        with pytest.raises(ValueError, match=flag):
            DistillationLoss(**bad)
        with pytest.raises(ValueError, match=flag):
            DistillationArguments(output_dir=str(tmp_path), use_cpu=True, **bad)
