"""sweep.yaml: the search space, in the W&B sweep schema; our extensions (`constraints`,
`seed`, a `median` early_terminate) in `<name>.spelltune.yaml` beside it, which W&B never
reads (W&B rejects unknown top-level keys), or inline for a file only we read.

This module is light (pydantic + yaml, no torch, no optuna): it validates the file, turns
it into concrete configurations for grid and random search, and checks every
configuration against the params schema (spelltune.params) before anything is queued.

    method: grid | random | bayes
    metric: {name: val/letter_position_accuracy, goal: maximize}
    parameters:
      train.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 3.0e-3}
      lora.r: {values: [4, 8, 16]}
      train.seed: {value: 0}
    run_cap: 20
    early_terminate: {type: hyperband, min_iter: 1, eta: 2}   # min_iter: validation evaluations
  sweep.spelltune.yaml:
    constraints: ["lora.alpha >= lora.r"]
    seed: 0                                    # random draws and TPE
"""

from __future__ import annotations

import ast
import copy
import itertools
import json
import math
import operator
import random
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spelltune.params import Params, ParamsError, error_line, flatten, parse, yaml_values

DISTRIBUTIONS = ("constant", "categorical", "uniform", "int_uniform", "q_uniform", "log_uniform_values")
FINITE = ("constant", "categorical", "int_uniform", "q_uniform")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# W&B's sweep schema allows these top-level keys and no others ("Malformed sweep config").
WANDB_KEYS = ("apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
              "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters")
EXTENSION_KEYS = ("constraints", "seed", "early_terminate")  # what <name>.spelltune.yaml may hold
# Metrics the train stage logs at every validation evaluation (DVCLive and W&B history):
# the only ones early termination can act on, W&B's hyperband counting their logs.
TRAINING_METRICS = ("val/loss", "val/perplexity", "val/letter_position_accuracy", "val/spelling_exact_match",
                    "val/train_val_gap")


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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Every metric a finished run writes, by name (the contract in docs/model.md): the one list a
# sweep's metric is checked against. metrics/eval.json holds val/* and test/* of the scores,
# metrics/train.json train_minutes and the final losses; metrics/summary.json its scalars
# and, under `final`, the last training metrics (as metrics/train/metrics.json). A new
# metric is added here.
EVAL_METRICS = ("letter_position_accuracy", "spelling_exact_match", "char_error_rate")
TRAIN_METRICS = (
    "train/loss", "train/perplexity", "train/learning_rate", "train/grad_norm",
    "time/wallclock_hours", "time/gradient_steps", "time/tokens_seen", "progress/completion_pct",
    "throughput/tokens_per_second", "throughput/steps_per_hour",
    "memory/rss_mb", "memory/gpu_allocated_mb", "memory/gpu_reserved_mb",
    "val/loss", "val/perplexity", "val/train_val_gap", "val/wallclock_hours",
)
SUMMARY_METRICS = ("best_step", "stopped_at_step", "wallclock_seconds", "seconds_to_first_step", "tokens_seen",
                   "train_minutes")
METRIC_NAMES = tuple(
    sorted(
        {f"{split}/{name}" for split in ("val", "test") for name in EVAL_METRICS}
        | set(TRAIN_METRICS)
        | set(SUMMARY_METRICS)
    )
)
# The files those are read from (spelltune.sweeps.trials.metric_value); `other/file.json:key` is not checked.
METRIC_FILES = ("metrics/eval.json", "metrics/train.json", "metrics/summary.json", "metrics/train/metrics.json")


def _known_metric(name: str) -> str:
    path, _, key = name.rpartition(":")
    if (not path or path in METRIC_FILES) and key not in METRIC_NAMES:
        raise ValueError(f"unknown metric; known: {', '.join(METRIC_NAMES)}")
    return name


class Metric(Strict):
    name: Annotated[str, Field(min_length=1), AfterValidator(_known_metric)]
    goal: Literal["minimize", "maximize"] = "minimize"
    target: float | None = None  # W&B: stop when reached (accepted; not used here)


class EarlyTerminate(Strict):
    # hyperband: W&B's; median: our extension (Optuna's MedianPruner)
    type: Literal["hyperband", "median"]
    # In W&B's unit: the number of times the metric was logged, that is validation
    # evaluations (one every train.eval_every optimizer steps); Optuna gets the steps.
    min_iter: Annotated[int, Field(ge=1)] | None = None
    max_iter: Annotated[int, Field(ge=1)] | None = None
    eta: Annotated[int, Field(ge=2)] = 3
    s: Annotated[int, Field(ge=1)] | None = None  # W&B's bracket count (Optuna derives it)
    strict: bool | None = None  # W&B option, accepted and ignored

    @model_validator(mode="after")
    def _iters(self) -> EarlyTerminate:
        if self.type == "hyperband" and self.min_iter is None and self.max_iter is None:
            raise ValueError("hyperband needs min_iter (the first rung, in validation evaluations) or max_iter")
        if self.min_iter and self.max_iter and self.max_iter < self.min_iter:
            raise ValueError(f"max_iter ({self.max_iter}) must be >= min_iter ({self.min_iter})")
        return self


class ParamSpec(Strict):
    value: Any = None
    values: Annotated[list[Any], Field(min_length=1)] | None = None
    probabilities: list[Annotated[float, Field(ge=0)]] | None = None
    distribution: str | None = None
    min: float | None = None
    max: float | None = None
    q: Annotated[float, Field(gt=0)] | None = None

    @field_validator("distribution")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is None or value in DISTRIBUTIONS:
            return value
        hint = (
            "; W&B's log_uniform takes min/max as exponents: use log_uniform_values"
            if value.startswith("log_uniform") or value.startswith("q_log")
            else ""
        )
        raise ValueError(f"unsupported distribution {value!r}; allowed: {', '.join(DISTRIBUTIONS)}{hint}")

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        given = self.model_fields_set
        if self.distribution is None:  # inferred the way W&B does
            if "value" in given:
                self.distribution = "constant"
            elif self.values is not None:
                self.distribution = "categorical"
            elif self.min is not None and self.max is not None:
                self.distribution = "int_uniform" if self._ints() else "uniform"
            else:
                raise ValueError("give value, values, or min and max (with a distribution)")
        d = self.distribution
        if d == "constant" and "value" not in given:
            raise ValueError("distribution constant needs value")
        if d == "categorical":
            if self.values is None:
                raise ValueError("distribution categorical needs values")
            if self.probabilities is not None:
                if len(self.probabilities) != len(self.values):
                    raise ValueError(f"probabilities has {len(self.probabilities)} entries, values {len(self.values)}")
                if not math.isclose(sum(self.probabilities), 1.0, abs_tol=1e-6):
                    raise ValueError(f"probabilities must sum to 1, got {sum(self.probabilities):g}")
        if d in ("uniform", "int_uniform", "q_uniform", "log_uniform_values"):
            if self.min is None or self.max is None:
                raise ValueError(f"distribution {d} needs min and max")
            if self.max < self.min:
                raise ValueError(f"max ({self.max:g}) must be >= min ({self.min:g})")
            if d == "int_uniform" and not self._ints():
                raise ValueError(f"int_uniform needs integer min and max, got {self.min:g} and {self.max:g}")
            if d == "log_uniform_values" and self.min <= 0:
                raise ValueError(f"log_uniform_values needs min > 0, got {self.min:g}")
            if d == "q_uniform" and self.q is None:
                self.q = 1.0  # W&B's default
        return self

    def _ints(self) -> bool:
        return float(self.min).is_integer() and float(self.max).is_integer()

    # ---- the values a grid enumerates / a random draw picks from
    def grid_size(self) -> int:
        """How many values grid() gives, without building them."""
        d = self.distribution
        if d == "int_uniform":
            return int(self.max) - int(self.min) + 1
        if d == "q_uniform":
            return int(math.floor((self.max - self.min) / self.q + 1e-9)) + 1
        return len(self.grid())

    def grid(self) -> list[Any]:
        d = self.distribution
        if d == "constant":
            return [self.value]
        if d == "categorical":
            return list(self.values)
        if d == "int_uniform":
            return list(range(int(self.min), int(self.max) + 1))
        if d == "q_uniform":
            n = int(math.floor((self.max - self.min) / self.q + 1e-9))
            return [_tidy(self.min + i * self.q, self.q) for i in range(n + 1)]
        raise SweepError(f"distribution {d} is continuous")

    def sample(self, rng: random.Random) -> Any:
        d = self.distribution
        if d == "constant":
            return self.value
        if d == "categorical":
            return rng.choices(self.values, weights=self.probabilities)[0]
        if d == "int_uniform":
            return rng.randint(int(self.min), int(self.max))
        if d == "uniform":
            return six_digits_within(rng.uniform(self.min, self.max), self.min, self.max)
        if d == "log_uniform_values":
            return six_digits_within(math.exp(rng.uniform(math.log(self.min), math.log(self.max))), self.min, self.max)
        if d == "q_uniform":
            return rng.choice(self.grid())
        raise AssertionError(d)

    def describe(self) -> str:
        d = self.distribution
        if d == "constant":
            return f"= {format_value(self.value)}"
        if d == "categorical":
            return "one of " + ", ".join(format_value(v) for v in self.values)
        extra = f", q={self.q:g}" if d == "q_uniform" else ""
        return f"{d}({self.min:g}, {self.max:g}{extra})"


def six_digits_within(x: float, low: float, high: float) -> float:
    """Six significant digits (readable in `dvc exp show`), kept within [low, high]."""
    return min(max(float(f"{x:.6g}"), low), high)


def _tidy(x: float, q: float) -> float | int:
    decimals = max(0, -int(math.floor(math.log10(q)))) + 6 if q < 1 else 6
    x = round(x, decimals)
    return int(x) if float(x).is_integer() and float(q).is_integer() else x


def _known_key(key: str) -> str:
    if key not in PARAMS_KEYS:
        raise ValueError(unknown_key_message(key))
    return key


def _valid_constraint(expr: str) -> str:
    Constraint(expr)  # raises ValueError with the reason
    return expr


ParamKey = Annotated[str, AfterValidator(_known_key)]
ConstraintText = Annotated[str, AfterValidator(_valid_constraint)]


MAX_GRID = 10_000  # grid points planned; a CPU trial takes minutes, so more would never finish


class Sweep(Strict):
    method: Literal["grid", "random", "bayes"]
    metric: Metric | None = None
    parameters: Annotated[dict[ParamKey, ParamSpec], Field(min_length=1)]
    run_cap: Annotated[int, Field(gt=0)] | None = None
    early_terminate: EarlyTerminate | None = None
    constraints: list[ConstraintText] = []
    seed: int = 0
    # W&B fields we accept and leave to W&B
    name: Annotated[str, Field(pattern=NAME_RE)] | None = None
    controller: dict | None = None
    description: str | None = None
    program: str | None = None
    command: list[str] | None = None
    project: str | None = None
    entity: str | None = None

    @model_validator(mode="after")
    def _method_needs(self) -> Sweep:
        if self.method == "grid":
            continuous = [k for k, p in self.parameters.items() if p.distribution not in FINITE]
            if continuous:
                raise ValueError(
                    f"method grid needs a finite set for every parameter; {', '.join(continuous)} "
                    "is continuous: use values, int_uniform or q_uniform"
                )
            sizes = {k: p.grid_size() for k, p in self.parameters.items()}
            if math.prod(sizes.values()) > MAX_GRID:
                shown = " x ".join(f"{n:,} {k}" for k, n in sizes.items() if n > 1)
                raise ValueError(f"a grid of {math.prod(sizes.values()):,} points ({shown}); at most {MAX_GRID:,}: "
                                 "narrow the ranges, or use method random with a run_cap")
        else:
            if self.run_cap is None:
                raise ValueError(f"method {self.method} needs run_cap (the number of trials)")
        if self.method == "bayes" and self.metric is None:
            raise ValueError("method bayes needs metric (name and goal)")
        if self.early_terminate is not None and self.metric is None:
            raise ValueError("early_terminate needs metric (name and goal)")
        return self

    @property
    def metric_key(self) -> str | None:
        """The metric's key inside its JSON file (`metrics/eval.json:val/x` -> `val/x`)."""
        return None if self.metric is None else self.metric.name.rsplit(":", 1)[-1]


# ---------------------------------------------------------------- constraints

_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}


def _bounded_pow(base, exponent):
    """** within what a params comparison needs: `lora.r ** 10 ** 10` would run for hours."""
    if abs(exponent) > 64:
        raise OverflowError(f"exponent {exponent} is too large")
    return operator.pow(base, exponent)


def _number_mul(a, b):
    """* of numbers only: `"x" * 10 ** 12` would fill the memory."""
    if isinstance(a, str) or isinstance(b, str):
        raise TypeError("no arithmetic on strings")
    return operator.mul(a, b)


_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _number_mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _bounded_pow}


class Constraint:
    """A comparison between params, e.g. `lora.alpha >= lora.r` or
    `train.warmup_steps * 4 <= train.max_steps`: names are dotted params keys; numbers,
    + - * / // % **, comparisons (chains too), and/or/not."""

    def __init__(self, expr: str):
        self.expr = expr
        try:
            self.tree = ast.parse(expr.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ValueError(f"constraint {expr!r}: not an expression ({exc.msg})") from None
        self.keys: set[str] = set()
        self._check(self.tree)
        if not isinstance(self.tree, (ast.Compare, ast.BoolOp)) and not (
            isinstance(self.tree, ast.UnaryOp) and isinstance(self.tree.op, ast.Not)
        ):
            raise ValueError(f"constraint {expr!r}: must be a comparison such as lora.alpha >= lora.r")

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, (ast.Name, ast.Attribute)):
            key = _dotted(node)
            if key is None or key not in PARAMS_KEYS:
                shown = key or ast.unparse(node)
                raise ValueError(f"constraint {self.expr!r}: {shown}: {unknown_key_message(shown)}")
            self.keys.add(key)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            pass
        elif isinstance(node, ast.Compare) and all(type(op) in _CMP for op in node.ops):
            for child in [node.left, *node.comparators]:
                self._check(child)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            self._check(node.operand)
        elif isinstance(node, ast.BoolOp):
            for child in node.values:
                self._check(child)
        else:
            raise ValueError(f"constraint {self.expr!r}: {ast.unparse(node)!r} is not allowed "
                             "(use params keys, numbers, arithmetic, comparisons, and/or/not)")

    def holds(self, flat: dict[str, Any]) -> bool:
        return bool(self._eval(self.tree, flat))

    def _eval(self, node: ast.AST, flat: dict[str, Any]) -> Any:
        if isinstance(node, (ast.Name, ast.Attribute)):
            return flat[_dotted(node)]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, flat)
            for op, comp in zip(node.ops, node.comparators):
                right = self._eval(comp, flat)
                if not _CMP[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BinOp):
            return _BIN[type(node.op)](self._eval(node.left, flat), self._eval(node.right, flat))
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, flat)
            return not v if isinstance(node.op, ast.Not) else (-v if isinstance(node.op, ast.USub) else +v)
        if isinstance(node, ast.BoolOp):
            vals = (self._eval(v, flat) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        raise AssertionError(ast.dump(node))


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


# ---------------------------------------------------------------- loading


def _one_line(err: dict, source: str) -> str:
    loc = [str(p) for p in err["loc"]]
    parent = Sweep
    if len(loc) >= 3 and loc[0] == "parameters":
        parent = ParamSpec
    elif len(loc) == 2 and loc[0] in ("metric", "early_terminate"):
        parent = Metric if loc[0] == "metric" else EarlyTerminate
    return error_line(err, source, list(parent.model_fields), literal="allowed:")


def parse_sweep(raw: Any, source: str = "sweep.yaml") -> Sweep:
    if not isinstance(raw, dict):
        raise SweepError(f"{source}: top level must be a mapping (method, metric, parameters, ...)")
    try:
        return Sweep.model_validate(raw)
    except ValidationError as exc:
        raise SweepError("\n".join(_one_line(e, source) for e in exc.errors(include_url=False))) from None


def extensions_path(path: str | Path) -> Path:
    """Where our extensions to a W&B sweep file live: sweep.yaml -> sweep.spelltune.yaml."""
    path = Path(path)
    return path.with_name(f"{path.stem}.spelltune.yaml")


def _read_yaml(path: Path) -> Any:
    try:
        return yaml_values(yaml_load(path.read_text()), str(path))
    except ParamsError as exc:
        raise SweepError(str(exc)) from None
    except FileNotFoundError:
        raise SweepError(f"{path}: not found") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


def load_sweep(path: str | Path) -> Sweep:
    """The sweep file merged with its `<name>.spelltune.yaml` when there is one."""
    path = Path(path)
    raw = _read_yaml(path)
    ext_path = extensions_path(path)
    if isinstance(raw, dict) and ext_path.exists():
        ext = _read_yaml(ext_path) or {}
        if not isinstance(ext, dict):
            raise SweepError(f"{ext_path}: top level must be a mapping ({', '.join(EXTENSION_KEYS)})")
        problems = [f"{ext_path}: {key}: unknown key; allowed: {', '.join(EXTENSION_KEYS)}"
                    for key in ext if key not in EXTENSION_KEYS]
        problems += [f"{ext_path}: {key}: also set in {path}; keep it in one of the two"
                     for key in ext if key in raw and key != "early_terminate"]
        if problems:
            raise SweepError("\n".join(problems))
        raw = {**raw, **ext}  # an early_terminate here (say type: median) replaces W&B's for us
    sweep = parse_sweep(raw, str(path))
    if sweep.name is None:
        stem = re.sub(r"[^A-Za-z0-9_-]", "-", path.stem) or "sweep"
        sweep.name = stem if re.match(NAME_RE, stem) else "sweep"
    return sweep


def wandb_problems(path: str | Path) -> list[str]:
    """What `wandb sweep <path>` would warn about or get wrong, one line each (the file
    alone: W&B never reads the .spelltune.yaml beside it)."""
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        return []
    ext = extensions_path(path).name
    lines = [f"{key}: W&B rejects this top-level key (\"Malformed sweep config\"); move it to {ext}"
             for key in raw if key not in WANDB_KEYS]
    et = raw.get("early_terminate")
    if isinstance(et, dict) and et.get("type") not in (None, "hyperband"):
        lines.append(f"early_terminate.type = {et.get('type')!r}: W&B knows only hyperband; put it in {ext}")
    name = (raw.get("metric") or {}).get("name") if isinstance(raw.get("metric"), dict) else None
    if isinstance(name, str) and ":" in name:
        lines.append(f"metric.name = {name!r}: W&B sees keys of the run, not files; use {name.rsplit(':', 1)[1]!r}")
    if "project" not in raw:
        lines.append("project: not set; W&B then uses the default project of whoever runs `wandb sweep`")
    return lines


# ---------------------------------------------------------------- configurations


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


class Space:
    """The sweep over a base params.yaml: checks configurations, makes grid / random ones."""

    def __init__(self, sweep: Sweep, base_raw: dict | None, fixed: dict[str, Any] | None = None):
        self.sweep = sweep
        self.base_raw = base_raw or {}
        self.fixed = dict(fixed or {})  # -S overrides given on the command line: every trial
        self.constraints = [Constraint(c) for c in sweep.constraints]

    def full(self, config: dict[str, Any]) -> tuple[Params, dict[str, Any]]:
        """The params a configuration runs with (validated), and all its keys flattened."""
        raw = copy.deepcopy(self.base_raw)
        for key, value in {**self.fixed, **config}.items():
            set_dotted(raw, key, value)
        params = parse(raw, "params")
        return params, flatten(params.model_dump())

    def check(self, config: dict[str, Any]) -> str | None:
        """None when the configuration is runnable, else why not (one line per problem)."""
        try:
            _, flat = self.full(config)
        except ParamsError as exc:
            return str(exc).replace("params: ", "params schema: ")
        broken = [c.expr for c in self.constraints if not _safe_holds(c, flat)]
        return f"violates constraint {', '.join(broken)}" if broken else None

    def check_bounds(self) -> list[str]:
        """Each parameter's extreme values against its params schema field, so a search
        space reaching outside what params.yaml allows fails before any run."""
        problems = []
        for key, spec in self.sweep.parameters.items():
            if spec.distribution in FINITE:
                candidates = spec.grid() if spec.distribution != "int_uniform" else [int(spec.min), int(spec.max)]
            else:
                candidates = [spec.min, spec.max]
            adapter = field_adapter(key)
            for value in candidates:
                try:
                    adapter.validate_python(value)
                except ValidationError as exc:
                    msg = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
                    problems.append(
                        f"parameters.{key}: value {format_value(value)} is not allowed by the params schema: {msg}"
                    )
                    break
        return problems

    def early_terminate_problems(self) -> list[str]:
        """min_iter/max_iter count validation evaluations (W&B counts the metric's logs):
        they mean steps only through one train.eval_every, and only a metric the train
        stage logs at each evaluation can stop a run."""
        et, metric = self.sweep.early_terminate, self.sweep.metric_key
        if et is None or metric is None:
            return []
        problems = []
        if "train.eval_every" in self.sweep.parameters:
            problems.append("parameters.train.eval_every: early_terminate counts validation evaluations "
                            "(W&B's unit), which must be the same steps in every run: fix train.eval_every")
        _, flat = self.full({})
        logged = metric if metric.startswith("val/") else "val/" + metric.split("/", 1)[-1]
        if logged not in TRAINING_METRICS:
            problems.append(f"metric.name = {self.sweep.metric.name!r}: early_terminate needs a metric the train stage "
                            f"logs at each evaluation ({', '.join(TRAINING_METRICS)}); this one exists only at the end")
        elif (
            logged in ("val/letter_position_accuracy", "val/spelling_exact_match")
            and not flat["train.val_generate_items"]
        ):
            problems.append(f"metric.name = {metric!r}: logged during training only when train.val_generate_items > 0")
        if "train.max_steps" not in self.sweep.parameters and "train.eval_every" not in self.sweep.parameters:
            evaluations = flat["train.max_steps"] // flat["train.eval_every"]
            for key in ("min_iter", "max_iter"):
                value = getattr(et, key)
                if value is not None and value > evaluations:
                    problems.append(
                        f"early_terminate.{key} = {value}: counts validation evaluations (as W&B counts the metric's "
                        f"logs); a run has {evaluations} (train.max_steps {flat['train.max_steps']} // "
                        "train.eval_every "
                        f"{flat['train.eval_every']}), so nothing would ever stop"
                    )
        return problems

    def grid(self) -> tuple[list[dict[str, Any]], list[tuple[dict, str]]]:
        """All grid points that hold (up to run_cap), and the ones left out with why."""
        keys = list(self.sweep.parameters)
        kept, dropped = [], []
        for combo in itertools.product(*(self.sweep.parameters[k].grid() for k in keys)):
            config = dict(zip(keys, combo))
            why = self.check(config)
            if why is None:
                kept.append(config)
            else:
                dropped.append((config, why))
        cap = self.sweep.run_cap
        return (kept[:cap] if cap else kept), dropped

    def random(self) -> tuple[list[dict[str, Any]], int]:
        """run_cap distinct draws that hold (seeded by `seed`), and how many draws were rejected."""
        rng = random.Random(self.sweep.seed)
        cap = self.sweep.run_cap or 0
        seen, kept, rejected = set(), [], 0
        for _ in range(100 * cap + 1000):
            if len(kept) >= cap:
                break
            config = {k: spec.sample(rng) for k, spec in self.sweep.parameters.items()}
            ident = json.dumps(config, sort_keys=True, default=str)
            if ident in seen:
                continue
            seen.add(ident)
            if self.check(config) is None:
                kept.append(config)
            else:
                rejected += 1
        return kept, rejected


def field_adapter(key: str):
    """A validator of one params key on its own (its type and bounds; rules between keys,
    such as warmup_steps <= max_steps, are checked per configuration)."""
    from pydantic import TypeAdapter

    model: type[BaseModel] = Params
    *parents, leaf = key.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    field = model.model_fields[leaf]
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)


def _safe_holds(constraint: Constraint, flat: dict[str, Any]) -> bool:
    try:
        return constraint.holds(flat)
    except (TypeError, ZeroDivisionError, KeyError, OverflowError):
        return False


def load_base_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml as raw YAML (the workspace's, which every -S override applies on top of)."""
    from spelltune.params import load

    load(path)  # the base itself must be valid
    return yaml.safe_load(Path(path).read_text()) or {}
