"""hf_distill: cross-context distillation for monocular depth (Distill Any Depth) on the Hugging Face stack."""

__version__ = "0.1.0"
