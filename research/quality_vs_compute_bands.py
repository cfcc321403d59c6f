"""Draw docs/quality_vs_compute_bands.png from research/quality_vs_compute_bands.csv: the new
evaluation's validation scores by frequency band against training minutes on the 2-core
CPU, one row per finished run of the default recipe at more steps (docs/results.md has
each run's command). Intervals: 95 % Wilson, as the evaluate stage writes them.

    python research/quality_vs_compute_bands.py
"""

from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
FIGURE = HERE.parent / "docs" / "quality_vs_compute_bands.png"
TARGETS = {"spelling_exact_match": 0.60, "letter_position_accuracy": 0.85}  # issue 24, common words
rows = pd.read_csv(HERE / "quality_vs_compute_bands.csv")
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
for ax, metric in zip(axes, TARGETS):
    for band, color in (("common", "tab:red"), ("mid", "tab:green"), ("rare", "tab:blue")):
        part = rows[(rows["band"] == band) & (rows["metric"] == metric)].sort_values("train_minutes")
        err = [part["value"] - part["ci_low"], part["ci_high"] - part["value"]]
        ax.errorbar(part["train_minutes"], part["value"], yerr=err, marker="o", capsize=3, color=color, label=band)
    ax.axhline(TARGETS[metric], color="tab:red", linestyle=":", linewidth=1)
    for _, r in rows[(rows["band"] == "common") & (rows["metric"] == metric)].iterrows():
        ax.annotate(f"{int(r['steps'])} steps", (r["train_minutes"], r["value"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=7)
    ax.set(xlabel="training minutes (train stage, 2-core CPU)", title=metric.replace("_", " "), ylim=(0, 1))
    ax.grid(alpha=0.3)
axes[0].set_ylabel("validation score (new evaluation)")
axes[1].legend(title="word frequency band", loc="lower right", fontsize=8)
fig.suptitle("The default recipe at more steps, by band (dotted: the common-words targets)", fontsize=10)
fig.tight_layout()
fig.savefig(FIGURE, dpi=110)
print(f"wrote {FIGURE}")
