"""Test-wide settings: no network, quiet libraries, small thread pools."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# Test models are tiny: one intra-op thread per process is faster than two fighting over two cores, and the
# subprocess tests (scripts, 2-process DDP) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from hf_distill.hub import CARD_DECIMALS  # noqa: E402  (after the environment above)

# A model-card metric is the measured value rounded to CARD_DECIMALS: off by at most half its last digit.
CARD_ROUNDING = 0.5 * 10**-CARD_DECIMALS + 1e-12
