"""A benchmark run: one policy (and optionally a reference policy) on several data sets, with the
episodes streamed to JSONL, the aggregates to `<out>.summary.json`, and one metrics row per set.

A text `Policy` is played by the runner's loop; an `EpisodePlayer` (the trainer's token-level player
of Hugging Face models) plays its episodes itself under the same contract.

The summary is written however the run ends: finished, stopped by failures (RunStopped), by an
error, or by Ctrl-C. A run that did not finish raises BenchmarkStopped (a RuntimeError) or, on
Ctrl-C / cancellation, BenchmarkInterrupted (a KeyboardInterrupt); both carry the result of the
episodes played so far and why the run stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from search_env.evaluation.datasets import EvalSet, load_eval_records
from search_env.evaluation.env_factory import LocalEnvFactory, RemoteEnvFactory
from search_env.evaluation.policy import EpisodePlayer, Policy
from search_env.evaluation.results import EpisodeResult, SetMetrics, aggregate, summary_path, write_summary
from search_env.evaluation.runner import evaluate, select_indices
from search_env.search_qa_env import DEFAULT_RETRIEVER_URL
from search_env.turn_budget import check_turn_budget


@dataclass
class BenchmarkResult:
    metrics: list[SetMetrics]
    episodes: list[EpisodeResult]
    out: Path | None = None
    summary: Path | None = None
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None  # why the run ended early (None: it played everything)


class BenchmarkStopped(RuntimeError):
    """The run failed or was stopped before playing everything; `result` holds what was played (its
    summary written) and, in `result.stopped`, why."""

    def __init__(self, result: BenchmarkResult) -> None:
        super().__init__(result.stopped)
        self.result = result


class BenchmarkInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a cancellation) ended the run; `result` holds what was played (its summary written)."""

    def __init__(self, result: BenchmarkResult) -> None:
        super().__init__(result.stopped)
        self.result = result


async def run_benchmark(
    policy: Policy | EpisodePlayer,
    sets: Sequence[EvalSet],
    *,
    retriever_url: str = DEFAULT_RETRIEVER_URL,
    env_url: str | None = None,
    max_turns: int = 4,
    topk: int = 3,
    concurrency: int = 1,
    limit: int | None = None,
    seed: int | None = None,
    reference: Policy | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    env_options: dict[str, Any] | None = None,
    max_consecutive_failures: int | None = None,
    skip_bad_lines: bool = False,
) -> BenchmarkResult:
    """Evaluate `policy` (then `reference`, if given) on every set, in order.

    Local envs (the default) search `retriever_url`; with `env_url` each episode runs in a session of
    that env server instead. The same questions (`limit`, `seed`) are played by both policies.
    `env_options` go to every env (e.g. the `prompt_template` or `reward` a trained policy expects).
    A failed episode is recorded as failed and the run goes on; `max_consecutive_failures` failures
    in a row stop a text policy's run. Raises BenchmarkStopped (summary written) if the run is
    stopped, fails or is interrupted before the end. `skip_bad_lines` leaves out the bad records of a
    local QA file (else the first is named in the error). Raises TurnBudgetError for a `max_turns`
    outside 1..MAX_TURNS (search_env.turn_budget).
    """
    check_turn_budget(max_turns)  # before the out file is opened: the env would refuse it per episode
    env_options = dict(env_options or {})
    config = {
        "policy": policy.name,
        "reference": reference.name if reference else None,
        "data": [s.name for s in sets],
        "retriever_url": None if env_url else retriever_url,
        "env_url": env_url,
        "max_turns": max_turns,
        "topk": topk,
        "concurrency": concurrency,
        "limit": limit,
        "seed": seed,
        "env_options": env_options,
    }
    started = time.perf_counter()
    handle: TextIO | None = None
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        handle = out_path.open("w", encoding="utf-8")

    finished: list[EpisodeResult] = []  # as they end: what a stopped run reports

    def write(result: EpisodeResult) -> None:
        finished.append(result)
        if handle is not None:
            handle.write(result.to_json() + "\n")
            handle.flush()  # a long run killed halfway keeps what it finished

    episodes: list[EpisodeResult] = []
    stopped: str | None = None
    cause: BaseException | None = None
    interrupted = False
    try:
        for eval_set in sets:
            if env_url:
                factory: Any = RemoteEnvFactory(env_url, eval_set, topk=topk, max_turns=max_turns, **env_options)
                indices = None  # the server owns the questions: its count decides
            else:
                records = load_eval_records(eval_set, skip_bad_lines=skip_bad_lines)
                factory = LocalEnvFactory(records, retriever_url, topk=topk, max_turns=max_turns, **env_options)
                indices = select_indices(len(records), limit, seed)
            try:
                for player in (policy, reference) if reference else (policy,):
                    play = (
                        player.play
                        if isinstance(player, EpisodePlayer)
                        else partial(evaluate, player, max_consecutive_failures=max_consecutive_failures)
                    )
                    episodes += await play(
                        factory,
                        data_set=eval_set.name,
                        indices=indices,
                        limit=limit,
                        seed=seed,
                        concurrency=concurrency,
                        on_episode=write,
                        progress=progress,
                    )
            finally:
                if isinstance(factory, LocalEnvFactory):
                    await factory.aclose()
    except (asyncio.CancelledError, KeyboardInterrupt) as err:
        stopped, interrupted, cause = f"interrupted after {len(finished)} episodes", True, err
    except Exception as err:
        stopped, cause = f"{type(err).__name__}: {err}", err
    finally:
        if handle is not None:
            handle.close()
    played = finished if stopped else episodes
    metrics = aggregate(played)
    result = BenchmarkResult(metrics, played, out_path, seconds=time.perf_counter() - started, config=config)
    result.stopped = stopped
    if out_path is not None:
        summary_config = config | {"seconds": result.seconds, "stopped": stopped}
        result.summary = write_summary(summary_path(out_path), metrics, summary_config)
    if interrupted:
        raise BenchmarkInterrupted(result) from cause
    if stopped:
        raise BenchmarkStopped(result) from cause
    return result
