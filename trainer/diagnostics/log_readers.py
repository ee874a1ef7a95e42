"""Training logs of several frameworks read into the collapse monitor's per-step records.

`read_log(path, fmt="auto", key_map=None)` returns a `LogRun`: one flat record per step keyed like our
metrics.jsonl (the keys `CollapseMonitor` reads), the log key each monitor signal came from, the signals
the log lacks, and the seams where a resumed run took over. Formats (`fmt`):

- "searchgym": our `metrics.jsonl` (or the run directory holding it).
- "verl": verl's file logger (`trainer.logger=[...,"file"]`, VERL_FILE_LOGGER_PATH), one JSON object per
  line `{"step": N, "data": {"actor/entropy": ..., ...}}`; flat JSON lines with verl's keys; or its console
  logger's lines `step:12 - actor/entropy:0.51 - critic/score/mean:0.3 - ...` inside any other output.
- "trl": JSON lines of the Trainer's log dicts (`{"loss": ..., "grad_norm": ..., "reward": ..., "step": ...}`),
  a `trainer_state.json` (its `log_history`), or the console's printed dicts
  `{'loss': 0.01, 'grad_norm': 0.3, 'reward': 0.2, 'entropy': 0.4, 'epoch': 0.1}` inside any other output.
- "tensorboard": an events.out.tfevents.* file or a directory holding them (one run): every scalar tag,
  the files read in the order they were started (the timestamp in their names).
- "auto": a directory with metrics.jsonl is searchgym, with event files tensorboard, with
  trainer_state.json trl; a file is told by its name (events.out.tfevents.*) or its first lines.

Signals and the built-in key maps (`KEY_MAPS`; per signal, the first key present anywhere in the log wins;
`key_map` {signal: log key} overrides): reward, likelihood (token-mean log-prob of correct responses; for
verl the LLDS authors' `actor/pos_avg_old_log_prob`, the non-negative-advantage tokens' log-prob over all
response tokens), incorrect_likelihood, grad_norm, entropy, neg_displacement_share, displacement (the mean
Δ of correct responses' log-likelihood across the update), entropy_uniform, nonfinite_grads.
TensorBoard logs use every framework's keys (the writer is not recorded). Steps without a value for a signal
leave it out of that step's record (the monitor skips it).

Resumed runs (seams), the same in every format. A run that crashed after its checkpoint at step c and was
resumed from c leaves both runs' records of the steps after c in the log, the abandoned run's first. The
log is read in the order it was written; a record whose signal was already logged at its step or a later
one is a seam: the log went back to that step, so everything logged at or after it (the abandoned run's
records, including steps past the resumed run's last) is replaced by what follows. Each step is thus the
LAST record written for it, and the steps form one trajectory: the resumed run's, whose steps up to c are
the checkpoint it resumed from. Records of one step that share no signal (tags written one event at a
time, a separate eval record, two writers with different tags) are merged, not seams. `LogRun.seams` says
where each seam is and which steps it replaced. Our metrics.jsonl holds no repeats (`MetricsLogger.
set_aside_after` moves the replaced records to metrics.replaced.jsonl); its seams are read from there.
A log without step numbers (TRL's console) numbers its records 1, 2, ... in order and finds restarts by
its `epoch` going back: the resumed records replace those at and after their epoch. Without an epoch a
second "***** Running training *****" banner still shows a restart that cannot be aligned: the steps go
on counting and the monitor starts afresh there (`LogRun.restarts`); with neither, the notes say a
restart cannot be told.

Bounds (cost is checked before work): a line of a text log is at most `MAX_LINE_BYTES` (1 MiB; a longer
JSON line is an error, a longer console line is skipped unread and counted in the notes), a whole JSON
document (trainer_state.json) at most `MAX_DOCUMENT_BYTES` (64 MiB), a TensorBoard record at most
`MAX_EVENT_BYTES` (1 MiB; a longer one, an image say, is skipped unread), a tensor in one at most
`MAX_TENSOR_ELEMENTS` (2^20) declared elements (refused before anything is allocated), a step at most
`MAX_STEP` (2^53), a value at most `MAX_VALUE` (1e100) in size (larger reads as missing). Only the keys
a signal can come from are kept in memory.

Errors: `LogFormatError` (a ValueError) with a one-line message for a missing or unreadable file, an
unrecognised format, a JSON line that does not parse (deep nesting and integers too long to convert
included; a last line cut short by a crash is dropped as metrics_log does), a limit above, a corrupt
event file (a last record cut short is dropped), no metrics at all, or an unknown signal in `key_map`.
"""

from __future__ import annotations

import ast
import bisect
import json
import math
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from trainer.diagnostics.metrics_log import METRICS_FILE, REPLACED_FILE

FORMATS = ("auto", "searchgym", "verl", "trl", "tensorboard")
TB_PREFIX = "events.out.tfevents"

#: the longest line of a text log read (bytes); JSON lines: longer is an error, console: skipped unread
MAX_LINE_BYTES = 1 << 20
#: the largest whole JSON document read (a TRL trainer_state.json), bytes
MAX_DOCUMENT_BYTES = 64 << 20
#: the largest TensorBoard record parsed, bytes; longer ones (images, audio) are skipped unread
MAX_EVENT_BYTES = 1 << 20
#: a tensor in an event file declaring more elements than this is refused before anything is allocated
MAX_TENSOR_ELEMENTS = 1 << 20
#: the largest step number (beyond it a float step, as the monitor's trends use, is no longer exact)
MAX_STEP = 2**53
#: a value beyond +-this is read as missing, as NaN is (the trends square differences of values)
MAX_VALUE = 1e100
#: lines read to tell a file's format
_DETECT_LINES = 50
#: the banner transformers' Trainer logs when a run (or a resumed run) starts training
TRAINING_BANNER = "***** Running training *****"

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


@dataclass(frozen=True)
class Seam:
    """Where a resumed run took over: from `step` on, the records are the resumed run's; `replaced`
    records of the abandoned run, at steps `first_replaced`..`last_replaced`, were set aside.
    `aligned` is False where the log could not tell which earlier step the resumed run went back to
    (a console log without epochs): then nothing was replaced and the monitor starts afresh at `step`."""

    step: int
    replaced: int
    first_replaced: int | None
    last_replaced: int | None
    aligned: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "replaced": self.replaced,
            "replaced_steps": None if self.first_replaced is None else [self.first_replaced, self.last_replaced],
            "aligned": self.aligned,
        }

    def describe(self) -> str:
        if not self.aligned:
            return f"a restart before step {self.step} that could not be aligned: the monitor starts afresh there"
        if not self.replaced:
            return f"a resumed run from step {self.step}"
        span = (
            f"{self.first_replaced}"
            if self.first_replaced == self.last_replaced
            else (f"{self.first_replaced}-{self.last_replaced}")
        )
        return f"a resumed run from step {self.step}: {self.replaced} steps ({span}) of the abandoned run replaced"


@dataclass
class LogRun:
    """A log read for the monitor: `records` are {"step": int, <SIGNALS key>: float, ...}, sorted by step,
    one per step (the last written: see the module docstring on seams)."""

    path: Path
    format: str
    records: list[dict[str, Any]]
    signals: dict[str, str]  #: signal -> the log key it was read from
    notes: list[str] = field(default_factory=list)
    seams: list[Seam] = field(default_factory=list)
    #: indices into `records` where the monitor starts afresh (restarts the log could not align)
    restarts: list[int] = field(default_factory=list)

    @property
    def replaced(self) -> int:
        """How many records of abandoned runs the resumed runs replaced."""
        return sum(seam.replaced for seam in self.seams)

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


def _float_or_none(value: Any) -> float | None:
    """`_number`, with integers too large for a float (10**400 in a JSON line) and values beyond
    MAX_VALUE as no value; inf and NaN stay (the monitor skips them, and a non-finite count is a count)."""
    try:
        number = _number(value)
    except OverflowError:
        return None
    if number is not None and math.isfinite(number) and abs(number) > MAX_VALUE:
        return None
    return number


def _step(value: Any) -> int | None:
    """The step number of a record, None when it has none; LogFormatError beyond +-MAX_STEP."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_STEP:
        return int(value)
    if isinstance(value, int):
        if abs(value) > MAX_STEP:
            digits = len(str(abs(value))) if abs(value) < 10**100 else "over 100"
            raise LogFormatError(f"a step number of {digits} digits: beyond the limit of 2^53 (MAX_STEP)")
        return value
    if isinstance(value, float) and value.is_integer():
        raise LogFormatError(f"a step number {value:g}: beyond the limit of 2^53 (MAX_STEP)")
    return None


# ---------------------------------------------------------------- bounded reading


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise LogFormatError(f"{path}: no such file") from None
    except OSError as err:
        raise LogFormatError(f"{path}: cannot read it ({err.strerror or err})") from None


def _lines(path: Path, limit: int | None = None) -> Iterator[tuple[int, str | None, bool]]:
    """(line number, text or None for a line over MAX_LINE_BYTES, whether it ended with a newline) per
    line, streamed: no line longer than the limit is ever held whole. `limit`: stop after that many lines,
    or at the first over-long one (reading on would read the whole of it). A megabyte of NUL bytes (the
    holes of a sparse or preallocated file) is refused where it starts rather than read through."""
    with _open(path) as f:
        number = 0
        while limit is None or number < limit:
            try:
                chunk = f.readline(MAX_LINE_BYTES + 1)
            except OSError as err:
                raise LogFormatError(f"{path}: cannot read it ({err.strerror or err})") from None
            if not chunk:
                return
            number += 1
            if len(chunk) > MAX_LINE_BYTES:
                if not chunk.strip(b"\x00"):
                    raise LogFormatError(
                        f"{path}:{number}: over {MAX_LINE_BYTES:,} NUL bytes (a sparse or preallocated file): "
                        "not a text log"
                    )
                yield number, None, True  # first: a caller that refuses it need not wait for the rest
                if limit is not None:
                    return
                while chunk and not chunk.endswith(b"\n"):  # the rest of the long line, in bounded pieces
                    chunk = f.readline(MAX_LINE_BYTES)
                continue
            ended = chunk.endswith(b"\n")
            yield number, chunk.decode("utf-8", errors="replace").rstrip("\r\n"), ended


def _too_long(path: Path, number: int) -> LogFormatError:
    return LogFormatError(
        f"{path}:{number}: a line longer than {MAX_LINE_BYTES:,} bytes (MAX_LINE_BYTES): not a metrics record"
    )


def _loads(text: str) -> tuple[Any, str | None]:
    """(the JSON value, None) or (None, why it does not parse), never raising: deep nesting and integers
    too long to convert are reasons like any other."""
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "nested too deeply"
    except ValueError as err:  # JSONDecodeError, and int() past sys.get_int_max_str_digits
        return None, str(err).split("\n")[0][:80]


def _read_document(path: Path) -> Any:
    """A whole JSON document (trainer_state.json), refused above MAX_DOCUMENT_BYTES before it is read."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise LogFormatError(f"{path}: cannot read it ({err.strerror or err})") from None
    if size > MAX_DOCUMENT_BYTES:
        raise LogFormatError(
            f"{path}: a JSON document of {size:,} bytes: "
            f"over the {MAX_DOCUMENT_BYTES:,}-byte limit (MAX_DOCUMENT_BYTES)"
        )
    with _open(path) as f:
        value, why = _loads(f.read(MAX_DOCUMENT_BYTES + 1).decode("utf-8", errors="replace"))
    if why is not None:
        raise LogFormatError(f"{path}: not a JSON document ({why})")
    return value


# ---------------------------------------------------------------- JSON lines


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line; a cut-short last line (crash mid-write) is dropped."""
    pending: tuple[int, str, str] | None = None  # a line that did not parse: an error unless it is the last
    for number, line, ended in _lines(path):
        if line is None:
            raise _too_long(path, number)
        if pending is not None:
            raise LogFormatError(f"{path}:{pending[0]}: not a JSON line ({pending[2]}): {pending[1][:60]!r}")
        if not line.strip():
            continue
        obj, why = _loads(line)
        if why is not None:
            if ended:
                raise LogFormatError(f"{path}:{number}: not a JSON line ({why}): {line.strip()[:60]!r}")
            pending = (number, line.strip(), why)  # the writer died mid-line if nothing follows
            continue
        if not isinstance(obj, dict):
            raise LogFormatError(f"{path}:{number}: a JSON line that is not an object: {line.strip()[:60]!r}")
        yield number, obj


def _kept(data: Mapping[str, Any], wanted: frozenset[str]) -> dict[str, Any]:
    """Only the keys a signal can come from: a verl record has ~100 keys, a long log ~10^5 records."""
    return {k: data[k] for k in wanted if k in data}


def _flat_json_raws(path: Path, wanted: frozenset[str]) -> list[Raw]:
    raws: list[Raw] = []
    for number, obj in _json_lines(path):
        data = obj.get("data")
        try:
            if isinstance(data, dict):  # verl's file logger: {"step": N, "data": {...}}
                raws.append((_step(obj.get("step")), _kept(data, wanted)))
            else:
                raws.append((_step(obj.get("step", obj.get("global_step"))), _kept(obj, wanted)))
        except LogFormatError as err:
            raise LogFormatError(f"{path}:{number}: {err}") from None
    return raws


# ---------------------------------------------------------------- console output

_VERL_LINE = re.compile(r"(?:^|\s|\))step:(\d+)\s+-\s+(.*)$")


def _verl_console_raw(line: str, wanted: frozenset[str]) -> Raw | None:
    match = _VERL_LINE.search(line)
    if not match:
        return None
    data: dict[str, Any] = {}
    for pair in match.group(2).split(" - "):
        key, sep, value = pair.strip().rpartition(":")
        if sep and key and key in wanted:
            data[key] = value
    step = int(match.group(1)) if len(match.group(1)) <= 16 else MAX_STEP + 1
    return _step(step), data


def _trl_console_raw(line: str, wanted: frozenset[str]) -> tuple[Raw | None, bool]:
    """(record or None, whether it looked like a log dict that did not parse) for one console line."""
    start, end = line.find("{'"), line.rfind("}")
    if start < 0 or end < start:
        return None, False
    try:
        obj = ast.literal_eval(line[start : end + 1])
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
        return None, True  # ValueError includes integers past the int-to-str digit limit
    if not isinstance(obj, dict):
        return None, True
    data = _kept(obj, wanted)
    if "epoch" in obj:
        data["epoch"] = obj["epoch"]
    return (_step(obj.get("step")), data), False


@dataclass
class _Console:
    raws: list[Raw] = field(default_factory=list)
    bad: int = 0  #: lines that looked like log dicts and did not parse
    long: int = 0  #: lines over MAX_LINE_BYTES, skipped unread
    banners: list[int] = field(default_factory=list)  #: record counts at each training banner


def _console_raws(path: Path, fmt: str, wanted: frozenset[str], limit: int | None = None) -> _Console:
    out = _Console()
    for number, line, _ in _lines(path, limit):
        if line is None:
            out.long += 1
            continue
        if TRAINING_BANNER in line:
            out.banners.append(len(out.raws))
        try:
            if fmt == "verl":
                raw = _verl_console_raw(line, wanted)
            else:
                raw, bad = _trl_console_raw(line, wanted)
                out.bad += bad
        except LogFormatError as err:
            raise LogFormatError(f"{path}:{number}: {err}") from None
        if raw is not None:
            out.raws.append(raw)
    return out


# ---------------------------------------------------------------- TensorBoard


def _event_files(path: Path) -> list[Path]:
    """The event files of the one run at or under `path`, in the order they were started."""
    if path.is_file():
        return [path]
    files = [f for f in path.rglob(f"{TB_PREFIX}*") if f.is_file()]
    dirs = sorted({f.parent for f in files})
    if not dirs:
        raise LogFormatError(f"{path}: no {TB_PREFIX}.* files in it")
    if len(dirs) > 1:
        names = ", ".join(str(d) for d in dirs[:4])
        raise LogFormatError(f"{path}: event files of {len(dirs)} runs ({names}...): pass one of them")

    def started(f: Path) -> tuple[float, list[tuple[int, str]]]:
        # The wall time of a file's first event (a writer's file_version record); the name's timestamp has
        # only whole seconds and its counters sort as text ("10" < "9"), so it only breaks ties, read
        # naturally. A resumed run's file thus comes after the crashed run's.
        natural = [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", f.name)]
        events = _events(f, [])
        try:
            first = next(events, None)
        except LogFormatError:
            first = None  # refused again, with its message, when it is read
        finally:
            events.close()
        return (first.wall_time if first is not None else 0.0, natural)

    return sorted(files, key=started)


# The record framing (TFRecord: u64 length, u32 masked CRC of it, data, u32 masked CRC of the data) is
# read here rather than through tensorboard's EventAccumulator: that reader reads whatever length a record
# header claims and keeps every event of a tag, and has no limit to pass it; here an over-long record is
# skipped by a seek and no event is kept beyond the scalars the monitor reads.
def _events(path: Path, skipped: list[str]) -> Iterator[Any]:
    """The Event protos of one file, refusing a corrupt record; a last record cut short is dropped."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    size = path.stat().st_size
    with _open(path) as f:
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                skipped.append(f"{path.name}: its last record was cut short (the writer died or is still writing)")
                return
            (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != crc:
                raise LogFormatError(
                    f"{path}: not a readable TensorBoard event file (bad record header at byte {offset:,})"
                )
            if offset + 12 + length + 4 > size:
                skipped.append(f"{path.name}: its last record was cut short (the writer died or is still writing)")
                return
            if length > MAX_EVENT_BYTES:
                f.seek(length + 4, 1)
                skipped.append(
                    f"{path.name}: a record of {length:,} bytes at byte {offset:,} over MAX_EVENT_BYTES, skipped"
                )
                continue
            data, footer = f.read(length), f.read(4)
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise LogFormatError(f"{path}: not a readable TensorBoard event file (bad record at byte {offset:,})")
            try:
                yield event_pb2.Event.FromString(data)
            except (DecodeError, RecursionError, ValueError) as err:
                raise LogFormatError(
                    f"{path}: not a readable TensorBoard event file (record at byte {offset:,}: {err})"
                ) from None


def _tensor_scalar(tensor: Any, where: str) -> float | None:
    """The value of a one-element numeric tensor; None for other tensors (never decoded); LogFormatError
    for a shape over MAX_TENSOR_ELEMENTS, checked before anything is allocated."""
    from tensorboard.util import tensor_util

    elements = 1
    for dim in tensor.tensor_shape.dim:
        if dim.size < 0:
            raise LogFormatError(f"{where}: a tensor of unknown size {dim.size} in its shape")
        elements *= dim.size
        if elements > MAX_TENSOR_ELEMENTS:
            dims = " x ".join(str(d.size) for d in tensor.tensor_shape.dim)
            raise LogFormatError(
                f"{where}: a tensor of shape {dims}: "
                f"over the {MAX_TENSOR_ELEMENTS:,}-element limit (MAX_TENSOR_ELEMENTS)"
            )
    if elements != 1:
        return None
    try:
        array = tensor_util.make_ndarray(tensor)
    except Exception:  # a dtype or content it cannot decode: not a scalar the monitor can read
        return None
    if array.size != 1 or array.dtype.kind not in "fiu":
        return None
    return float(array.reshape(-1)[0])


def _tensorboard_raws(path: Path, wanted: frozenset[str], notes: list[str]) -> list[Raw]:
    """One raw record per event (its step and the wanted scalar tags in it), in the order written."""
    raws: list[Raw] = []
    skipped: list[str] = []
    for file in _event_files(path):
        for event in _events(file, skipped):
            if not event.HasField("summary"):
                continue
            data: dict[str, Any] = {}
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "tensor":  # checked whatever the tag: a shape claim is the allocation itself
                    scalar = _tensor_scalar(value.tensor, f"{file}: step {event.step}, tag {value.tag[:60]!r}")
                elif kind == "simple_value":
                    scalar = float(value.simple_value)
                else:
                    continue
                # tf.summary (TF2) writes scalars as 0-d tensors; a v1 scalar of the same tag wins
                if scalar is not None and value.tag in wanted:
                    data.setdefault(value.tag, scalar)
            if data:
                try:
                    raws.append((_step(event.step), data))
                except LogFormatError as err:
                    raise LogFormatError(f"{file}: {err}") from None
    notes.extend(skipped[:3] + ([f"... and {len(skipped) - 3} more records skipped"] if len(skipped) > 3 else []))
    if not raws:  # garbage that passes the framing, or a file of other summaries
        raise LogFormatError(f"{path}: no scalars in it (not a TensorBoard event file, or an empty one)")
    return raws


# ---------------------------------------------------------------- detection


def _head(path: Path) -> list[str | None]:
    """The first non-empty lines (None for one over MAX_LINE_BYTES), to tell the format."""
    return [line for _, line, _ in _lines(path, _DETECT_LINES) if line is None or line.strip()]


def _first_object(head: list[str | None]) -> dict[str, Any] | None:
    if not head or head[0] is None:
        return None
    obj, _ = _loads(head[0])
    return obj if isinstance(obj, dict) else None


def _is_document(head: list[str | None]) -> bool:
    """A pretty-printed JSON document (trainer_state.json) starts with a line `{`."""
    return bool(head) and head[0] is not None and head[0].strip() == "{"


def _keys_of(obj: Mapping[str, Any]) -> set[str]:
    data = obj.get("data")
    return set(data) if isinstance(data, dict) else set(obj)


def _framework_of_keys(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    for fmt in ("searchgym", "verl", "trl"):
        if any(k in keys for ks in KEY_MAPS[fmt].values() for k in ks):
            return fmt
    return None


def _all_keys() -> frozenset[str]:
    return frozenset(k for m in KEY_MAPS.values() for ks in m.values() for k in ks)


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
    head = _head(path)
    if _is_document(head):
        whole = _read_document(path)
        if isinstance(whole, dict) and isinstance(whole.get("log_history"), list):
            return path, "trl"
    first = _first_object(head)
    if first is not None:
        if isinstance(first.get("log_history"), list):
            return path, "trl"
        if isinstance(first.get("data"), dict) and "step" in first:
            return path, "verl"
        fmt = _framework_of_keys(_keys_of(first))
        if fmt is None:  # the first line may be a header or a partial record: look at a few more
            objects = (_loads(line)[0] for line in head[1:] if line is not None)
            fmt = _framework_of_keys(k for obj in objects if isinstance(obj, dict) for k in _keys_of(obj))
        if fmt is None:
            raise LogFormatError(f"{path}: JSON lines with none of the known metric names: pass --format/--key-map")
        return path, fmt
    wanted = _all_keys()
    if _console_raws(path, "verl", wanted, _DETECT_LINES).raws:
        return path, "verl"
    if _console_raws(path, "trl", wanted, _DETECT_LINES).raws:
        return path, "trl"
    why = f" (its first line is over {MAX_LINE_BYTES:,} bytes)" if head and head[0] is None else ""
    raise LogFormatError(
        f"{path}: not a metrics log this reader knows (JSON lines, verl/TRL console, TensorBoard){why}"
    )


def _raw_records(path: Path, fmt: str, wanted: frozenset[str], notes: list[str]) -> tuple[list[Raw], list[int]]:
    """(raw records in the order written, record counts at each training banner of a console log)."""
    if fmt == "tensorboard":
        return _tensorboard_raws(path, wanted, notes), []
    if path.is_dir():
        raise LogFormatError(f"{path}: a directory; pass the {fmt} log file in it")
    head = _head(path)
    whole = _read_document(path) if _is_document(head) else _first_object(head)
    if isinstance(whole, dict) and isinstance(whole.get("log_history"), list):  # TRL's trainer_state.json
        try:
            return [(_step(e.get("step")), _kept(e, wanted)) for e in whole["log_history"] if isinstance(e, dict)], []
        except LogFormatError as err:
            raise LogFormatError(f"{path}: {err}") from None
    if _first_object(head) is not None:
        return _flat_json_raws(path, wanted), []
    if fmt not in ("verl", "trl"):
        raise LogFormatError(f"{path}: no {fmt} metrics lines in it")
    console = _console_raws(path, fmt, wanted | {"step"})
    if console.bad:
        notes.append(f"{console.bad} printed lines that looked like log dicts did not parse and were skipped")
    if console.long:
        notes.append(f"{console.long} lines longer than {MAX_LINE_BYTES:,} bytes (MAX_LINE_BYTES) were skipped unread")
    if not console.raws:
        raise LogFormatError(f"{path}: no {fmt} metrics lines in it")
    return console.raws, console.banners


# ---------------------------------------------------------------- mapping


def _choose_keys(raws: list[Raw], fmt: str, key_map: Mapping[str, str] | None) -> dict[str, str]:
    present: set[str] = set()
    for _, data in raws:
        present.update(k for k, v in data.items() if _float_or_none(v) is not None or v is None)
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


Record = dict[str, Any]


def _resolve_seams(sequence: list[tuple[int, Record]]) -> tuple[list[Record], list[Seam]]:
    """One record per step, the last written, and the seams (module docstring): a record that repeats a
    signal already logged at its step or a later one cuts away everything logged at or after its step.
    Each step is cut at most once per signal, so a log that goes back at every line costs n log n."""
    kept: dict[int, Record] = {}
    steps_of: dict[str, list[int]] = {}  # signal key -> the kept steps holding it, ascending
    seams: list[Seam] = []
    for step, record in sequence:
        keys = record.keys() - {"step"}
        if any(steps_of.get(k) and steps_of[k][-1] >= step for k in keys):
            cut: set[int] = set()
            for steps in steps_of.values():  # every kept step holds a signal: the tails are all of them
                at = bisect.bisect_left(steps, step)
                cut.update(steps[at:])
                del steps[at:]
            for s in cut:
                del kept[s]
            seams.append(Seam(step, len(cut), min(cut), max(cut)))
        if step in kept:  # the same step, other signals (an overlap would have been a seam): one record
            kept[step].update(record)
        else:
            kept[step] = dict(record)
        for k in keys:  # ascending still: every list's last step is now before this one
            steps_of.setdefault(k, []).append(step)
    return [kept[s] for s in sorted(kept)], seams


def _number_by_epoch(
    sequence: list[tuple[float | None, Record]], banners: list[int], notes: list[str]
) -> tuple[list[Record], list[Seam], list[int]]:
    """Steps 1, 2, ... for a log without step numbers, split at detected restarts (module docstring)."""
    epochs = [epoch for epoch, _ in sequence]
    if sequence and all(e is not None for e in epochs):
        kept_epochs: list[float] = []
        kept: list[Record] = []
        seams: list[Seam] = []
        for epoch, record in sequence:
            assert epoch is not None
            if kept_epochs and epoch < kept_epochs[-1]:  # the epoch went back: a resumed run
                cut = bisect.bisect_left(kept_epochs, epoch)
                seams.append(Seam(cut + 1, len(kept) - cut, cut + 1, len(kept)))
                del kept[cut:], kept_epochs[cut:]
            kept_epochs.append(epoch)
            kept.append(record)
        return [{**r, "step": i} for i, r in enumerate(kept, 1)], seams, []
    records = [{**r, "step": i} for i, (_, r) in enumerate(sequence, 1)]
    restarts = [n for n in banners if 0 < n < len(records)]
    if restarts:
        notes.append(
            f"{len(restarts)} restarts (a repeated {TRAINING_BANNER!r}) without epochs to align them: the steps go on "
            "counting across them and the monitor starts afresh at each"
        )
        return records, [Seam(n + 1, 0, None, None, aligned=False) for n in restarts], restarts
    notes.append(
        "the log has no epochs: a restart inside it (a resumed run) cannot be told; if it holds one, the steps "
        "after the resume are counted twice"
    )
    return records, [], []


def _replaced_file_seams(path: Path, steps: list[int]) -> list[Seam]:
    """Our metrics.jsonl holds no repeats: the records a resumed run replaced are in metrics.replaced.jsonl
    next to it (MetricsLogger.set_aside_after), each marked with the step it resumed from."""
    aside = path.parent / REPLACED_FILE
    if path.name != METRICS_FILE or not aside.is_file():
        return []
    groups: dict[int, list[int]] = {}
    for _, obj in _json_lines(aside):
        resumed_from, step = obj.get("replaced_by_resume_from"), obj.get("step")
        if isinstance(resumed_from, int) and isinstance(step, int) and not isinstance(step, bool):
            groups.setdefault(resumed_from, []).append(step)
    seams = []
    for resumed_from, replaced in sorted(groups.items()):
        after = bisect.bisect_right(steps, resumed_from)
        first = steps[after] if after < len(steps) else resumed_from + 1
        seams.append(Seam(first, len(replaced), min(replaced), max(replaced)))
    return seams


def read_log(path: Path | str, fmt: str = "auto", key_map: Mapping[str, str] | None = None) -> LogRun:
    """Read a training log for the collapse monitor (see the module docstring for formats, key maps, seams
    and limits). `key_map` maps a signal (a key of SIGNALS) to the log key to read it from. Raises
    LogFormatError."""
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
    wanted = frozenset(k for ks in KEY_MAPS[fmt].values() for k in ks) | frozenset((key_map or {}).values())
    raws, banners = _raw_records(path, fmt, wanted, notes)
    chosen = _choose_keys(raws, fmt, key_map)
    if not chosen:
        raise LogFormatError(f"{path}: none of the monitor's signals in this {fmt} log: pass --key-map SIGNAL=KEY")
    numbered = all(step is not None for step, _ in raws)
    sequence: list[tuple[Any, Record]] = []
    for step, data in raws:
        record: Record = {}
        for signal, key in chosen.items():
            value = _float_or_none(data.get(key))
            if value is not None:
                record[SIGNALS[signal]] = value
        if not record:
            continue  # e.g. TRL's end-of-training summary, or an eval-only record
        if numbered:
            sequence.append((step, {"step": step, **record}))
        else:
            sequence.append((_float_or_none(data.get("epoch")), record))
    if not sequence:
        raise LogFormatError(f"{path}: no step has a value for any of the monitor's signals")
    restarts: list[int] = []
    if numbered:
        records, seams = _resolve_seams(sequence)
        if fmt == "searchgym":
            seams += _replaced_file_seams(path, [r["step"] for r in records])
    else:
        notes.append("the log has no step numbers: steps are the records' order (1, 2, ...)")
        records, seams, restarts = _number_by_epoch(sequence, banners, notes)
    replaced = sum(seam.replaced for seam in seams)
    if replaced:
        notes.append(
            f"{replaced} steps of abandoned runs replaced by the resumed runs' (the last record of each step is "
            f"kept) at {len(seams)} seams: "
            + "; ".join(seam.describe() for seam in seams[:5])
            + (f"; and {len(seams) - 5} more" if len(seams) > 5 else "")
        )
    return LogRun(path, fmt, records, chosen, notes, seams, restarts)
