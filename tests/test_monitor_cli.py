"""`search-trainer monitor` and the log readers under it: our metrics.jsonl, verl's file logger and console,
TRL's log dicts (JSON lines, trainer_state.json, console) and TensorBoard event files, each written here
for real, read and mapped to the monitor's signals; the verdicts on noisy flat and three-phase runs; what
reward-only logs can and cannot say; and one-line errors (exit 2) for input that cannot be read."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.test_diagnostics import noisy_run
from trainer.cli import main as cli_main
from trainer.diagnostics.log_readers import LogFormatError, read_log
from trainer.diagnostics.metrics_log import MetricsLogger
from trainer.monitor_cli import monitor_log, monitor_main

PHASES = {"healthy", "stagnation", "steady_decay", "accelerated_collapse", "collapsed", "unknown"}

# Our metric names -> verl's (the LLDS authors' likelihood keys) and TRL's.
VERL_KEYS = {
    "reward/mean": "critic/score/mean",
    "likelihood/correct_mean": "actor/pos_avg_old_log_prob",
    "grad/norm": "actor/grad_norm",
    "policy/entropy": "actor/entropy",
}
TRL_KEYS = {"reward/mean": "reward", "grad/norm": "grad_norm", "policy/entropy": "entropy"}


def _renamed(record: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {new: record[old] for old, new in names.items() if old in record}


def _write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> Path:
    with MetricsLogger(run_dir, tensorboard=False) as logger:
        for record in records:
            logger.log(record)
    return run_dir / "metrics.jsonl"


def _json_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict, list[dict], dict]:
    assert monitor_main([*args, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    header, steps, summary = lines[0], lines[1:-1], lines[-1]
    assert header["kind"] == "signals" and summary["kind"] == "summary"
    assert all(s["kind"] == "step" and s["phase"] in PHASES and isinstance(s["warning"], bool) for s in steps)
    return header, steps, summary


def _reward_falls(rewards: list[float]) -> int:
    """First index where the trailing 10-point mean is below half its running best."""
    smooth = [sum(rewards[i - 9 : i + 1]) / 10 for i in range(9, len(rewards))]
    return next(i + 9 for i, v in enumerate(smooth) if v < 0.5 * max(smooth[: i + 1]))


# ---------------------------------------------------------------- each format, read and mapped


def test_our_metrics_jsonl_and_its_run_directory(tmp_path: Path) -> None:
    path = _write_metrics(tmp_path / "run", noisy_run(False, 0.15, 0, n=30))
    for source in (path, tmp_path / "run"):
        run = read_log(source)
        assert run.format == "searchgym" and len(run.records) == 30
        assert run.signals["likelihood"] == "likelihood/correct_mean" and run.signals["reward"] == "reward/mean"
        assert "neg_displacement_share" in run.missing
    # NaN likelihoods (written as null) stay out of the record; the reward is read as logged
    original = noisy_run(False, 0.15, 0, n=30)
    nan_steps = {r["step"] for r in original if math.isnan(r["likelihood/correct_mean"])}
    read = {r["step"]: r for r in read_log(path).records}
    assert all("likelihood/correct_mean" not in read[s] for s in nan_steps)
    assert [read[r["step"]]["reward/mean"] for r in original] == [r["reward/mean"] for r in original]


def test_verl_file_logger_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "verl_metrics.jsonl"
    records = noisy_run(True, 0.1, 0)
    with path.open("w") as f:
        for i, r in enumerate(records):
            data = _renamed(r, VERL_KEYS) | {"actor/neg_avg_old_log_prob": -0.5, "timing_s/step": 12.0}
            f.write(json.dumps({"step": r["step"], "elapsed_seconds": float(i), "data": data}) + "\n")
    run = read_log(path)
    assert run.format == "verl"
    assert run.signals == {
        "reward": "critic/score/mean",
        "likelihood": "actor/pos_avg_old_log_prob",
        "incorrect_likelihood": "actor/neg_avg_old_log_prob",
        "grad_norm": "actor/grad_norm",
        "entropy": "actor/entropy",
    }
    assert run.records[5]["reward/mean"] == records[5]["reward/mean"]
    assert run.records[5]["likelihood/incorrect_mean"] == -0.5


def test_verl_console_lines_inside_other_output(tmp_path: Path) -> None:
    path = tmp_path / "verl.log"
    path.write_text(
        "(TaskRunner pid=4242) Saving tensorboard log to tensorboard_log/x.\n"
        "(TaskRunner pid=4242) step:1 - actor/entropy_loss:0.512 - critic/score/mean:0.25 - "
        "actor/pos_avg_old_log_prob:np.float64(-0.31) - actor/grad_norm:0.4 - timing_s/gen:3.1\n"
        "some warning: step: not a metrics line\n"
        "step:2 - actor/entropy_loss:0.520 - critic/rewards/mean:0.9 - critic/score/mean:0.3 - "
        "actor/pos_avg_old_log_prob:-0.33 - actor/grad_norm:0.38 - val-core/nq/acc/mean@1:0.4\n"
    )
    run = read_log(path)
    assert run.format == "verl"
    assert run.signals["entropy"] == "actor/entropy_loss" and run.signals["reward"] == "critic/score/mean"
    assert run.records == [
        {"step": 1, "reward/mean": 0.25, "likelihood/correct_mean": -0.31, "grad/norm": 0.4, "policy/entropy": 0.512},
        {"step": 2, "reward/mean": 0.3, "likelihood/correct_mean": -0.33, "grad/norm": 0.38, "policy/entropy": 0.52},
    ]


def test_trl_log_dicts_as_json_lines_trainer_state_and_console(tmp_path: Path) -> None:
    dicts = [
        {"loss": 0.01, "grad_norm": 0.3, "learning_rate": 1e-6, "reward": 0.2, "reward_std": 0.3, "entropy": 0.41}
        | {"completions/mean_length": 120.0, "epoch": 0.01 * s, "step": 10 * s}
        for s in range(1, 6)
    ]
    jsonl = tmp_path / "trl_logs.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in dicts))
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 50, "log_history": dicts + [{"train_runtime": 3.0, "step": 50}]}))
    console = tmp_path / "trl_console.txt"
    console.write_text(
        " 20%|██        | 10/50 [00:10<00:40]\n"
        + "".join(str({k: v for k, v in d.items() if k != "step"}) + "\n" for d in dicts)
        + "{'train_runtime': 3.0, 'train_loss': 0.01, 'epoch': 0.05}\n"
    )
    for path, steps in ((jsonl, [10, 20, 30, 40, 50]), (state, [10, 20, 30, 40, 50]), (console, [1, 2, 3, 4, 5])):
        run = read_log(path)
        assert run.format == "trl", path
        assert run.signals == {"reward": "reward", "entropy": "entropy", "grad_norm": "grad_norm"}
        assert [r["step"] for r in run.records] == steps  # the summary dict carries no signal
        assert run.records[0] == {"step": steps[0], "reward/mean": 0.2, "policy/entropy": 0.41, "grad/norm": 0.3}
        assert "likelihood" in run.missing
    assert any("no step numbers" in note for note in read_log(console).notes)
    assert read_log(tmp_path).format == "trl"  # a TRL output directory: its trainer_state.json


def test_tensorboard_event_file_and_run_directory(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    log_dir = tmp_path / "runs" / "Jan01_host"
    writer = SummaryWriter(log_dir=str(log_dir))
    records = noisy_run(True, 0.1, 1, n=60)
    for r in records:  # TRL through transformers' TensorBoard callback: "train/" tags
        for key, tag in (("reward/mean", "train/reward"), ("grad/norm", "train/grad_norm")):
            writer.add_scalar(tag, r[key], global_step=r["step"])
        if not math.isnan(r["likelihood/correct_mean"]):
            writer.add_scalar("likelihood/correct_mean", r["likelihood/correct_mean"], global_step=r["step"])
    writer.add_text("notes", "not a scalar", global_step=0)
    writer.close()
    [event_file] = list(log_dir.glob("events.out.tfevents.*"))
    for source in (event_file, tmp_path / "runs"):
        run = read_log(source)
        assert run.format == "tensorboard"
        assert run.signals == {
            "reward": "train/reward",
            "likelihood": "likelihood/correct_mean",
            "grad_norm": "train/grad_norm",
        }
        assert [r["step"] for r in run.records] == list(range(60))
        assert run.records[7]["reward/mean"] == pytest.approx(records[7]["reward/mean"], rel=1e-6)
    # two runs under one directory: ambiguous, said so
    SummaryWriter(log_dir=str(tmp_path / "runs" / "other")).close()
    (tmp_path / "runs" / "other" / "events.out.tfevents.0.x").write_bytes(b"")
    with pytest.raises(LogFormatError, match="2 runs"):
        read_log(tmp_path / "runs")


def test_key_map_reads_a_signal_from_another_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "verl.jsonl"
    records = noisy_run(False, 0.1, 3, n=40)
    with path.open("w") as f:
        for r in records:
            data = _renamed(r, VERL_KEYS)
            data["my/correct_logp"] = data.pop("actor/pos_avg_old_log_prob")
            f.write(json.dumps({"step": r["step"], "data": data}) + "\n")
    assert "likelihood" not in read_log(path).signals
    header, steps, _ = _json_run(capsys, str(path), "--key-map", "likelihood=my/correct_logp")
    assert header["signals"]["likelihood"] == "my/correct_logp" and "likelihood" not in header["missing"]
    assert {s["phase"] for s in steps[30:]} <= {"healthy", "stagnation"}


# ---------------------------------------------------------------- verdicts through the command


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_flat_run_gives_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    path = _write_metrics(tmp_path / "run", noisy_run(False, 0.15, seed))
    header, steps, summary = _json_run(capsys, str(path))
    assert header["format"] == "searchgym" and header["signals"]["likelihood"] == "likelihood/correct_mean"
    assert [s["step"] for s in steps if s["warning"]] == []
    assert summary["first_warning_step"] is None and summary["steps"] == len(steps) == 260
    assert steps[0]["phase"] == "unknown"  # warming up
    assert {s["phase"] for s in steps[40:]} <= {"healthy", "stagnation"}


@pytest.mark.parametrize("seed", [0, 1])
def test_three_phase_collapse_warns_before_the_reward_falls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    records = noisy_run(True, 0.1, seed)
    path = _write_metrics(tmp_path / "run", records)
    _, steps, summary = _json_run(capsys, str(path))
    falls = _reward_falls([r["reward/mean"] for r in records])
    first = summary["first_warning_step"]
    assert first is not None and 80 <= first < falls, (first, falls)  # after the decay starts, before the fall
    assert steps[first]["warning"] and steps[first]["phase"] in {"steady_decay", "accelerated_collapse"}
    assert {"accelerated_collapse", "collapsed"} <= {s["phase"] for s in steps[first:]}  # it ends collapsed
    # the same through the library call an experiment driver would use
    _, monitor = monitor_log(path)
    assert monitor.first_warning_step() == first


def test_reward_only_log_gives_unknown_phases_and_says_what_it_cannot_see(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = noisy_run(True, 0.1, 0)
    path = tmp_path / "trl.jsonl"
    path.write_text("".join(json.dumps({"step": r["step"], "reward": r["reward/mean"]}) + "\n" for r in records))
    header, steps, summary = _json_run(capsys, str(path))
    assert header["signals"] == {"reward": "reward"} and "likelihood" in header["missing"]
    assert any("phases" in s and "cannot be told" in s for s in header["cannot_see"])
    # what it can do: the reward's fall (with the collapse, not before it), and call the run collapsed
    assert {s["phase"] for s in steps} == {"unknown", "collapsed"} and steps[-1]["phase"] == "collapsed"
    assert [s["phase"] for s in steps].index("collapsed") > 180
    first = summary["first_warning_step"]
    assert first is not None and first > 180 and any("reward_falling" in s["flags"] for s in steps[first:])
    assert monitor_main([str(path)]) == 0
    table = capsys.readouterr().out
    assert "missing: no correct-response likelihood" in table and "first warning: step" in table


def test_plain_output_is_a_short_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_metrics(tmp_path / "run", noisy_run(True, 0.1, 0))
    assert cli_main(["monitor", str(path)]) == 0  # registered as a search-trainer subcommand
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("(searchgym, 260 steps)") and out[1].startswith("signals: reward <- reward/mean")
    rows = [line for line in out if line[:7].strip().isdigit()]
    assert 3 <= len(rows) < 40  # only the changes, not 260 rows
    assert any("steady_decay" in row and "yes" in row for row in rows)
    assert out[-1].startswith("first warning: step")


# ---------------------------------------------------------------- bad input: one line, exit 2


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "no such file"),
        ('{"step": 0, "reward/mean": 0.1}\nnot json at all\n{"step": 2, "reward/mean": 0.1}\n', [], ":2: not a JSON"),
        ("hello\nworld\n", [], "not a metrics log"),
        ('{"step": 0, "foo": 1}\n', [], "none of the known metric names"),
        ('{"step": 0, "reward/mean": 0.1}\n', ["--key-map", "likelihood"], "expected SIGNAL=KEY"),
        ('{"step": 0, "reward/mean": 0.1}\n', ["--key-map", "lik=x"], "unknown signal"),
        ('{"step": 0, "reward/mean": 0.1}\n', ["--key-map", "likelihood=absent/key"], "no numeric values"),
        ('{"step": 0, "reward/mean": 0.1}\n', ["--format", "trl"], "none of the monitor's signals"),
        ("", ["--format", "tensorboard"], "no scalars in it"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, args: list[str], message: str
) -> None:
    path = tmp_path / ("events.out.tfevents.1.bad" if "tensorboard" in args else "log.jsonl")
    if content is not None:
        path.write_text(content) if content else path.write_bytes(b"\x00\x01garbage")
    assert monitor_main([str(path), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("search-trainer monitor: ")
    assert message in captured.err


def test_a_last_line_cut_by_a_crash_is_dropped_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "reward/mean": 0.1}\n{"step": 1, "reward/mean": 0.2}\n{"step": 2, "rew')
    assert [r["step"] for r in read_log(path).records] == [0, 1]
