"""Stages `prepare` (the data) and `prepare_model` (the base model as safetensors).

    python -m spelltune.stages.prepare data    # data/{train,validation,test,vocabulary}.jsonl
    python -m spelltune.stages.prepare model   # data/base_model/
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path

from spelltune.errors import fail
from spelltune.workspace import load_pinned_or_exit

log = logging.getLogger("spelltune.stages.prepare")
DATA_DIR = Path("data")


def prepare_data(params) -> None:
    from spelltune.files import write_jsonl
    from spelltune.task.questions import SPLITS, build_splits, ranked_words, vocabulary_items

    pieces = ()
    if params.data.token_pieces:
        from spelltune.modeling.pieces import alphabetic_pieces

        pieces = alphabetic_pieces()
    ranks = ranked_words(params.data.min_word_length, params.data.max_word_length)
    try:
        splits = build_splits(params.data, ranks, pieces=pieces)
    except ValueError as exc:
        fail(f"params.yaml: {exc}")
    for name in SPLITS:
        write_jsonl(splits[name], DATA_DIR / f"{name}.jsonl")
        words = {item["word"] for item in splits[name]}
        tasks = Counter(item["task"] for item in splits[name])
        bands = Counter(item["band"] for item in splits[name])
        wordings = Counter(item["wording"] for item in splits[name])
        log.info("%s: %d items over %d words %s, by band %s, by wording %s", name, len(splits[name]), len(words),
                 dict(tasks), dict(bands), dict(wordings))
    vocabulary = vocabulary_items(splits, params.data, ranks)
    write_jsonl(vocabulary, DATA_DIR / "vocabulary.jsonl")
    log.info("vocabulary: %d items, by group %s", len(vocabulary),
             dict(Counter(g for it in vocabulary for g in it["groups"])))


def prepare_model(params) -> None:
    from spelltune.modeling.base import BASE_MODEL_DIR, materialize_base_model

    start = time.perf_counter()
    materialize_base_model(params.model.source, BASE_MODEL_DIR)
    log.info("base model %r saved to %s in %.1f s", params.model.source, BASE_MODEL_DIR, time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spelltune.stages.prepare", description=__doc__)
    parser.add_argument("what", choices=["data", "model"])
    args = parser.parse_args(argv)
    params, pin = load_pinned_or_exit({"data": "prepare", "model": "prepare_model"}[args.what])
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    {"data": prepare_data, "model": prepare_model}[args.what](params)
    pin.check_or_exit()


if __name__ == "__main__":
    main()
