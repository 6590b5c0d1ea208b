"""Depth metrics and scale/shift alignment against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from hf_distill.evaluation.metrics import METRIC_NAMES, batch_depth_metrics, evaluate_depth

RANGE = {"min_depth": 1e-3, "max_depth": 10.0}


def _scene(seed=0, shape=(12, 16)):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1.0, 5.0, shape)
    return gt, np.ones(shape, dtype=bool)


def test_hand_computed_2x2_without_alignment():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    gt = np.full((2, 2), 2.0)
    m = evaluate_depth(pred, gt, np.ones((2, 2), bool), alignment="none", **RANGE)
    logs = np.log([0.5, 1.0, 1.5, 2.0])
    expected = {
        "abs_rel": (0.5 + 0 + 0.5 + 1) / 4,
        "sq_rel": (0.5 + 0 + 0.5 + 2) / 4,
        "rmse": math.sqrt((1 + 0 + 1 + 4) / 4),
        "rmse_log": math.sqrt(np.mean(logs**2)),
        "log10": np.mean(np.abs(logs)) / math.log(10),
        "delta1": 0.25,  # ratios 2, 1, 1.5, 2
        "delta2": 0.5,  # < 1.5625
        "delta3": 0.5,  # < 1.953: 2 is outside
    }
    assert set(m) == set(METRIC_NAMES)
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name


def test_affine_in_disparity_is_exact_after_disparity_alignment_only():
    gt, valid = _scene()
    pred = 3.0 / gt + 0.5  # exact affine function of the ground-truth disparity
    m = evaluate_depth(pred, gt, valid, alignment="disparity", **RANGE)
    assert m["abs_rel"] < 1e-9 and m["rmse"] < 1e-9
    assert m["delta1"] == 1.0
    depth_aligned = evaluate_depth(pred, gt, valid, alignment="depth", **RANGE)
    assert depth_aligned["abs_rel"] > 0.05
    assert depth_aligned["delta1"] < 1.0


def test_affine_in_depth_is_exact_after_depth_alignment():
    gt, valid = _scene(1)
    m = evaluate_depth((gt - 0.3) / 2.0, gt, valid, alignment="depth", **RANGE)
    assert m["abs_rel"] < 1e-9 and m["delta1"] == 1.0
    assert evaluate_depth((gt - 0.3) / 2.0, gt, valid, alignment="none", **RANGE)["abs_rel"] > 0.5


def test_prediction_clipped_to_dataset_range_then_positive():
    gt = np.array([[1.0, 10.0], [2.0, 2.0]])
    pred = np.array([[0.5, 20.0], [2.0, 2.0]])  # outside [1, 10] only where gt sits on the bounds
    m = evaluate_depth(pred, gt, np.ones((2, 2), bool), alignment="none", min_depth=1.0, max_depth=10.0)
    assert m["abs_rel"] == 0.0 and m["delta1"] == 1.0
    # min_depth 0: a negative prediction becomes 1e-6, not a NaN in the logs.
    m = evaluate_depth(np.array([[-5.0, 2.0]]), np.array([[1.0, 2.0]]), np.ones((1, 2), bool),
                       alignment="none", min_depth=0.0, max_depth=10.0)
    assert m["abs_rel"] == pytest.approx((1 - 1e-6) / 2)
    assert m["log10"] == pytest.approx(6.0 / 2)


def test_aligned_disparity_is_clipped_before_inversion():
    # Only pred > 0 enters the fit: pred 1 -> disparity 1, pred 3 -> disparity 2, so s = t = 0.5.
    gt = np.array([[1.0, 0.5, 5.0]])
    pred = np.array([[1.0, 3.0, 0.0]])
    m = evaluate_depth(pred, gt, np.ones((1, 3), bool), alignment="disparity", min_depth=1e-3, max_depth=4.0)
    # pixel 3: aligned disparity 0.5 -> depth 2: |2 - 5| / 5 = 0.6
    assert m["abs_rel"] == pytest.approx(0.6 / 3)
    # pixel 3: 0.5 * -10 + 0.5 < 0 -> disparity 1e-3 -> depth 1000 -> clipped to 4: |4 - 5| / 5 = 0.2
    pred = np.array([[1.0, 3.0, -10.0]])
    m = evaluate_depth(pred, gt, np.ones((1, 3), bool), alignment="disparity", min_depth=1e-3, max_depth=4.0)
    assert m["abs_rel"] == pytest.approx(0.2 / 3)


def test_invalid_pixels_are_ignored():
    gt, valid = _scene(2)
    pred = 2.0 / gt + 0.1
    valid[:, :5] = False
    gt_bad, pred_bad = gt.copy(), pred.copy()
    gt_bad[:, :5] = np.array([0.0, np.inf, np.nan, -1.0, 100.0])  # garbage where invalid
    pred_bad[:, :5] = 1e6
    clean = evaluate_depth(pred[:, 5:], gt[:, 5:], valid[:, 5:], **RANGE)
    dirty = evaluate_depth(pred_bad, gt_bad, valid, **RANGE)
    for name in METRIC_NAMES:
        assert dirty[name] == pytest.approx(clean[name], abs=1e-12), name
    assert dirty["abs_rel"] < 1e-9


def test_no_valid_pixel_gives_nan_and_constant_prediction_is_finite():
    gt, valid = _scene(3)
    assert all(math.isnan(v) for v in evaluate_depth(1.0 / gt, gt, ~valid, **RANGE).values())
    m = evaluate_depth(np.ones_like(gt), gt, valid, **RANGE)
    # constant prediction: s = 0, t = mean(1/gt) -> the depth 1/mean(1/gt) everywhere
    expected = evaluate_depth(np.full_like(gt, 1.0 / np.mean(1.0 / gt)), gt, valid, alignment="none", **RANGE)
    assert m["abs_rel"] == pytest.approx(expected["abs_rel"], rel=1e-9)


def test_batch_metrics_match_per_image_and_accept_torch():
    maps = [_scene(seed) for seed in (4, 5)]
    gt = torch.tensor(np.stack([g for g, _ in maps]))
    valid = torch.tensor(np.stack([v for _, v in maps]))
    valid[1, :3] = False
    pred = (1.0 / gt + torch.rand_like(gt) * 0.2).float()
    batch = batch_depth_metrics(pred, gt, valid, **RANGE)
    for name in METRIC_NAMES:
        assert batch[name].shape == (2,)
        for b in range(2):
            single = evaluate_depth(pred[b].numpy(), gt[b].numpy(), valid[b].numpy(), **RANGE)
            assert batch[name][b].item() == pytest.approx(single[name], rel=1e-9, abs=1e-12)


def test_bad_inputs_raise():
    gt, valid = _scene()
    with pytest.raises(ValueError, match="alignment"):
        evaluate_depth(gt, gt, valid, alignment="median", **RANGE)
    with pytest.raises(ValueError, match="shape"):
        batch_depth_metrics(torch.ones(1, 4, 4), torch.ones(1, 4, 5), torch.ones(1, 4, 4, dtype=torch.bool), **RANGE)


# ---- the evaluate module ----------------------------------------------------------------------------------


def test_evaluate_module_is_the_mean_of_evaluate_depth_over_images():
    import configparser
    import fnmatch
    from pathlib import Path

    import evaluate

    from hf_distill.evaluation import load_depth_metric

    rng = np.random.default_rng(3)
    shapes = [(12, 16), (9, 7), (12, 16)]
    gts = [rng.uniform(0.5, 12.0, shape).astype(np.float32) for shape in shapes]
    preds = [(1.0 / gt * rng.uniform(0.8, 1.2, gt.shape)).astype(np.float32) for gt in gts]
    masks = [rng.random(shape) > 0.2 for shape in shapes]
    masks[2][:] = False  # no valid pixel: left out of the mean and of num_samples
    # Invalid reference pixels: 0 (a benchmark's mask) or not finite.
    references = [np.where(mask, gt, 0.0).astype(np.float32) for gt, mask in zip(gts, masks)]
    references[1][0, :3] = np.nan
    masks[1][0, :3] = False

    metric = load_depth_metric(alignment="depth", min_depth=1e-3, max_depth=10.0)
    assert isinstance(metric, evaluate.EvaluationModule)
    result = metric.compute(predictions=preds, references=references)
    per_image = [evaluate_depth(p, g, m, alignment="depth", min_depth=1e-3, max_depth=10.0)
                 for p, g, m in zip(preds[:2], gts[:2], masks[:2])]
    assert result["num_samples"] == 2
    for name in METRIC_NAMES:
        assert result[name] == pytest.approx(np.mean([row[name] for row in per_image]), rel=1e-12), name
    # Module arguments matter: disparity alignment and the depth range give other numbers.
    other = load_depth_metric(min_depth=1e-3, max_depth=2.0).compute(predictions=preds, references=references)
    assert other["abs_rel"] != pytest.approx(result["abs_rel"], rel=1e-3)
    with pytest.raises(ValueError, match="alignment"):
        load_depth_metric(alignment="log")

    # The module folder ships with the package (setup.cfg package_data), so evaluate.load works after pip install.
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    patterns = config["options.package_data"]["hf_distill"].split()
    package = Path(__file__).resolve().parents[1] / "hf_distill"
    module_files = [p.relative_to(package).as_posix() for p in (package / "evaluation" / "depth_metric").iterdir()
                    if p.is_file()]
    assert "evaluation/depth_metric/depth_metric.py" in module_files
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in module_files), module_files
