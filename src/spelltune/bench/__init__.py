"""Speed benchmarks: `python -m spelltune.bench` (CPU, bench/results.json) and
`python -m spelltune.bench.gpu` (Unsloth vs transformers + PEFT, bench/gpu_results.json)."""
