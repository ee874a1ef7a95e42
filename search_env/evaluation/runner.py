"""The runner: the episode loop of text policies, played on a data set's questions through the Gym API.

It serves policies that only exchange text (OpenAI-compatible endpoints, the scripted baselines):
each turn the policy reads the transcript as text and writes the next action as text. Hugging Face
models are not played here but token by token by the trainer's rollout engine
(trainer.evaluation.EnginePlayer), the stream they are trained on.

Each of `concurrency` workers owns one env and plays questions one after another, so the policy
sees up to `concurrency` episodes at once (a remote policy serves them in parallel). In-process envs
are stepped with `astep` (the search is awaited); envs without it (the remote env) step in a worker
thread.

An episode the policy or the env fails (a timed-out endpoint, a refused prompt) is recorded as
failed (scored 0, its error kept) and the run goes on, on a fresh env; `max_consecutive_failures`
failures in a row stop it (RunStopped), since the endpoint is then down rather than slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from tqdm.auto import tqdm

from search_env.evaluation.env_factory import EnvFactory
from search_env.evaluation.policy import Policy
from search_env.evaluation.results import EpisodeResult
from search_env.evaluation.transcript import Transcript

EpisodeSink = Callable[[EpisodeResult], None]
log = logging.getLogger(__name__)


class EpisodeError(RuntimeError):
    """An episode failed (the policy or the env raised); the message names the question."""


class RunStopped(RuntimeError):
    """Too many episodes failed in a row: the run was stopped (what was played is kept)."""


def num_questions(env: gym.Env) -> int:
    """How many questions an env can be reset to by index (local `records`, remote `session`)."""
    inner: Any = env.unwrapped
    if hasattr(inner, "records"):
        return len(inner.records)
    session = getattr(inner, "session", None)
    if session is not None and hasattr(session, "num_questions"):
        return int(session.num_questions)
    raise TypeError(f"{type(inner).__name__} exposes neither `records` nor `session.num_questions`")


def select_indices(n: int, limit: int | None = None, seed: int | None = None) -> list[int]:
    """All questions, the first `limit`, or (with a seed) `limit` drawn at random, in index order."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if seed is None:
        return list(range(limit))
    return sorted(random.Random(seed).sample(range(n), limit))


@dataclass
class _Progress:
    """What an episode got to before it failed."""

    reset_info: dict[str, Any] | None = None
    transcript: Transcript | None = None


async def play_episode(env: gym.Env, policy: Policy, index: int, *, data_set: str = "") -> EpisodeResult:
    """Play question `index` to the end (answer or max turns) and collect its result; if the policy
    or the env raises (an Exception, not a cancellation), the result is `EpisodeResult.failure` with
    the error and the turns played before it."""
    progress = _Progress()
    try:
        return await _play(env, policy, index, data_set, progress)
    except Exception as err:
        log.warning("%s: question %d failed: %s: %s", data_set or "eval", index, type(err).__name__, err)
        return EpisodeResult.failure(
            data_set=data_set,
            policy=policy.name,
            index=index,
            error=err,
            reset_info=progress.reset_info,
            transcript=progress.transcript.to_json() if progress.transcript is not None else None,
            golden_answers=_golden_answers(env, index),
        )


def _golden_answers(env: gym.Env, index: int) -> list[str]:
    """The question's gold answers when the env holds its records (a local env), else none."""
    records = getattr(env.unwrapped, "records", None)
    try:
        return list(records[index].golden_answers) if records is not None else []
    except (IndexError, AttributeError, TypeError):
        return []


async def _play(env: gym.Env, policy: Policy, index: int, data_set: str, progress: _Progress) -> EpisodeResult:
    inner: Any = env.unwrapped
    astep = getattr(inner, "astep", None)
    if astep is not None:  # in process: reset does no I/O, the step's search is awaited
        prompt, reset_info = env.reset(options={"index": index})
    else:
        prompt, reset_info = await asyncio.to_thread(env.reset, options={"index": index})
    transcript = Transcript(prompt)
    progress.reset_info, progress.transcript = reset_info, transcript
    reward, terminated, truncated, info = 0.0, False, False, {}
    while not (terminated or truncated):
        action = await policy.act(transcript)
        transcript.add_action(action)
        if astep is not None:
            observation, reward, terminated, truncated, info = await astep(action)
        else:
            observation, reward, terminated, truncated, info = await asyncio.to_thread(env.step, action)
        if observation:
            transcript.add_observation(observation)
    return EpisodeResult.from_env(
        data_set=data_set,
        policy=policy.name,
        index=index,
        reset_info=reset_info,
        info=info,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        turns=len(transcript.actions),
        transcript=transcript.to_json(),
    )


async def evaluate(
    policy: Policy,
    make_env: EnvFactory,
    *,
    data_set: str = "",
    indices: Sequence[int] | None = None,
    limit: int | None = None,
    seed: int | None = None,
    concurrency: int = 1,
    on_episode: EpisodeSink | None = None,
    progress: bool = True,
    max_consecutive_failures: int | None = None,
) -> list[EpisodeResult]:
    """Play `indices` (default: `select_indices(n, limit, seed)`) and return results in index order.

    `on_episode` sees each result as it finishes (e.g. to append it to a JSONL file), failed ones
    included. Raises RunStopped once `max_consecutive_failures` episodes (None: no limit) have
    failed in a row.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if max_consecutive_failures is not None and max_consecutive_failures < 1:
        raise ValueError(f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}")
    first = await asyncio.to_thread(make_env)
    envs = [first]
    try:
        todo = list(indices) if indices is not None else select_indices(num_questions(first), limit, seed)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in todo:
            queue.put_nowait(index)
        results: dict[int, EpisodeResult] = {}
        bar = tqdm(total=len(todo), desc=f"{data_set or 'eval'} [{policy.name}]", unit="q", disable=not progress)
        in_a_row = 0

        async def worker(env: gym.Env | None) -> None:
            nonlocal in_a_row
            while not queue.empty():
                index = queue.get_nowait()
                if env is None:  # made only when there is work for it
                    env = await asyncio.to_thread(make_env)
                    envs.append(env)
                result = await play_episode(env, policy, index, data_set=data_set)
                results[index] = result
                if on_episode is not None:
                    on_episode(result)
                bar.update(1)
                if not result.failed:
                    in_a_row = 0
                    continue
                in_a_row += 1
                # A failed episode may leave its env mid-episode or its session gone: play on a new one.
                envs.remove(env)
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(env.close)
                env = None
                if max_consecutive_failures is not None and in_a_row >= max_consecutive_failures:
                    raise RunStopped(
                        f"{data_set or 'eval'}: {in_a_row} episodes failed in a row, stopping "
                        f"(last: question {index}: {result.error})"
                    )

        tasks = [asyncio.create_task(worker(first if k == 0 else None)) for k in range(min(concurrency, len(todo)))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            bar.close()
        return [results[i] for i in todo]
    finally:
        for env in envs:
            await asyncio.to_thread(env.close)
