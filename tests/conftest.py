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
