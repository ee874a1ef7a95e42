"""`RolloutEngine`: plays groups of multi-turn episodes against Gym envs, tokens in, tokens out.

Each round, every active episode's transcript (prompt + all turns so far, as token ids) goes into ONE
batched `generate` call; each turn's sampled ids are kept as they are, decoded only to step the env,
and the env's observation is tokenised (`encode_text`) and appended. Search-R1's loop (A2 of the
research notes) with its gotchas fixed: stop strings end each turn, the trained ids are the sampled
ids, and the policy/env token split is an explicit mask (`Transcript.gen_mask`).

Envs are stepped in batches: `SearchQAEnv`s sharing a retriever client by `batched_step` (one
`/retrieve` request for all of a round's searches), `RemoteSearchEnv`s sharing a client (the sub-envs
of a `RemoteSearchVectorEnv`, which the trainer plays on when the env is remote) by
`batched_remote_step` (one `/sessions/step` request per round); any other env (a wrapped env, any
gymnasium.Env) is stepped one by one. (The engine steps only the episodes still running, so it plays
on a vector env's sub-envs rather than through its all-envs `step` with autoreset.)

Pipelining (`pipeline_splits`, `overlap_env`): the episodes can be cut into fixed parts, each played
turn by turn, generation alternating between the parts (part A's turn, part B's turn, A's next...).
With `overlap_env`, a part's env step (its searches) runs on a worker thread while the next part
generates: on a GPU box generation leaves the CPU idle, so the searches come for free. The generate
calls, their order and inputs are the same with and without `overlap_env` (the worker only steps
envs; tokenising and bookkeeping stay on the calling thread), so a fixed seed gives the same episodes
either way; the split itself changes the generate batches (as `generation_batch_size` does), hence
the sampled tokens.

An episode ends when its env ends it, or when its token budget (`max_total_tokens`, prompt included)
is spent: then it is truncated with reward 0 and its env is not stepped further.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym

from search_env.remote_env import RemoteSearchEnv, batched_remote_step
from search_env.search_qa_env import SearchQAEnv, batched_step
from search_env.turn_budget import check_turn_budget
from trainer.rollout.generation import STOP_STRINGS, Generated, Generator
from trainer.rollout.stats import RolloutStats
from trainer.transcript import Transcript, encode_prompt, encode_text

EnvSource = Sequence[gym.Env] | Callable[[], gym.Env]
TruncatedBy = Literal["env", "budget", "prompt_too_long", "max_turns"]


@dataclass
class Episode:
    """One played episode. Episodes with the same `group_id` (the question index) form a GRPO group."""

    group_id: int
    sample: int  # its number within the group
    transcript: Transcript
    prompt: str
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    #: why it was truncated: by the env (its max turns), or by the engine (token budget, max_turns)
    truncated_by: TruncatedBy | None = None
    #: the env's info of the last step (em, f1, num_searches, invalid_actions, answer... at the end),
    #: plus the engine's own records ("truncated_by", "observation_tokens_cut")
    info: dict[str, Any] = field(default_factory=dict)
    #: the env's info at reset (question, question_id, hops), and of every step in order
    reset_info: dict[str, Any] = field(default_factory=dict)
    step_infos: list[dict[str, Any]] = field(default_factory=list)
    #: decoded texts for logging: each turn's action, and each observation as appended (after any cut)
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    steps: int = 0
    valid_actions: int = 0
    searches: int = 0
    observations_cut: int = 0

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    @property
    def turns(self) -> int:
        return self.transcript.turns

    def text(self) -> str:
        """The whole episode as text (prompt, then each action and the observation after it)."""
        parts = [self.prompt]
        for i, action in enumerate(self.actions):
            parts.append(action)
            if i < len(self.observations):
                parts.append(self.observations[i])
        return "".join(parts)


class RolloutEngine:
    def __init__(
        self,
        generator: Generator,
        tokenizer: Any,
        *,
        group_size: int,
        max_new_tokens_per_turn: int = 500,
        max_total_tokens: int = 4096,
        max_obs_tokens: int | None = None,
        max_turns: int | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = STOP_STRINGS,
        pipeline_splits: int = 1,
        overlap_env: bool = False,
    ):
        """`max_total_tokens` bounds prompt + response of one episode; `max_obs_tokens` optionally cuts
        each observation (Search-R1's max_obs_length); `max_turns` is a safety net for envs that never
        end (the env's own max turns normally decides; `check_turn_budget` refuses 0 as the env does).
        `pipeline_splits` parts of the episodes take turns at generating; with `overlap_env` a part's env
        step runs on a thread meanwhile (module docstring). Raises ValueError for a size below 1
        (TurnBudgetError, a ValueError, for `max_turns`)."""
        if group_size < 1 or max_new_tokens_per_turn < 1 or max_total_tokens < 2 or pipeline_splits < 1:
            raise ValueError(
                "need group_size >= 1, max_new_tokens_per_turn >= 1, max_total_tokens >= 2 and pipeline_splits >= 1"
            )
        if max_turns is not None:  # 0 used to be played as 1 turn: refused as the env refuses it
            check_turn_budget(max_turns)
        self.generator = generator
        self.tokenizer = tokenizer
        self.group_size = group_size
        self.max_new_tokens_per_turn = max_new_tokens_per_turn
        self.max_total_tokens = max_total_tokens
        self.max_obs_tokens = max_obs_tokens
        self.max_turns = max_turns
        self.temperature = temperature
        self.top_p = top_p
        self.stop_strings = list(stop_strings)
        self.pipeline_splits = pipeline_splits
        self.overlap_env = overlap_env
        self.last_stats: RolloutStats | None = None
        # Envs made by a factory, kept and reused across collect() calls (one pool per factory).
        self._pools: dict[Callable[[], gym.Env], list[gym.Env]] = {}

    # -- envs ---------------------------------------------------------------------------------------
    def _envs(self, source: EnvSource, n: int) -> list[gym.Env]:
        if isinstance(source, Sequence):
            if len(source) < n:
                raise ValueError(f"{n} episodes (questions x group_size) need {n} envs, got a pool of {len(source)}")
            return list(source[:n])
        if not callable(source):
            raise TypeError("pass a sequence of envs or a zero-argument factory that makes one")
        pool = self._pools.setdefault(source, [])
        while len(pool) < n:
            pool.append(source())
        return pool[:n]

    def close(self) -> None:
        """Close the envs this engine made with factories."""
        for pool in self._pools.values():
            for env in pool:
                env.close()
        self._pools.clear()

    @staticmethod
    def _step(envs: Sequence[gym.Env], actions: Sequence[str]) -> list[tuple[Any, ...]]:
        results: list[tuple[Any, ...] | None] = [None] * len(envs)
        # An env refuses an action longer than its action space allows; the action ends at its stop
        # string anyway, so a runaway tail is what goes.
        limits = [getattr(env.action_space, "max_length", None) for env in envs]
        actions = [a[:lim] if lim else a for a, lim in zip(actions, limits, strict=True)]
        # SearchQAEnvs sharing a retriever client: one /retrieve request for all their searches;
        # RemoteSearchEnvs sharing a client: one /sessions/step request.
        batches: dict[tuple[str, int], list[int]] = {}
        for i, env in enumerate(envs):
            if isinstance(env, SearchQAEnv):
                batches.setdefault(("local", id(env.retriever)), []).append(i)
            elif isinstance(env, RemoteSearchEnv):
                batches.setdefault(("remote", id(env.http)), []).append(i)
            else:
                results[i] = tuple(env.step(actions[i]))
        for (kind, _), idx in batches.items():
            step = batched_step if kind == "local" else batched_remote_step
            stepped = step([envs[i] for i in idx], [actions[i] for i in idx])  # type: ignore[operator]
            for i, result in zip(idx, stepped, strict=True):
                results[i] = result
        return results  # type: ignore[return-value]

    @classmethod
    def _timed_step(cls, envs: Sequence[gym.Env], actions: Sequence[str]) -> tuple[list[tuple[Any, ...]], float, float]:
        """`_step`, with its wall seconds and the seconds of them spent in `/retrieve` requests (read
        from the in-process envs' retriever clients; an env server's searches count as env time)."""
        clients = {id(c): c for env in envs if (c := getattr(env, "retriever", None)) is not None}
        before = sum(getattr(c, "retrieve_seconds", 0.0) for c in clients.values())
        began = time.perf_counter()
        results = cls._step(envs, actions)
        wall = time.perf_counter() - began
        return results, wall, sum(getattr(c, "retrieve_seconds", 0.0) for c in clients.values()) - before

    # -- episodes -----------------------------------------------------------------------------------
    def _room(self, ep: Episode) -> int:
        return self.max_total_tokens - len(ep.transcript.prompt_ids) - len(ep.transcript.response_ids)

    @staticmethod
    def _cut_short(ep: Episode, why: TruncatedBy) -> None:
        ep.truncated, ep.truncated_by, ep.reward = True, why, 0.0
        ep.info["truncated_by"] = why

    def collect(self, envs: EnvSource, question_indices: Sequence[int]) -> list[Episode]:
        """`group_size` episodes for each question (`reset(options={"index": q})`), in order: the
        episodes of question_indices[0], then of [1], ... Statistics go to `self.last_stats`."""
        started = time.perf_counter()
        clock = _Clock()
        n = len(question_indices) * self.group_size
        pool = self._envs(envs, n)
        episodes: list[Episode] = []
        for k, q in enumerate(question_indices):
            for g in range(self.group_size):
                with clock("env_wait"), clock("env"):
                    prompt, info = pool[k * self.group_size + g].reset(options={"index": int(q)})
                with clock("tokenize"):
                    transcript = Transcript(encode_prompt(self.tokenizer, prompt))
                ep = Episode(int(q), g, transcript, prompt, info=dict(info), reset_info=dict(info))
                if self._room(ep) < 1:
                    self._cut_short(ep, "prompt_too_long")
                episodes.append(ep)

        splits = min(self.pipeline_splits, max(n, 1))
        parts = [range(n * j // splits, n * (j + 1) // splits) for j in range(splits)]
        # One worker: at most one env step in flight, and the envs of a part are only ever touched by it.
        worker = ThreadPoolExecutor(1, thread_name_prefix="rollout-env") if self.overlap_env and splits > 1 else None
        pending: dict[int, tuple[list[int], Future]] = {}
        turn = list(range(splits))  # the parts still playing, in the order they generate
        try:
            while turn:
                j = turn.pop(0)
                if j in pending:
                    stepped, future = pending.pop(j)
                    with clock("env_wait"):
                        results, env_s, retrieval_s = future.result()
                    clock.add("env", env_s)
                    clock.add("retrieval", retrieval_s)
                    with clock("tokenize"):
                        for i, result in zip(stepped, results, strict=True):
                            self._observe(episodes[i], *result)
                active = [i for i in parts[j] if not episodes[i].done]
                if not active:
                    continue
                rooms = [self._room(episodes[i]) for i in active]
                with clock("generation"):
                    generated = self.generator.generate(
                        [episodes[i].transcript.input_ids for i in active],
                        min(self.max_new_tokens_per_turn, max(rooms)),
                        temperature=self.temperature,
                        top_p=self.top_p,
                        stop_strings=self.stop_strings,
                    )
                clock.calls += 1
                with clock("tokenize"):
                    actions = [
                        self._add_turn(episodes[i], out, room)
                        for i, out, room in zip(active, generated, rooms, strict=True)
                    ]
                envs_now = [pool[i] for i in active]
                if worker is not None:
                    future = worker.submit(self._timed_step, envs_now, actions)
                else:
                    future = Future()
                    with clock("env_wait"):
                        future.set_result(self._timed_step(envs_now, actions))
                pending[j] = (active, future)
                turn.append(j)
        finally:
            if worker is not None:
                worker.shutdown(wait=True)

        self.last_stats = RolloutStats.from_episodes(
            episodes,
            wall_time_s=time.perf_counter() - started,
            generation_time_s=clock.seconds["generation"],
            env_time_s=clock.seconds["env"],
            generate_calls=clock.calls,
            retrieval_time_s=clock.seconds["retrieval"],
            tokenize_time_s=clock.seconds["tokenize"],
            env_wait_time_s=clock.seconds["env_wait"],
        )
        return episodes

    def _add_turn(self, ep: Episode, out: Generated, room: int) -> str:
        """Append a sampled turn (cut to the episode's room: one generate call serves rows with
        different budgets) and return its text for the env."""
        ids, logprobs, reason = out.token_ids, out.logprobs, out.finish_reason
        if len(ids) > room:
            ids, logprobs, reason = ids[:room], logprobs[:room], "length"
        ep.transcript.add_action(list(ids), list(logprobs))
        ep.finish_reasons.append(reason)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        ep.actions.append(text)
        return text

    def _observe(self, ep: Episode, obs: Any, reward: Any, terminated: bool, truncated: bool, info: dict) -> None:
        ep.steps += 1
        ep.info = dict(info)
        ep.step_infos.append(dict(info))
        ep.valid_actions += bool(info.get("valid_action", False))
        # The env's own count when it keeps one (SearchQAEnv does), else count the search steps.
        ep.searches = int(info["num_searches"]) if "num_searches" in info else ep.searches + bool(info.get("is_search"))
        if terminated or truncated:
            # The observation that comes with the end is not appended: no turn follows to read it.
            ep.reward, ep.terminated, ep.truncated = float(reward), bool(terminated), bool(truncated)
            ep.truncated_by = "env" if truncated and not terminated else None
            return
        ids = encode_text(self.tokenizer, str(obs))
        limit = self._room(ep) if self.max_obs_tokens is None else min(self._room(ep), self.max_obs_tokens)
        if len(ids) > limit:
            ep.observations_cut += 1
            ep.info["observation_tokens_cut"] = len(ids) - max(limit, 0)
            ids = ids[: max(limit, 0)]
            obs = self.tokenizer.decode(ids, skip_special_tokens=False)
        ep.transcript.add_observation(ids)
        ep.observations.append(str(obs))
        if self._room(ep) < 1:
            self._cut_short(ep, "budget")
        elif self.max_turns is not None and ep.turns >= self.max_turns:
            self._cut_short(ep, "max_turns")


class _Clock:
    """Seconds per kind of work in one collect (`with clock("generation"): ...`), and generate calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(("generation", "env", "retrieval", "tokenize", "env_wait"), 0.0)
        self.calls = 0

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] += seconds

    @contextlib.contextmanager
    def __call__(self, kind: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[kind] += time.perf_counter() - began
