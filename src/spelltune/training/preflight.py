"""The checks of params.yaml that run before any stage touches an output: the schema, the
model source (looked up without the network; for a directory, its config.json and
safetensors headers, what prepare_model reads first), lora.r against the model's hidden
size, split sizes the word list can fill, and what only this machine can answer. The
validate stage and `spelltune check` both run `check`."""

from __future__ import annotations

from pathlib import Path

from spelltune.params import PARAMS_FILE, Params, ParamsError, load


def check(path: str | Path = PARAMS_FILE) -> Params:
    """Every check of this stage; raises ParamsError or BackendError with the line to show."""
    from spelltune.modeling.backends import check_machine, machine_needs_checking
    from spelltune.modeling.sources import base_hidden_size, source_problem
    from spelltune.task.questions import ranked_words, split_words

    params = load(path)
    why = source_problem(params.model.source)
    if why:
        raise ParamsError(f"{path}: model.source = {params.model.source!r}: {why}")
    # A LoRA update B @ A has rank <= r and <= the layers' widths: an r above the hidden size
    # only costs memory, and a huge one dies in train after DVC has removed checkpoints/.
    hidden = base_hidden_size(params.model.source)
    if hidden and params.lora.r > hidden[0]:
        raise ParamsError(f"{path}: lora.r = {params.lora.r}: must be <= {hidden[0]}, the hidden size of the base "
                          f"model ({hidden[1]}): a LoRA update has at most that rank")
    data = params.data
    try:
        # The tokenizer's pieces (data.token_pieces) are counted by prepare, which has the model.
        without_pieces = data.model_copy(update={"token_pieces": 0})
        split_words(ranked_words(data.min_word_length, data.max_word_length), without_pieces)
    except ValueError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    # What only this machine can answer (CUDA for 4-bit, bf16 or model.backend = unsloth);
    # the default params run anywhere and skip it (no torch import).
    if machine_needs_checking(params):
        check_machine(params, import_unsloth=False)
    return params
