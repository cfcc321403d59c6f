"""Draw docs/quality_vs_compute.png from docs/quality_vs_compute.csv (one row per finished
run of the chosen recipe: training minutes on the 2-core CPU, held-out test scores with
their 95 % intervals). The rows come from each run's metrics/{summary,eval_details}.json;
see docs/results.md for the commands.

    python docs/research_curve.py
"""

from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
rows = pd.read_csv(HERE / "quality_vs_compute.csv")
fig, ax = plt.subplots(figsize=(7, 4.2))
for metric, label, target in (("spelling", "test spelling exact match", 0.60),
                              ("letter", "test letter-position accuracy", 0.80)):
    err = [rows[metric] - rows[f"{metric}_low"], rows[f"{metric}_high"] - rows[metric]]
    line = ax.errorbar(rows["train_minutes"], rows[metric], yerr=err, marker="o", capsize=3, label=label)
    ax.axhline(target, color=line[0].get_color(), linestyle=":", linewidth=1)
for _, r in rows.iterrows():
    ax.annotate(f"{int(r['steps'])} steps", (r["train_minutes"], r["spelling"]), textcoords="offset points",
                xytext=(4, -12), fontsize=7)
ax.set(xscale="log", xlabel="training minutes (2-core CPU; log scale)", ylabel="held-out test score",
       ylim=(0, 1), title="Quality vs compute (dotted: the targets)")
ax.grid(alpha=0.3)
ax.legend(loc="upper left", fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "quality_vs_compute.png", dpi=110)
print(f"wrote {HERE / 'quality_vs_compute.png'}")
