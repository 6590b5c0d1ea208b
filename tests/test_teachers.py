"""Teachers: the output-space table, transformers depth models, GenPercept (diffusers) and a mixed-teacher run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    DepthAnythingForDepthEstimation,
    DPTConfig,
    DPTForDepthEstimation,
    PromptDepthAnythingConfig,
)

from hf_distill.testing import write_webdataset_shards
from hf_distill.models import ModelNotFoundError, default_image_processor, tiny_depth_config
from hf_distill.teachers import (
    TEACHER_CONFIG_NAME,
    TEACHER_FAMILIES,
    GenPerceptTeacher,
    OutputSpace,
    TransformersDepthTeacher,
    build_teacher,
    teacher_family,
    to_disparity,
)
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import run_distillation

diffusers = pytest.importorskip("diffusers")

BOS, EOS = 0, 1  # ids of the tiny tokenizer's start and end tokens


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def write_tiny_genpercept(folder: Path, family: str = "genpercept-disparity", resolution: int = 64) -> Path:
    """SD-2.1-shaped UNet / VAE / CLIP text encoder / tokenizer with random weights, about 150k parameters."""
    torch.manual_seed(0)
    diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4, use_linear_projection=True,
    ).save_pretrained(folder / "unet")
    diffusers.AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, layers_per_block=1,
    ).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, max_position_embeddings=77)).save_pretrained(
        folder / "text_encoder")
    vocab = {"<|startoftext|>": BOS, "<|endoftext|>": EOS, "a</w>": 2, "a": 3}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77).save_pretrained(
        folder / "tokenizer")
    (folder / TEACHER_CONFIG_NAME).write_text(json.dumps({"family": family, "processing_resolution": resolution}))
    return folder


@pytest.fixture(scope="module")
def genpercept_folder(tmp_path_factory) -> Path:
    return write_tiny_genpercept(tmp_path_factory.mktemp("genpercept"))


def views(n: int = 2, size: int = 56) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


# ---- the table ---------------------------------------------------------------------------------------------


def test_to_disparity_follows_the_declared_output_space():
    depth = torch.tensor([[2.0, 0.5, 0.0, -1.0, float("inf"), float("nan")]])
    expected = torch.tensor([[0.5, 2.0, 0.0, 0.0, 0.0, 0.0]])  # invalid depth: 0 = infinitely far
    torch.testing.assert_close(to_disparity(depth, OutputSpace.METRIC_DEPTH), expected, rtol=0, atol=0)
    disparity = torch.tensor([[0.25, 3.0]])
    for space in (OutputSpace.DISPARITY, OutputSpace.MINMAX_DISPARITY, OutputSpace.INVERSE_DEPTH):
        assert torch.equal(to_disparity(disparity, space), disparity)
    with pytest.raises(ValueError, match="unknown shift"):
        to_disparity(disparity, OutputSpace.AFFINE_DEPTH)


@pytest.mark.parametrize("name", ["genpercept-depth", "marigold-depth"])
def test_affine_invariant_depth_teachers_are_refused_saying_why(name):
    assert TEACHER_FAMILIES[name].predicts is OutputSpace.AFFINE_DEPTH
    with pytest.raises(ValueError, match=rf"'{name}'.*refused.*unknown.*1 / depth is not a disparity up to scale"):
        build_teacher(name)


def test_a_local_genpercept_depth_folder_is_refused(tmp_path):
    (tmp_path / TEACHER_CONFIG_NAME).write_text(json.dumps({"family": "genpercept-depth"}))
    with pytest.raises(ValueError, match="GenPercept depth.*refused"):
        build_teacher(str(tmp_path))


def test_a_diffusers_folder_must_declare_its_family(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ValueError, match=TEACHER_CONFIG_NAME + ".*genpercept-disparity"):
        build_teacher(str(tmp_path))
    (tmp_path / TEACHER_CONFIG_NAME).write_text(json.dumps({"family": "genpercept"}))
    with pytest.raises(ValueError, match="'family' must be one of"):
        build_teacher(str(tmp_path))


def test_undeclared_model_types_are_refused(tmp_path):
    PromptDepthAnythingConfig().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'prompt_depth_anything' is not declared.*TEACHER_FAMILIES"):
        build_teacher(str(tmp_path))


# ---- transformers depth models -------------------------------------------------------------------------------


def test_dpt_teacher_runs_at_a_multiple_of_32_with_its_own_normalisation(tmp_path):
    torch.manual_seed(0)
    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16)
    model = DPTForDepthEstimation(config).eval()
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))

    teacher = build_teacher(str(tmp_path))
    assert isinstance(teacher, TransformersDepthTeacher) and teacher.family.predicts is OutputSpace.DISPARITY
    assert teacher.token_width is None and not teacher.training
    x = views()  # 56 x 56: the nearest multiple of 32 is 64
    with torch.no_grad():
        disparity, tokens = teacher(x)
        expected = model(pixel_values=(resize(x, 64) - 0.5) / 0.5).predicted_depth  # (2, 64, 64)
    assert tokens is None and disparity.shape == (2, 56, 56)
    torch.testing.assert_close(disparity, resize(expected[:, None], 56)[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no encoder tokens"):
        teacher(x, want_tokens=True)
    with pytest.raises(ValueError, match="--teacher_checkpoints"):
        build_teacher(str(tmp_path), str(tmp_path / "model.safetensors"))


def test_metric_depth_anything_teacher_gives_inverse_depth_and_tokens(tmp_path):
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(tiny_depth_config("small", depth_estimation_type="metric", max_depth=20))
    model.eval().save_pretrained(tmp_path)
    teacher = build_teacher(str(tmp_path))
    assert teacher.family.predicts is OutputSpace.METRIC_DEPTH and teacher.token_width == 32
    x = views()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        disparity, tokens = teacher(x, want_tokens=True)
        depth = model(pixel_values=(x - mean) / std).predicted_depth  # 56 is a multiple of 14: no resize
    assert bool((depth > 0).all())
    torch.testing.assert_close(disparity, 1.0 / depth, rtol=1e-6, atol=0)
    assert tokens.shape == (2, 16, 32)  # (56 / 14)^2 tokens of the encoder's width


# ---- GenPercept --------------------------------------------------------------------------------------------


def test_genpercept_teacher_follows_the_published_one_step_recipe(genpercept_folder):
    teacher = build_teacher(str(genpercept_folder))
    assert isinstance(teacher, GenPerceptTeacher) and teacher.token_width is None
    assert teacher.family.predicts is OutputSpace.MINMAX_DISPARITY
    assert not hasattr(teacher, "text_encoder")  # the empty prompt is encoded once, the encoder dropped
    # VAE x2 and UNet x2 downsampling: sides are multiples of 4; the longest edge goes to 64
    assert teacher.size_multiple == 4
    assert teacher.processing_size(56, 56) == (64, 64) and teacher.processing_size(42, 56) == (48, 64)

    unet = diffusers.UNet2DConditionModel.from_pretrained(genpercept_folder / "unet").eval()
    vae = diffusers.AutoencoderKL.from_pretrained(genpercept_folder / "vae").eval()
    text_encoder = CLIPTextModel.from_pretrained(genpercept_folder / "text_encoder").eval()
    x = views(3)
    with torch.no_grad():
        disparity, tokens = teacher(x)
        # The recipe step by step. Empty prompt, no padding: start and end tokens only.
        prompt = text_encoder(torch.tensor([[BOS, EOS]]))[0]
        pixels = resize(x, 64) * 2 - 1
        mean, _ = vae.quant_conv(vae.encoder(pixels)).chunk(2, dim=1)  # posterior mean
        latent = mean * 0.18215
        unet_out = unet(latent, torch.tensor(1), encoder_hidden_states=prompt.expand(3, -1, -1)).sample
        # GenPercept's scheduler (DDIM, beta 1.0, v-prediction): one step at timestep 1 predicts -unet_out.
        scheduler = diffusers.DDIMScheduler(beta_start=1.0, beta_end=1.0, beta_schedule="scaled_linear",
                                            prediction_type="v_prediction", steps_offset=1,
                                            timestep_spacing="leading", set_alpha_to_one=False, clip_sample=False)
        scheduler.set_timesteps(1)
        assert scheduler.timesteps.tolist() == [1]
        pred_latent = scheduler.step(unet_out, 1, latent).pred_original_sample
        torch.testing.assert_close(pred_latent, -unet_out, rtol=0, atol=0)
        decoded = vae.decoder(vae.post_quant_conv(pred_latent / 0.18215))  # (3, 3, 64, 64)
        expected = (decoded.mean(dim=1).clamp(-1, 1) + 1) / 2
    assert tokens is None and disparity.shape == (3, 56, 56) and disparity.dtype == torch.float32
    torch.testing.assert_close(disparity, resize(expected[:, None], 56)[:, 0], rtol=1e-5, atol=1e-6)
    assert 0 <= disparity.min() and disparity.max() <= 1

    with torch.no_grad():  # bf16 (what GPUs run): same map within bf16 precision
        bf16, _ = teacher.to(torch.bfloat16)(x)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, disparity, rtol=0, atol=0.05)


def test_genpercept_vae_runs_in_chunks_under_the_element_bound_and_matches_one_call(genpercept_folder):
    teacher = build_teacher(str(genpercept_folder))
    # SD 2.1's VAE (widest 512 channels) at 768 x 768: 7 views per call keep 7 * 512 * 768^2 < 2^31 elements.
    assert GenPerceptTeacher.MAX_ACTIVATION_ELEMENTS // (512 * 768 * 768) == 7
    assert teacher.vae_chunk(64, 64) == (2**31 - 1) // (16 * 64 * 64)  # the tiny VAE's widest is 16 channels
    x = views(5, 64)
    with torch.no_grad():
        whole, _ = teacher(x)
    calls, largest = [], [0]

    def record(module, args, output):
        largest[0] = max(largest[0], max(t.numel() for t in [output] if torch.is_tensor(t)))

    hooks = [m.register_forward_hook(record) for m in teacher.vae.modules() if not list(m.children())]
    hooks.append(teacher.vae.decoder.conv_in.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0])))
    teacher.MAX_ACTIVATION_ELEMENTS = 2 * 16 * 64 * 64  # 2 views per call
    try:
        assert teacher.vae_chunk(64, 64) == 2
        with torch.no_grad():
            chunked, _ = teacher(x)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == [2, 2, 1] and 0 < largest[0] <= teacher.MAX_ACTIVATION_ELEMENTS
    # chunking changes no view's map (up to float32 summation order, which oneDNN picks by batch size)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    teacher.vae.enable_slicing()  # diffusers' slicing: one view per call
    assert teacher.vae_chunk(64, 64) == 1
    teacher.vae.disable_slicing()
    with pytest.raises(ValueError, match="vae_chunk_size must be >= 1"):
        GenPerceptTeacher(teacher.unet, teacher.vae, CLIPTextModel(CLIPTextConfig(vocab_size=8, hidden_size=16,
                          intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)), None,
                          teacher.family, vae_chunk_size=0)


@pytest.mark.slow  # building SD 2.1's VAE structure, even on meta, takes seconds
def test_sd21_vae_at_the_papers_step_stays_below_2_31_elements_per_tensor():
    """SD 2.1's real VAE on the meta device (shapes only): 24 views of 768 x 768 in one decode make a tensor of
    24 x 256 x 768^2 > 2^31 elements; the teacher's chunks (4 of 6 views) stay below."""
    import runpy

    bench = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_teachers.py"))
    one_call, chunked = bench["meta_decode"](24, 768, 24), bench["meta_decode"](24, 768, None)
    assert one_call["largest_tensor_elements"] == 24 * 256 * 768**2 > 2**31
    assert chunked["views_per_call"] == 7 and chunked["largest_tensor_elements"] == 6 * 256 * 768**2 < 2**31
    assert chunked["decode_tflop_per_view"] == one_call["decode_tflop_per_view"] > 1  # same work, in chunks


def test_genpercept_output_is_float32_and_not_rounded_to_bf16(genpercept_folder):
    teacher = build_teacher(str(genpercept_folder))
    x = views(2, 64)  # the processing size: no resize that would interpolate between values
    with torch.no_grad():
        reference, _ = teacher(x)
        teacher.to(torch.bfloat16)
        bf16, _ = teacher(x)
        latent = teacher.vae.encode((x * 2 - 1).to(torch.bfloat16)).latent_dist.mean * teacher.LATENT_SCALE
        prompt = teacher.prompt_embedding.to(torch.bfloat16).expand(2, -1, -1)
        prediction = -teacher.unet(latent, 1, encoder_hidden_states=prompt).sample / teacher.LATENT_SCALE
        decoded = teacher.decode(prediction)
        rounded = teacher.vae.decode(prediction).sample  # a decoder wholly in bf16
    assert bf16.dtype == decoded.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    torch.testing.assert_close(bf16, reference, rtol=0, atol=0.05)
    torch.testing.assert_close((decoded.mean(dim=1).clamp(-1, 1) + 1) / 2, bf16, rtol=0, atol=1e-6)
    assert torch.unique(bf16).numel() > 0.9 * bf16.numel()

    def step(values: torch.Tensor) -> float:
        """The median gap between the distinct values of magnitude 0.25..1 (bf16: 2^-9 or 2^-8 there)."""
        values = values.float().flatten()
        return float(torch.unique(values[(values.abs() >= 0.25) & (values.abs() <= 1)]).diff().median())

    assert step(rounded) >= 2**-9  # the staircase a bf16 output has
    assert step(decoded) < 2**-9 / 20  # float32 output layers: no staircase
    assert step(decoded) > 0


def test_genpercept_from_the_hub_fails_offline_with_the_local_route():
    with pytest.raises(ModelNotFoundError, match="guangkaixu/genpercept-models/unet_disparity_v2.*local folder"):
        build_teacher("genpercept-disparity")


# ---- the paper's recipe ------------------------------------------------------------------------------------


def test_paper_config_names_the_papers_teachers(tmp_path):
    model_args, _, _ = parse_distill_args(["--config", "sa1b_multiteacher",
                                           "--use_cpu", "--output_dir", str(tmp_path)])
    assert model_args.teacher_models == ["depthanything-large", "genpercept-disparity"]
    assert model_args.teacher_probabilities == pytest.approx([0.7, 0.3])
    families = [teacher_family(name) for name in model_args.teacher_models]  # declared, no download
    assert [f.predicts for f in families] == [OutputSpace.DISPARITY, OutputSpace.MINMAX_DISPARITY]
    assert [f.teacher_class for f in families] == [TransformersDepthTeacher, GenPerceptTeacher]


def test_paper_config_runs_two_steps_mixing_depth_anything_and_genpercept(genpercept_folder, tmp_path):
    torch.manual_seed(0)
    for name, like in (("teacher", "large"), ("student", "small")):
        DepthAnythingForDepthEstimation(tiny_depth_config(like)).save_pretrained(tmp_path / name)
        default_image_processor(size=56).save_pretrained(tmp_path / name)
    shards = tmp_path / "shards"
    write_webdataset_shards(shards, num_shards=2, per_shard=2, size=(96, 128), seed=4)
    out = tmp_path / "run"
    model_args, data_args, args = parse_distill_args([
        "--config", "sa1b_multiteacher",
        # tiny stand-ins for Depth Anything V2 Large and GenPercept disparity, drawn 7:3 as in the config
        "--teacher_models", str(tmp_path / "teacher"), str(genpercept_folder),
        "--student_arch", str(tmp_path / "student"), "--student_init", "random",
        "--dataset_dir", str(shards), "--global_crop_size", "56", "--local_crop_size", "56", "--min_region", "80",
        "--batch_size", "2", "--num_iterations", "2", "--logging_steps", "2", "--dataloader_num_workers", "0",
        "--report_to", "none", "--use_cpu", "--seed", "0", "--output_dir", str(out),
    ])
    assert model_args.teacher_probabilities == pytest.approx([0.7, 0.3])
    assert args.lambda_feat == 1.0 and data_args.dataset_format == "webdataset"
    # seed 0 draws Depth Anything at step 0 and GenPercept at step 1
    draws = [int(np.random.default_rng((0, step)).choice(2, p=[0.7, 0.3])) for step in range(2)]
    assert draws == [0, 1]

    trainer = run_distillation(model_args, data_args, args)
    assert trainer.state.global_step == 2
    log = next(entry for entry in trainer.state.log_history if "loss_sc" in entry)
    assert log[f"teacher_frac/{genpercept_folder.name}"] == 0.5 and log["teacher_frac/teacher"] == 0.5
    assert log["feat_skipped"] == 0.5  # the GenPercept step had no tokens
    assert np.isfinite([log["loss"], log["loss_sc"], log["loss_lg"], log["loss_grad"], log["loss_feat"]]).all()
    assert (out / "model.safetensors").is_file()


def test_genpercept_unet_weights_load_from_a_bin_file_and_missing_weights_are_named(genpercept_folder, tmp_path):
    import shutil

    from safetensors.torch import load_file

    folder = shutil.copytree(genpercept_folder, tmp_path / "bin")
    weights = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(weights, folder / "unet" / "diffusion_pytorch_model.bin")
    teacher = build_teacher(str(folder))
    torch.testing.assert_close(teacher.unet.state_dict(), weights, rtol=0, atol=0)
    (folder / "unet" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="bin/unet: no diffusion_pytorch_model"):
        build_teacher(str(folder))
