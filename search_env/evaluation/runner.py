"""The runner: the episode loop of text policies, played on a data set's questions through the Gym API.

It serves policies that only exchange text (OpenAI-compatible endpoints, the scripted baselines):
each turn the policy reads the transcript as text and writes the next action as text. Hugging Face
models are not played here but token by token by the trainer's rollout engine
(trainer.evaluation.EnginePlayer), the stream they are trained on.

Each of `concurrency` workers owns one env and plays questions one after another, so the policy
sees up to `concurrency` episodes at once (a remote policy serves them in parallel). In-process envs
are stepped with `astep` (the search is awaited); envs without it (the remote env) step in a worker
thread.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from tqdm.auto import tqdm

from search_env.evaluation.env_factory import EnvFactory
from search_env.evaluation.policy import Policy
from search_env.evaluation.results import EpisodeResult
from search_env.evaluation.transcript import Transcript

EpisodeSink = Callable[[EpisodeResult], None]


class EpisodeError(RuntimeError):
    """An episode failed (the policy or the env raised); the message names the question."""


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


async def play_episode(env: gym.Env, policy: Policy, index: int, *, data_set: str = "") -> EpisodeResult:
    """Play question `index` to the end (answer or max turns) and collect its result."""
    inner: Any = env.unwrapped
    astep = getattr(inner, "astep", None)
    if astep is not None:  # in process: reset does no I/O, the step's search is awaited
        prompt, reset_info = env.reset(options={"index": index})
    else:
        prompt, reset_info = await asyncio.to_thread(env.reset, options={"index": index})
    transcript = Transcript(prompt)
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
) -> list[EpisodeResult]:
    """Play `indices` (default: `select_indices(n, limit, seed)`) and return results in index order.

    `on_episode` sees each result as it finishes (e.g. to append it to a JSONL file).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    first = await asyncio.to_thread(make_env)
    envs = [first]
    try:
        todo = list(indices) if indices is not None else select_indices(num_questions(first), limit, seed)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in todo:
            queue.put_nowait(index)
        results: dict[int, EpisodeResult] = {}
        bar = tqdm(total=len(todo), desc=f"{data_set or 'eval'} [{policy.name}]", unit="q", disable=not progress)

        async def worker(env: gym.Env | None) -> None:
            while not queue.empty():
                index = queue.get_nowait()
                if env is None:  # made only when there is work for it
                    env = await asyncio.to_thread(make_env)
                    envs.append(env)
                try:
                    result = await play_episode(env, policy, index, data_set=data_set)
                except Exception as err:
                    raise EpisodeError(f"{data_set or 'eval'}: question {index} failed: {err}") from err
                results[index] = result
                if on_episode is not None:
                    on_episode(result)
                bar.update(1)

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
