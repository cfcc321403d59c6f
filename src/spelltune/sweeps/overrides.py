"""DVC's `-S key=value` grammar (Hydra's override syntax, YAML 1.2 values) and the params
keys it may name; the sweep files' YAML reader and their error type."""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel

from spelltune.params import Params


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: `1e-4` is a number (PyYAML's YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class SweepError(ValueError):
    """A sweep.yaml problem, already phrased as the line(s) the user sees."""


def params_keys(model: type[BaseModel] = Params, prefix: str = "") -> list[str]:
    """Every leaf key of the params schema as a dotted name: data.seed, train.lr, ..."""
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += params_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


PARAMS_KEYS = tuple(params_keys())


def unknown_key_message(key: str) -> str:
    section = key.split(".")[0]
    in_section = [k for k in PARAMS_KEYS if k.startswith(section + ".")]
    if in_section:
        return f"unknown params key; allowed in {section}: {', '.join(in_section)}"
    sections = sorted({k.split(".")[0] for k in PARAMS_KEYS})
    return f"unknown params key; keys are <section>.<name> with section one of {', '.join(sections)}"


def format_value(value: Any) -> str:
    """A value as DVC's `-S key=value` (Hydra override grammar) reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if re.fullmatch(r"[A-Za-z_/~.][A-Za-z0-9_./~:@+-]*", text) and text.lower() not in ("true", "false", "null"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides_args(config: dict[str, Any]) -> list[str]:
    return [arg for key, value in config.items() for arg in ("-S", f"{key}={format_value(value)}")]


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line: the value read as YAML (as DVC's -S does)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SweepError(f"-S {text!r}: expected key=value")
    key = key.strip()
    if key not in PARAMS_KEYS:
        raise SweepError(f"-S {key}: {unknown_key_message(key)}")
    try:
        return key, yaml_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return key, value


def set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value
