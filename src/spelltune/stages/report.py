"""Stage `report`: plots/ and a Markdown report of the run, from the files earlier stages wrote.

    python -m spelltune.stages.report

Reads metrics/{base,eval}_details.json (values, n, 95 % intervals), the breakdowns, the
DVCLive curves under metrics/train/ and the per-item predictions; writes plots/*.png,
plots/report.md and metrics/headline.json (the only DVC metrics: `dvc exp show`'s columns).
"""

from __future__ import annotations

import logging

from spelltune.files import write_json
from spelltune.paths import HEADLINE_FILE, LIVE_DIR, METRICS_DIR, PLOTS_DIR
from spelltune.workspace import load_pinned_or_exit

log = logging.getLogger("spelltune.stages.report")


def main() -> None:
    params, pin = load_pinned_or_exit("report")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import matplotlib

    matplotlib.use("Agg")
    from spelltune.metric_names import EVAL_METRICS
    from spelltune.training.run_report import (
        MODELS,
        headline,
        markdown,
        plot_breakdown,
        plot_loss,
        plot_side_by_side,
        read_json,
    )

    details = {m: read_json(METRICS_DIR / f"{m}_details.json") for m in MODELS}
    breakdowns = {m: read_json(METRICS_DIR / f"{m}_breakdown.json") for m in MODELS}
    train_summary = read_json(LIVE_DIR / "metrics.json")
    run = read_json(METRICS_DIR / "summary.json")
    PLOTS_DIR.mkdir(exist_ok=True)
    plot_loss(run, PLOTS_DIR / "loss.png")
    plot_side_by_side(details, PLOTS_DIR / "base_vs_finetuned.png")
    plot_breakdown(breakdowns, "by_length", EVAL_METRICS, "word length", PLOTS_DIR / "accuracy_by_length.png")
    plot_breakdown(breakdowns, "by_position", ("letter_position_accuracy",), "letter position",
                   PLOTS_DIR / "accuracy_by_position.png")
    (PLOTS_DIR / "report.md").write_text(markdown(params, details, train_summary, run))
    write_json(headline(details), HEADLINE_FILE)
    pin.check_or_exit()
    log.info("report written to %s", PLOTS_DIR / "report.md")


if __name__ == "__main__":
    main()
