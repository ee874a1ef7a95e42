"""`search-trainer monitor` bounds what it reads before it works (issue 21): every input below is a real file
in its format, and each class is tried with its example and at least one more of the kind. A tensor shape
claiming more than 2^20 elements is refused before anything is allocated; a log line over 1 MiB is not
parsed (a JSON line: refused; a console line: skipped unread); `--window` is at most 500; deep nesting,
huge integers, a sparse 4 GB file and truncated files end in one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import pytest

from trainer.config import ConfigError, load_config
from trainer.diagnostics.collapse_monitor import MAX_WINDOW, MonitorConfig
from trainer.diagnostics.log_readers import MAX_LINE_BYTES, MAX_TENSOR_ELEMENTS, LogFormatError, read_log
from trainer.monitor_cli import monitor_main


def _refused(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> str:
    """The command exits 2 with one line on stderr holding `message`, and nothing on stdout."""
    assert monitor_main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err, captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("search-trainer monitor: "), captured.err
    assert message in captured.err, captured.err
    return captured.err


def _good_lines(n: int = 30) -> str:
    return "".join(
        json.dumps({"step": s, "reward/mean": 0.3, "likelihood/correct_mean": -0.3}) + "\n" for s in range(n)
    )


# ---------------------------------------------------------------- TensorBoard: shapes, framing


def _write_events(path: Path, *events: object) -> Path:
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(path))
    for event in events:
        writer.add_event(event)
    writer.close()
    [file] = path.glob("events.out.tfevents.*")
    return file


def _tensor_event(step: int, dims: list[int], tag: str = "reward") -> object:
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[1.0])
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    return event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary_pb2.Summary(value=[value]))


def _scalar_event(step: int, value: float, tag: str = "train/reward") -> object:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    return event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary)


@pytest.mark.parametrize(
    "dims",
    [[2**28], [MAX_TENSOR_ELEMENTS + 1], [65536, 65536, 65536], [4, 2**62]],
    ids=["2^28", "limit+1", "three-dims", "overflowing"],
)
def test_a_tensor_shape_over_the_limit_is_refused_before_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dims: list[int]
) -> None:
    file = _write_events(tmp_path / "tb", _scalar_event(0, 0.5), _tensor_event(1, dims, tag="any/tag"))
    assert file.stat().st_size < 300  # the file was 111 bytes
    tracemalloc.start()
    try:
        _refused(capsys, [str(file)], "MAX_TENSOR_ELEMENTS")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # 2^28 floats would be 1 GiB


def test_tensors_within_the_limit_read_as_scalars_or_are_skipped(tmp_path: Path) -> None:
    file = _write_events(tmp_path / "tb", _tensor_event(0, []), _tensor_event(1, [1, 1]), _tensor_event(2, [3]))
    run = read_log(file)  # 0-d and 1x1 tensors are scalars; a 3-vector is not a value the monitor reads
    assert [r["step"] for r in run.records] == [0, 1] and run.records[0]["reward/mean"] == 1.0
    assert "MAX_TENSOR_ELEMENTS" not in " ".join(run.notes)
    with pytest.raises(LogFormatError, match="unknown size"):
        read_log(_write_events(tmp_path / "tb2", _tensor_event(0, [-1])))


def _framed(path: Path, payload: bytes) -> Path:
    from tensorboard.summary.writer.record_writer import RecordWriter

    with path.open("wb") as f:
        RecordWriter(f).write(payload)
    return path


def test_deeply_nested_or_huge_step_events_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def field(tag: int, payload: bytes) -> bytes:
        n, size = len(payload), b""
        while True:
            size += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return bytes([tag]) + size + payload

    tensor = b""
    for _ in range(300):  # TensorProto.variant_val (15) -> VariantTensorDataProto.tensors (3) -> TensorProto ...
        tensor = field(122, field(26, tensor))
    value = field(10, b"train/reward") + field(66, tensor)
    nested = _framed(tmp_path / "events.out.tfevents.1.nested", field(42, field(10, value)))
    _refused(capsys, [str(nested)], "not a readable TensorBoard event file")
    (tmp_path / "huge").mkdir()
    huge = _write_events(tmp_path / "huge", _scalar_event(0, 0.5), _scalar_event(2**62, 0.5))
    _refused(capsys, [str(huge)], "beyond the limit of 2^53")


def test_sparse_huge_and_garbage_event_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sparse = tmp_path / "events.out.tfevents.1.sparse"
    with sparse.open("wb") as f:
        f.truncate(4 << 30)  # 4 GB of holes: reads as NULs
    _refused(capsys, [str(sparse)], "bad record header at byte 0")
    garbage = tmp_path / "events.out.tfevents.2.garbage"
    garbage.write_bytes(b"\xff" * 64)
    _refused(capsys, [str(garbage)], "bad record header at byte 0")
    # a header claiming a 1 TB record (with a valid CRC) in a small file: cut short, nothing allocated
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    length = struct.pack("<Q", 1 << 40)
    claim = tmp_path / "events.out.tfevents.3.claim"
    claim.write_bytes(length + struct.pack("<I", masked_crc32c(length)) + b"x" * 100)
    _refused(capsys, [str(claim)], "no scalars in it")


def test_a_truncated_event_file_keeps_the_records_before_the_cut(tmp_path: Path) -> None:
    file = _write_events(tmp_path / "tb", *(_scalar_event(s, 0.1 * s) for s in range(1, 11)))
    data = file.read_bytes()
    for cut in (len(data) - 3, len(data) - 20):  # inside the last record's CRC, inside its payload
        file.write_bytes(data[:cut])
        run = read_log(file)
        assert [r["step"] for r in run.records] == list(range(1, 10))
        assert any("cut short" in note for note in run.notes)


def test_an_over_long_event_record_is_skipped_unread(tmp_path: Path) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    image = summary_pb2.Summary.Image(encoded_image_string=b"\x89PNG" + b"\x00" * (2 << 20))
    big = event_pb2.Event(
        step=3, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="img", image=image)])
    )
    file = _write_events(tmp_path / "tb", _scalar_event(1, 0.1), big, _scalar_event(2, 0.2))
    run = read_log(file)
    assert [r["step"] for r in run.records] == [1, 2]
    assert any("over MAX_EVENT_BYTES, skipped" in note for note in run.notes)


# ---------------------------------------------------------------- text logs: line length, nesting, integers


def test_a_40_mb_console_dict_line_is_skipped_unread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trl.txt"
    with path.open("w") as f:
        for s in range(1, 31):
            f.write(str({"loss": 0.1, "reward": 0.3, "grad_norm": 0.2, "epoch": s / 30}) + "\n")
            if s == 10:  # the example: one printed dict of 40 MB
                f.write("{'reward': [" + "0.1, " * (8 << 20) + "]}\n")
    tracemalloc.start()
    try:
        run = read_log(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(run.records) == 30 and peak < 40 * 2**20  # literal_eval of it took 5.5 GB
    assert any("1 lines longer than 1,048,576 bytes" in note for note in run.notes)
    # the same class in verl's console, and a line just over the limit
    verl = tmp_path / "verl.log"
    verl.write_text(
        "step:1 - critic/score/mean:0.3 - actor/grad_norm:0.2\n"
        + "step:2 - critic/score/mean:0.3 - junk:"
        + "x" * MAX_LINE_BYTES
        + "\n"
        + "step:3 - critic/score/mean:0.3 - actor/grad_norm:0.2\n"
    )
    assert [r["step"] for r in read_log(verl).records] == [1, 3]


@pytest.mark.parametrize("size", [MAX_LINE_BYTES + 1, 4 * MAX_LINE_BYTES])
def test_an_over_long_json_line_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], size: int) -> None:
    path = tmp_path / "metrics.jsonl"
    pad = "x" * (size - 40)
    path.write_text(_good_lines(5) + json.dumps({"step": 5, "reward/mean": 0.3, "pad": pad}) + "\n")
    _refused(capsys, [str(path)], ":6: a line longer than 1,048,576 bytes (MAX_LINE_BYTES)")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ('{"step": 6, "reward/mean": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"step": ' + "9" * 5000 + ', "reward/mean": 0.3}', "not a JSON line"),  # past Python's 4,300 digits
        ('{"step": ' + "9" * 30 + ', "reward/mean": 0.3}', "beyond the limit of 2^53"),
        ('{"step": 9e30, "reward/mean": 0.3}', "beyond the limit of 2^53"),
    ],
    ids=["deep-array", "deep-value", "5000-digit-step", "30-digit-step", "float-step"],
)
def test_deep_nesting_and_huge_integers_in_json_lines_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(_good_lines(6) + line + "\n" + _good_lines(2))
    _refused(capsys, [str(path)], message)


def test_huge_values_read_as_missing_not_as_an_overflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "reward/mean": 0.3, "likelihood/correct_mean": -0.3 + 0.001 * (s % 3)} for s in range(40)]
    lines[20]["likelihood/correct_mean"] = int("9" * 400)  # a 400-digit integer: too large for a float
    lines[21]["likelihood/correct_mean"] = 1e300  # finite, but its square is not
    lines[22]["likelihood/correct_mean"] = -1e300
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = read_log(path)
    assert [r["step"] for r in run.records if "likelihood/correct_mean" not in r] == [20, 21, 22]
    assert monitor_main([str(path), "--json"]) == 0
    capsys.readouterr()


def test_deep_nesting_and_huge_integers_in_console_and_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    console = tmp_path / "trl.txt"
    console.write_text(
        "".join(str({"reward": 0.3, "grad_norm": 0.2, "epoch": s / 10}) + "\n" for s in range(1, 11))
        + "{'reward': "
        + "[" * 50_000
        + "]" * 50_000
        + "}\n"
        + "{'reward': "
        + "9" * 5000
        + "}\n"
    )
    run = read_log(console)
    assert len(run.records) == 10 and any("2 printed lines" in note for note in run.notes)
    verl = tmp_path / "verl.log"
    verl.write_text("step:1 - critic/score/mean:0.3\nstep:" + "9" * 5000 + " - critic/score/mean:0.3\n")
    _refused(capsys, [str(verl)], "beyond the limit of 2^53")
    state = tmp_path / "trainer_state.json"
    state.write_text("{\n" + '"log_history": ' + "[" * 100_000 + "]" * 100_000 + "\n}\n")
    _refused(capsys, [str(state)], "not a JSON document (nested too deeply)")
    state.write_text('{\n  "log_history": [\n    {"step": 1, "reward": 0.3},\n    {"step": 2, "rew')
    _refused(capsys, [str(state)], "not a JSON document")  # truncated


def test_a_sparse_4_gb_text_log_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sparse = tmp_path / "run.log"
    with sparse.open("wb") as f:
        f.truncate(4 << 30)  # holes read as NUL bytes: refused where they start, not read through
    _refused(capsys, [str(sparse)], "run.log:1: over 1,048,576 NUL bytes (a sparse or preallocated file)")
    _refused(capsys, [str(sparse), "--format", "trl"], "NUL bytes")
    jsonl = tmp_path / "metrics.jsonl"
    with jsonl.open("wb") as f:  # good lines, then a hole
        f.write(_good_lines(3).encode())
        f.truncate(4 << 30)
    _refused(capsys, [str(jsonl)], "metrics.jsonl:4: over 1,048,576 NUL bytes")
    document = tmp_path / "trainer_state.json"
    with document.open("wb") as f:  # a document's head, then a hole: refused by its size, before a read
        f.write(b"{\n" + b'  "a": 1,\n' * 60)
        f.truncate(4 << 30)
    _refused(capsys, [str(document)], "over the 67,108,864-byte limit (MAX_DOCUMENT_BYTES)")
    long_first = tmp_path / "long.log"  # not NULs: a first line over the limit, the format not told
    long_first.write_text("x" * (2 * MAX_LINE_BYTES) + "\nstep:1 - critic/score/mean:0.3\n")
    _refused(capsys, [str(long_first)], "its first line is over 1,048,576 bytes")
    assert [r["step"] for r in read_log(long_first, "verl").records] == [1]  # told: the long line is skipped


# ---------------------------------------------------------------- --window


@pytest.mark.parametrize("window", [1_000_000, MAX_WINDOW + 1, 10**30])
def test_window_above_the_maximum_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], window: int) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(_good_lines())
    _refused(capsys, [str(path), "--window", str(window)], f"must be <= {MAX_WINDOW} (MAX_WINDOW)")


def test_window_at_the_maximum_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(_good_lines(60))
    assert monitor_main([str(path), "--window", str(MAX_WINDOW), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 60
    with pytest.raises(ValueError, match="MAX_WINDOW"):
        MonitorConfig(noise_window=MAX_WINDOW + 1)
    with pytest.raises(ConfigError, match="monitor_window"):
        load_config(None, [f"diagnostics.monitor_window={MAX_WINDOW + 1}"])
