"""The Hub side of a student: names, licences, model-index, cards and push, each in its own module."""

from hf_distill.hub.cards import (
    SIZE_SPEED_PLACEHOLDER,
    TEMPLATE_PATH,
    add_onnx_usage,
    build_model_card,
    existing_results,
    existing_size_speed,
    has_onnx,
    onnx_usage,
    update_model_card,
)
from hf_distill.hub.licences import known_license, resolve_license
from hf_distill.hub.model_index import (
    CARD_DECIMALS,
    TASK,
    TRAINING_CONFIG,
    eval_results_to_hub,
    evaluation_table,
    is_training_result,
    merge_eval_results,
    training_eval_results,
)
from hf_distill.hub.names import ONNX_FILE, ONNX_FILES, ONNX_FOLDER, README, display_name, hub_id
from hf_distill.hub.push import STUDENT_FILES, push_student_to_hub, student_files, upload_student

__all__ = [
    "CARD_DECIMALS", "ONNX_FILE", "ONNX_FILES", "ONNX_FOLDER", "README", "SIZE_SPEED_PLACEHOLDER", "STUDENT_FILES",
    "TASK", "TEMPLATE_PATH", "TRAINING_CONFIG", "add_onnx_usage", "build_model_card", "display_name",
    "eval_results_to_hub", "evaluation_table", "existing_results", "existing_size_speed", "has_onnx", "hub_id",
    "is_training_result", "known_license", "merge_eval_results", "onnx_usage", "push_student_to_hub",
    "resolve_license", "student_files", "training_eval_results", "update_model_card", "upload_student",
]
