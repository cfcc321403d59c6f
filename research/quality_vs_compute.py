"""Draw docs/quality_vs_compute.png from research/quality_vs_compute.csv (one row per finished
run: its recipe, training minutes on the 2-core CPU, held-out test scores with their 95 %
intervals). The rows come from each run's metrics/{summary,eval_details}.json;
see docs/results.md for the commands.

    python research/quality_vs_compute.py
"""

from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
FIGURE = HERE.parent / "docs" / "quality_vs_compute.png"
rows = pd.read_csv(HERE / "quality_vs_compute.csv")
fig, ax = plt.subplots(figsize=(7.5, 4.6))
TARGETS = {"spelling": 0.60, "letter": 0.80}
for (recipe, metric), color in zip([(r, m) for r in ("spelled", "direct") for m in ("spelling", "letter")],
                                   ("tab:blue", "tab:orange", "lightsteelblue", "navajowhite")):
    part = rows[rows["recipe"] == recipe]
    if part.empty:
        continue
    err = [part[metric] - part[f"{metric}_low"], part[f"{metric}_high"] - part[metric]]
    name = "spelling exact match" if metric == "spelling" else "letter accuracy"
    ax.errorbar(part["train_minutes"], part[metric], yerr=err, marker="o", capsize=3, color=color,
                label=f"test {name}, {recipe} letter answers")
for metric, color in (("spelling", "tab:blue"), ("letter", "tab:orange")):
    ax.axhline(TARGETS[metric], color=color, linestyle=":", linewidth=1)
for _, r in rows[rows["recipe"] == "spelled"].iterrows():
    ax.annotate(f"{int(r['steps'])} steps", (r["train_minutes"], r["spelling"]), textcoords="offset points",
                xytext=(4, -12), fontsize=7)
ax.set(xscale="log", xlabel="training minutes (2-core CPU; log scale)", ylabel="held-out test score",
       ylim=(0, 1), title="Quality vs compute (dotted: the targets)")
ax.grid(alpha=0.3)
ax.legend(loc="lower right", fontsize=7)
fig.tight_layout()
fig.savefig(FIGURE, dpi=110)
print(f"wrote {FIGURE}")
