"""The backend choice (Unsloth / transformers + PEFT), the mapping of our params to
Unsloth's arguments, the machine-dependent errors, and worker slots (one GPU per worker,
cores shared). All on the CPU, without importing unsloth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from spelltune.modeling.backends import (
    BackendError,
    Choice,
    choose_backend,
    decide,
    resolve_dtype,
    trainer_kwargs,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
)
from spelltune.params import ParamsError, parse

ROOT = Path(__file__).resolve().parents[1]


def params(**model):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(model)
    return parse(raw)


# -- backend choice ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("backend", "cuda", "unsloth", "chosen", "why"),
    [
        ("auto", True, True, "unsloth", "CUDA GPU found and unsloth imports"),
        ("auto", True, False, "hf", "unsloth does not import"),
        ("auto", False, False, "hf", "no CUDA GPU"),
        ("auto", False, True, "hf", "no CUDA GPU"),
        ("unsloth", True, True, "unsloth", "model.backend = unsloth"),
        ("hf", True, True, "hf", "model.backend = hf"),
        ("hf", False, False, "hf", "model.backend = hf"),
    ],
)
def test_backend_choice(backend, cuda, unsloth, chosen, why):
    name, reason = choose_backend(params(backend=backend), cuda_available=cuda, unsloth_importable=unsloth)
    assert name == chosen and why in reason


@pytest.mark.parametrize(
    ("model", "cuda", "unsloth", "line"),
    [
        (
            {"backend": "unsloth"},
            False,
            False,
            "params.yaml: model.backend = 'unsloth': needs a CUDA GPU (none found) and the unsloth package",
        ),
        (
            {"backend": "unsloth"},
            True,
            False,
            "params.yaml: model.backend = 'unsloth': needs the unsloth package, which does not import here",
        ),
        (
            {"load_in_4bit": True},
            False,
            False,
            "params.yaml: model.load_in_4bit = True: needs a CUDA GPU (none found); use false on CPU",
        ),
        (
            {"load_in_4bit": True},
            True,
            False,
            "params.yaml: model.load_in_4bit = True: needs the unsloth backend; auto: CUDA GPU found but unsloth "
            "does not import",
        ),
    ],
)
def test_impossible_backend_is_one_line(model, cuda, unsloth, line):
    with pytest.raises(BackendError) as err:
        choose_backend(params(**model), cuda_available=cuda, unsloth_importable=unsloth)
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_ddp_runs_on_transformers_peft():
    ddp = params()
    ddp.train.processes = 2
    assert choose_backend(ddp, cuda_available=True, unsloth_importable=True) == (
        "hf", "auto: train.processes = 2 (DDP) runs on transformers + PEFT")
    ddp.model.backend = "unsloth"
    with pytest.raises(BackendError) as err:
        choose_backend(ddp, cuda_available=True, unsloth_importable=True)
    assert str(err.value) == ("params.yaml: model.backend = 'unsloth': trains on one GPU; "
                              "train.processes = 2 (DDP) needs hf or auto")


@pytest.mark.parametrize(
    ("dtype", "cuda", "bf16", "resolved"),
    [
        ("auto", False, False, "float32"),
        ("auto", True, True, "bfloat16"),
        ("auto", True, False, "float16"),
        ("float32", False, False, "float32"),
        ("float32", True, True, "float32"),
        ("float16", True, True, "float16"),
        ("bfloat16", True, True, "bfloat16"),
    ],
)
def test_dtype_by_device(dtype, cuda, bf16, resolved):
    assert resolve_dtype(params(dtype=dtype), cuda, bf16) == resolved


@pytest.mark.parametrize(
    ("dtype", "cuda", "bf16", "message"),
    [
        (
            "bfloat16",
            False,
            False,
            "model.dtype = 'bfloat16': needs a CUDA GPU (none found); use auto or float32 on CPU",
        ),
        ("float16", False, False, "model.dtype = 'float16': needs a CUDA GPU (none found); use auto or float32 on CPU"),
        ("bfloat16", True, False, "model.dtype = 'bfloat16': this GPU has no bfloat16 support; use auto or float16"),
    ],
)
def test_impossible_dtype_is_one_line(dtype, cuda, bf16, message):
    with pytest.raises(BackendError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_dtype(params(dtype=dtype), cuda, bf16)


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


def test_cpu_training_arguments_are_unchanged():
    # The CPU path must stay exactly what it was (use_cpu, fp32): resume is bit-identical.
    cpu = decide(params(), cuda_available=False, unsloth_importable=False, bf16_supported=False)
    assert cpu == Choice("hf", "auto: no CUDA GPU, transformers + PEFT on the CPU", "cpu", "float32")
    assert trainer_kwargs(cpu) == {"use_cpu": True}
    gpu = decide(params(backend="hf"), cuda_available=True, unsloth_importable=False, bf16_supported=True)
    assert trainer_kwargs(gpu) == {"use_cpu": False, "bf16": True, "fp16": False}
    old_gpu = decide(params(), cuda_available=True, unsloth_importable=True, bf16_supported=False)
    assert old_gpu.name == "unsloth" and trainer_kwargs(old_gpu) == {"use_cpu": False, "bf16": False, "fp16": True}


# -- our params -> Unsloth's arguments ---------------------------------------------------

def test_unsloth_arguments():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(backend="unsloth", load_in_4bit=True, gradient_checkpointing="unsloth")
    raw["lora"].update(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
    raw["train"]["seed"] = 7
    p = parse(raw)
    assert unsloth_load_kwargs(p, Path("data/base_model"), "bfloat16") == {
        "model_name": "data/base_model", "max_seq_length": 512, "dtype": "bfloat16", "load_in_4bit": True,
    }
    assert unsloth_peft_kwargs(p) == {
        "r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "bias": "none",
        "use_gradient_checkpointing": "unsloth", "random_state": 7, "use_rslora": False, "loftq_config": None,
    }
    assert unsloth_peft_kwargs(params(gradient_checkpointing=True))["use_gradient_checkpointing"] is True
    assert unsloth_peft_kwargs(params())["use_gradient_checkpointing"] is False
    assert "unsloth" not in sys.modules  # the mapping never imports it


# -- the errors through the real entry points ----------------------------------------------

def cpu_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SPELLTUNE_WORKERS"}
    return {**env, "CUDA_VISIBLE_DEVICES": "", **extra}  # a CPU machine, also on a GPU box


@pytest.mark.parametrize(
    ("model", "line"),
    [
        (
            {"load_in_4bit": True},
            "error: params.yaml: model.load_in_4bit = True: needs a CUDA GPU (none found); use false on CPU",
        ),
        (
            {"backend": "unsloth"},
            "error: params.yaml: model.backend = 'unsloth': needs a CUDA GPU (none found) and the unsloth package",
        ),
        (
            {"dtype": "bfloat16"},
            "error: params.yaml: model.dtype = 'bfloat16': needs a CUDA GPU (none found); use auto or float32 on CPU",
        ),
    ],
)
def test_validate_stage_stops_what_this_machine_cannot_run(tmp_path, model, line):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(model)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "spelltune.stages.validate"], cwd=tmp_path, env=cpu_env(),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith(line)
    assert not (tmp_path / ".spelltune/params.ok").exists()


def test_check_command_passes_the_defaults_without_torch(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    code = ("import sys; from spelltune.cli import main; rc = main(['check', 'params.yaml']); "
            "assert 'torch' not in sys.modules, 'the default params need no machine check'; sys.exit(rc)")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cpu_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "params.yaml: valid"


def test_gpu_benchmark_without_a_gpu_says_so_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "spelltune.bench.gpu", "--out", str(tmp_path / "gpu.json")],
                          cwd=tmp_path, env=cpu_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: spelltune.bench.gpu needs a CUDA GPU (none found); nothing was measured"
    assert not (tmp_path / "gpu.json").exists()


# -- worker slots ----------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import json, logging, sys
    from spelltune.training.devices import claim_worker
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    w = claim_worker(int(sys.argv[1]))
    print(json.dumps({**w.as_dict(), "env": __import__("os").environ.get("CUDA_VISIBLE_DEVICES")}), flush=True)
    sys.stdin.readline()  # hold the slot until told to go
""")


def hold(repo: Path, env: dict, threads: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(threads)], cwd=repo, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def claimed(proc: subprocess.Popen) -> dict:
    return json.loads(proc.stdout.readline())


def release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=30)


def test_two_cpu_workers_get_different_slots_and_share_the_cores(tmp_path):
    env = cpu_env(SPELLTUNE_WORKERS="2")
    a = hold(tmp_path, env)
    first = claimed(a)
    b = hold(tmp_path, env)
    second = claimed(b)
    cores = len(os.sched_getaffinity(0))
    assert (first["slot"], second["slot"]) == (0, 1)
    assert first["gpu"] is None and first["env"] == ""
    assert first["threads"] == second["threads"] == max(1, cores // 2)
    assert first["workers"] == 2 and first["workers_from"] == "SPELLTUNE_WORKERS"
    release(a)
    c = hold(tmp_path, env, threads=3)  # the freed slot is reused; train.threads set: left alone
    third = claimed(c)
    assert third["slot"] == 0 and third["threads"] == 3
    release(b), release(c)
    assert (tmp_path / ".spelltune/.gitignore").read_text() == "*\n"


def test_one_gpu_per_worker_from_the_visible_list(tmp_path):
    """CUDA_VISIBLE_DEVICES="3,5" (as the user set it): worker 0 gets 3, worker 1 gets 5, and
    a third waits until one of them is free instead of sharing."""
    env = cpu_env(CUDA_VISIBLE_DEVICES="3,5", SPELLTUNE_WORKERS="2")
    a, b = hold(tmp_path, env), None
    first = claimed(a)
    b = hold(tmp_path, env)
    second = claimed(b)
    assert (first["slot"], first["gpu"], first["env"]) == (0, "3", "3")
    assert (second["slot"], second["gpu"], second["env"]) == (1, "5", "5")
    c = hold(tmp_path, env)
    time.sleep(2.5)
    assert c.poll() is None
    os.set_blocking(c.stdout.fileno(), False)
    assert not c.stdout.readline(), "a third worker must not share a GPU"
    os.set_blocking(c.stdout.fileno(), True)
    release(a)
    third = claimed(c)
    assert (third["slot"], third["gpu"]) == (0, "3")
    release(b), release(c)
    assert "waiting for one to free up" in c.stderr.read()


def test_queued_run_counts_the_workers_of_its_dvc_queue(tmp_path):
    """A stage descends from `dvc exp queue-worker dvc-exp-<hash>-<n>@localhost`; the
    workers of the same queue share the hash. Fake that process tree."""
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import subprocess, sys, time
        if sys.argv[-1] == "stage":
            code = "from spelltune.training.devices import worker_count; print(*worker_count(), sep=',')"
            subprocess.run([sys.executable, "-c", code], check=True)
        else:
            time.sleep(60)
    """))
    env = cpu_env()
    others = [subprocess.Popen([sys.executable, str(worker), "exp", "queue-worker", node])
              for node in ("dvc-exp-abc123-2@localhost", "dvc-exp-abc123-3@localhost", "dvc-exp-ffffff-1@localhost")]
    try:
        time.sleep(0.5)
        out = subprocess.run(
            [sys.executable, str(worker), "exp", "queue-worker", "dvc-exp-abc123-1@localhost", "stage"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "3,dvc queue workers"
        out = subprocess.run(
            [sys.executable, str(worker), "exp", "queue-worker", "dvc-exp-abc123-1@localhost", "stage"],
            env={**env, "SPELLTUNE_WORKERS": "2"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "2,SPELLTUNE_WORKERS"
    finally:
        for p in others:
            p.kill()
            p.wait()
    from spelltune.training.devices import dvc_queue_workers

    assert dvc_queue_workers() is None  # pytest runs in no queue


# -- adapters across devices and backends -------------------------------------------------

def test_gpu_style_adapter_loads_on_the_cpu(tiny_model, tmp_path):
    """A GPU run saves its LoRA weights in bf16/fp16 (Unsloth, or HF mixed precision): the
    safetensors file carries no device, and PEFT loads it onto the fp32 CPU base model."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from spelltune.modeling.base import load_base_model
    from spelltune.modeling.lora import build_lora_model, save_adapter
    from spelltune.params import LoraParams

    torch.manual_seed(0)
    trained = build_lora_model(load_base_model(tiny_model)[0], LoraParams(r=4))
    for name, p in trained.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # B starts at zero: make the adapter do something
    trained = trained.to(torch.bfloat16)
    save_adapter(trained, tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter/adapter_model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16} and {t.device.type for t in saved.values()} == {"cpu"}

    base, tokenizer = load_base_model(tiny_model)
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    lora = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in lora.values())
    ids = tokenizer("banana", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        merged = loaded.merge_and_unload()(ids).logits
        plain = load_base_model(tiny_model)[0](ids).logits
    assert torch.isfinite(merged).all() and not torch.equal(merged, plain)


def test_hf_gradient_checkpointing_trains(tiny_model):
    """model.gradient_checkpointing on the hf backend (also where auto fell back from
    'unsloth'): the LoRA weights still get gradients."""
    from spelltune.modeling.backends import load_hf

    p = params(gradient_checkpointing="unsloth")
    model, tokenizer = load_hf(p, tiny_model)
    assert model.get_base_model().is_activation_checkpointing
    model.train()
    ids = tokenizer("b-a-n-a-n-a", return_tensors="pt")["input_ids"]
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # (lora_A's: 0 while B is 0)
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
