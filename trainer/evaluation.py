"""Evaluation through the rollout engine: a policy played greedily, tokens in, tokens out.

`EnginePlayer` plays a benchmark set's questions with a `RolloutEngine` (one episode per question,
temperature 0 unless asked otherwise) over a generator, with the tokenizer, stop strings and token
budgets of the training rollouts, so a held-out score is measured on exactly the token stream GRPO
trains on: the prompt encoded once, the sampled ids kept as sampled, each observation tokenised and
appended. It is an `EpisodePlayer` of search_env's benchmark harness, which keeps the data sets, the
JSONL of episodes, the summary and the table, shared with text policies.

Why the player lives here and not in search_env: playing tokens takes a tokenizer, the token
transcript, a generator and the engine, i.e. the trainer's rollout, while search_env stays light and
knows nothing of torch or the trainer (arrows: trainer -> search_env <- agent_server). So Hugging
Face models are evaluated from the trainer (`GRPOTrainer.evaluate`, `search-trainer eval`, the tiny
policy's `evaluate_greedy`), and `search-env eval` keeps its text loop (search_env.evaluation.runner)
for the policies that only exchange text: OpenAI-compatible endpoints and the scripted baselines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from tqdm.auto import tqdm

from search_env.evaluation.results import EpisodeResult
from search_env.evaluation.runner import EpisodeError, num_questions, select_indices
from search_env.evaluation.transcript import Transcript as TextTranscript
from trainer.rollout.engine import Episode, RolloutEngine
from trainer.rollout.generation import STOP_STRINGS, Generator


class EnginePlayer:
    def __init__(
        self,
        generator: Generator,
        tokenizer: Any,
        *,
        name: str,
        max_new_tokens_per_turn: int = 500,
        max_total_tokens: int = 4096,
        max_obs_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = STOP_STRINGS,
    ):
        """The budgets are the engine's (see `RolloutEngine`); pass the training rollouts' ones, or use
        `like(engine)`, for the training stream."""
        self.name = name
        self.generator = generator
        self.tokenizer = tokenizer
        self.settings: dict[str, Any] = {
            "max_new_tokens_per_turn": max_new_tokens_per_turn,
            "max_total_tokens": max_total_tokens,
            "max_obs_tokens": max_obs_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop_strings": list(stop_strings),
        }

    @classmethod
    def like(cls, engine: RolloutEngine, *, name: str, temperature: float = 0.0) -> EnginePlayer:
        """Plays as `engine` does (its generator, tokenizer, budgets and stop strings), greedily by default."""
        return cls(
            engine.generator,
            engine.tokenizer,
            name=name,
            max_new_tokens_per_turn=engine.max_new_tokens_per_turn,
            max_total_tokens=engine.max_total_tokens,
            max_obs_tokens=engine.max_obs_tokens,
            temperature=temperature,
            top_p=engine.top_p,
            stop_strings=engine.stop_strings,
        )

    def play_episodes(
        self,
        envs: Sequence[gym.Env],
        indices: Sequence[int],
        on_done: Callable[[list[Episode]], None] | None = None,
    ) -> list[Episode]:
        """Question `indices[i]` played on one of `envs`, `len(envs)` episodes at a time (each round of
        them is one batched generate call); the episodes in `indices` order, each batch also passed to
        `on_done` as it ends. Raises what the generator or an env raises."""
        if not envs:
            raise ValueError("need at least one env")
        engine = RolloutEngine(self.generator, self.tokenizer, group_size=1, **self.settings)
        episodes: list[Episode] = []
        for start in range(0, len(indices), len(envs)):
            done = engine.collect(envs, list(indices[start : start + len(envs)]))
            episodes += done
            if on_done is not None:
                on_done(done)
        return episodes

    async def play(
        self,
        make_env: Callable[[], gym.Env],
        *,
        data_set: str = "",
        indices: Sequence[int] | None = None,
        limit: int | None = None,
        seed: int | None = None,
        concurrency: int = 1,
        on_episode: Callable[[EpisodeResult], None] | None = None,
        progress: bool = True,
    ) -> list[EpisodeResult]:
        """The `EpisodePlayer` contract (search_env.evaluation.policy); raises `EpisodeError` naming the
        questions of a batch that failed."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        # The engine steps envs and generates synchronously: off the event loop.
        return await asyncio.to_thread(
            self._play, make_env, data_set, indices, limit, seed, concurrency, on_episode, progress
        )

    def _play(
        self,
        make_env: Callable[[], gym.Env],
        data_set: str,
        indices: Sequence[int] | None,
        limit: int | None,
        seed: int | None,
        concurrency: int,
        on_episode: Callable[[EpisodeResult], None] | None,
        progress: bool,
    ) -> list[EpisodeResult]:
        envs = [make_env()]
        try:
            todo = list(indices) if indices is not None else select_indices(num_questions(envs[0]), limit, seed)
            envs += [make_env() for _ in range(min(concurrency, len(todo)) - 1)]
            results: list[EpisodeResult] = []
            bar = tqdm(total=len(todo), desc=f"{data_set or 'eval'} [{self.name}]", unit="q", disable=not progress)

            def report(episodes: list[Episode]) -> None:
                for ep in episodes:
                    results.append(episode_result(ep, data_set=data_set, policy=self.name))
                    if on_episode is not None:
                        on_episode(results[-1])
                bar.update(len(episodes))

            try:
                self.play_episodes(envs, todo, report)
            except Exception as err:
                failed = todo[len(results) : len(results) + len(envs)]
                raise EpisodeError(f"{data_set or 'eval'}: questions {failed} failed: {err}") from err
            finally:
                bar.close()
            return results
        finally:
            for env in envs:
                env.close()


def episode_result(ep: Episode, *, data_set: str, policy: str) -> EpisodeResult:
    """An engine episode as a benchmark row; its transcript is the decoded text of each turn."""
    transcript = TextTranscript(ep.prompt)
    for i, action in enumerate(ep.actions):
        transcript.add_action(action)
        if i < len(ep.observations) and ep.observations[i]:
            transcript.add_observation(ep.observations[i])
    return EpisodeResult.from_env(
        data_set=data_set,
        policy=policy,
        index=ep.group_id,
        reset_info=ep.reset_info,
        info=ep.info,
        reward=ep.reward,
        terminated=ep.terminated,
        truncated=ep.truncated,
        turns=ep.turns,
        transcript=transcript.to_json(),
    )
