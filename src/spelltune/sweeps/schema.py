"""sweep.yaml: the search space, in the W&B sweep schema; our extensions (`constraints`,
`seed`, a `median` early_terminate) in `<name>.spelltune.yaml` beside it, which W&B never
reads (W&B rejects unknown top-level keys), or inline for a file only we read.

This module is light (pydantic + yaml, no torch, no optuna): the file's schema and its
loading. Constraints: sweeps/constraints.py; -S values: sweeps/overrides.py; W&B's view of
the file: sweeps/wandb_compat.py; configurations: sweeps/space.py. (A little over the
project's ~300 lines: W&B's schema of parameter distributions is spelled out field by
field, as W&B documents it.)

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

import math
import random
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spelltune.metric_names import EVAL_GROUPS, EVAL_METRICS, METRIC_FILES, METRIC_NAMES
from spelltune.params import ParamsError, error_line, yaml_values
from spelltune.sweeps.constraints import Constraint
from spelltune.sweeps.overrides import PARAMS_KEYS, SweepError, format_value, unknown_key_message, yaml_load

DISTRIBUTIONS = ("constant", "categorical", "uniform", "int_uniform", "q_uniform", "log_uniform_values")
FINITE = ("constant", "categorical", "int_uniform", "q_uniform")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
EXTENSION_KEYS = ("constraints", "seed", "early_terminate")  # what <name>.spelltune.yaml may hold


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_metric(name: str) -> str:
    path, _, key = name.rpartition(":")
    if (not path or path in METRIC_FILES) and key not in METRIC_NAMES:
        overall = ", ".join(m for m in METRIC_NAMES if m.count("/") < 2)
        raise ValueError(
            f"unknown metric; known: {overall}; and by subset, val/GROUP/SCORE or test/GROUP/SCORE "
            f"with GROUP one of {', '.join(EVAL_GROUPS)} and SCORE one of {', '.join(EVAL_METRICS)}"
        )
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


def read_yaml(path: Path) -> Any:
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
    raw = read_yaml(path)
    ext_path = extensions_path(path)
    if isinstance(raw, dict) and ext_path.exists():
        ext = read_yaml(ext_path) or {}
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
