"""The parts of a Bayesian sweep's Optuna study: where it is stored (storage URLs), its
pruner (early_terminate), its sampler, and the search space as Optuna distributions
(suggested for a trial, decoded back into params values)."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

from spelltune.sweeps.schema import FINITE, Sweep, six_digits_within
from spelltune.sweeps.space import Space
from spelltune.sweeps.trials import STATE_DIR, state_dir


# -- storage URLs
def default_storage(name: str) -> str:
    return str(state_dir() / "sweeps" / f"{name}.journal")


def default_storages(repo: Path) -> list[str]:
    """The journal files of the Bayesian sweeps run in `repo` on the default storage."""
    return [str(p) for p in sorted((repo / STATE_DIR / "sweeps").glob("*.journal"))]


def absolute_storage(url: str) -> str:
    """The storage as the trial's training process (in DVC's temp workspace) must see it."""
    from spelltune.training.pruning import DB_PREFIXES

    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    if url.startswith(DB_PREFIXES):
        return url
    return str(Path(url.removeprefix("journal:")).resolve())


def shown_storage(url: str) -> str:
    """The storage URL without its password, for messages."""
    from spelltune.training.pruning import DB_PREFIXES

    if not url.startswith(DB_PREFIXES):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- pruner
def pruner_spec(sweep: Sweep, space: Space) -> dict | None:
    """Optuna's pruner for early_terminate. min_iter/max_iter count validation evaluations,
    as W&B's hyperband counts how often the metric was logged; the train stage reports to
    Optuna at optimizer steps, so the rungs become min_iter * train.eval_every steps."""
    et = sweep.early_terminate
    if et is None:
        return None
    _, flat = space.full({})
    every = flat["train.eval_every"]
    max_steps = None if "train.max_steps" in sweep.parameters else flat["train.max_steps"]
    max_evals = et.max_iter or (max_steps // every if max_steps else None)
    min_evals = et.min_iter or max(1, (max_evals or 1) // et.eta ** ((et.s or 3) - 1))
    if et.type == "median":
        return {"type": "median", "min_resource": min_evals * every, "n_startup_trials": 2, "eval_every": every}
    return {"type": "hyperband", "min_resource": min_evals * every,
            "max_resource": max_evals * every if max_evals else "auto", "reduction_factor": et.eta, "eval_every": every}


def pruner_text(spec: dict | None) -> str:
    if not spec:
        return "none"
    every = spec.get("eval_every") or 1
    first = f"step {spec['min_resource']} (evaluation {spec['min_resource'] // every}, every {every} steps)"
    if spec["type"] == "median":
        return (f"median rule: from {first} on, a trial whose value is worse than the "
                "median of earlier trials at the same step stops (after 2 trials)")
    return (f"hyperband: rungs from {first} up to step {spec['max_resource']}, "
            f"keeping the best 1/{spec['reduction_factor']} at each rung (Optuna HyperbandPruner)")


# -- the study
def open_study(optuna, sweep: Sweep, storage, spec: dict | None, host: str):
    """The sweep's study, created or joined (load_if_exists), with this process's sampler."""
    from spelltune.training.pruning import make_pruner

    cap = sweep.run_cap or 1
    # Each worker process seeds its own sampler: two processes with the same seed would
    # propose the same configurations. (Parallel TPE is not reproducible anyway; every
    # trial's params are in its DVC experiment.)
    seed = (sweep.seed * 1_000_003 + zlib.crc32(f"{host}:{os.getpid()}".encode())) % 2**32
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, cap // 2)))
    return optuna.create_study(
        study_name=sweep.name, storage=storage, sampler=sampler, pruner=make_pruner(spec),
        direction=sweep.metric.goal, load_if_exists=True,
    )


# -- the search space
def distributions(sweep: Sweep) -> tuple[dict, dict, dict]:
    """Optuna distributions of the searched parameters, the constants, and JSON-encoded
    categorical choices (Optuna's choices must be scalars)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists, constants, encoded = {}, {}, {}
    for key, spec in sweep.parameters.items():
        d = spec.distribution
        if d == "constant":
            constants[key] = spec.value
        elif d == "categorical":
            if all(v is None or isinstance(v, (bool, int, float, str)) for v in spec.values):
                dists[key] = CategoricalDistribution(spec.values)
            else:
                dists[key] = CategoricalDistribution([json.dumps(v) for v in spec.values])
                encoded[key] = True
        elif d == "int_uniform":
            dists[key] = IntDistribution(int(spec.min), int(spec.max))
        elif d == "q_uniform":
            if all(float(x).is_integer() for x in (spec.min, spec.max, spec.q)):
                dists[key] = IntDistribution(int(spec.min), int(spec.max), step=int(spec.q))
            else:
                dists[key] = FloatDistribution(spec.min, spec.max, step=spec.q)
        else:
            dists[key] = FloatDistribution(spec.min, spec.max, log=d == "log_uniform_values")
    assert set(FINITE) | {"uniform", "log_uniform_values"} >= {s.distribution for s in sweep.parameters.values()}
    return dists, constants, encoded


def suggest(trial, dists: dict) -> dict:
    """The trial's params from the sampler (a WAITING retry: the ones it was enqueued with)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    for key, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            trial.suggest_categorical(key, d.choices)
        elif isinstance(d, IntDistribution):
            trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
        else:
            trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
    return trial.params


def decode(params: dict, dists: dict, encoded: dict) -> dict:
    """Params values from the trial's: JSON choices decoded, continuous floats at six digits."""
    from optuna.distributions import CategoricalDistribution

    out = {}
    for key, value in params.items():
        if key in encoded:
            value = json.loads(value)
        elif isinstance(value, float) and not isinstance(dists[key], CategoricalDistribution):
            if dists[key].step is None:
                value = six_digits_within(value, dists[key].low, dists[key].high)
        out[key] = value
    return out
