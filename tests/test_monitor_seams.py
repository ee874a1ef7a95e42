"""Resumed runs in every log format the monitor reads: a run that diverged after its checkpoint at step 100
and crashed at 154, followed by the run resumed from 100 (to 220), written for real as verl's file logger
JSONL and console lines, our metrics.jsonl (through MetricsLogger's resume, and as a file holding both
runs), TensorBoard event files (MetricsLogger's writer, one file per run), TRL's JSON lines and TRL's
console dicts. Every format reads as the resumed run alone: 220 steps, the abandoned run's 54 replaced at
one seam (step 101), the same phases, and no warning although the abandoned run alone warns."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from trainer.diagnostics.log_readers import TRAINING_BANNER, read_log
from trainer.diagnostics.metrics_log import REPLACED_FILE, MetricsLogger
from trainer.monitor_cli import monitor_main

CHECKPOINT, CRASH, END = 100, 154, 220
SEAM = {
    "step": CHECKPOINT + 1,
    "replaced": CRASH - CHECKPOINT,
    "replaced_steps": [CHECKPOINT + 1, CRASH],
    "aligned": True,
}

# Our metric names -> verl's and TRL's (TRL has no likelihood key of its own: read through --key-map).
VERL = {
    "reward/mean": "critic/score/mean",
    "likelihood/correct_mean": "actor/pos_avg_old_log_prob",
    "grad/norm": "actor/grad_norm",
    "policy/entropy": "actor/entropy",
}
TRL = {
    "reward/mean": "reward",
    "likelihood/correct_mean": "pos_logp",
    "grad/norm": "grad_norm",
    "policy/entropy": "entropy",
}
TRL_ARGS = ["--key-map", "likelihood=pos_logp"]


def _step(s: int, rng: random.Random, diverging: bool) -> dict[str, Any]:
    """One step of a healthy run (batch noise like the project's runs), or of one that diverges after the
    checkpoint: likelihood falling ever faster, grad spikes, an entropy surge and the reward falling."""
    k = max(s - CHECKPOINT, 0) if diverging else 0
    likelihood = -0.35 - 0.01 * k - 6e-4 * k * k
    reward = 0.3 * math.exp(-k / 15)
    return {
        "step": s,
        "likelihood/correct_mean": round(likelihood + rng.gauss(0, 0.1), 6),
        "reward/mean": sum(rng.random() < reward for _ in range(80)) / 80,
        "grad/norm": round(0.3 * (1 + 0.5 * k) * math.exp(rng.gauss(0, 0.25)), 6),
        "policy/entropy": round(0.5 + 0.02 * k + rng.gauss(0, 0.02), 6),
    }


def seam_runs(seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the abandoned run's records, steps 1..154; the resumed run's, 101..220). Both share 1..100."""
    shared = random.Random(seed)
    prefix = [_step(s, shared, False) for s in range(1, CHECKPOINT + 1)]
    abandoned_rng, resumed_rng = random.Random(seed + 1000), random.Random(seed + 2000)
    abandoned = prefix + [_step(s, abandoned_rng, True) for s in range(CHECKPOINT + 1, CRASH + 1)]
    resumed = [_step(s, resumed_rng, False) for s in range(CHECKPOINT + 1, END + 1)]
    return abandoned, resumed


def _renamed(record: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {new: record[old] for old, new in names.items()}


def _epoch(step: int) -> float:
    return round(step / END, 6)


# ---------------------------------------------------------------- each format, written for real


def write_verl_jsonl(path: Path, runs: list[list[dict[str, Any]]]) -> Path:
    with path.open("w") as f:  # verl's file logger appends: the resumed run after the crashed one
        for run in runs:
            for r in run:
                f.write(json.dumps({"step": r["step"], "data": _renamed(r, VERL) | {"timing_s/step": 9.5}}) + "\n")
    return path


def write_verl_console(path: Path, runs: list[list[dict[str, Any]]]) -> Path:
    with path.open("w") as f:
        for run in runs:
            f.write("(TaskRunner pid=17) Training from scratch\n")
            for r in run:
                pairs = " - ".join(f"{k}:{v}" for k, v in _renamed(r, VERL).items())
                f.write(f"(TaskRunner pid=17) step:{r['step']} - {pairs} - timing_s/gen:3.2\n")
    return path


def write_metrics_resumed(run_dir: Path, runs: list[list[dict[str, Any]]]) -> Path:
    """The trainer's own flow: the crashed run logs to 154; the resumed run sets aside what was logged
    after its checkpoint, then logs its own steps. TensorBoard gets both runs, one event file each."""
    abandoned, resumed = runs
    with MetricsLogger(run_dir) as logger:
        for r in abandoned:
            logger.log(r)
    with MetricsLogger(run_dir) as logger:
        assert logger.set_aside_after(CHECKPOINT) == CRASH - CHECKPOINT
        for r in resumed:
            logger.log(r)
    return run_dir / "metrics.jsonl"


def write_metrics_both(path: Path, runs: list[list[dict[str, Any]]]) -> Path:
    """A metrics.jsonl holding both runs (logged by an older version, or two runs' files concatenated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r | {"wall_time": 0.0}) + "\n" for run in runs for r in run))
    return path


def write_trl_jsonl(path: Path, runs: list[list[dict[str, Any]]]) -> Path:
    with path.open("w") as f:
        for run in runs:
            for r in run:
                f.write(
                    json.dumps(_renamed(r, TRL) | {"loss": 0.01, "epoch": _epoch(r["step"]), "step": r["step"]}) + "\n"
                )
    return path


def write_trl_console(
    path: Path, runs: list[list[dict[str, Any]]], *, epochs: bool = True, banner: bool = True
) -> Path:
    with path.open("w") as f:
        for run in runs:
            if banner:
                f.write(f"[INFO|trainer.py:2314] {TRAINING_BANNER}\n[INFO|trainer.py:2315]   Num examples = 512\n")
            for r in run:
                printed = _renamed(r, TRL) | {"loss": 0.01} | ({"epoch": _epoch(r["step"])} if epochs else {})
                f.write(f" {r['step'] * 100 // END}%|##   | {r['step']}/{END} [00:10<00:40]\n{printed}\n")
    return path


def _tensorboard(tmp_path: Path, runs: list[list[dict[str, Any]]]) -> Path:
    write_metrics_resumed(tmp_path / "tb-run", runs)
    files = sorted((tmp_path / "tb-run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per run: the crashed writer's and the resumed one's
    return tmp_path / "tb-run" / "tensorboard"


WRITERS = {
    "verl jsonl": (lambda tmp, runs: write_verl_jsonl(tmp / "verl.jsonl", runs), []),
    "verl console": (lambda tmp, runs: write_verl_console(tmp / "verl.log", runs), []),
    "metrics.jsonl (resumed)": (lambda tmp, runs: write_metrics_resumed(tmp / "run", runs), []),
    "metrics.jsonl (both runs)": (lambda tmp, runs: write_metrics_both(tmp / "both" / "metrics.jsonl", runs), []),
    "tensorboard": (_tensorboard, []),
    "trl jsonl": (lambda tmp, runs: write_trl_jsonl(tmp / "trl.jsonl", runs), TRL_ARGS),
    "trl console": (lambda tmp, runs: write_trl_console(tmp / "trl.txt", runs), TRL_ARGS),
}


def _monitor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict, list[dict], dict]:
    assert monitor_main([*args, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return lines[0], lines[1:-1], lines[-1]


def _verdicts(steps: list[dict]) -> list[tuple]:
    return [(s["step"], s["phase"], s["warning"], tuple(s["flags"])) for s in steps]


@pytest.fixture(scope="module")
def runs() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return seam_runs(0)


def test_the_example_abandoned_run_warns_and_the_resumed_run_alone_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: tuple
) -> None:
    abandoned, resumed = runs
    _, steps, summary = _monitor(capsys, str(write_verl_jsonl(tmp_path / "abandoned.jsonl", [abandoned])))
    assert summary["first_warning_step"] is not None and CHECKPOINT < summary["first_warning_step"] <= CRASH
    counts = summary["phase_counts"]
    assert counts.get("accelerated_collapse", 0) + counts.get("collapsed", 0) > 10  # the collapse's phases
    clean = write_verl_jsonl(tmp_path / "resumed-alone.jsonl", [abandoned[:CHECKPOINT] + resumed])
    _, steps, summary = _monitor(capsys, str(clean))
    assert summary["first_warning_step"] is None and summary["steps"] == END
    assert summary["replaced_steps"] == 0 and summary["seams"] == []


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_format_reads_as_the_resumed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: tuple, name: str
) -> None:
    abandoned, resumed = runs
    write, args = WRITERS[name]
    clean_header, clean_steps, clean_summary = _monitor(
        capsys, str(write_verl_jsonl(tmp_path / "resumed-alone.jsonl", [abandoned[:CHECKPOINT] + resumed]))
    )
    header, steps, summary = _monitor(capsys, str(write(tmp_path, [abandoned, resumed])), *args)
    assert header["signals"].keys() == clean_header["signals"].keys()
    assert summary["steps"] == END and [s["step"] for s in steps] == list(range(1, END + 1))
    assert summary["replaced_steps"] == CRASH - CHECKPOINT and summary["seams"] == [SEAM]
    assert header["seams"] == [SEAM] and any("54 steps of abandoned runs replaced" in n for n in header["notes"])
    # no warning from the abandoned segment: the verdicts are the resumed run's alone
    assert summary["first_warning_step"] is None and not any(s["warning"] for s in steps)
    assert _verdicts(steps) == _verdicts(clean_steps)
    assert summary["phase_counts"] == clean_summary["phase_counts"]
    for got, want in zip(steps, clean_steps, strict=True):  # TensorBoard stores float32: close, not equal
        for key in ("likelihood_slope", "reward_slope"):
            assert (got[key] is None) == (want[key] is None)
            if want[key] is not None:
                assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-6)


def test_metrics_jsonl_seam_comes_from_the_set_aside_records(tmp_path: Path, runs: tuple) -> None:
    path = write_metrics_resumed(tmp_path / "run", list(runs))
    assert len((tmp_path / "run" / REPLACED_FILE).read_text().splitlines()) == CRASH - CHECKPOINT
    run = read_log(path)
    assert [s.as_json() for s in run.seams] == [SEAM] and run.replaced == CRASH - CHECKPOINT
    assert run.records[CHECKPOINT]["likelihood/correct_mean"] == runs[1][0]["likelihood/correct_mean"]


def test_a_resumed_run_shorter_than_the_crashed_one_drops_the_abandoned_tail(tmp_path: Path, runs: tuple) -> None:
    abandoned, resumed = runs
    short = resumed[:30]  # still running at 130; the abandoned run had reached 154
    for path in (
        write_verl_jsonl(tmp_path / "v.jsonl", [abandoned, short]),
        write_trl_console(tmp_path / "t.txt", [abandoned, short]),
    ):
        run = read_log(path, key_map={"likelihood": "pos_logp"} if path.suffix == ".txt" else None)
        assert [r["step"] for r in run.records] == list(range(1, CHECKPOINT + 31)), path
        assert [s.as_json() for s in run.seams] == [SEAM]
        assert run.records[-1]["reward/mean"] == short[-1]["reward/mean"]


def test_two_resumes_give_two_seams(tmp_path: Path, runs: tuple) -> None:
    abandoned, resumed = runs
    second = [r | {"reward/mean": 0.5} for r in resumed if r["step"] > 120]  # a crash after 140, resumed from 120
    path = write_verl_jsonl(tmp_path / "v.jsonl", [abandoned, resumed[:40], second])
    run = read_log(path)
    assert [s.as_json() for s in run.seams] == [
        SEAM,
        {"step": 121, "replaced": 20, "replaced_steps": [121, 140], "aligned": True},
    ]
    assert run.replaced == 74 and len(run.records) == END
    assert run.records[120]["reward/mean"] == 0.5 and run.records[119]["reward/mean"] == resumed[19]["reward/mean"]


def test_records_of_one_step_with_other_signals_are_merged_not_seams(tmp_path: Path) -> None:
    path = tmp_path / "trl.jsonl"
    lines = []
    for s in range(1, 6):
        lines.append({"reward": 0.1 * s, "step": s})
        lines.append({"grad_norm": 0.2, "step": s})  # the same step logged again with another key
        lines.append({"eval_loss": 1.0, "step": s})  # an eval record: no signal at all
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = read_log(path)
    assert run.seams == [] and [r["step"] for r in run.records] == [1, 2, 3, 4, 5]
    assert run.records[2] == {"step": 3, "reward/mean": pytest.approx(0.3), "grad/norm": 0.2}


def test_two_tensorboard_writers_with_their_own_tags_are_one_run(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for tag in ("train/reward", "train/grad_norm"):  # two writers in one directory, each with its own tag
        writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
        for s in range(1, 31):
            writer.add_scalar(tag, 0.25, global_step=s)
        writer.close()
    run = read_log(tmp_path / "tb")
    assert run.seams == [] and len(run.records) == 30
    assert run.records[0] == {"step": 1, "reward/mean": 0.25, "grad/norm": 0.25}


def test_a_console_log_without_epochs_splits_at_a_repeated_banner_or_says_it_cannot_tell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: tuple
) -> None:
    path = write_trl_console(tmp_path / "banner.txt", list(runs), epochs=False)
    header, steps, summary = _monitor(capsys, str(path), *TRL_ARGS)
    assert summary["steps"] == CRASH + END - CHECKPOINT  # cannot be aligned: counted on
    assert summary["seams"] == [{"step": CRASH + 1, "replaced": 0, "replaced_steps": None, "aligned": False}]
    assert any("without epochs to align them" in note for note in header["notes"])
    # the monitor starts afresh at the restart: warming up again, whatever it had judged before
    assert steps[CRASH]["step"] == CRASH + 1 and steps[CRASH]["phase"] == "unknown"
    assert "warming up: 1/20" in steps[CRASH]["reasons"][0]
    path = write_trl_console(tmp_path / "plain.txt", list(runs), epochs=False, banner=False)
    header, _, summary = _monitor(capsys, str(path), *TRL_ARGS)
    assert summary["seams"] == [] and summary["steps"] == CRASH + END - CHECKPOINT
    assert any("cannot be told" in note for note in header["notes"])


def test_table_output_names_the_seam(tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: tuple) -> None:
    assert monitor_main([str(write_verl_jsonl(tmp_path / "v.jsonl", list(runs)))]) == 0
    out = capsys.readouterr().out
    assert "seam at step 101: a resumed run from step 101: 54 steps (101-154) of the abandoned run replaced" in out
    assert "first warning: none" in out


def test_a_log_that_goes_back_at_every_line_is_read_in_one_pass(tmp_path: Path) -> None:
    """Each record a seam (a hostile or garbled log): the cut is by sorted tails, not a rescan per seam."""
    n = 20_000
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "reward/mean": 0.1}) + "\n" for s in range(n, 0, -1)))
    run = read_log(path)
    assert [r["step"] for r in run.records] == [1] and len(run.seams) == n - 1 and run.replaced == n - 1
    assert any("and 19994 more" in note for note in run.notes)
    console = tmp_path / "trl.txt"  # the same through epochs going back
    console.write_text("".join(str({"reward": 0.1, "epoch": s / n}) + "\n" for s in range(n, 0, -1)))
    run = read_log(console)
    assert len(run.records) == 1 and len(run.seams) == n - 1
