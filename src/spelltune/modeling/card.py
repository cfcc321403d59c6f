"""The model card's facts: what a Hugging Face README.md for an adapter or a merged model says,
as plain data, and where its evaluation numbers come from (card_markdown.py writes the text).

Two moments write a card:
- the train stage, into checkpoints/adapter/README.md: what training knows (base model, params,
  data, prompt format, the training run). Evaluate runs after train and must not change the
  train stage's output (DVC would see it modified and rerun train), so this card has no test
  metrics yet and says how to get them;
- `spelltune card` / `spelltune export`: the same facts (read back from that card's metadata)
  plus evaluate's metrics with their 95 % intervals: metrics/eval_details.json as it is, or,
  when that file is absent, the same numbers computed from metrics/predictions/*.jsonl by the
  evaluate stage's own scoring (spelltune.task.scoring).

The facts live in the card's own metadata under `spelltune:`, so that an adapter directory
describes itself: `spelltune ask --adapter DIR` reads its prompt format from there.
Light module: no torch.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from spelltune.modeling.sources import EMBEDDED, EMBEDDED_HF_ID
from spelltune.paths import METRIC_PREFIX, SPLIT_OF_PREFIX

CARD_FILE = "README.md"


def base_model_name(source: str) -> str:
    """What adapter_config.json and the card name as the base model: the embedded model's
    Hugging Face id, else the model.source as given (a HF id or a local path)."""
    return EMBEDDED_HF_ID if source == EMBEDDED else source


def same_base(a: str, b: str) -> bool:
    """Two base-model names for the same model: equal, or the same existing local directory."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def _split_details(rows: list[dict]) -> dict:
    """{prefix: {metric: {value, n, ci_low, ci_high}, n_items, groups}} from scored items: what
    the evaluate stage writes to *_details.json for the same rows, by the same functions."""
    from spelltune.task.scoring import details, group_details

    out = {}
    for split, prefix in METRIC_PREFIX.items():
        mine = [r for r in rows if r.get("split") == split]
        if mine:
            out[prefix] = {**details(mine), "n_items": len(mine), "groups": group_details(mine)}
    return out


def evaluation(read, name: str = "eval") -> tuple[dict | None, str]:
    """Evaluate's metrics for the card: (details, where from). `read(path) -> str | None`
    reads a file of the workspace or of an experiment."""
    text = read(f"metrics/{name}_details.json")
    if text:
        details = json.loads(text)
        return {
            p: details[p] for p in (*SPLIT_OF_PREFIX, "vocabulary") if isinstance(details.get(p), dict)
        }, f"metrics/{name}_details.json"
    text = read(f"metrics/predictions/{name}.jsonl")
    if text:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return _split_details(rows), f"metrics/predictions/{name}.jsonl (scored as evaluate scores it)"
    return None, ""


def data_facts(data_dir: Path = Path("data")) -> dict:
    """Counts of what training saw, from the train stage's own input files."""
    facts: dict = {}
    for split in ("train", "validation"):
        path = data_dir / f"{split}.jsonl"
        if not path.exists():
            continue
        items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        facts[f"{split}_items"] = len(items)
        facts[f"{split}_words"] = len({it["word"] for it in items})
        if split == "train":
            facts["tasks"] = sorted({it["task"] for it in items})
            spelled = next((it for it in items if it["task"] == "spelling" and len(it["word"]) > 1), None)
            if spelled is not None:
                facts["spelling_separator"] = spelled["answer"][1]
            lengths = [len(it["word"]) for it in items]
            facts["word_lengths"] = [min(lengths), max(lengths)]
    return facts


def training_facts(params, summary: dict | None, data_dir: Path = Path("data")) -> dict:
    """Everything the card says, as plain data (stored in its metadata). Only what the train
    stage depends on, and nothing that varies between identical runs (no times)."""
    dumped = params.model_dump(mode="json")
    facts = {
        "model_source": params.model.source,
        "base_model": base_model_name(params.model.source),
        "prompt_format": params.model.prompt_format,
        "params": {section: dumped[section] for section in ("model", "lora", "train")},
        "data": {**data_facts(data_dir), "letter_answer": params.data.letter_answer},
    }
    if summary:
        final = summary.get("final") or {}
        facts["training"] = {
            key: value
            for key, value in {
                "steps": summary.get("stopped_at_step"),
                "best_step": summary.get("best_step"),
                "stop_reason": summary.get("early_stop_reason"),
                "tokens_seen": summary.get("tokens_seen"),
                "trainable_parameters": (summary.get("parameters") or {}).get("trainable"),
                "total_parameters": (summary.get("parameters") or {}).get("total"),
                "backend": "{name} on {device}, {dtype}".format(**summary["backend"])
                if summary.get("backend")
                else None,
                "final_train_loss": final.get("train/loss"),
                "final_val_loss": final.get("val/loss"),
            }.items()
            if value is not None
        }
    return facts


def facts_of_card(text: str) -> dict | None:
    """The `spelltune:` metadata of a card written by card_markdown.render(), or None."""
    import yaml

    if not text.startswith("---\n"):
        return None
    head, _, _ = text[4:].partition("\n---\n")
    meta = yaml.safe_load(head) or {}
    return meta.get("spelltune") if isinstance(meta, dict) else None


def reproduce_command(facts: dict, extra_params: dict | None = None) -> str:
    """`dvc exp run -S ...` for every param that differs from the schema's default."""
    import yaml

    from spelltune.params import Params

    defaults = Params().model_dump(mode="json")
    chosen = {**facts.get("params", {}), **(extra_params or {})}
    flags = []
    for section, values in chosen.items():
        for key, value in values.items():
            if defaults.get(section, {}).get(key) != value:
                text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
                flags.append(f"-S {shell_word(f'{section}.{key}={text}')}")
    return " ".join(["dvc exp run", *flags])


def shell_word(text: str) -> str:
    """`text` as one shell word, readably: bare when it can be, in double quotes when it holds
    single quotes and nothing double quotes expand (`"data.spelling_separator=' '"`)."""
    quoted = shlex.quote(text)
    if quoted != text and "'" in text and not any(c in text for c in '"$`\\!'):
        return f'"{text}"'
    return quoted
