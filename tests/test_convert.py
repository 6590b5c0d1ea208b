"""Original Depth Anything layout -> HF layout: round trips through an independently written inverse mapping."""

import argparse
import ast
import json
import logging
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import DepthAnythingForDepthEstimation

from hf_distill.convert import convert_state_dict, is_hf_state_dict
from hf_distill.models import build_depth_model, convert_checkpoint, load_weights_file, read_state_dict, tiny_depth_config

REPO = Path(__file__).resolve().parents[1]


def random_model(like: str, seed: int) -> DepthAnythingForDepthEstimation:
    """Tiny model whose every tensor (biases, layer scales, mask token included) is random, so that any
    swapped or dropped tensor changes the comparison."""
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(tiny_depth_config(like)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.1)
        model.head.conv3.bias.fill_(1.0)  # keeps the final ReLU output positive, so outputs are informative
    return model


def to_original(model: DepthAnythingForDepthEstimation, prefix: str) -> dict[str, torch.Tensor]:
    """HF -> original Depth Anything V2 layout, written by hand from the original dpt.py / DINOv2 module names."""
    hf = {key: tensor.detach().clone() for key, tensor in model.state_dict().items()}
    used = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return hf[key]

    original = {
        f"{prefix}cls_token": take("backbone.embeddings.cls_token"),
        f"{prefix}mask_token": take("backbone.embeddings.mask_token"),
        f"{prefix}pos_embed": take("backbone.embeddings.position_embeddings"),
    }
    for kind in ("weight", "bias"):
        original[f"{prefix}patch_embed.proj.{kind}"] = take(f"backbone.embeddings.patch_embeddings.projection.{kind}")
        original[f"{prefix}norm.{kind}"] = take(f"backbone.layernorm.{kind}")
    for i in range(model.config.backbone_config.num_hidden_layers):
        hf_layer, block = f"backbone.encoder.layer.{i}.", f"{prefix}blocks.{i}."
        for kind in ("weight", "bias"):
            original[block + f"attn.qkv.{kind}"] = torch.cat(
                [take(hf_layer + f"attention.{name}.{kind}") for name in ("q_proj", "k_proj", "v_proj")]
            )
            original[block + f"attn.proj.{kind}"] = take(hf_layer + f"attention.o_proj.{kind}")
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                original[block + f"{name}.{kind}"] = take(hf_layer + f"{name}.{kind}")
        original[block + "ls1.gamma"] = take(hf_layer + "layer_scale1.lambda1")
        original[block + "ls2.gamma"] = take(hf_layer + "layer_scale2.lambda1")
    for i in range(4):
        reassemble = f"neck.reassemble_stage.layers.{i}."
        fusion = f"neck.fusion_stage.layers.{i}."
        refinenet = f"depth_head.scratch.refinenet{4 - i}."  # HF fusion runs deepest first
        original[f"depth_head.scratch.layer{i + 1}_rn.weight"] = take(f"neck.convs.{i}.weight")
        for kind in ("weight", "bias"):
            original[f"depth_head.projects.{i}.{kind}"] = take(reassemble + f"projection.{kind}")
            if i != 2:  # resize_layers.2 is nn.Identity
                original[f"depth_head.resize_layers.{i}.{kind}"] = take(reassemble + f"resize.{kind}")
            original[refinenet + f"out_conv.{kind}"] = take(fusion + f"projection.{kind}")
            for unit in (1, 2):
                for conv in (1, 2):
                    original[refinenet + f"resConfUnit{unit}.conv{conv}.{kind}"] = take(
                        fusion + f"residual_layer{unit}.convolution{conv}.{kind}"
                    )
    for kind in ("weight", "bias"):
        original[f"depth_head.scratch.output_conv1.{kind}"] = take(f"head.conv1.{kind}")
        original[f"depth_head.scratch.output_conv2.0.{kind}"] = take(f"head.conv2.{kind}")
        original[f"depth_head.scratch.output_conv2.2.{kind}"] = take(f"head.conv3.{kind}")
    assert used == set(hf), f"inverse mapping misses {sorted(set(hf) - used)[:5]}"
    return original


def arch_folder(model: DepthAnythingForDepthEstimation, root: Path) -> Path:
    folder = root / "arch"
    model.config.save_pretrained(folder)
    return folder


def assert_same_model(loaded: DepthAnythingForDepthEstimation, source: DepthAnythingForDepthEstimation) -> None:
    expected = source.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key
    pixel_values = torch.randn(2, 3, 56, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = source(pixel_values).predicted_depth
        have = loaded.eval()(pixel_values).predicted_depth
    assert want.shape == (2, 56, 70)
    assert (want > 0).any()
    torch.testing.assert_close(have, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("like", "prefix", "suffix"),
    [("small", "pretrained.", ".pth"), ("large", "backbone.", ".safetensors")],
)
def test_convert_checkpoint_round_trip(tmp_path, like, prefix, suffix):
    source = random_model(like, seed=0)
    original = to_original(source, prefix)
    checkpoint = tmp_path / f"original{suffix}"
    if suffix == ".pth":
        torch.save(original, checkpoint)
    else:
        save_file(original, checkpoint)

    output = convert_checkpoint(checkpoint, str(arch_folder(source, tmp_path)), tmp_path / "hf")

    assert sorted(p.name for p in output.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    loaded, info = DepthAnythingForDepthEstimation.from_pretrained(output, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_same_model(loaded, source)
    processor = json.loads((output / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 518, "width": 518}
    assert processor["keep_aspect_ratio"] is True and processor["ensure_multiple_of"] == 14
    assert processor["resample"] == 3 and processor["do_pad"] is False  # 3 = PIL bicubic
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["image_std"] == [0.229, 0.224, 0.225]


def test_convert_state_dict_splits_qkv_and_reverses_refinenets():
    source = random_model("small", seed=2)
    original = to_original(source, "pretrained.")
    converted, notes = convert_state_dict(original)
    hidden = source.config.backbone_config.hidden_size
    qkv = original["pretrained.blocks.3.attn.qkv.weight"]
    assert torch.equal(converted["backbone.encoder.layer.3.attention.k_proj.weight"], qkv[hidden : 2 * hidden])
    assert torch.equal(
        converted["neck.fusion_stage.layers.0.projection.weight"],
        original["depth_head.scratch.refinenet4.out_conv.weight"],
    )
    assert converted.keys() == source.state_dict().keys()
    assert len(notes) == 1 and "pretrained." in notes[0]


def test_missing_mask_token_is_zero_filled_and_noted():
    source = random_model("small", seed=3)
    original = to_original(source, "backbone.")
    del original["backbone.mask_token"]
    converted, notes = convert_state_dict(original)
    assert torch.equal(converted["backbone.embeddings.mask_token"], torch.zeros(1, 32))
    assert any("mask_token" in note and "zeros" in note for note in notes)


def test_junk_keys_are_named():
    source = random_model("small", seed=4)
    original = to_original(source, "pretrained.")
    original["pretrained.blocks.0.attn.rel_pos"] = torch.zeros(3)
    original["optimizer_step"] = torch.zeros(1)
    with pytest.raises(ValueError, match="2 checkpoint keys match nothing") as error:
        convert_state_dict(original)
    assert "pretrained.blocks.0.attn.rel_pos" in str(error.value) and "optimizer_step" in str(error.value)


def test_wrong_architecture_is_reported(tmp_path):
    save_file(to_original(random_model("small", seed=5), "pretrained."), tmp_path / "small.safetensors")
    large = random_model("large", seed=5)
    with pytest.raises(ValueError, match="small.safetensors: weights do not fit the architecture .wrong arch") as error:
        build_depth_model(str(arch_folder(large, tmp_path)), tmp_path / "small.safetensors")
    assert "backbone.encoder.layer.4" in str(error.value)  # the large look-alike has 8 layers, the file 4


def test_hf_checkpoint_is_a_no_op(tmp_path, caplog):
    source = random_model("small", seed=6)
    source.save_pretrained(tmp_path / "saved")  # legacy on-disk key names (attention.attention.query, ...)
    on_disk = read_state_dict(tmp_path / "saved" / "model.safetensors")
    assert is_hf_state_dict(on_disk) and not is_hf_state_dict(to_original(source, "backbone."))
    with caplog.at_level(logging.INFO, logger="hf_distill"):
        output = convert_checkpoint(tmp_path / "saved" / "model.safetensors", str(tmp_path / "saved"), tmp_path / "out")
    assert "already in Hugging Face layout" in caplog.text
    assert_same_model(DepthAnythingForDepthEstimation.from_pretrained(output), source)


def test_read_state_dict_unwraps_and_refuses_pickles(tmp_path):
    original = to_original(random_model("small", seed=7), "pretrained.")
    torch.save({"model": {f"module.{key}": value for key, value in original.items()}, "epoch": 3}, tmp_path / "a.pth")
    assert read_state_dict(tmp_path / "a.pth").keys() == original.keys()
    torch.save({"state_dict": original, "args": argparse.Namespace(lr=1.0)}, tmp_path / "b.pth")
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(tmp_path / "b.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "c.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported checkpoint format"):
        read_state_dict(tmp_path / "c.npz")


@pytest.mark.parametrize("prefix", ["pretrained.", "backbone."])
def test_load_weights_file_and_build_depth_model_read_original_layout(tmp_path, prefix):
    source = random_model("small", seed=8)
    checkpoint = tmp_path / "teacher.safetensors"
    save_file(to_original(source, prefix), checkpoint)

    target = random_model("small", seed=9)
    assert load_weights_file(target, checkpoint) is target
    assert_same_model(target, source)

    built = build_depth_model(str(arch_folder(source, tmp_path)), str(checkpoint))
    assert_same_model(built, source)


def test_cli_end_to_end(tmp_path):
    source = random_model("small", seed=10)
    original = to_original(source, "pretrained.")
    del original["pretrained.mask_token"]
    torch.save(original, tmp_path / "original.pth")
    arch = arch_folder(source, tmp_path)
    command = [sys.executable, str(REPO / "scripts" / "convert_checkpoint.py"), "--checkpoint",
               str(tmp_path / "original.pth"), "--arch", str(arch), "--output_dir", str(tmp_path / "hf")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "note: mask_token missing" in result.stdout and "converted" in result.stdout
    loaded, info = DepthAnythingForDepthEstimation.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(loaded.backbone.embeddings.mask_token, torch.zeros(1, 32))


def test_cli_error_is_one_line_exit_2(tmp_path, capsys):
    main = runpy.run_path(str(REPO / "scripts" / "convert_checkpoint.py"))["main"]
    code = main(["--checkpoint", str(tmp_path / "nope.pth"), "--arch", "depthanything-small",
                 "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nope.pth" in err and "not found" in err


def test_convert_is_a_leaf():
    # convert.py only maps keys: hf_distill.models imports it, never the other way round.
    tree = ast.parse((REPO / "hf_distill" / "convert.py").read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert imported and not [name for name in imported if name and name.startswith("hf_distill")]
