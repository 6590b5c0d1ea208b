"""Model aliases, real and tiny structures, loading modes, weight files, freezing, processor and token taps."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import DepthAnythingForDepthEstimation

from hf_distill.models import (
    FRESH_HEAD_LEVEL,
    FRESH_HEAD_SPREAD,
    MODEL_ALIASES,
    ModelNotFoundError,
    build_depth_model,
    default_image_processor,
    depth_config,
    head_calibration_pixels,
    head_pre_activation,
    image_mean_std,
    load_depth_model,
    load_weights_file,
    resolve_model_name,
    tiny_depth_config,
)
from hf_distill.token_tap import EncoderTokenTap


def num_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.fixture()
def saved_tiny(tmp_path):
    """A tiny model saved with save_pretrained; neck and head set to 0.5 so a re-initialisation is visible."""
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(tiny_depth_config("small"))
    with torch.no_grad():
        for parameter in [*model.neck.parameters(), *model.head.parameters()]:
            parameter.fill_(0.5)
    model.save_pretrained(tmp_path / "tiny")
    return model, tmp_path / "tiny"


def test_aliases_resolve_to_hub_ids():
    assert MODEL_ALIASES == {
        "depthanything-small": "depth-anything/Depth-Anything-V2-Small-hf",
        "depthanything-base": "depth-anything/Depth-Anything-V2-Base-hf",
        "depthanything-large": "depth-anything/Depth-Anything-V2-Large-hf",
        "depthanything-v1-small": "LiheYoung/depth-anything-small-hf",
        "depthanything-v1-base": "LiheYoung/depth-anything-base-hf",
        "depthanything-v1-large": "LiheYoung/depth-anything-large-hf",
        "distill-any-depth-small": "xingyang1/Distill-Any-Depth-Small-hf",
        "distill-any-depth-large": "xingyang1/Distill-Any-Depth-Large-hf",
    }
    assert resolve_model_name("depthanything-large") == "depth-anything/Depth-Anything-V2-Large-hf"
    assert resolve_model_name("someone/some-model") == "someone/some-model"
    assert resolve_model_name("/data/my_student") == "/data/my_student"


@pytest.mark.parametrize(
    ("arch", "hidden", "layers", "out_indices", "neck", "fusion", "millions"),
    [
        ("depthanything-small", 384, 12, [3, 6, 9, 12], [48, 96, 192, 384], 64, 24.8),
        ("depthanything-base", 768, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128, 97.5),
        ("depthanything-large", 1024, 24, [5, 12, 18, 24], [256, 512, 1024, 1024], 256, 335.3),
    ],
)
def test_depth_config_has_the_real_structure(arch, hidden, layers, out_indices, neck, fusion, millions):
    config = depth_config(arch)
    backbone = config.backbone_config
    assert (backbone.hidden_size, backbone.num_hidden_layers, backbone.out_indices) == (hidden, layers, out_indices)
    assert backbone.hidden_size // backbone.num_attention_heads == 64
    assert config.neck_hidden_sizes == neck and config.fusion_hidden_size == fusion
    assert config.reassemble_hidden_size == hidden and config.head_hidden_size == 32 and config.patch_size == 14
    assert config.max_depth == 1 and config.depth_estimation_type == "relative"
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(config)
    assert num_parameters(model) == pytest.approx(millions * 1e6, rel=0.01)


def test_v1_and_distill_any_depth_structures():
    assert depth_config("depthanything-v1-small").backbone_config.out_indices == [9, 10, 11, 12]
    assert depth_config("depthanything-v1-large").backbone_config.out_indices == [21, 22, 23, 24]
    assert depth_config("xingyang1/Distill-Any-Depth-Large-hf").backbone_config.out_indices == [5, 12, 18, 24]


def test_unknown_names_list_the_aliases():
    with pytest.raises(ValueError, match="depthanything-small, depthanything-base"):
        depth_config("depthanything-tiny")
    for name in ("depthanything-tiny", "hf-distill-tests/not-a-model"):
        with pytest.raises(ModelNotFoundError) as error:
            load_depth_model(name)
        message = str(error.value)
        assert name in message and "distill-any-depth-large" in message and "local" in message and "folder" in message
        assert isinstance(error.value, OSError)
    with pytest.raises(ValueError, match="init="):
        load_depth_model("depthanything-small", init="imagenet")


@pytest.mark.parametrize(
    ("like", "layers", "out_indices", "neck"),
    [
        ("small", 4, [1, 2, 3, 4], [4, 8, 16, 32]),
        ("base", 4, [1, 2, 3, 4], [6, 12, 24, 48]),
        ("large", 8, [2, 4, 6, 8], [16, 32, 64, 64]),
    ],
)
def test_tiny_configs_mirror_the_real_structure(like, layers, out_indices, neck):
    config = tiny_depth_config(like)
    backbone = config.backbone_config
    assert backbone.num_hidden_layers == layers and backbone.out_indices == out_indices
    assert config.neck_hidden_sizes == neck and config.reassemble_factors == [4, 2, 1, 0.5]
    assert config.reassemble_hidden_size == backbone.hidden_size and config.patch_size == 14
    model = DepthAnythingForDepthEstimation(config).eval()
    assert 100_000 < num_parameters(model) < 1_000_000
    with torch.no_grad():
        for size in (56, 112):
            assert model(torch.randn(1, 3, size, size)).predicted_depth.shape == (1, size, size)


def test_tiny_overrides():
    assert tiny_depth_config("small", num_hidden_layers=8).backbone_config.out_indices == [2, 4, 6, 8]
    assert tiny_depth_config("large", num_hidden_layers=12).backbone_config.out_indices == [2, 6, 9, 12]
    metric = tiny_depth_config("base", hidden_size=24, depth_estimation_type="metric", max_depth=20)
    assert metric.backbone_config.hidden_size == 24 and metric.reassemble_hidden_size == 24
    assert metric.depth_estimation_type == "metric" and metric.max_depth == 20
    with pytest.raises(ValueError, match="hidden_sizes"):
        tiny_depth_config("small", hidden_sizes=3)
    with pytest.raises(ValueError, match="like="):
        tiny_depth_config("giant")


def test_init_modes_from_a_local_folder(saved_tiny):
    saved, folder = saved_tiny
    pretrained = load_depth_model(str(folder))
    for key, tensor in saved.state_dict().items():
        assert torch.equal(pretrained.state_dict()[key], tensor), key

    backbone_only = load_depth_model(str(folder), init="backbone")
    for key, tensor in saved.backbone.state_dict().items():
        assert torch.equal(backbone_only.backbone.state_dict()[key], tensor), key
    for part in (backbone_only.neck, backbone_only.head):
        for name, parameter in part.named_parameters():
            assert not torch.any(parameter == 0.5), name
            if name.endswith("bias") and name != "conv3.bias":  # conv3.bias sets the output level
                assert torch.equal(parameter, torch.zeros_like(parameter)), name
    # He (Kaiming) normal for ReLU decoders: std sqrt(2 / fan_in); neck.convs[3] is 3x3 over 32 channels.
    assert backbone_only.neck.convs[3].weight.std().item() == pytest.approx((2 / (9 * 32)) ** 0.5, rel=0.1)
    # The output is calibrated to its level and spread on the generated calibration scenes.
    z = head_pre_activation(backbone_only, head_calibration_pixels()).flatten()
    assert z.median().item() == pytest.approx(FRESH_HEAD_LEVEL, rel=1e-5)
    assert (z - z.median()).abs().mean().item() == pytest.approx(FRESH_HEAD_LEVEL * FRESH_HEAD_SPREAD, rel=1e-5)

    random = load_depth_model(str(folder), init="random")
    z = head_pre_activation(random, head_calibration_pixels()).flatten()
    assert z.median().item() == pytest.approx(FRESH_HEAD_LEVEL, rel=1e-5)
    assert random.config.backbone_config.out_indices == [1, 2, 3, 4]
    assert not torch.equal(random.backbone.embeddings.patch_embeddings.projection.weight,
                           saved.backbone.embeddings.patch_embeddings.projection.weight)

    half = load_depth_model(str(folder), dtype=torch.bfloat16)
    assert {parameter.dtype for parameter in half.parameters()} == {torch.bfloat16}


def test_random_init_of_an_alias_needs_no_download():
    model = load_depth_model("depthanything-small", init="random")
    assert num_parameters(model) == pytest.approx(24.8e6, rel=0.01)


def test_hf_weight_files_and_build_depth_model(saved_tiny, tmp_path):
    saved, folder = saved_tiny
    fresh = DepthAnythingForDepthEstimation(tiny_depth_config("small"))
    load_weights_file(fresh, folder / "model.safetensors")  # legacy on-disk names
    for key, tensor in saved.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], tensor), key

    torch.save(saved.state_dict(), tmp_path / "current_names.pth")
    built = build_depth_model(str(folder / "config.json"), str(tmp_path / "current_names.pth"), init="backbone")
    assert torch.equal(built.backbone.layernorm.weight, saved.backbone.layernorm.weight)
    assert torch.equal(built.head.conv1.bias, torch.zeros_like(built.head.conv1.bias))
    with pytest.raises(ValueError, match="contradicts"):
        build_depth_model(str(folder), str(tmp_path / "current_names.pth"), init="random")
    assert torch.equal(build_depth_model(str(folder)).head.conv3.weight, saved.head.conv3.weight)

    wrong = DepthAnythingForDepthEstimation(tiny_depth_config("small", fusion_hidden_size=8))
    with pytest.raises(ValueError, match="model.safetensors.*mismatched"):
        load_weights_file(wrong, folder / "model.safetensors")


def test_default_image_processor():
    processor = default_image_processor()
    image = Image.fromarray(np.full((480, 640, 3), 255, dtype=np.uint8))
    pixel_values = processor(image, return_tensors="pt").pixel_values
    # 480x640: height scales less (518/480), so 518 x 640*518/480 = 690.7 -> nearest multiple of 14 = 686
    assert pixel_values.shape == (1, 3, 518, 686)
    # white -> (1 - mean) / std
    torch.testing.assert_close(pixel_values[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                                      (1 - 0.406) / 0.225]), rtol=0, atol=1e-4)
    assert default_image_processor(size=280).size == {"height": 280, "width": 280}


def test_image_mean_std(tmp_path):
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert image_mean_std(str(tmp_path)) == imagenet
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    assert image_mean_std(str(tmp_path)) == ([0.5] * 3, [0.25] * 3)
    assert image_mean_std("hf-distill-tests/not-cached") == imagenet  # offline, nothing cached


def test_encoder_token_tap():
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(tiny_depth_config("large")).eval()
    pixel_values = torch.randn(2, 3, 56, 70)
    with EncoderTokenTap(model) as tap:
        with pytest.raises(RuntimeError, match="no forward"):
            tap.tokens
        with torch.no_grad():
            model(pixel_values)
        tokens = tap.tokens
    assert tokens.shape == (2, (56 // 14) * (70 // 14), 64)
    with torch.no_grad():
        backbone_out = model.backbone(pixel_values, output_hidden_states=True)
        model(torch.randn(1, 3, 28, 28))  # hook removed: the tap keeps the earlier tokens
    torch.testing.assert_close(tokens, backbone_out.feature_maps[-1][:, 1:], rtol=0, atol=0)
    # independently: last encoder layer output, through the backbone layernorm, CLS dropped
    final = model.backbone.layernorm(backbone_out.hidden_states[-1])[:, 1:]
    torch.testing.assert_close(tokens, final, rtol=1e-6, atol=1e-6)
    assert tap.tokens.shape[0] == 2

    with EncoderTokenTap(model) as tap:
        model(pixel_values)
        assert tap.tokens.requires_grad

    with pytest.raises(ValueError, match="last out_index"):
        EncoderTokenTap(DepthAnythingForDepthEstimation(tiny_depth_config("small", num_hidden_layers=5,
                                                                          out_indices=(1, 2, 3, 4))))
