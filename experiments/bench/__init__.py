"""Benchmarks: the suite behind `ltc bench` (`suite`: settings, registry, runner; `tables`), one module
per measured case with `run(...)` and `case(settings)`, and `vision_gpu`, the GPU runner of the
vision recipes (its own CLI, called by experiments/scripts/gpu_vision.sh)."""
