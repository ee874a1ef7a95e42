"""SearchQAEnv in process, against a live BM25 retrieval server over the small world."""

from __future__ import annotations

import asyncio

import gymnasium
import httpx
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import search_env  # noqa: F401 - registers the ids
from search_env.protocol import INVALID_ACTION_MESSAGE, SEARCH_R1_TEMPLATE, parse_action
from search_env.retrieval_schema import RetrievalLimits
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import ActionTooLong, EpisodeNotStarted, EpisodeOver, SearchQAEnv, batched_step
from search_env.server_process import free_port

DATA = "world:small"


@pytest.fixture
def env(bm25_server):
    e = SearchQAEnv(DATA, split="test", retriever_url=bm25_server.url, max_turns=4, render_mode="ansi")
    yield e
    e.close()


def _batches(server) -> int:
    return httpx.get(server.url + "/info").json()["traffic"]["requests"]


def test_parse_action_takes_the_first_complete_block():
    assert parse_action("<think>x</think><search> a b </search><answer>c</answer>").content == "a b"
    assert parse_action("<answer>Paris</answer> <search>later</search>").kind == "answer"
    assert parse_action("<search>unclosed").kind == "invalid"
    assert parse_action("no tags").kind == "invalid"
    assert parse_action("<answer>\nmulti\nline\n</answer>").content == "multi\nline"


def test_reset_gives_search_r1s_prompt(env):
    obs, info = env.reset(options={"index": 0})
    record = env.records[0]
    assert obs == SEARCH_R1_TEMPLATE.format(question=record.question.strip())
    assert obs.endswith(f"Question: {record.question}\n")
    assert info["question_id"] == record.id and info["turn"] == 0
    assert "golden_answers" not in info  # the answer is not handed to the policy


def test_search_then_correct_answer_scores_one(env):
    env.reset(options={"index": 0})
    record = env.records[0]
    action = f"<think>look it up</think><search> {record.question} </search>"
    obs, reward, terminated, truncated, info = env.step(action)
    assert obs.startswith("\n\n<information>Doc 1(Title: \"") and obs.endswith("</information>\n\n")
    assert "Doc 3(Title:" in obs and reward == 0 and not terminated and not truncated
    assert info["is_search"] and info["valid_action"] and info["query"] == record.question
    assert len(info["retrieved_ids"]) == 3 and info["num_searches"] == 1 and "searches" not in info  # at the end
    obs, reward, terminated, truncated, info = env.step(f"<answer> {record.golden_answers[0].upper()} </answer>")
    assert (obs, reward, terminated, truncated) == ("", 1.0, True, False)
    assert info["em"] == 1.0 and info["f1"] == 1.0 and info["well_formed"] and info["searches"] == [record.question]
    assert info["golden_answers"] == record.golden_answers and info["turn"] == 2
    with pytest.raises(EpisodeOver):
        env.step("<answer>again</answer>")
    assert "[turn 1: search]" in env.render()


def test_wrong_answer_scores_zero_or_the_format_score(bm25_server):
    for format_score, expected in [(0.0, 0.0), (0.2, 0.2)]:
        env = SearchQAEnv(DATA, split="test", retriever_url=bm25_server.url, format_score=format_score)
        env.reset(options={"index": 1})
        _, reward, terminated, _, info = env.step("<answer>certainly not this</answer>")
        assert terminated and reward == expected and info["em"] == 0.0
        env.close()


def test_f1_reward(bm25_server):
    env = SearchQAEnv(DATA, split="test", retriever_url=bm25_server.url, reward="f1")
    env.reset(options={"question": "Who?", "golden_answers": ["Ada Byron Lovelace"]})
    _, reward, *_ = env.step("<answer>Ada Lovelace</answer>")
    assert reward == pytest.approx(0.8)  # precision 2/2, recall 2/3


def test_invalid_actions_use_turns_and_truncate(env):
    env.reset(options={"index": 2})
    for turn in range(1, 5):
        obs, reward, terminated, truncated, info = env.step("I will just talk without tags")
        assert obs == INVALID_ACTION_MESSAGE and not info["valid_action"] and reward == 0
        assert terminated is False and truncated is (turn == 4)
    assert info["invalid_actions"] == 4 and info["answer"] is None and info["em"] == 0.0


def test_bad_calls_raise_clear_errors(env):
    with pytest.raises(EpisodeNotStarted):
        env.step("<answer>x</answer>")
    env.reset(seed=0)
    with pytest.raises(ActionTooLong, match="max_action_chars"):
        env.step("x" * (env.max_action_chars + 1))
    with pytest.raises(ValueError, match="index must be"):
        env.reset(options={"index": 10_000})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"nope": 1})
    with pytest.raises(ValueError, match="golden_answers"):
        env.reset(options={"question": "q"})


def test_reset_is_deterministic_for_a_seed(env):
    assert env.reset(seed=7) == env.reset(seed=7)
    firsts = {env.reset(seed=s)[1]["question_id"] for s in range(20)}
    assert len(firsts) > 1


def test_registered_ids_and_variants(bm25_server):
    single = gymnasium.make("searchgym/SearchQA-SingleHop-v0", data=DATA, split="test", retriever_url=bm25_server.url)
    multi = gymnasium.make("searchgym/SearchQA-MultiHop-v0", data=DATA, split="test", retriever_url=bm25_server.url)
    assert {r.metadata["hops"] for r in single.unwrapped.records} == {1}
    assert {r.metadata["hops"] for r in multi.unwrapped.records} == {2, 3}
    single.close()
    multi.close()


def test_check_env_passes(bm25_server):
    env = gymnasium.make("searchgym/SearchQA-v0", data=DATA, split="test", retriever_url=bm25_server.url)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_gymnasium_vector_env_of_16(bm25_server):
    envs = gymnasium.vector.SyncVectorEnv(
        [lambda: SearchQAEnv(DATA, split="test", retriever_url=bm25_server.url, max_turns=2)] * 16
    )
    obs, _ = envs.reset(seed=3)
    assert len(obs) == 16 and all("Question:" in o for o in obs)
    obs, rewards, term, trunc, info = envs.step(tuple(["<search> river </search>"] * 16))
    assert all(o.startswith("\n\n<information>") for o in obs) and not term.any() and not trunc.any()
    obs, rewards, term, trunc, info = envs.step(tuple(["<answer> nothing </answer>"] * 16))
    assert term.all() and (rewards == 0).all()
    envs.close()


def test_make_vec_sends_one_retrieve_request_per_step(bm25_server):
    envs = gymnasium.make_vec(
        "searchgym/SearchQA-v0", num_envs=16, data=DATA, split="test", retriever_url=bm25_server.url, max_turns=3
    )
    obs, info = envs.reset(seed=11)
    questions = [o.rsplit("Question: ", 1)[1].strip() for o in obs]
    before = _batches(bm25_server)
    obs, rewards, term, trunc, info = envs.step(tuple(f"<search> {q} </search>" for q in questions))
    assert _batches(bm25_server) == before + 1  # 16 searches, one HTTP request
    assert all(o.startswith("\n\n<information>") for o in obs)
    # Half answer, half search again: still one request for the 8 searches.
    actions = tuple("<answer> x </answer>" if i % 2 else "<search> more </search>" for i in range(16))
    obs, rewards, term, trunc, info = envs.step(actions)
    assert _batches(bm25_server) == before + 2
    assert list(term) == [bool(i % 2) for i in range(16)]
    # Next step: terminated sub-envs reset (next-step autoreset) and show a new prompt.
    obs, rewards, term, trunc, info = envs.step(tuple(["<answer> y </answer>"] * 16))
    assert all("Question:" in obs[i] for i in range(1, 16, 2)) and (rewards[1::2] == 0).all()
    envs.close()


def test_batched_step_equals_one_by_one(bm25_server):
    def play(batched: bool) -> list[list[str]]:
        envs = [SearchQAEnv(DATA, split="test", retriever_url=bm25_server.url) for _ in range(4)]
        for i, e in enumerate(envs):
            e.reset(options={"index": i})
        actions = [f"<search> {e.question.question} </search>" for e in envs]
        results = batched_step(envs, actions) if batched else [e.step(a) for e, a in zip(envs, actions, strict=True)]
        return [r[4]["retrieved_ids"] for r in results]

    assert play(True) == play(False)


def test_astep_for_asyncio_callers(bm25_server):
    async def run() -> list[float]:
        envs = [SearchQAEnv(DATA, split="test", retriever_url=bm25_server.url) for _ in range(8)]
        for i, e in enumerate(envs):
            e.reset(options={"index": i})
        await asyncio.gather(*(e.astep(f"<search> {e.question.question} </search>") for e in envs))
        answers = await asyncio.gather(
            *(e.astep(f"<answer>{e.question.golden_answers[0]}</answer>") for e in envs)
        )
        return [a[1] for a in answers]

    assert asyncio.run(run()) == [1.0] * 8


def test_retriever_down_is_the_observation_and_the_turn_is_used(small_world):
    env = SearchQAEnv(DATA, split="test", retriever_url=f"http://127.0.0.1:{free_port()}", retriever_retries=1)
    env.retriever.http.backoff = 0.01
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step("<search> anything </search>")
    assert obs.startswith("\n\n<information>Search failed: retrieval server at") and "unavailable" in obs
    assert obs.endswith("</information>\n\n") and info["search_error"] in obs
    assert env.turn == 1 and info["turn"] == 1 and info["retrieved_ids"] == [] and info["query"] == "anything"
    assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, _, _ = env.step(f"<answer>{env.records[0].golden_answers[0]}</answer>")
    assert terminated and reward == 1.0
    env.close()


# -- limits agree end to end: what the retriever refuses or fails is one env's observation -------------
def _long_search(chars: int = 8192) -> str:
    """A search action of exactly `chars` characters: its query is far over the retriever's 4,096."""
    head, tail = "<search> ", " </search>"
    words = ("river founded city " * chars)[: chars - len(head) - len(tail)]
    return head + words + tail


def _envs(client: RetrieverClient, n: int) -> list[SearchQAEnv]:
    envs = [SearchQAEnv(DATA, split="test", retriever=client) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(options={"index": i})
    return envs


def _normal_actions(envs: list[SearchQAEnv]) -> list[str]:
    return [f"<search> {env.question.question} </search>" for env in envs]


def _alone(server, envs: list[SearchQAEnv]) -> list[list[str]]:
    with RetrieverClient(server.url) as client:
        return [[d.document.id for d in client.retrieve([e.question.question], 3)[0]] for e in envs]


def test_vector_env_cuts_an_8192_char_search_to_the_retrievers_limit(bm25_server):
    envs = gymnasium.make_vec("searchgym/SearchQA-v0", num_envs=4, data=DATA, split="test",
                              retriever_url=bm25_server.url)
    obs, _ = envs.reset(seed=5)
    questions = [o.rsplit("Question: ", 1)[1].strip() for o in obs]
    actions = [f"<search> {q} </search>" for q in questions]
    actions[2] = _long_search()
    before = _batches(bm25_server)
    obs, rewards, term, trunc, info = envs.step(tuple(actions))
    assert _batches(bm25_server) == before + 1  # still one request for the four searches
    assert all(o.startswith("\n\n<information>Doc 1(Title:") for o in obs)
    assert info["query_changes"][2] == ["cut"] and len(info["query"][2]) == 4096
    assert [info["query_changes"][i] for i in (0, 1, 3)] == [[], [], []]
    assert list(info["search_error"]) == [None] * 4 and not term.any() and not trunc.any()
    envs.close()


def test_a_strict_retriever_refusal_is_one_envs_observation(strict_server):
    with RetrieverClient(strict_server.url) as client:
        envs = _envs(client, 4)
        actions = _normal_actions(envs)
        actions[1] = _long_search()
        before = _batches(strict_server)
        results = batched_step(envs, actions)
        # The env knew the server's limits (from /info) and did not send what it would refuse.
        assert _batches(strict_server) == before + 1
    obs, reward, terminated, truncated, info = results[1]
    assert obs == (
        "\n\n<information>Search failed: the retrieval server (strict) refuses a query that is 8173 characters "
        "long: limit is 4096</information>\n\n"
    )
    assert info["search_error"] in obs and info["turn"] == 1 and envs[1].turn == 1 and info["retrieved_ids"] == []
    assert (reward, terminated, truncated) == (0.0, False, False)
    others = [results[i] for i in (0, 2, 3)]
    assert [r[4]["retrieved_ids"] for r in others] == _alone(strict_server, [envs[i] for i in (0, 2, 3)])
    assert all(r[4]["search_error"] is None for r in others)


def test_a_request_the_retriever_refuses_is_asked_again_query_by_query(strict_server):
    # A client that believes the limits are wider than the server's (as with a server that publishes
    # none): the server refuses the batch for one query, and only that query goes without.
    with RetrieverClient(strict_server.url, limits=RetrievalLimits(max_query_chars=100_000)) as client:
        envs = _envs(client, 4)
        actions = _normal_actions(envs)
        actions[3] = _long_search()
        results = batched_step(envs, actions)
    obs, _, _, _, info = results[3]
    assert obs.startswith("\n\n<information>Search failed: the retrieval server refused the query (422): query 0 is "
                          "8173 characters long: limit is 4096")
    assert info["turn"] == 1 and info["retrieved_ids"] == []
    assert [r[4]["retrieved_ids"] for r in results[:3]] == _alone(strict_server, envs[:3])


def test_astep_cuts_a_long_search_too(bm25_server):
    async def run() -> dict:
        env = SearchQAEnv(DATA, split="test", retriever_url=bm25_server.url)
        env.reset(options={"index": 0})
        _, _, _, _, info = await env.astep(_long_search())
        await env.retriever.aclose()
        return info

    info = asyncio.run(run())
    assert info["query_changes"] == ["cut"] and len(info["query"]) == 4096 and len(info["retrieved_ids"]) == 3


def test_a_lone_surrogate_in_an_action_is_replaced(env):
    env.reset(options={"index": 0})
    obs, _, _, _, info = env.step("<search> river \ud83d founded </search>")
    assert info["query"] == "river \ufffd founded" and info["search_error"] is None
    assert obs.startswith("\n\n<information>Doc 1(Title:")
    _, _, terminated, _, info = env.step("<answer> Name \udc00 </answer>")
    assert terminated and info["answer"] == "Name \ufffd"
    assert "\ud83d" not in env.render()


def test_spaces_hold_real_text(env):
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert env.action_space.contains("<search> Zürich — «quotes» </search>\n")
    assert isinstance(env.action_space.sample(), str) and np.isscalar(env.action_space.max_length)
