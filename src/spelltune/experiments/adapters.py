"""The adapter a command uses, and its base model: the workspace's (checkpoints/adapter), an
experiment's (read from the DVC cache at that experiment's commit through spelltune.store,
the workspace untouched) or any adapter directory. It always runs on the local base model
(data/base_model, or the experiment's own from the cache when it used another
model.source); adapter_config.json names the real base model
(spelltune.modeling.card.base_model_name), and an adapter trained on another one is refused."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spelltune import store
from spelltune.modeling import card
from spelltune.params import schema_default
from spelltune.paths import ADAPTER_DIR, BASE_MODEL_DIR, CHECKPOINT_DIR


class UseError(Exception):
    """A problem with the command's input, phrased as the one line the user sees."""


@dataclass
class Source:
    """Where an adapter and its base model are, and how it was trained to be prompted."""

    label: str
    adapter_dir: Path
    base_dir: Path
    prompt_format: str
    separator: str
    facts: dict | None
    read: Callable[[str], str | None] | None = None  # a file of the adapter's commit (workspace or experiment)
    revision: str | None = None
    extra_params: dict = field(default_factory=dict)  # data/eval params of that commit, for the card
    batch_size: int = 64  # eval.batch_size of that commit
    _tmp: tempfile.TemporaryDirectory | None = None
    letter_answer: str = "direct"  # data.letter_answer it was trained with

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def params_at(text: str | None) -> dict:
    return (yaml.safe_load(text) or {}) if text else {}


def _lock_param(lock: dict, stage: str, key: str):
    return (((lock.get("stages") or {}).get(stage) or {}).get("params") or {}).get("params.yaml", {}).get(key)


def _source_of(read: Callable[[str], str | None]) -> tuple[str, dict]:
    """The model.source that made a commit's (or the workspace's) data/base_model: dvc.lock's
    record of the prepare_model run, else params.yaml; and params.yaml itself."""
    params = params_at(read("params.yaml"))
    lock = params_at(read("dvc.lock"))
    source = (
        _lock_param(lock, "prepare_model", "model.source") or (params.get("model") or {}).get("source") or card.EMBEDDED
    )
    return source, params


def _workspace_reader(repo: Path) -> Callable[[str], str | None]:
    def read(path: str) -> str | None:
        file = repo / path
        return file.read_text() if file.is_file() else None

    return read


def _adapter_facts(adapter_dir: Path) -> dict | None:
    readme = adapter_dir / card.CARD_FILE
    return card.facts_of_card(readme.read_text()) if readme.exists() else None


def _from_experiment(repo: Path, exp: str, local_source: str):
    """An experiment's adapter (and, when it used another model, its base model) from the DVC
    cache into a temporary directory: (rev, adapter_dir, base_dir, base_source, read, params, tmp)."""
    try:
        rev = store.resolve(exp, repo)
    except store.StoreError as exc:
        raise UseError(f"--exp {exp}: {exc}") from None
    fs = store.filesystem(rev, repo)

    def read(path: str) -> str | None:
        try:
            return fs.read_text(path)
        except (FileNotFoundError, IsADirectoryError):
            return None

    tmp = tempfile.TemporaryDirectory(prefix="spelltune-exp-")
    adapter_dir = Path(tmp.name) / "adapter"
    try:
        fs.get(str(ADAPTER_DIR), str(adapter_dir), recursive=True)
    except Exception as exc:  # noqa: BLE001 - DVC raises many kinds; the user needs one line
        tmp.cleanup()
        raise UseError(f"--exp {exp}: its {ADAPTER_DIR} is not in the local DVC cache ({type(exc).__name__}); "
                       "`dvc exp pull` it, or `dvc exp run` it again") from None
    if not (adapter_dir / "adapter_config.json").is_file():
        tmp.cleanup()
        raise UseError(f"--exp {exp}: commit {rev[:7]} has no trained adapter in {ADAPTER_DIR}")
    try:  # DVC serves a cache object as it is: one changed in place would be used without a word
        _verify_adapter(read("dvc.lock"), adapter_dir, repo, exp)
    except UseError:
        tmp.cleanup()
        raise
    base_source, params = _source_of(read)
    base_dir = repo / BASE_MODEL_DIR
    if (
        not card.same_base(card.base_model_name(base_source), card.base_model_name(local_source))
        or not base_dir.exists()
    ):
        base_dir = Path(tmp.name) / "base_model"  # that experiment's own base model, from the cache
        try:
            fs.get(str(BASE_MODEL_DIR), str(base_dir), recursive=True)
        except Exception:  # noqa: BLE001
            tmp.cleanup()
            raise UseError(f"--exp {exp}: its base model ({base_source}) is not in the local DVC cache; "
                           "`dvc exp pull` it, or run `dvc exp run` there") from None
    return rev, adapter_dir, base_dir, base_source, read, params, tmp


def _verify_adapter(lock_text: str | None, adapter_dir: Path, repo: Path, exp: str) -> None:
    """The adapter's files against the md5s its experiment's dvc.lock recorded (checkpoints/)."""
    from spelltune import integrity

    recorded = integrity.recorded_outs(lock_text).get(str(CHECKPOINT_DIR))
    if recorded is None:
        return
    prefix = f"{ADAPTER_DIR.relative_to(CHECKPOINT_DIR)}/"
    files = {rel.removeprefix(f"{CHECKPOINT_DIR}/{prefix}"): value
             for rel, value in integrity.expected(str(CHECKPOINT_DIR), recorded[1], repo).items()
             if rel.startswith(f"{CHECKPOINT_DIR}/{prefix}")}
    try:
        integrity.check(files, adapter_dir, f"--exp {exp}: {ADAPTER_DIR}/",
                        lambda _, bad: f"remove it (`rm -f {integrity.cache_object(bad)}`) and run {exp} again")
    except integrity.IntegrityError as exc:
        raise UseError(str(exc)) from None


def resolve(repo: str | Path = ".", exp: str | None = None, adapter: str | None = None) -> Source:
    """The adapter to use: --adapter DIR, --exp NAME, else the workspace's."""
    repo = Path(repo).resolve()
    tmp = None
    workspace_read = _workspace_reader(repo)
    local_source, local_params = _source_of(workspace_read)
    read, revision, params = workspace_read, None, local_params
    if adapter is not None:
        adapter_dir = Path(adapter)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise UseError(f"--adapter {adapter}: no adapter_config.json there (an adapter directory: "
                           "checkpoints/adapter, or one written by `spelltune export --peft`)")
        label, base_dir, read = str(adapter_dir), repo / BASE_MODEL_DIR, None
        base_source = local_source
    elif exp is not None:
        rev, adapter_dir, base_dir, base_source, read, params, tmp = _from_experiment(repo, exp, local_source)
        label, revision = f"experiment {exp}", rev[:7]
    else:
        adapter_dir, label, base_dir, base_source = repo / ADAPTER_DIR, "workspace", repo / BASE_MODEL_DIR, local_source
        if not (adapter_dir / "adapter_config.json").is_file():
            raise UseError(f"{ADAPTER_DIR}: no trained adapter in {repo}; run `make run` or `dvc exp run` first, "
                           "or pass --exp NAME or --adapter DIR")
        revision = store.head(repo)

    try:
        _check_base(adapter_dir, base_dir, base_source, repo)
    except UseError:
        if tmp is not None:
            tmp.cleanup()
        raise
    facts = _adapter_facts(adapter_dir)

    on_card = {"model": facts or {}, "data": (facts or {}).get("data") or {}}  # the card keeps model facts on top

    def trained(section: str, key: str) -> str:
        """How the adapter was trained: its model card's facts, else its commit's params, else
        the schema's default (params.BEFORE_THE_KEY: what params older than the key meant)."""
        for known in (on_card[section], params.get(section) or {}):
            if known.get(key) is not None:
                return known[key]
        return schema_default(f"{section}.{key}")

    extra = {k: params[k] for k in ("data", "eval") if isinstance(params.get(k), dict)} if read is not None else {}
    return Source(
        label, adapter_dir, base_dir, facts=facts, read=read, revision=revision, extra_params=extra, _tmp=tmp,
        prompt_format=trained("model", "prompt_format"),
        separator=trained("data", "spelling_separator"),
        letter_answer=trained("data", "letter_answer"),
        batch_size=(params.get("eval") or {}).get("batch_size") or schema_default("eval.batch_size"),
    )


def _check_base(adapter_dir: Path, base_dir: Path, base_source: str, repo: Path) -> None:
    """The adapter was trained on the model in base_dir (by name: adapter_config.json's against
    the model.source that built base_dir), or one line says what is wrong."""
    if not (base_dir / "config.json").is_file():
        raise UseError(f"{base_dir}: no base model here; run `dvc exp run` (its prepare_model stage) in {repo} first")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    trained_on = str(config.get("base_model_name_or_path") or "")
    here = card.base_model_name(base_source)
    # Adapters saved before the name was recorded say "data/base_model": nothing to check.
    if trained_on and Path(trained_on) != BASE_MODEL_DIR and not card.same_base(trained_on, here):
        raise UseError(f"adapter {adapter_dir}: trained on base model {trained_on!r}, but {base_dir} holds {here!r} "
                       f"(model.source = {base_source}); use it where that model is, or pass --exp NAME")
