"""`spelltune sweep`: grid, random and Bayesian search where every trial is a DVC experiment.

    spelltune sweep plan sweep.yaml            validate; print the configurations; last line `trials: N`
    spelltune sweep run sweep.yaml [-j N]      grid/random: queue them (`dvc exp run --queue`), run the
                                               queue with N workers and wait; bayes: Optuna TPE
                                               ask-and-tell, each trial `dvc exp run --temp`
    spelltune sweep finalize sweep.yaml [--top K | --exp NAME ...]
                                               the test split, once, for the chosen trials (best by the
                                               sweep's validation metric): `<name>-test` experiments
    spelltune sweep wandb-agent --k=v ...      what `wandb agent` runs: W&B's --key=value -> -S key=value

The search space is sweep.yaml (W&B's sweep schema plus `constraints` and `seed`, see
spelltune.sweeps.schema). Experiments are named `<sweep>-NNN` (grid, random) and
`<sweep>-tNNN` (bayes: the Optuna trial number), so rerunning the same command skips
what already finished. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import os

from spelltune.errors import error
from spelltune.sweeps.bayes import BayesRunner
from spelltune.sweeps.queue import configs_for, run_queue
from spelltune.sweeps.study import pruner_spec, pruner_text
from spelltune.sweeps.trials import load_all, say, show_config
from spelltune.sweeps.wandb_agent import cmd_wandb_agent
from spelltune.sweeps.wandb_compat import wandb_problems


def cmd_plan(args) -> int:
    sweep, space = load_all(args)
    head = f"sweep {sweep.name!r} ({sweep.method})"
    if sweep.metric:
        head += f", metric {sweep.metric.name} ({sweep.metric.goal})"
    print(head)
    if space.fixed:
        print(f"every trial: {show_config(space.fixed)}")
    for c in sweep.constraints:
        print(f"constraint: {c}")
    for line in wandb_problems(args.sweep):
        say(f"note: {args.sweep}: {line} (`wandb sweep` only; spelltune reads it)")
    if sweep.metric and sweep.metric.name.rsplit(":", 1)[-1].startswith("test/"):
        say("warning: choosing hyperparameters on a test/ metric leaks the test split into the choice; use val/")
    if sweep.method == "bayes":
        for key, spec in sweep.parameters.items():
            print(f"  {key}: {spec.describe()}")
        if sweep.early_terminate:
            print(f"early_terminate: {pruner_text(pruner_spec(sweep, space))}")
        print("configurations are chosen adaptively by Optuna TPE, "
              "each from the results so far; constraint and schema violations are drawn again")
        print(f"trials: {sweep.run_cap}")
        return 0
    if sweep.early_terminate:
        say("warning: early_terminate applies to method bayes only (grid and random run in `dvc queue`); ignored")
    configs, notes = configs_for(sweep, space)
    for i, config in enumerate(configs, 1):
        print(f"  {sweep.name}-{i:03d}  {show_config(config)}")
    for note in notes:
        print(note)
    print(f"trials: {len(configs)}")
    return 0


def cmd_run(args) -> int:
    sweep, space = load_all(args)
    if args.jobs < 1:
        return error("-j must be >= 1")
    if args.heartbeat_interval < 1 or args.grace_period <= args.heartbeat_interval:
        return error(f"--heartbeat-interval {args.heartbeat_interval}, --grace-period {args.grace_period}: "
                     "allowed: interval >= 1 and grace period > interval")
    # Trials (queue workers started here, bayes trial processes) inherit it: one W&B group per sweep.
    os.environ.setdefault("WANDB_RUN_GROUP", f"sweep-{sweep.name}")
    if sweep.method == "bayes":
        return BayesRunner(sweep, space, args).run()
    return run_queue(sweep, space, args)


def cmd_finalize(args) -> int:
    from spelltune.store import StoreError
    from spelltune.sweeps.finalize import FinalizeError, finalize, ranked_trials

    if args.top < 1:
        return error(f"--top {args.top}: allowed: 1 or more")
    sweep, _ = load_all(args)
    try:
        if args.exp:
            names = args.exp
        else:
            if sweep.metric is None:
                return error(f"{args.sweep}: no metric to choose the finalists by: name them with --exp")
            ranked = ranked_trials(sweep.name, sweep.metric_key, sweep.metric.goal == "maximize")
            if not ranked:
                return error(f"no finished trial of sweep {sweep.name!r} on this commit has {sweep.metric_key}")
            names = ranked[: args.top]
            say(f"finalists by {sweep.metric_key}: {', '.join(names)}")
        for name, found in finalize(names).items():
            print(f"{name}: " + ", ".join(f"{m} {v:.3f}" if v is not None else f"{m} –" for m, v in found.items()))
    except (FinalizeError, StoreError) as exc:
        return error(exc)
    return 0


def add_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="hyperparameter search over sweep.yaml (grid, random, bayes)",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = sweep.add_subparsers(dest="sweep_command", required=True)

    def common(p):
        p.add_argument("sweep", nargs="?", default="sweep.yaml", help="the search space (default sweep.yaml)")
        p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                       help="a params override for every trial (repeatable), e.g. -S train.max_steps=50")
        p.add_argument("--params", default="params.yaml", help=argparse.SUPPRESS)

    plan = ssub.add_parser("plan", help="validate sweep.yaml and print the configurations; last line `trials: N`")
    common(plan)
    plan.set_defaults(func=cmd_plan)

    run = ssub.add_parser("run", help="run the sweep: every trial a DVC experiment")
    common(run)
    run.add_argument("-j", "--jobs", type=int, default=1, help="concurrent workers (CPU: the cores are shared)")
    run.add_argument("--no-start", action="store_true", help="grid/random: only queue (start with dvc queue start)")
    run.add_argument("--storage", help="bayes: Optuna storage, a database URL (postgresql://user:pw@host/db, "
                     "sqlite:///x.db) or a journal file path (a shared filesystem for several machines); "
                     "default .spelltune/sweeps/<name>.journal")
    run.add_argument("--heartbeat-interval", type=int, default=60, metavar="S",
                     help="bayes: each running trial's worker beats every S seconds (default %(default)s)")
    run.add_argument("--grace-period", type=int, default=180, metavar="S",
                     help="bayes: a running trial with no beat for S seconds is failed and run again by another "
                     "worker (default %(default)s)")
    run.add_argument("--push", metavar="GIT_REMOTE",
                     help="bayes: `dvc exp push GIT_REMOTE <exp>` after each trial (its outputs go to the default DVC "
                     "remote), so that every machine's trials meet in one place")
    run.set_defaults(func=cmd_run)

    final = ssub.add_parser("finalize", help="score the chosen trials on the test split, once (<name>-test)")
    common(final)
    final.add_argument("--top", type=int, default=1, help="the K best trials by the sweep's metric (default 1)")
    final.add_argument("--exp", action="append", help="an experiment to finalize instead (repeatable)")
    final.set_defaults(func=cmd_finalize)

    agent = ssub.add_parser(
        "wandb-agent", help="the program `wandb agent` runs: --key=value -> dvc exp run -S key=value"
    )
    common(agent)
    agent.add_argument("--threads", type=int, default=0, help="-S train.threads for the trial (0: leave it)")
    agent.add_argument("--dry-run", action="store_true", help="print the dvc command instead of running it")
    agent.set_defaults(func=cmd_wandb_agent, wants_rest=True)
