"""What `wandb sweep` would make of our sweep file: W&B reads the file alone, not the
`<name>.spelltune.yaml` beside it."""

from __future__ import annotations

from pathlib import Path

from spelltune.sweeps.schema import extensions_path, read_yaml

# W&B's sweep schema allows these top-level keys and no others ("Malformed sweep config").
WANDB_KEYS = ("apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
              "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters")


def wandb_problems(path: str | Path) -> list[str]:
    """What `wandb sweep <path>` would warn about or get wrong, one line each (the file
    alone: W&B never reads the .spelltune.yaml beside it)."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        return []
    ext = extensions_path(path).name
    lines = [f"{key}: W&B rejects this top-level key (\"Malformed sweep config\"); move it to {ext}"
             for key in raw if key not in WANDB_KEYS]
    et = raw.get("early_terminate")
    if isinstance(et, dict) and et.get("type") not in (None, "hyperband"):
        lines.append(f"early_terminate.type = {et.get('type')!r}: W&B knows only hyperband; put it in {ext}")
    name = (raw.get("metric") or {}).get("name") if isinstance(raw.get("metric"), dict) else None
    if isinstance(name, str) and ":" in name:
        lines.append(f"metric.name = {name!r}: W&B sees keys of the run, not files; use {name.rsplit(':', 1)[1]!r}")
    if "project" not in raw:
        lines.append("project: not set; W&B then uses the default project of whoever runs `wandb sweep`")
    return lines
