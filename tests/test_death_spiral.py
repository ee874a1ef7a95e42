"""The death-spiral experiment: its collapse criterion on series whose answer is known, and `--quick` end to
end (both arms, real warm start, real BM25 server, summary.json and the figure)."""

from __future__ import annotations

import json

import pytest

from trainer.cli import main as trainer_main
from trainer.death_spiral.criterion import CollapseCriterion
from trainer.death_spiral.report import first_warning_step


def _records(rewards: list[float]) -> list[dict]:
    return [{"step": i + 1, "reward/mean": r} for i, r in enumerate(rewards)]


def test_criterion_finds_the_step_where_a_sustained_fall_begins():
    criterion = CollapseCriterion(smooth=1, fraction=0.5, patience=3, min_steps=2)
    # Best 0.6 at step 3; below 0.3 from step 6 on for 3 steps -> collapsed at 6.
    assert criterion.collapse_step(_records([0.4, 0.5, 0.6, 0.5, 0.4, 0.2, 0.1, 0.1, 0.1])) == 6


def test_criterion_ignores_short_dips_and_late_falls():
    criterion = CollapseCriterion(smooth=1, fraction=0.5, patience=3, min_steps=2)
    assert criterion.collapse_step(_records([0.6, 0.6, 0.2, 0.2, 0.6, 0.6])) is None  # two low steps only
    assert criterion.collapse_step(_records([0.6, 0.6, 0.6, 0.6, 0.2, 0.2])) is None  # ends before patience
    assert criterion.collapse_step(_records([0.0, 0.0, 0.0, 0.0])) is None  # never had a best above 0


def test_criterion_smooths_before_judging():
    noisy = [0.6, 0.6, 0.6, 0.6, 0.6] + [0.0, 0.6] * 10  # alternating: a trailing mean of 2 stays at 0.3
    assert CollapseCriterion(smooth=1, patience=1, min_steps=1).collapse_step(_records(noisy)) == 6
    assert CollapseCriterion(smooth=2, fraction=0.5, patience=1, min_steps=1).collapse_step(_records(noisy)) is None


def test_criterion_skips_missing_values_and_refuses_bad_settings():
    records = _records([0.6, 0.6, 0.6]) + [{"step": 4}, {"step": 5, "reward/mean": float("nan")}]
    records += [{"step": s, "reward/mean": 0.1} for s in (6, 7, 8)]
    assert CollapseCriterion(smooth=1, patience=3, min_steps=1).collapse_step(records) == 6
    with pytest.raises(ValueError, match="fraction"):
        CollapseCriterion(fraction=1.0)
    with pytest.raises(ValueError, match=">= 1"):
        CollapseCriterion(patience=0)


def test_quick_experiment_writes_summary_and_figure(bm25_server, tmp_path):
    out = tmp_path / "spiral"
    # --quick, cut further (this checks the machinery, not a collapse): a 4 + 4-step warm start, two steps
    # with an evaluation and a probe after the first, two questions of two episodes per step, two evaluation
    # questions. Warm-start seed 1: the other tests' seed-0 embedded policy stays cached for them.
    smaller = ["model.embedded_sft_examples=16", "model.embedded_sft_steps=4"]
    smaller += ["model.embedded_sft_first_action_steps=4", "model.embedded_seed=1"]
    smaller += ["run.steps=2", "run.eval_every=1", "diagnostics.probe_every=1", "run.eval_questions=2"]
    smaller += ["rollout.questions_per_step=2", "rollout.group_size=2"]
    sets = [x for item in smaller for x in ("--set", item)]
    code = trainer_main(
        ["death-spiral", "--out", str(out), "--quick", "--jobs", "2", "--retriever-url", bm25_server.url, *sets]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    declared = json.loads((out / "criterion.json").read_text())
    assert declared["criterion"] == summary["criterion"] and "running best" in declared["criterion"]["text"]
    runs = {(r["arm"], r["seed"]): r for r in summary["runs"]}
    assert set(runs) == {("grpo", 1), ("llds", 1)}
    for row in runs.values():
        assert row["finished"] and row["steps_logged"] == 2
        assert isinstance(row["collapsed"], bool)
        assert row["collapse_step"] is None or isinstance(row["collapse_step"], int)
        assert row["first_warning_step"] is None or 1 <= row["first_warning_step"] <= 2
        for key in ("best_test_em", "final_test_em", "test_em_before"):
            assert 0.0 <= row[key] <= 1.0, key
        assert [step for step, _ in row["test_em_during"]] == [1]  # eval_every 1; the final one is "after"
    assert runs[("grpo", 1)]["llds_activation_mean"] is None  # plain GRPO logs no LLDS activity
    assert runs[("llds", 1)]["llds_activation_mean"] is not None
    metrics = [json.loads(line) for line in (out / "llds" / "seed-1" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "likelihood/probe_questions" in m] == [1, 2]  # probe_every 1
    assert set(summary["arms"]) == {"grpo", "llds"}
    assert (out / "death-spiral.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rollouts = (out / "rollouts.md").read_text()  # each run's evaluations (before, step 1, after) and transcripts
    for label in ("## GRPO s1", "## GRPO+LLDS s1", "| before | 2 |", "| step-000001 | 2 |", "| after | 2 |"):
        assert label in rollouts, label
    assert rollouts.count("> **Q:**") == 8  # two transcripts of the first and of the last evaluation, per run
    # Run again: finished runs are not rerun, the report is rewritten from their files.
    before = (out / "grpo" / "seed-1" / "metrics.jsonl").read_text()
    assert trainer_main(["death-spiral", "--out", str(out), "--quick", "--retriever-url", bm25_server.url, *sets]) == 0
    assert (out / "grpo" / "seed-1" / "metrics.jsonl").read_text() == before


def test_first_warning_step_replays_the_monitor():
    flat = [{"step": i, "reward/mean": 0.5, "likelihood/correct_mean": -1.0} for i in range(1, 40)]
    assert first_warning_step(flat) is None
    falling = flat + [
        {
            "step": 40 + i,
            "reward/mean": 0.5,
            "likelihood/correct_mean": -1.0 - 0.2 * i,
            "likelihood/displacement_correct_neg_share": 0.9,
        }
        for i in range(1, 30)
    ]
    step = first_warning_step(falling)
    assert step is not None and step > 39


def test_bad_arguments_fail_before_any_run(tmp_path, capsys):
    assert trainer_main(["death-spiral", "--out", str(tmp_path), "--arms", "grpo,ppo"]) == 2
    assert "unknown arm" in capsys.readouterr().err
    assert trainer_main(["death-spiral", "--out", str(tmp_path), "--set", "optim.lr=-1"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert trainer_main(["death-spiral", "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err
    assert not (tmp_path / "grpo").exists()


def test_presets_and_arms_name_their_overrides(tmp_path, capsys):
    from trainer.death_spiral.runner import ARMS, PRESETS, Run, _command

    assert trainer_main(["death-spiral", "--out", str(tmp_path), "--preset", "huge"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    for preset in PRESETS:  # every preset's config loads with every arm's overrides
        from trainer.config import load_config
        from trainer.shipped_configs import shipped_config

        for overrides in ARMS.values():
            load_config(shipped_config(PRESETS[preset]), [*overrides, "env.retriever_url=http://127.0.0.1:1"])
    command = _command(Run("llds-0.01", 3, tmp_path / "r"), tmp_path / "c.yaml", ["run.steps=5"], "http://x")
    sets = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    assert sets[:3] == ["run.steps=5", "llds.enabled=true", "llds.lam=0.01"] and "run.seed=3" in sets


def test_an_unfinished_run_with_a_checkpoint_resumes_and_one_without_starts_again(tmp_path):
    import sys

    from trainer.checkpoint import STATE_FILE
    from trainer.death_spiral.runner import Run, _launch

    echo = [sys.executable, "-c", "import sys; print(' '.join(sys.argv[1:]))"]
    resumable = Run("grpo", 1, tmp_path / "a")
    (resumable.out / "checkpoints" / "step-000010").mkdir(parents=True)
    (resumable.out / "checkpoints" / "step-000010" / STATE_FILE).write_bytes(b"x")
    (resumable.out / "metrics.jsonl").write_text('{"step": 1}\n')
    fresh = Run("grpo", 2, tmp_path / "b")
    fresh.out.mkdir()
    (fresh.out / "metrics.jsonl").write_text('{"step": 1}\n')
    for run in (resumable, fresh):
        _launch(run, echo, threads=1)
        assert run.proc is not None and run.proc.wait(30) == 0
    assert f"run.resume={resumable.out}" in (resumable.out / "train.log").read_text()
    assert (resumable.out / "metrics.jsonl").is_file()  # kept: the trainer sets aside what follows the checkpoint
    assert "run.resume" not in (fresh.out / "train.log").read_text()
    assert not (fresh.out / "metrics.jsonl").exists()  # no checkpoint: the partial run was cleared


def test_phase_table_finds_the_papers_three_phases_in_a_paper_shaped_run():
    from trainer.death_spiral.phases import phase_markdown, phase_table

    records = []
    for step in range(1, 91):
        if step <= 30:  # I: reward rises, likelihood flat
            reward, loglik, grad = 0.2 + 0.01 * step, -0.05, 0.5
        elif step <= 60:  # II: reward still rises, likelihood falls slowly
            reward, loglik, grad = 0.5 + 0.003 * (step - 30), -0.05 - 0.004 * (step - 30), 0.5
        else:  # III: likelihood drops sharply, grad norm surges, reward collapses
            reward, loglik, grad = max(0.0, 0.59 - 0.05 * (step - 60)), -0.17 - 0.05 * (step - 60), 5.0
        records.append({"step": step, "reward/mean": reward, "likelihood/correct_mean": loglik, "grad/norm": grad})
    table = phase_table(records)
    assert 58 <= table["peak"] <= 62 and table["collapse"] is not None and table["collapse"] > table["peak"]
    assert all(table["checks"].values()), table["checks"]
    flat = [{"step": s, "reward/mean": 0.4, "likelihood/correct_mean": -0.05, "grad/norm": 0.5} for s in range(1, 60)]
    checks = phase_table(flat)["checks"]  # the peak comes at once: I and II too short to judge
    assert checks["I reward rising"] is None and checks["III gradient-norm surge"] is False
    assert checks["III reward falling"] is False
    text = phase_markdown({"paper-shaped": records, "flat": flat})
    assert "| paper-shaped | I | 1-" in text and text.count("| flat |") == 4  # three phases and one row of checks


def test_publish_copies_the_report_and_each_runs_metrics_under_its_arm_and_seed(tmp_path):
    from trainer.death_spiral.report import PUBLISHED_FILES, publish
    from trainer.death_spiral.runner import plan

    out, dest = tmp_path / "out", tmp_path / "docs" / "exp"
    runs = plan(out, ["grpo", "llds"], [1, 2])
    for run in runs[:3]:  # the fourth run never wrote metrics: nothing is published for it
        run.out.mkdir(parents=True)
        (run.out / "metrics.jsonl").write_text(json.dumps({"step": 1, "arm": run.arm, "seed": run.seed}) + "\n")
        (run.out / "events.out.tfevents.1").write_bytes(b"x")  # TensorBoard files stay behind
    (out / "summary.json").write_text("{}")
    (out / "phases.md").write_text("# phases\n")
    written = publish(out, runs, dest)
    assert sorted(p.name for p in (dest / "runs").iterdir()) == [
        "grpo-seed-1.metrics.jsonl",
        "grpo-seed-2.metrics.jsonl",
        "llds-seed-1.metrics.jsonl",
    ]
    record = json.loads((dest / "runs" / "grpo-seed-2.metrics.jsonl").read_text())
    assert (record["arm"], record["seed"]) == ("grpo", 2)  # each file holds its own run's records
    assert {p.name for p in written} >= {"summary.json", "phases.md"} and not (dest / "death-spiral.png").exists()
    assert set(PUBLISHED_FILES) >= {"summary.json", "criterion.json", "phases.md", "death-spiral.png"}


def test_rollouts_summary_counts_answers_and_searches_from_eval_rows(tmp_path):
    from trainer.death_spiral.rollouts import eval_files, eval_summary, read_episodes, rollouts_markdown

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    def row(question, gold, answer, em, searches, data_set="world:small", **extra):
        return {"data_set": data_set, "question": question, "golden_answers": [gold], "answer": answer, "em": em,
                "num_searches": searches, **extra}

    turns = [{"role": "prompt", "text": "Question: q1"}, {"role": "policy", "text": "<search> x </search>"}]
    rows = [
        row("q1", "1930", "1930", 1.0, 2, transcript=[*turns, {"role": "env", "text": "y" * 999}]),
        row("q2", "1850", " 1930", 0.0, 0),
        row("q3", "Rome", None, 0.0, 1),
        row("q3", "Rome", "x", 1.0, 0, data_set="world:small:multi"),  # the same question again: not counted
    ]
    (run / "eval" / "step-000020.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{cut")
    (run / "eval" / "before.jsonl").write_text(json.dumps(rows[2]) + "\n")
    (run / "eval" / "after.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert [p.stem for p in eval_files(run)] == ["before", "step-000020", "after"]
    summary = eval_summary(read_episodes(run / "eval" / "step-000020.jsonl"))  # the cut last line is skipped
    assert summary["episodes"] == 3 and summary["em"] == pytest.approx(1 / 3)
    assert summary["searches"] == pytest.approx(1.0) and summary["answered"] == pytest.approx(2 / 3)
    assert summary["top_answers"] == [("1930", pytest.approx(2 / 3))]  # one stock answer, case and space folded
    text = rollouts_markdown({"GRPO s1": run, "empty": tmp_path / "none"})
    assert "| step-000020 | 3 | 0.33 | 1.00 | 67% | '1930' 67% |" in text and "## empty" not in text
    assert "y" * 240 + " ..." in text and "y" * 241 not in text  # a long observation is cut
    assert "prompt:" not in text and "> policy: <search> x </search>" in text


def test_rollouts_skip_a_line_past_the_limit_without_holding_it(tmp_path, monkeypatch):
    import trainer.death_spiral.rollouts as rollouts

    monkeypatch.setattr(rollouts, "MAX_LINE_CHARS", 50)
    path = tmp_path / "before.jsonl"
    rows = [{"data_set": "world:small", "question": "x" * 500}, {"data_set": "world:small", "question": "q2"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["question"] for r in rollouts.read_episodes(path)] == ["q2"]
