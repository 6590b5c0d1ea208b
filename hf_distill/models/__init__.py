"""Depth Anything models: aliases, real and tiny structures, loading (Hub, folders, weights files), a fresh
decoder's start and input normalisation.

Every model is a `transformers.DepthAnythingForDepthEstimation`: a DINOv2 backbone (`model.backbone`), a DPT neck
(`model.neck`) and a depth head (`model.head`). Relative models predict disparity-like maps (B, H, W).
"""

from hf_distill.models.configs import (
    EXAMPLE_PHOTO,
    IMAGE_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INIT_MODES,
    MODEL_ALIASES,
    PACKAGE_MODELS,
    PATCH_SIZE,
    ModelNotFoundError,
    depth_config,
    load_depth_config,
    load_model_config,
    resolve_model_name,
    tiny_depth_config,
)
from hf_distill.models.fresh_decoder import (
    FRESH_HEAD_LEVEL,
    FRESH_HEAD_SPREAD,
    head_calibration_pixels,
    head_pre_activation,
    reaffine_head,
    reinitialize_decoder,
    start_fresh_decoder,
)
from hf_distill.models.loading import (
    build_depth_model,
    convert_checkpoint,
    load_depth_model,
    load_weights_file,
    model_from_state_dict,
    read_state_dict,
)
from hf_distill.models.processor import (
    MeanStd,
    default_image_processor,
    image_mean_std,
    load_image_processor,
    mean_std_tensors,
    normalize_views,
)

__all__ = [
    "EXAMPLE_PHOTO", "FRESH_HEAD_LEVEL", "FRESH_HEAD_SPREAD", "IMAGE_SIZE", "IMAGENET_MEAN", "IMAGENET_STD",
    "INIT_MODES", "MODEL_ALIASES", "PACKAGE_MODELS", "PATCH_SIZE", "MeanStd", "ModelNotFoundError",
    "build_depth_model", "convert_checkpoint", "default_image_processor", "depth_config", "head_calibration_pixels",
    "head_pre_activation", "image_mean_std", "load_depth_config", "load_depth_model", "load_image_processor",
    "load_model_config", "load_weights_file", "mean_std_tensors", "model_from_state_dict", "normalize_views",
    "read_state_dict", "reaffine_head", "reinitialize_decoder", "resolve_model_name", "start_fresh_decoder",
    "tiny_depth_config",
]
