"""Plots across experiments: metric against each param, parallel coordinates, learning curves."""

from __future__ import annotations

import io
import math

import pandas as pd

from spelltune.experiments.leaderboard import ranked
from spelltune.experiments.runs import LOG_SCALE, Runs, short


def fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _as_axis(series: pd.Series) -> tuple[pd.Series, list | None]:
    """Numeric params as they are; others as category positions with their labels."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype(float), None
    labels = sorted(series.map(str).unique())
    return series.map(str).map(labels.index).astype(float), labels


def plot_metric_vs_params(runs: Runs, metric: str, ascending: bool | None = None):
    import matplotlib.pyplot as plt

    table = ranked(runs, metric, ascending)
    params = runs.varying() or ["train.lr"]
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, param in zip(axes.flat, params):
        x, labels = _as_axis(table[param])
        ax.scatter(x, table[metric], s=36, alpha=0.8)
        ax.scatter(x.iloc[:1], table[metric].iloc[:1], s=120, facecolors="none", edgecolors="red", label="best")
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        else:
            if param in LOG_SCALE and (x > 0).all() and x.max() / x.min() >= 4:
                ax.set_xscale("log")
            ticks = sorted(x.unique())
            if len(ticks) <= 6:  # label the values tried, plainly (no 2x10^-3 clutter)
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks], rotation=30 if len(ticks) > 3 else 0)
                ax.minorticks_off()
        ax.set(xlabel=param, ylabel=short(metric))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{short(metric)} against each varying parameter")
    fig.tight_layout()
    return fig


def plot_parallel(runs: Runs, metric: str, ascending: bool | None = None):
    """Parallel coordinates: every varying param and the metric, scaled to [0, 1] with the
    real values at the ends of each axis; lines coloured from best (dark) to worst."""
    import matplotlib.pyplot as plt
    from pandas.plotting import parallel_coordinates

    table = ranked(runs, metric, ascending)
    columns = [*runs.varying(), metric]
    scaled, ends = pd.DataFrame(index=table.index), {}
    for col in columns:
        x, labels = _as_axis(table[col])
        low, high = x.min(), x.max()
        scaled[col] = (x - low) / (high - low) if high > low else 0.5
        ends[col] = (labels[0], labels[-1]) if labels else (f"{low:.4g}", f"{high:.4g}")
    scaled = scaled.rename(columns={metric: short(metric)})
    scaled["experiment"] = [f"{i + 1}. {name}" for i, name in enumerate(table.index)]
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(columns)), 4.2))
    parallel_coordinates(scaled, "experiment", ax=ax, colormap="viridis", linewidth=2, alpha=0.85)
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    for i, col in enumerate(columns):
        ax.annotate(
            ends[col][0], (i, 0), xytext=(0, -16), textcoords="offset points", fontsize=9, ha="center", bbox=box
        )
        ax.annotate(ends[col][1], (i, 1), xytext=(0, 8), textcoords="offset points", fontsize=9, ha="center", bbox=box)
    ax.set(ylim=(-0.18, 1.18), yticks=[])
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="rank. experiment")
    ax.set_title("Parallel coordinates (each axis scaled from its lowest to its highest value)")
    fig.tight_layout()
    return fig


LEARNING_CURVES = ("train/loss", "val/loss", "val/letter_position_accuracy")


def plot_learning_curves(runs: Runs, names: list[str], curves: tuple[str, ...] = LEARNING_CURVES):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for i, name in enumerate(names):
        data = runs.curves(name)
        for ax, curve in zip(axes[0], curves):
            if curve in data:  # line styles cycle too, so that identical curves stay visible
                ax.plot(data[curve]["step"], data[curve]["value"], marker="o" if len(data[curve]) < 12 else None,
                        markersize=3, linestyle=("-", "--", ":", "-.")[i % 4], color=f"C{i % 10}", label=name)
    for ax, curve in zip(axes[0], curves):
        ax.set(title=curve, xlabel="optimizer step")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(labels) / 6) + 0.04, 1, 1))
    return fig
