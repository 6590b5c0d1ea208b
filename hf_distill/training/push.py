"""The student's card and its pushes to the Hub: at the end of training, and in the background at each save."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, ModelCard
from transformers.trainer_utils import HubStrategy
from transformers.utils.hub import PushInProgress

from hf_distill.hub import README, existing_results, existing_size_speed, upload_student
from hf_distill.training.card import build_student_card, card_model_name


class StudentPushMixin:
    """``DistillationTrainer``'s card and Hub methods: only the student folder (config, weights, processor, card) and,
    as ``--hub_strategy`` asks, whole checkpoints are pushed, never the rest of ``output_dir``."""

    _hub_api: HfApi | None = None

    def render_card(self, model_name: str | None = None) -> ModelCard:
        """The student's card as it stands now (``hf_distill.training.card.build_student_card``)."""
        return build_student_card(
            self.card_info, self.args, model_name=model_name or card_model_name(self.args, self.hub_model_id),
            state=self.state, existing=existing_results(self.args.output_dir),
            size_speed=existing_size_speed(self.args.output_dir),
        )

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """Render the student's card into ``output_dir/README.md`` (see ``hf_distill.training.card``): named after
        ``--hub_model_id`` (else the repository pushed to, else the output folder), with the best and last
        training-time evaluation in its model-index beside the entries ``scripts/evaluate.py`` wrote. The generic
        Trainer card arguments (language, tags, ...) are not used."""
        if self.is_world_process_zero():
            self.render_card(model_name).save(os.path.join(self.args.output_dir, README))

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ) -> str | None:
        """Save the student folder and its card, wait for pending checkpoint pushes and upload, in one commit, the
        student (config, weights, processor, README.md) and nothing else. Returns the commit URL (None off the main
        process). The upload always blocks; ``kwargs`` go to ``create_model_card``."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)  # not save_model(): with push_to_hub set, it would push again
        self.create_model_card(**kwargs)
        if not self.is_world_process_zero():
            return None
        self._finish_current_push()
        output_dir = Path(self.args.output_dir)
        commit = upload_student(self.hub_model_id, output_dir, output_dir / README, token=token,
                                revision=revision or self.args.hub_revision, commit_message=commit_message)
        return str(commit.commit_url)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Uploads nothing: the Trainer calls it inside ``_save_checkpoint`` before the projectors are written, and
        its upload is all of ``output_dir`` (flat exports, visualisations, logs); ``_save_checkpoint`` pushes through
        ``push_checkpoint`` once the checkpoint is complete. The Trainer rotates old checkpoints right after
        this call: with ``--save_total_limit``, a running upload is awaited so that its checkpoint is not deleted
        while it is read."""
        if self.args.save_total_limit is not None:
            self._finish_current_push()

    def push_checkpoint(self, checkpoint_folder: Path) -> None:
        """Push at a save, in the background, as ``--hub_strategy`` says: ``every_save`` uploads the checkpoint's
        student (config, weights, processor) with the current card; ``checkpoint`` adds the whole checkpoint as
        ``last-checkpoint/`` and ``all_checkpoints`` as ``checkpoint-{step}/`` (resumable with
        ``--resume_from_checkpoint``); ``end`` pushes nothing before the end. As in the Trainer, a save is skipped
        while the previous push is running unless ``--hub_always_push``."""
        strategy = self.args.hub_strategy
        if not self.is_world_process_zero() or strategy == HubStrategy.END:
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        path_in_repo = {HubStrategy.CHECKPOINT: "last-checkpoint",
                        HubStrategy.ALL_CHECKPOINTS: checkpoint_folder.name}.get(strategy)
        if self._hub_api is None:
            self._hub_api = HfApi()
        job = self._hub_api.run_as_future(
            upload_student, self.hub_model_id, checkpoint_folder, str(self.render_card()),
            checkpoint=checkpoint_folder if path_in_repo else None, checkpoint_path_in_repo=path_in_repo,
            token=self.args.hub_token, revision=self.args.hub_revision,
            commit_message=f"Training in progress, step {self.state.global_step}",
        )
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress([job])
        else:
            self.push_in_progress.jobs.append(job)
