"""The notebook monitor: the curves of the run in progress (or of a finished one), in panels and one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spelltune.experiments.runs import CURVES_DIR, CompareError, load_runs, read_curves_dir


def plot_training(curves: dict[str, pd.DataFrame], title: str = ""):
    """The monitor's panels for one run: loss, val accuracy, learning rate, progress, throughput."""
    import matplotlib.pyplot as plt

    panels = [
        ("loss", ["train/loss", "val/loss"]),
        ("val accuracy", ["val/letter_position_accuracy", "val/spelling_exact_match"]),
        ("learning rate", ["train/learning_rate"]),
        ("grad norm", ["train/grad_norm"]),
        ("progress %", ["progress/completion_pct"]),
        ("tokens / s", ["throughput/tokens_per_second"]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 6.5))
    for ax, (label, names) in zip(axes.flat, panels):
        for name in names:
            if name in curves and len(curves[name]):
                ax.plot(
                    curves[name]["step"],
                    curves[name]["value"],
                    marker="o" if len(curves[name]) < 12 else None,
                    label=name,
                )
        ax.set(title=label, xlabel="optimizer step")
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def running_dirs(repo: str | Path = ".") -> dict[str, Path]:
    """Curve directories on disk: the workspace's, and those of queued runs in progress (DVC
    runs them in temporary workspaces under .dvc/tmp/exps/)."""
    repo = Path(repo)
    found = {"workspace": repo / CURVES_DIR} if (repo / CURVES_DIR).exists() else {}
    for path in sorted((repo / ".dvc" / "tmp" / "exps").glob(f"*/{CURVES_DIR}")):
        found[f"queued run in {path.relative_to(repo).parts[3]}"] = path
    return found


def latest_curves(repo: str | Path = ".", experiment: str = "") -> tuple[str, dict[str, pd.DataFrame]]:
    """The curves of `experiment` (a finished one, by name), or else of the run whose curve
    files were written last: the one in progress, or the workspace's last run."""
    dirs = running_dirs(repo)
    if experiment and experiment not in dirs:
        runs = load_runs(repo)
        name = runs.resolve(experiment)
        return name, runs.curves(name)
    if not dirs:
        raise CompareError(f"no training curves under {Path(repo) / CURVES_DIR}: start a run with `dvc exp run`")

    def newest(d):
        return max((f.stat().st_mtime for f in d.rglob("*.tsv")), default=0)

    label = experiment or max(dirs, key=lambda k: newest(dirs[k]))
    return label, read_curves_dir(dirs[label])


def phase(repo: str | Path, label: str) -> str:
    """What the run of `label` (a key of running_dirs) is doing beyond its curves: a queued
    run whose train stage has not started still holds the baseline's curves (DVC copies the
    commit into its temporary workspace), and a run past training is evaluating until its
    metrics/eval.json is written. "" when the curves tell it all."""
    from spelltune import store

    dirs = running_dirs(repo)
    if label not in dirs:
        return ""
    curves_dir = dirs[label]
    workspace = curves_dir.parents[len(Path(CURVES_DIR).parts) - 1]
    loss = curves_dir / "train" / "loss.tsv"
    committed = store.read("HEAD", f"{CURVES_DIR}/train/loss.tsv", Path(repo))
    if label != "workspace" and loss.exists() and committed is not None and loss.read_text() == committed:
        return "waiting for its train stage (the curves on disk are the baseline's)"
    progress = read_curves_dir(curves_dir).get("progress/completion_pct")
    if progress is not None and len(progress) and progress["value"].iloc[-1] >= 100 and not (
            workspace / "metrics" / "eval.json").exists():
        return "training done, evaluating (metrics/eval.json not written yet)"
    return ""


def status_line(curves: dict[str, pd.DataFrame], now: str = "") -> str:
    """One line: where the run is and how it goes (`now`: its phase, when there is one)."""
    def last(name):
        frame = curves.get(name)
        return frame["value"].iloc[-1] if frame is not None and len(frame) else None

    parts = []
    if (step := last("time/gradient_steps")) is not None:
        parts.append(f"step {step:.0f}")
    for name, fmt in (
        ("progress/completion_pct", "{:.0f}% done"),
        ("train/loss", "train/loss {:.4g}"),
        ("val/loss", "val/loss {:.4g}"),
        ("val/letter_position_accuracy", "val letter accuracy {:.3f}"),
        ("throughput/steps_per_hour", "{:.0f} steps/h"),
        ("time/wallclock_hours", "{:.2f} h so far"),
    ):
        if (value := last(name)) is not None:
            parts.append(fmt.format(value))
    if now:
        return now if not parts else f"{now}; curves: {', '.join(parts)}"
    return ", ".join(parts) or "no curves yet"
