"""Training logs of several frameworks read into the collapse monitor's per-step records.

`read_log(path, fmt="auto", key_map=None)` returns a `LogRun`: one flat record per step keyed like our
metrics.jsonl (the keys `CollapseMonitor` reads), the log key each monitor signal came from, and the
signals the log lacks. Formats (`fmt`):

- "searchgym": our `metrics.jsonl` (or the run directory holding it).
- "verl": verl's file logger (`trainer.logger=[...,"file"]`, VERL_FILE_LOGGER_PATH), one JSON object per
  line `{"step": N, "data": {"actor/entropy": ..., ...}}`; flat JSON lines with verl's keys; or its console
  logger's lines `step:12 - actor/entropy:0.51 - critic/score/mean:0.3 - ...` inside any other output.
- "trl": JSON lines of the Trainer's log dicts (`{"loss": ..., "grad_norm": ..., "reward": ..., "step": ...}`),
  a `trainer_state.json` (its `log_history`), or the console's printed dicts
  `{'loss': 0.01, 'grad_norm': 0.3, 'reward': 0.2, 'entropy': 0.4, 'epoch': 0.1}` inside any other output.
- "tensorboard": an events.out.tfevents.* file or a directory holding them (one run): every scalar tag.
- "auto": a directory with metrics.jsonl is searchgym, with event files tensorboard, with
  trainer_state.json trl; a file is told by its name (events.out.tfevents.*) or its first lines.

Signals and the built-in key maps (`KEY_MAPS`; per signal, the first key present anywhere in the log wins;
`key_map` {signal: log key} overrides): reward, likelihood (token-mean log-prob of correct responses; for
verl the LLDS authors' `actor/pos_avg_old_log_prob`, the non-negative-advantage tokens' log-prob over all
response tokens), incorrect_likelihood, grad_norm, entropy, neg_displacement_share, displacement (the mean
Δ of correct responses' log-likelihood across the update), entropy_uniform, nonfinite_grads.
TensorBoard logs use every framework's keys (the writer is not recorded). Steps without a value for a signal
leave it out of that step's record (the monitor skips it). A log without step numbers (TRL's console)
numbers its records 1, 2, ... in order, and says so in `LogRun.notes`.

Errors: `LogFormatError` (a ValueError) with a one-line message for a missing or unreadable file, an
unrecognised format, a JSON line that does not parse (except a last line cut short by a crash, which is
dropped as metrics_log does), no metrics at all, or an unknown signal in `key_map`.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.diagnostics.metrics_log import METRICS_FILE

FORMATS = ("auto", "searchgym", "verl", "trl", "tensorboard")
TB_PREFIX = "events.out.tfevents"

#: monitor signal -> the record key CollapseMonitor reads (MonitorConfig's defaults: our metric names)
SIGNALS: dict[str, str] = {
    "reward": "reward/mean",
    "likelihood": "likelihood/correct_mean",
    "incorrect_likelihood": "likelihood/incorrect_mean",
    "grad_norm": "grad/norm",
    "entropy": "policy/entropy",
    "neg_displacement_share": "likelihood/displacement_correct_neg_share",
    "displacement": "likelihood/displacement_correct",
    "entropy_uniform": "policy/entropy_uniform",
    "nonfinite_grads": "grad/nonfinite_steps",
}

#: what the monitor cannot see without a signal
BLIND_WITHOUT: dict[str, str] = {
    "reward": "no reward: no stagnation (likelihood flat while reward rises) and no reward-fall warning",
    "likelihood": (
        "no correct-response likelihood: the phases (stagnation, steady decay, accelerated collapse) cannot be "
        "told (phase unknown); warnings come only from reward falls, which come with the collapse, not before it"
    ),
    "incorrect_likelihood": "no incorrect-response likelihood: no incorrect-below-correct flag (Fig. 9a)",
    "grad_norm": "no gradient norm: no grad-spike events (acceleration then needs an entropy surge or a reward fall)",
    "entropy": "no entropy: no entropy-surge events and no collapsed phase from a near-uniform policy",
    "neg_displacement_share": "no likelihood displacement: no negative-displacement-majority warning (Fig. 3a)",
    "displacement": "no mean likelihood displacement of correct responses: no displacement-drop warning",
    "entropy_uniform": "no ln(vocabulary size) in the log: a near-uniform entropy is called collapsed only "
    "with --vocab-size",
    "nonfinite_grads": "no count of non-finite gradient steps: an inf/NaN gradient is not seen as a spike",
}

_SEARCHGYM = {signal: (key,) for signal, key in SIGNALS.items()}
_VERL = {
    "reward": ("critic/score/mean", "critic/rewards/mean"),
    "likelihood": ("actor/pos_avg_old_log_prob",),
    "incorrect_likelihood": ("actor/neg_avg_old_log_prob",),
    "grad_norm": ("actor/grad_norm",),
    "entropy": ("actor/entropy", "actor/entropy_loss"),
}
_TRL = {
    "reward": ("reward", "train/reward"),
    "entropy": ("entropy", "train/entropy"),
    "grad_norm": ("grad_norm", "train/grad_norm"),
}


def _union(*maps: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for m in maps:
        for signal, keys in m.items():
            out[signal] = out.get(signal, ()) + keys
    return out


#: format -> signal -> candidate log keys, in order of preference
KEY_MAPS: dict[str, dict[str, tuple[str, ...]]] = {
    "searchgym": _SEARCHGYM,
    "verl": _VERL,
    "trl": _TRL,
    "tensorboard": _union(_SEARCHGYM, _VERL, _TRL),
}


class LogFormatError(ValueError):
    """A log that cannot be read; the message is one line, fit for a command-line error."""


@dataclass
class LogRun:
    """A log read for the monitor: `records` are {"step": int, <SIGNALS key>: float, ...}, sorted by step."""

    path: Path
    format: str
    records: list[dict[str, Any]]
    signals: dict[str, str]  #: signal -> the log key it was read from
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [s for s in SIGNALS if s not in self.signals]

    def blind_spots(self) -> list[str]:
        """One sentence per missing signal: what the monitor cannot see without it."""
        return [BLIND_WITHOUT[s] for s in self.missing]


# A raw record: (step or None, {log key: value}).
Raw = tuple[int | None, dict[str, Any]]


def _number(value: Any) -> float | None:
    """A float from a JSON/console value: numbers, numeric strings, 'np.float64(0.5)', 'tensor(0.5)'."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        wrapped = re.fullmatch(r"[A-Za-z_][\w.]*\((.*)\)", text)
        if wrapped:
            text = wrapped.group(1).split(",")[0].strip()
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _step(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


# ---------------------------------------------------------------- JSON lines


def _json_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line; a cut-short last line (crash mid-write) is dropped."""
    text = _read_text(path)
    lines = text.splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                continue  # the writer died mid-line; everything before it is good
            raise LogFormatError(f"{path}:{number}: not a JSON line: {line.strip()[:60]!r}") from None
        if not isinstance(obj, dict):
            raise LogFormatError(f"{path}:{number}: a JSON line that is not an object: {line.strip()[:60]!r}")
        out.append((number, obj))
    return out


def _flat_json_raws(path: Path) -> list[Raw]:
    raws: list[Raw] = []
    for _, obj in _json_lines(path):
        data = obj.get("data")
        if isinstance(data, dict):  # verl's file logger: {"step": N, "data": {...}}
            raws.append((_step(obj.get("step")), data))
        else:
            raws.append((_step(obj.get("step", obj.get("global_step"))), obj))
    return raws


# ---------------------------------------------------------------- console output

_VERL_LINE = re.compile(r"(?:^|\s|\))step:(\d+)\s+-\s+(.*)$")


def _verl_console_raws(text: str) -> list[Raw]:
    raws: list[Raw] = []
    for line in text.splitlines():
        match = _VERL_LINE.search(line)
        if not match:
            continue
        data: dict[str, Any] = {}
        for pair in match.group(2).split(" - "):
            key, sep, value = pair.strip().rpartition(":")
            if sep and key:
                data[key] = value
        raws.append((int(match.group(1)), data))
    return raws


def _trl_console_raws(text: str) -> tuple[list[Raw], int]:
    """(records, candidate lines that did not parse) from printed log dicts `{'loss': 0.1, ...}`."""
    raws: list[Raw] = []
    bad = 0
    for line in text.splitlines():
        start, end = line.find("{'"), line.rfind("}")
        if start < 0 or end < start:
            continue
        try:
            obj = ast.literal_eval(line[start : end + 1])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            bad += 1
            continue
        if isinstance(obj, dict):
            raws.append((_step(obj.get("step")), obj))
        else:
            bad += 1
    return raws, bad


# ---------------------------------------------------------------- TensorBoard


def _event_dir(path: Path) -> Path:
    """The one directory of event files at or under `path` (a file: its own path)."""
    if path.is_file():
        return path
    dirs = sorted({f.parent for f in path.rglob(f"{TB_PREFIX}*") if f.is_file()})
    if not dirs:
        raise LogFormatError(f"{path}: no {TB_PREFIX}.* files in it")
    if len(dirs) > 1:
        names = ", ".join(str(d) for d in dirs[:4])
        raise LogFormatError(f"{path}: event files of {len(dirs)} runs ({names}...): pass one of them")
    return dirs[0]


def _tensorboard_raws(path: Path) -> list[Raw]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    source = _event_dir(path)
    acc = EventAccumulator(str(source), size_guidance={"scalars": 0, "tensors": 0})
    try:
        acc.Reload()
    except Exception as err:  # the reader raises its own DataLossError and friends on a corrupt file
        raise LogFormatError(f"{path}: not a readable TensorBoard event file ({type(err).__name__}: {err})") from None
    by_step: dict[int, dict[str, Any]] = {}
    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        for event in acc.Scalars(tag):
            by_step.setdefault(int(event.step), {})[tag] = float(event.value)
    for tag in tags.get("tensors", []):  # tf.summary (TF2) writes scalars as 0-d tensors
        for event in acc.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if array.size == 1 and array.dtype.kind in "fiu":
                by_step.setdefault(int(event.step), {}).setdefault(tag, float(array.reshape(-1)[0]))
    if not by_step:  # the reader skips what it cannot decode, so garbage reads as an empty log
        raise LogFormatError(f"{path}: no scalars in it (not a TensorBoard event file, or an empty one)")
    return sorted(by_step.items())


# ---------------------------------------------------------------- detection


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise LogFormatError(f"{path}: no such file") from None
    except OSError as err:
        raise LogFormatError(f"{path}: cannot read it ({err.strerror or err})") from None


def _first_json_object(text: str) -> dict[str, Any] | None:
    for line in text.splitlines():
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                return None
            return obj if isinstance(obj, dict) else None
    return None


def _keys_of(obj: Mapping[str, Any]) -> set[str]:
    data = obj.get("data")
    return set(data) if isinstance(data, dict) else set(obj)


def _framework_of_keys(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    for fmt in ("searchgym", "verl", "trl"):
        if any(k in keys for ks in KEY_MAPS[fmt].values() for k in ks):
            return fmt
    return None


def detect_format(path: Path) -> tuple[Path, str]:
    """(the file or directory to read, its format); raises LogFormatError when it cannot tell."""
    if not path.exists():
        raise LogFormatError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / METRICS_FILE).is_file():
            return path / METRICS_FILE, "searchgym"
        if (path / "trainer_state.json").is_file() and not any(path.glob(f"{TB_PREFIX}*")):
            return path / "trainer_state.json", "trl"
        if any(f.is_file() for f in path.rglob(f"{TB_PREFIX}*")):
            return path, "tensorboard"
        raise LogFormatError(f"{path}: a directory without {METRICS_FILE}, trainer_state.json or event files")
    if path.name.startswith(TB_PREFIX):
        return path, "tensorboard"
    text = _read_text(path)
    whole = _whole_json(text)
    if isinstance(whole, dict) and isinstance(whole.get("log_history"), list):
        return path, "trl"
    first = _first_json_object(text)
    if first is not None:
        if isinstance(first.get("data"), dict) and "step" in first:
            return path, "verl"
        fmt = _framework_of_keys(_keys_of(first))
        if fmt is None:  # the first line may be a header or a partial record: look at a few more
            fmt = _framework_of_keys(k for _, obj in _json_lines(path)[:50] for k in _keys_of(obj))
        if fmt is None:
            raise LogFormatError(f"{path}: JSON lines with none of the known metric names: pass --format/--key-map")
        return path, fmt
    if _verl_console_raws(text):
        return path, "verl"
    if _trl_console_raws(text)[0]:
        return path, "trl"
    raise LogFormatError(f"{path}: not a metrics log this reader knows (JSON lines, verl/TRL console, TensorBoard)")


def _whole_json(text: str) -> Any:
    stripped = text.lstrip()
    if not stripped.startswith("{") or "\n{" in stripped.strip():
        return None  # JSON lines, not one document
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        return None


def _raw_records(path: Path, fmt: str, notes: list[str]) -> list[Raw]:
    if fmt == "tensorboard":
        return _tensorboard_raws(path)
    if path.is_dir():
        raise LogFormatError(f"{path}: a directory; pass the {fmt} log file in it")
    text = _read_text(path)
    whole = _whole_json(text)
    if isinstance(whole, dict) and isinstance(whole.get("log_history"), list):  # TRL's trainer_state.json
        return [(_step(e.get("step")), e) for e in whole["log_history"] if isinstance(e, dict)]
    if _first_json_object(text) is not None:
        return _flat_json_raws(path)
    if fmt == "verl":
        raws = _verl_console_raws(text)
    elif fmt == "trl":
        raws, bad = _trl_console_raws(text)
        if bad:
            notes.append(f"{bad} printed lines that looked like log dicts did not parse and were skipped")
    else:
        raws = []
    if not raws:
        raise LogFormatError(f"{path}: no {fmt} metrics lines in it")
    return raws


# ---------------------------------------------------------------- mapping


def _choose_keys(raws: list[Raw], fmt: str, key_map: Mapping[str, str] | None) -> dict[str, str]:
    present: set[str] = set()
    for _, data in raws:
        present.update(k for k, v in data.items() if _number(v) is not None or v is None)
    chosen: dict[str, str] = {}
    for signal, candidates in KEY_MAPS[fmt].items():
        key = next((k for k in candidates if k in present), None)
        if key is not None:
            chosen[signal] = key
    for signal, key in (key_map or {}).items():
        if key in present:
            chosen[signal] = key
        else:
            raise LogFormatError(f"--key-map {signal}={key}: the log has no numeric values under {key!r}")
    return chosen


def read_log(path: Path | str, fmt: str = "auto", key_map: Mapping[str, str] | None = None) -> LogRun:
    """Read a training log for the collapse monitor (see the module docstring for formats and key maps).

    `key_map` maps a signal (a key of SIGNALS) to the log key to read it from. Raises LogFormatError."""
    path = Path(path)
    if fmt not in FORMATS:
        raise LogFormatError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    unknown = sorted(set(key_map or {}) - set(SIGNALS))
    if unknown:
        raise LogFormatError(f"unknown signal(s) in the key map: {', '.join(unknown)} (signals: {', '.join(SIGNALS)})")
    if fmt == "auto":
        path, fmt = detect_format(path)
    elif not path.exists():
        raise LogFormatError(f"{path}: no such file or directory")
    elif fmt == "searchgym" and path.is_dir():
        path = path / METRICS_FILE
    notes: list[str] = []
    raws = _raw_records(path, fmt, notes)
    chosen = _choose_keys(raws, fmt, key_map)
    if not chosen:
        raise LogFormatError(f"{path}: none of the monitor's signals in this {fmt} log: pass --key-map SIGNAL=KEY")
    if any(step is None for step, _ in raws):
        notes.append("the log has no step numbers: steps are the records' order (1, 2, ...)")
        raws = [(i, data) for i, (_, data) in enumerate(raws, 1)]
    records: dict[int, dict[str, Any]] = {}
    duplicates = 0
    for step, data in raws:
        assert step is not None
        record = {"step": step}
        for signal, key in chosen.items():
            value = _number(data.get(key))
            if value is not None:
                record[SIGNALS[signal]] = value
        if len(record) == 1:
            continue  # e.g. TRL's end-of-training summary, or an eval-only record
        if step in records:
            duplicates += 1  # a resumed run replays steps; the first record wins, as in metrics_log
            continue
        records[step] = record
    if duplicates:
        notes.append(f"{duplicates} repeated steps: the first record of each was kept")
    if not records:
        raise LogFormatError(f"{path}: no step has a value for any of the monitor's signals")
    ordered = [records[s] for s in sorted(records)]
    return LogRun(path, fmt, ordered, chosen, notes)
