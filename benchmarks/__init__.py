"""Speed, memory and research benchmarks; each runs as ``python -m benchmarks.<name>`` from the repository root."""
