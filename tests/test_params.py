"""params.yaml is checked by one schema: bad input gets one line naming the key, the
value and what is allowed, and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, committed, params, with_value
from spelltune.params import BEFORE_THE_KEY, Params, ParamsError, flatten, load, parse, schema_default


def test_committed_params_are_valid_and_complete():
    params = load(ROOT / "params.yaml")
    # Every key the schema knows is written out in the committed file, so users see them.
    assert committed() == params.model_dump()
    assert params.train.lr > 0 and params.lora.r > 0


def test_yaml_exponent_floats_are_accepted():
    # PyYAML reads 5e-4 as a string; `dvc exp run -S train.lr=5e-4` writes exactly that.
    assert parse(yaml.safe_load("train: {lr: 5e-4}")).train.lr == 5e-4


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("lora.r", 0, "greater than 0"),
        ("lora.r", "eight", "valid integer"),
        ("train.lr", 0, "greater than 0"),
        ("train.lr", -1e-4, "greater than 0"),
        ("lora.dropout", 1.0, "less than 1"),
        ("lora.dropout", -0.1, "greater than or equal to 0"),
        ("train.batch_size", 2.5, "valid integer"),
        ("train.warmup_steps", 10_000, "must be <= train.max_steps"),
        ("data.max_word_length", 2, "must be >= data.min_word_length"),
        ("model.prompt_format", "fancy", "'compact' or 'chat_template'"),
        ("data.test_words", 0, "greater than or equal to 1"),
        ("train.save_every", 15, "must be a multiple of train.log_every (10)"),
        ("train.early_stop_metric", "val/f1",
         "'val/loss', 'val/letter_position_accuracy' or 'val/spelling_exact_match'"),
        ("train.grad_norm_limit", 0, "greater than 0"),
        ("lora.r", True, "a number, not a boolean"),  # else r = 1
        ("train.weight_decay", float("inf"), "finite number"),
        ("train.lr", float("nan"), "finite number"),
    ],
)
def test_bad_value_names_key_value_and_allowed(key, value, allowed):
    with pytest.raises(ParamsError) as err:
        parse(with_value(key, value))
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"params.yaml: {key} = {value!r}: ")
    assert allowed in line


def test_unknown_target_module_lists_the_allowed_ones():
    with pytest.raises(ParamsError) as err:
        parse(with_value("lora.target_modules", ["q_proj", "attn_qkv"]))
    line = str(err.value)
    assert line.startswith("params.yaml: lora.target_modules.1 = 'attn_qkv': ")
    assert "'q_proj'" in line and "'down_proj'" in line


def test_the_old_split_fractions_are_refused_with_the_keys_that_replace_them():
    with pytest.raises(ParamsError) as err:
        parse(with_value("data.splits", {"train": 0.8, "validation": 0.1, "test": 0.1}))
    assert "data.splits" in str(err.value) and "train_words" in str(err.value) and "test_words" in str(err.value)


def test_unknown_key_lists_the_allowed_keys():
    with pytest.raises(ParamsError) as err:
        parse(with_value("lora.rank", 8))
    line = str(err.value)
    assert line.startswith("params.yaml: lora.rank = 8: unknown key; allowed: r, alpha, dropout, target_modules")


def test_unknown_section():
    raw = committed()
    raw["optimizer"] = {"name": "adam"}
    with pytest.raises(ParamsError, match=r"optimizer = .*unknown key; allowed: data, model, lora, train, eval"):
        parse(raw)


def test_schema_defaults_are_params_yaml_but_for_the_one_old_experiment_rule():
    """One place for defaults: the schema's equal params.yaml's for every key but those
    BEFORE_THE_KEY names, whose schema default is what an older experiment without the key did."""
    differ = {key for key, value in flatten(committed()).items() if schema_default(key) != value}
    assert differ == set(BEFORE_THE_KEY)
    old = parse({"data": {k: v for k, v in committed()["data"].items()
                          if f"data.{k}" not in BEFORE_THE_KEY}})
    assert (old.data.spelling_separator, old.data.letter_answer) == ("-", "direct")
    assert (old.data.train_sampling, old.data.canonical_share) == ("uniform", 1.0)


def test_defaults_fill_missing_sections():
    assert parse({"train": {"lr": 0.01}}) == Params(train={"lr": 0.01})


def test_training_fingerprint_tracks_what_shapes_the_weights():
    from spelltune.params import training_fingerprint

    base = parse(committed())
    same = parse(with_value("train.log_every", 1))  # logging only
    assert training_fingerprint(same) == training_fingerprint(base)
    for key, value in (("train.lr", 0.0002), ("lora.r", 4), ("data.seed", 7), ("model.prompt_format", "chat_template")):
        assert training_fingerprint(parse(with_value(key, value))) != training_fingerprint(base), key


@pytest.mark.parametrize(
    ("train", "key", "message"),
    [
        ({"early_stop_patience": 2, "save_every": 40}, "train.early_stop_patience = 2",
         "early stopping restores the best checkpoint, so train.save_every (40) must be a multiple of "
         "train.eval_every (80)"),
        ({"early_stop_patience": 2, "val_loss_items": 0}, "train.early_stop_patience = 2",
         "early stopping needs train.val_loss_items > 0"),
        ({"early_stop_metric": "val/spelling_exact_match", "val_generate_items": 0},
         "train.early_stop_metric = 'val/spelling_exact_match'", "needs train.val_generate_items > 0"),
    ],
)
def test_early_stopping_needs_what_it_follows(train, key, message):
    with pytest.raises(ParamsError) as err:
        parse({"train": train})
    assert str(err.value) == f"params.yaml: {key}: {message}"


def billion_laughs(nested: int = 9) -> str:
    """A short YAML file whose aliases expand to 9**nested values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, nested)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_one_line_at_once(tmp_path):
    """params.yaml and sweep files: refused before anything walks or prints the values."""
    bomb = tmp_path / "params.yaml"
    bomb.write_text(billion_laughs() + "lora:\n  target_modules: *a8\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(billion_laughs() + "method: grid\nparameters:\n  lora.target_modules:\n    values: *a8\n")
    for args in (["check", str(bomb)], ["sweep", "plan", str(sweep)]):
        proc = subprocess.run([sys.executable, "-m", "spelltune.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "expands to more than 100,000 values" in proc.stderr


@pytest.mark.parametrize(
    ("model", "line"),
    [
        (
            {"backend": "hf", "load_in_4bit": True},
            "params.yaml: model.load_in_4bit = True: needs model.backend unsloth or auto",
        ),
        (
            {"backend": "hf", "gradient_checkpointing": "unsloth"},
            "params.yaml: model.gradient_checkpointing = 'unsloth': 'unsloth' needs model.backend unsloth or auto; "
            "allowed with hf: false or true",
        ),
        ({"backend": "gpu"}, "params.yaml: model.backend = 'gpu': Input should be 'auto', 'unsloth' or 'hf'"),
        (
            {"dtype": "fp8"},
            "params.yaml: model.dtype = 'fp8': Input should be 'auto', 'float32', 'bfloat16' or 'float16'",
        ),
        (
            {"gradient_checkpointing": "maybe"},
            "params.yaml: model.gradient_checkpointing = 'maybe': Input should be False, True or 'unsloth'",
        ),
    ],
)
def test_machine_independent_combinations_are_schema_errors(model, line):
    with pytest.raises(ParamsError) as err:
        params(**model)
    assert str(err.value) == line or str(err.value).startswith(line)
