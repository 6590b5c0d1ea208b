"""The model card of a distilled student, from the run's arguments and (during and after training) its state.

``CardInfo.from_arguments`` reads what a card says about teachers, initial weights and data from the three argument
dataclasses without loading any weights, so the card of a recipe can be rendered from its YAML alone
(``scripts/render_model_cards.py`` writes ``model_cards/``); ``DistillationTrainer.create_model_card`` renders the
same card with its Trainer state (steps, world size, training-time evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard
from transformers import TrainerState

from hf_distill.hub import build_model_card, has_onnx, is_training_result, training_eval_results
from hf_distill.training.arguments import DataArguments, DistillationArguments, ModelArguments
from hf_distill.training.data import DataDescription, describe_training_data, resolve_eval_data


@dataclass
class CardInfo:
    """What a student's card says about how it was made.

    teachers: as given (aliases, Hub ids, local folders; folders are shown by their name). base_model: the
    student's initial weights (None when it starts from random weights). train_data / eval_data: the data as the
    card names it. hyperparameters: the run's settings that ``DistillationArguments`` does not hold.
    """

    teachers: list[str]
    base_model: str | None = None
    train_data: DataDescription | None = None
    eval_data: DataDescription | None = None
    hyperparameters: dict = field(default_factory=dict)

    @classmethod
    def from_arguments(
        cls, model_args: ModelArguments, data_args: DataArguments, args: DistillationArguments
    ) -> CardInfo:
        """The card's facts from the run's arguments (nothing is loaded)."""
        eval_source = resolve_eval_data(data_args, args)
        hyperparameters = {
            "student_init": model_args.student_init,
            "global_crop_size": data_args.global_crop_size,
            "local_crop_size": data_args.local_crop_size,
            "num_local_patches": data_args.num_local_patches,
        }
        if len(model_args.teacher_models) > 1:
            hyperparameters["teacher_probabilities"] = [round(p, 4) for p in model_args.teacher_probabilities]
        return cls(
            teachers=list(model_args.teacher_models),
            base_model=model_args.student_arch if model_args.student_init != "random" else None,
            train_data=describe_training_data(data_args),
            eval_data=eval_source.describe(data_args) if eval_source is not None else None,
            hyperparameters=hyperparameters,
        )


def card_model_name(args: DistillationArguments, repo_id: str | None = None) -> str:
    """The name a card and its usage snippets use: ``--hub_model_id``, else the repository pushed to, else the
    output folder's name."""
    return args.hub_model_id or repo_id or Path(args.output_dir).resolve().name


def build_student_card(
    info: CardInfo,
    args: DistillationArguments,
    *,
    model_name: str,
    state: TrainerState | None = None,
    existing: Sequence[EvalResult] = (),
    size_speed: str | None = None,
) -> ModelCard:
    """Render the student's card.

    Args:
        info: teachers, initial weights, data (``CardInfo.from_arguments``).
        args: the run's arguments (objective, optimisation, ``--license``).
        model_name: the repository id or folder name the usage snippets load (``card_model_name``).
        state: the Trainer state: its step count and the best and last training-time evaluation (model-index).
        existing: model-index entries of the card being replaced; those of ``scripts/evaluate.py`` are kept, those
            of an earlier training-time evaluation are replaced.
        size_speed: the measured "Size and speed" section of the card being replaced (``existing_size_speed``).
    """
    steps = state.max_steps if state is not None and state.max_steps > 0 else args.max_steps
    hyperparameters = {
        **args.loss_options(),
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        # the launch decides the process count: known once a run has a state
        **({"world_size": args.world_size} if state is not None else {}),
        **({"max_steps": steps} if steps > 0 else {"num_train_epochs": args.num_train_epochs}),
        "seed": args.seed,
        **info.hyperparameters,
    }
    results = [entry for entry in existing if not is_training_result(entry)]
    if state is not None and info.eval_data is not None and args.metric_for_best_model:
        results += training_eval_results(
            [log for log in state.log_history if any(k.startswith("eval_") for k in log)],
            metric_for_best_model=args.metric_for_best_model,
            greater_is_better=bool(args.greater_is_better),
            dataset_type=info.eval_data.index_type or info.eval_data.name,
            dataset_name=info.eval_data.name,
            dataset_split=info.eval_data.split,
        )
    train = info.train_data
    return build_model_card(
        model_name=model_name,
        base_model=info.base_model,
        teachers=info.teachers,
        datasets=[train.hub_id] if train is not None and train.hub_id else None,
        data_text=[train.text] if train is not None else None,
        hyperparameters=hyperparameters,
        results=results,
        license=args.license,
        onnx=args.output_dir is not None and has_onnx(args.output_dir),
        size_speed=size_speed,
    )
