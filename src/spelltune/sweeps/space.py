"""A sweep's configurations over the workspace's params.yaml: each checked against the
params schema and the constraints before anything is queued; grid and random ones made here."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError

from spelltune.metric_names import TRAINING_METRICS
from spelltune.params import Params, ParamsError, flatten, parse
from spelltune.sweeps.constraints import Constraint, safe_holds
from spelltune.sweeps.overrides import format_value, set_dotted
from spelltune.sweeps.schema import FINITE, MAX_GRID, ParamSpec, Sweep


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
        broken = [c.expr for c in self.constraints if not safe_holds(c, flat)]
        return f"violates constraint {', '.join(broken)}" if broken else None

    def check_bounds(self) -> list[str]:
        """Each parameter's extreme values against its params schema field, so a search
        space reaching outside what params.yaml allows fails before any run; first, a
        q_uniform too fine to list (its values are listed for the bounds and for each draw)."""
        problems = []
        for key, spec in self.sweep.parameters.items():
            too_many = too_many_values(spec)
            if too_many:
                problems.append(f"parameters.{key}: {too_many}")
                continue
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


def too_many_values(spec: ParamSpec) -> str | None:
    """Why a q_uniform has more values than a sweep can list (MAX_GRID), counted without
    listing them; None for every other parameter. Grid, random and bayes alike: random draws
    and the bounds check list its values, and q = 1e-10 would be tens of millions of them."""
    if spec.distribution != "q_uniform":
        return None
    steps = (spec.max - spec.min) / spec.q
    if math.isfinite(steps) and math.floor(steps + 1e-9) + 1 <= MAX_GRID:
        return None
    count = f"{math.floor(steps + 1e-9) + 1:,}" if math.isfinite(steps) else "more than 10^308"
    return f"{spec.describe()} has {count} values; at most {MAX_GRID:,}: a larger q, or distribution uniform"


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


def load_base_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml as raw YAML (the workspace's, which every -S override applies on top of)."""
    from spelltune.params import load

    load(path)  # the base itself must be valid
    return yaml.safe_load(Path(path).read_text()) or {}
