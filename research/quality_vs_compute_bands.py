"""Draw docs/quality_vs_compute_bands.png from research/quality_vs_compute_bands.csv: the new
evaluation's validation scores by frequency band against training minutes on the 2-core
CPU, one row per finished run (docs/results.md has each run's command). Intervals: 95 %
Wilson, as the evaluate stage writes them.

For each band and metric it also fits score = a + b * ln(minutes) through the default
recipe's runs and writes research/quality_vs_compute_bands_fit.csv: the slope per doubling
of compute and the minutes at which the fitted line would reach the issue's targets. Those
minutes are extrapolations of a trend, not measurements.

    python research/quality_vs_compute_bands.py
    python research/quality_vs_compute_bands.py --add RUN RECIPE STEPS METRICS_DIR   # a finished run's rows first

METRICS_DIR holds that run's eval_details.json (validation by band) and train.json
(train_minutes), e.g. an experiment's metrics/ from `git archive <exp> metrics`.
"""

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
FIGURE = HERE.parent / "docs" / "quality_vs_compute_bands.png"
FIT = HERE / "quality_vs_compute_bands_fit.csv"
TARGETS = {"spelling_exact_match": (0.60, 0.90), "letter_position_accuracy": (0.85,)}  # issue 24, common words
MINUTE_TICKS = (10, 15, 30, 60, 120, 240, 400)
BANDS = (("common", "tab:red"), ("mid", "tab:green"), ("rare", "tab:blue"))
DATA = HERE / "quality_vs_compute_bands.csv"


def add_run(run: str, recipe: str, steps: int, metrics_dir: Path) -> None:
    details = json.loads((metrics_dir / "eval_details.json").read_text())["val"]["groups"]
    minutes = json.loads((metrics_dir / "train.json").read_text())["train_minutes"]
    new = [{"run": run, "recipe": recipe, "steps": steps, "train_minutes": round(minutes, 1), "band": band,
            "metric": metric, **{k: round(details[band][metric][k], 4) for k in ("value", "n", "ci_low", "ci_high")}}
           for band, _ in BANDS for metric in TARGETS]
    old = pd.read_csv(DATA)
    pd.concat([old[old["run"] != run], pd.DataFrame(new)]).to_csv(DATA, index=False)


parser = argparse.ArgumentParser()
parser.add_argument("--add", nargs=4, metavar=("RUN", "RECIPE", "STEPS", "METRICS_DIR"))
args = parser.parse_args()
if args.add:
    add_run(args.add[0], args.add[1], int(args.add[2]), Path(args.add[3]))
rows = pd.read_csv(DATA)
default = rows[rows["recipe"] == "default"]
fits = []
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
for ax, metric in zip(axes, TARGETS):
    for band, color in BANDS:
        part = default[(default["band"] == band) & (default["metric"] == metric)].sort_values("train_minutes")
        err = [part["value"] - part["ci_low"], part["ci_high"] - part["value"]]
        ax.errorbar(part["train_minutes"], part["value"], yerr=err, marker="o", capsize=3, color=color, label=band)
        slope, intercept = np.polyfit(np.log(part["train_minutes"]), part["value"], 1)
        fit = {"band": band, "metric": metric, "runs": len(part), "gain_per_doubling": round(slope * np.log(2), 4)}
        for target in TARGETS[metric]:
            fit[f"minutes_to_{target}"] = round(float(np.exp((target - intercept) / slope)), 1) if slope > 0 else None
        fits.append(fit)
        line = np.geomspace(part["train_minutes"].min(), 400, 50)  # the trend, past the runs: dashed
        ax.plot(line, intercept + slope * np.log(line), linestyle="--", linewidth=0.8, color=color)
        others = rows[(rows["recipe"] != "default") & (rows["band"] == band) & (rows["metric"] == metric)]
        ax.scatter(others["train_minutes"], others["value"], marker="x", color=color)
    for target in TARGETS[metric]:
        ax.axhline(target, color="tab:red", linestyle=":", linewidth=1)
    for _, r in rows[(rows["band"] == "common") & (rows["metric"] == metric)].iterrows():
        label = f"{int(r['steps'])} steps" + ("" if r["recipe"] == "default" else f", {r['recipe']}")
        ax.annotate(label, (r["train_minutes"], r["value"]), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set(xlabel="training minutes (train stage, 2-core CPU, log scale)", title=metric.replace("_", " "),
           ylim=(0, 1), xscale="log")
    ax.set_xticks(MINUTE_TICKS, [str(t) for t in MINUTE_TICKS])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
axes[0].set_ylabel("validation score (new evaluation)")
axes[1].legend(title="word frequency band", loc="lower right", fontsize=8)
fig.suptitle("The default recipe at more steps, by band (dashed: log-linear trend; x: other recipes; "
             "dotted: the common-words targets)",
             fontsize=10)
fig.tight_layout()
fig.savefig(FIGURE, dpi=110)
pd.DataFrame(fits).to_csv(FIT, index=False)
print(f"wrote {FIGURE} and {FIT}")
