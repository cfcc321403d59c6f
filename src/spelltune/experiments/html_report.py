"""`spelltune compare`'s files: leaderboard.csv, leaderboard.md and a self-contained compare.html."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from spelltune.experiments import significance
from spelltune.experiments.leaderboard import leaderboard, lower_is_better, ranked
from spelltune.experiments.plots import fig_png, plot_learning_curves, plot_metric_vs_params, plot_parallel
from spelltune.experiments.recommend import recommend
from spelltune.experiments.runs import DEFAULT_METRIC, Runs, short
from spelltune.experiments.significance import IMPORTANCE_NOTE, plot_importance


def _table_html(frame: pd.DataFrame, highlight_first: bool = False) -> str:
    """pandas' own HTML table, numbers to 4 significant digits; `highlight_first`: the best row marked."""
    table = frame.to_html(index=False, na_rep="", float_format="{:.4g}".format, border=0,
                          classes="best-first" if highlight_first else None)
    return f"<div class=scroll>{table}</div>"


def _bold_verdict(sentence: str) -> str:
    head, _, verdict = sentence.rpartition(": ")
    return f"{html.escape(head)}: <b>{html.escape(verdict)}</b>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:14px;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f0f0f0;max-width:9em;vertical-align:bottom;overflow-wrap:anywhere}
td:nth-child(2),th:nth-child(2){text-align:left}
.scroll{overflow-x:auto}li{margin:0.4em 0}
table.best-first tbody tr:first-child td{background:#eaf6ea;font-weight:600}
img{max-width:100%;display:block;margin:0.5em 0 1.5em}
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:13px}
.note{color:#555}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em;margin-top:1.6em}"""


def write_report(runs: Runs, metric: str = DEFAULT_METRIC, ascending: bool | None = None, out: str | Path = "compare",
                 curves_top: int = 8) -> dict[str, Path]:
    """leaderboard.csv, leaderboard.md and compare.html (self-contained: plots inlined) in `out`."""
    metric = runs.resolve_metric(metric)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "leaderboard.csv", "md": out / "leaderboard.md", "html": out / "compare.html"}
    found = {
        "board": leaderboard(runs, metric, ascending),
        "seeds": significance.seed_groups(runs, metric),
        "importance": significance.importance(runs, metric, ascending),
        "comparisons": significance.default_comparisons(runs, metric, ascending),
        "lines": recommend(runs, metric, ascending),
    }
    found["board"].to_csv(paths["csv"], index=False)
    paths["md"].write_text(_markdown(runs, metric, ascending, **found))
    paths["html"].write_text(_page(runs, metric, ascending, curves_top, **found))
    return paths


def _pending(runs: Runs) -> str:
    return f"Not ranked (no results yet): {', '.join(f'{n} ({s})' for n, s in runs.pending.items())}"


def _markdown(runs: Runs, metric: str, ascending: bool | None, board, seeds, importance, comparisons, lines) -> str:
    better = "lower" if ascending or (ascending is None and lower_is_better(metric)) else "higher"
    md = [
        f"# Leaderboard: {short(metric)} ({better} is better)",
        "",
        board.to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    if runs.pending:
        md += [_pending(runs), ""]
    if seeds is not None:
        md += [
            "## Same config, different seeds (mean ± 95% CI)",
            "",
            seeds.to_markdown(index=False, floatfmt=".4g"),
            "",
        ]
    md += ["## Significance", "", *[f"- {r.sentence()}" for r in comparisons], ""]
    md += ["## Parameter importance", ""]
    md += [importance.to_markdown(floatfmt=".3f") if isinstance(importance, pd.DataFrame) else importance, ""]
    md += ["## Next configs to try", "", "```", *lines, "```", ""]
    return "\n".join(md)


def _page(runs: Runs, metric: str, ascending: bool | None, curves_top: int, board, seeds, importance, comparisons,
          lines) -> str:
    top = list(ranked(runs, metric, ascending).index[:curves_top])
    parts = [f"<h1>Experiments ranked by {html.escape(short(metric))}</h1>",
             (f"<p class=note>{len(board)} finished experiments in {html.escape(str(runs.repo))}; "
              f"params shown are those that vary. Metric: <code>{html.escape(metric)}</code>.</p>"),
             _table_html(board, highlight_first=True)]
    if runs.pending:
        parts.append(f"<p class=note>{html.escape(_pending(runs))}</p>")
    if len(board):
        parts += ["<h2>Metric against each varying parameter</h2>",
                  _img(fig_png(plot_metric_vs_params(runs, metric, ascending)), "metric vs params")]
        if runs.varying():
            parts += ["<h2>Parallel coordinates</h2>",
                      _img(fig_png(plot_parallel(runs, metric, ascending)), "parallel coordinates")]
        parts += [f"<h2>Learning curves (top {len(top)})</h2>",
                  _img(fig_png(plot_learning_curves(runs, top)), "learning curves")]
    parts.append("<h2>Significance (paired, same evaluation items)</h2>")
    parts.append(
        "<ul>" + "".join(f"<li>{_bold_verdict(r.sentence())}</li>" for r in comparisons) + "</ul>"
        if comparisons
        else "<p class=note>Needs at least one finished experiment with per-item predictions.</p>"
    )
    if seeds is not None:
        parts += ["<h2>Same config, different seeds (mean ± 95% CI)</h2>", _table_html(seeds)]
    parts.append("<h2>Parameter importance</h2>")
    if isinstance(importance, pd.DataFrame):
        parts += [f"<p class=note>{html.escape(IMPORTANCE_NOTE)}</p>",
                  _img(fig_png(plot_importance(importance, short(metric))), "parameter importance"),
                  _table_html(importance.reset_index())]
    else:
        parts.append(f"<p class=note>{html.escape(importance)}</p>")
    parts += ["<h2>Next configs to try</h2>", f"<pre>{html.escape(chr(10).join(lines))}</pre>"]
    return (f"<!doctype html><html><head><meta charset=utf-8><title>spelltune: compare experiments</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
