"""The rollout engine: generation backends, multi-turn groups, token budgets and loss tensors.

The policy is a real (tiny, random) Llama with a byte-level BPE tokenizer trained here on the small
world's corpus, so every text round-trips through its tokens exactly. Envs are real SearchQAEnvs
against the live BM25 server, and RemoteSearchEnvs through the live env server. A scripted policy
writes exact search/answer turns where behaviour must be known; a fake OpenAI-compatible server on
loopback stands in for vLLM (which CI cannot run).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from search_env.env_data import load_env_records
from search_env.protocol import INVALID_ACTION_MESSAGE, SEARCH_R1_TEMPLATE
from search_env.qa_data import load_qa
from search_env.remote_env import RemoteSearchEnv
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import SearchQAEnv
from tests.thread_server import serving
from trainer.rollout import (
    Episode,
    Generated,
    HFGenerator,
    OpenAIGenerator,
    OpenAIGeneratorError,
    RolloutBatch,
    RolloutEngine,
    stop_cut,
    token_logprobs,
)
from trainer.transcript import Transcript, encode_text

transformers = pytest.importorskip("transformers")
DATA = "world:small"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- a tiny real policy -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(small_world):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    lines = [json.loads(line)["contents"] for line in small_world.corpus.read_text().splitlines()[:300]]
    tags = "<think> </think> <search> q </search> <answer> a </answer> <information> Doc 1(Title: x) </information>"
    lines += [SEARCH_R1_TEMPLATE, INVALID_ACTION_MESSAGE, tags] * 20
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    ))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>")


def tiny_llama(tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def records(small_world):
    """The test questions, loaded once and shared by every env (loading them is the slow part of an env)."""
    return load_env_records(DATA, split="test")


def ids(tokenizer, text: str) -> list[int]:
    return encode_text(tokenizer, text)


def episode_of(prompt: list[int], turns: list[Generated], observations: list[list[int]], group: int = 0) -> Episode:
    tr = Transcript(list(prompt))
    for i, g in enumerate(turns):
        tr.add_action(g.token_ids, g.logprobs)
        if i < len(observations):
            tr.add_observation(observations[i])
    return Episode(group, 0, tr, "")


# -- the stop rule ----------------------------------------------------------------------------------
def test_stop_cut_keeps_the_token_that_completes_the_stop_string(tokenizer):
    eos = tokenizer.eos_token_id
    head = ids(tokenizer, "<think> hm </think><search> capital of Brurara </search>")
    tail = ids(tokenizer, " and more words <answer> x </answer>")
    assert len(ids(tokenizer, "</search>")) > 1  # the stop string spans several tokens here
    n, why = stop_cut(head + tail, tokenizer, ["</search>", "</answer>"], [eos])
    assert (n, why) == (len(head), "stop")
    assert tokenizer.decode((head + tail)[:n]).endswith("</search>")
    # A stop string that ends inside a token: that token is kept.
    glued = ids(tokenizer, "<answer> x </answer>s")
    n, why = stop_cut(glued, tokenizer, ["</answer>"], [eos])
    assert why == "stop" and "</answer>" in tokenizer.decode(glued[:n]) and "</answer>" not in tokenizer.decode(
        glued[: n - 1])
    # EOS first: kept (the policy chose it), and nothing after it.
    early = ids(tokenizer, "no tags yet") + [eos] + head
    assert stop_cut(early, tokenizer, ["</search>"], [eos]) == (len(early) - len(head), "eos")
    assert stop_cut(head + [eos], tokenizer, ["</search>"], [eos]) == (len(head), "stop")
    plain = ids(tokenizer, "nothing to stop at")
    assert stop_cut(plain, tokenizer, ["</search>"], [eos]) == (len(plain), "length")


def test_a_tokenizer_without_pad_token_is_refused(model, tokenizer):
    bare = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="</s>")
    with pytest.raises(ValueError, match="no pad token: set tokenizer.pad_token"):
        HFGenerator(model, bare)


# -- HF generation ------------------------------------------------------------------------------------
def test_sampled_logprobs_equal_the_models_and_token_logprobs(model, tokenizer):
    prompts = [ids(tokenizer, t) for t in ["Brurara is a country", "x", "The capital of Kizea is", "Question: who"]]
    prompts += prompts[:2]
    model.train()
    gen = HFGenerator(model, tokenizer, batch_size=4)  # 6 prompts: two micro-batches, left-padded
    out = gen.generate(prompts, 12, temperature=1.0, stop_strings=["</search>"])
    assert model.training  # restored after generation
    assert [len(o) for o in out] and all(1 <= len(o) <= 12 for o in out)
    assert all(o.finish_reason in ("length", "eos", "stop") for o in out)
    episodes = [episode_of(p, [o], []) for p, o in zip(prompts, out, strict=True)]
    batch = RolloutBatch.from_episodes(episodes, tokenizer)
    model.eval()
    with torch.no_grad():
        logp, entropy = token_logprobs(model, batch, micro_batch_size=4, with_entropy=True)
        # Straight from the logits, one unpadded sequence at a time.
        for row, (p, o) in enumerate(zip(prompts, out, strict=True)):
            logits = model(torch.tensor([p + o.token_ids])).logits[0, len(p) - 1 : -1]
            ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(o.token_ids)[:, None])[:, 0]
            assert torch.allclose(torch.tensor(o.logprobs), ref, atol=1e-4)
            span = slice(len(p), len(p) + len(o))
            assert torch.allclose(logp[row, span], ref, atol=1e-4)
            ent = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
            assert torch.allclose(entropy[row, span], ent, atol=1e-4)
    assert torch.allclose(logp[batch.loss_mask], batch.sampler_logprobs[batch.loss_mask], atol=1e-4)
    assert (logp[~batch.loss_mask] == 0).all() and (logp[:, 0] == 0).all()
    model.train()


def test_greedy_is_deterministic_and_top_p_renormalises(model, tokenizer):
    gen = HFGenerator(model, tokenizer)
    prompts = [ids(tokenizer, "Brurara is a country"), ids(tokenizer, "x")]
    a = gen.generate(prompts, 8, temperature=0.0)
    b = gen.generate(prompts, 8, temperature=0.0)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    # top_p < 1: the sampler's distribution is the renormalised nucleus, so log-probs rise above the model's.
    out = gen.generate(prompts, 8, temperature=1.0, top_p=0.5)
    episodes = [episode_of(p, [o], []) for p, o in zip(prompts, out, strict=True)]
    with torch.no_grad():
        logp, _ = token_logprobs(model, RolloutBatch.from_episodes(episodes, tokenizer), 2)
    batch = RolloutBatch.from_episodes(episodes, tokenizer)
    assert (batch.sampler_logprobs[batch.loss_mask] > logp[batch.loss_mask]).all()


def test_each_row_stops_at_its_own_stop_string(tokenizer):
    """A model biased towards one token (p ~ 0.25 per step) that is also the stop string: rows of one
    batch stop at different steps, and each keeps exactly its tokens up to its first stop."""
    model = tiny_llama(tokenizer, seed=1)
    target_text = next(w for w in (" capital", " country", " is", " the") if len(ids(tokenizer, w)) == 1)
    (target,) = ids(tokenizer, target_text)
    with torch.no_grad():  # a constant residual direction, read out only by the target's logit
        model.model.embed_tokens.weight[:, 0] = 3.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[target, 0] = 5.0 / 32**0.5
    gen = HFGenerator(model, tokenizer)
    prompts = [ids(tokenizer, "Brurara is a country")] * 12
    out = gen.generate(prompts, 30, temperature=1.0, stop_strings=[target_text])
    stopped = [o for o in out if o.finish_reason == "stop"]
    assert len(stopped) >= 2 and len({len(o) for o in stopped}) >= 2
    for o in out:
        text = tokenizer.decode(o.token_ids)
        if o.finish_reason == "stop":
            assert text.endswith(target_text) and target_text not in tokenizer.decode(o.token_ids[:-1])
        else:
            assert target_text not in text and (len(o) == 30 or o.finish_reason == "eos")
    episodes = [episode_of(p, [o], []) for p, o in zip(prompts, out, strict=True)]
    batch = RolloutBatch.from_episodes(episodes, tokenizer)
    with torch.no_grad():
        logp, _ = token_logprobs(model, batch, 5)
    assert torch.allclose(logp[batch.loss_mask], batch.sampler_logprobs[batch.loss_mask], atol=1e-4)


# -- episodes ---------------------------------------------------------------------------------------
def _check_transcript(ep: Episode, tokenizer) -> None:
    tr = ep.transcript
    assert len(tr.response_ids) == len(tr.gen_mask) == len(tr.action_ids) == len(tr.sampler_logprobs)
    # Split the response into maximal generated / observation spans, in order.
    spans: list[tuple[bool, list[int], list[int]]] = []
    for tok, gen, act in zip(tr.response_ids, tr.gen_mask, tr.action_ids, strict=True):
        if spans and spans[-1][0] == gen and (not gen or spans[-1][2][-1] == act):
            spans[-1][1].append(tok)
            spans[-1][2].append(act)
        else:
            spans.append((gen, [tok], [act]))
    actions = [s for s in spans if s[0]]
    observations = [s for s in spans if not s[0]]
    assert len(actions) == tr.turns == len(ep.actions)
    for k, (_, toks, acts) in enumerate(actions, start=1):
        assert set(acts) == {k}  # action_ids number the turns
        assert tokenizer.decode(toks, skip_special_tokens=True) == ep.actions[k - 1]
    assert all(set(a) == {0} for _, _, a in observations)
    assert [tokenizer.decode(t) for _, t, _ in observations] == [o for o in ep.observations if o]
    assert tr.num_generated == sum(len(s[1]) for s in actions)


def _check_batch(batch: RolloutBatch, episodes: list[Episode]) -> None:
    assert batch.input_ids.shape == batch.loss_mask.shape == batch.action_ids.shape == batch.answer_mask.shape
    assert int(batch.loss_mask.sum()) == sum(e.transcript.num_generated for e in episodes)
    assert not (batch.loss_mask & ~batch.attention_mask.bool()).any()  # padding is never in the loss
    assert ((batch.action_ids > 0) == batch.loss_mask).all()
    for row, ep in enumerate(episodes):
        n = len(ep.transcript.input_ids)
        assert batch.input_ids[row, :n].tolist() == ep.transcript.input_ids
        assert int(batch.attention_mask[row].sum()) == n
        assert not batch.loss_mask[row, : batch.response_start[row]].any()
    assert batch.group_ids.tolist() == [e.group_id for e in episodes]
    assert batch.rewards.tolist() == [e.reward for e in episodes]


def test_multi_turn_groups_with_the_tiny_model(bm25_server, records, model, tokenizer):
    client = RetrieverClient(bm25_server.url)
    envs = [SearchQAEnv(records, split="test", retriever=client, max_turns=3) for _ in range(16)]
    engine = RolloutEngine(HFGenerator(model, tokenizer, batch_size=16), tokenizer, group_size=4,
                           max_new_tokens_per_turn=24, max_total_tokens=2048, temperature=1.0)
    questions = [0, 3, 5, 7]
    episodes = engine.collect(envs, questions)
    assert [e.group_id for e in episodes] == [q for q in questions for _ in range(4)]
    assert [e.sample for e in episodes] == [0, 1, 2, 3] * 4
    for ep in episodes:
        assert ep.done and 1 <= ep.turns <= 3 and ep.steps == ep.turns
        _check_transcript(ep, tokenizer)
        if ep.turns > 1 and ep.actions[0] and "</search>" not in ep.actions[0]:
            assert ep.observations[0] == INVALID_ACTION_MESSAGE
        if ep.truncated_by == "env":
            assert ep.turns == 3 and "em" in ep.info and ep.reward == 0.0
    stats = engine.last_stats
    assert stats is not None and stats.episodes == 16
    assert stats.generated_tokens == sum(e.transcript.num_generated for e in episodes)
    assert 1 <= stats.mean_turns <= 3 and 0 <= stats.valid_action_rate <= 1
    print(f"\ntiny random Llama, 16 episodes: {stats.generated_tokens} tokens in {stats.wall_time_s:.2f} s = "
          f"{stats.tokens_per_s:.0f} tokens/s (generation {stats.generation_time_s:.2f} s, "
          f"env {stats.env_time_s:.2f} s)")

    batch = RolloutBatch.from_episodes(episodes, tokenizer)
    _check_batch(batch, episodes)
    with torch.no_grad():
        logp, _ = token_logprobs(model, batch, micro_batch_size=5)
    assert torch.allclose(logp[batch.loss_mask], batch.sampler_logprobs[batch.loss_mask], atol=1e-4)
    # Micro-batches for gradient accumulation cover the same rows.
    assert sum(len(mb) for mb in batch.micro_batches(5)) == 16
    # The envs are reused: a second collection resets them onto other questions.
    again = engine.collect(envs, [1, 2, 4, 6])
    assert [e.group_id for e in again][::4] == [1, 2, 4, 6] and all(e.done for e in again)
    for env in envs:
        env.close()
    client.close()


def test_token_budget_truncates_with_reward_zero(bm25_server, records, model, tokenizer):
    client = RetrieverClient(bm25_server.url)
    envs = [SearchQAEnv(records, split="test", retriever=client, max_turns=4) for _ in range(4)]
    engine = RolloutEngine(HFGenerator(model, tokenizer), tokenizer, group_size=4, max_new_tokens_per_turn=24,
                           max_total_tokens=2)
    prompt_len = len(engine.collect(envs, [2])[0].transcript.prompt_ids)  # budget 2: the prompt alone is too long
    assert engine.last_stats is not None and engine.last_stats.truncated_by_budget_share == 1.0
    engine.max_total_tokens = prompt_len + 30  # one 24-token turn, then only 6 tokens for the observation
    episodes = engine.collect(envs, [2])
    for ep in episodes:
        assert len(ep.transcript.input_ids) <= engine.max_total_tokens
        if ep.truncated_by == "budget":
            assert ep.truncated and not ep.terminated and ep.reward == 0.0
            assert len(ep.transcript.input_ids) == engine.max_total_tokens
    cut = [ep for ep in episodes if ep.observations_cut]
    assert cut, "the invalid-action message cannot fit in 6 tokens"
    for ep in cut:
        assert ep.info["observation_tokens_cut"] > 0 and ep.truncated_by == "budget"
        assert INVALID_ACTION_MESSAGE.startswith(ep.observations[-1])
    assert engine.last_stats.truncated_by_budget_share == sum(e.truncated_by == "budget" for e in episodes) / 4
    _check_batch(RolloutBatch.from_episodes(episodes, tokenizer), episodes)
    # The engine's own turn limit (a safety net for envs that never end) also truncates with reward 0.
    engine.max_total_tokens, engine.max_turns = 4096, 1
    episodes = engine.collect(envs, [2])
    assert all(e.turns == 1 and e.truncated_by == "max_turns" and e.reward == 0.0 for e in episodes)
    for env in envs:
        env.close()
    client.close()


class ScriptedGenerator:
    """A policy that writes given texts (as token ids): turn 1 searches, turn 2 searches on even rows and
    answers on odd ones, turn 3 answers."""

    def __init__(self, tokenizer, nonce: str, answers: dict[str, str]):
        self.tokenizer, self.nonce, self.answers = tokenizer, nonce, answers
        self.calls = 0

    def generate(self, prompts, max_new_tokens, *, temperature=1.0, top_p=1.0, stop_strings=()):
        self.calls += 1
        out = []
        for row, p in enumerate(prompts):
            text = self.tokenizer.decode(p)
            question = text.split("Question: ", 1)[1].split("\n", 1)[0]
            searched = text.count("<information>Doc")  # the prompt itself names the tag
            if searched == 0 or (searched == 1 and row % 2 == 0):
                action = f"<think> look it up </think><search> {question} {self.nonce} {searched} </search>"
            else:
                action = f"<answer> {self.answers[question]} </answer>"
            toks = encode_text(self.tokenizer, action) + [self.tokenizer.eos_token_id]
            out.append(Generated(toks, [-0.5] * len(toks), "stop"))
        return out


def _gold(small_world) -> dict[str, str]:
    return {r.question.strip() + ("" if r.question.strip().endswith("?") else "?"): r.golden_answers[0]
            for r in load_qa(small_world.qa["test"])}


def _retrieve_requests(server) -> int:
    return httpx.get(server.url + "/info").json()["traffic"]["requests"]


def test_searches_of_a_round_go_in_one_retrieve_request(bm25_server, records, small_world, tokenizer):
    client = RetrieverClient(bm25_server.url)
    envs = [SearchQAEnv(records, split="test", retriever=client, max_turns=4) for _ in range(12)]
    gen = ScriptedGenerator(tokenizer, uuid.uuid4().hex[:8], _gold(small_world))  # fresh queries: no cache hits
    engine = RolloutEngine(gen, tokenizer, group_size=4, max_new_tokens_per_turn=200, max_total_tokens=8192)
    before = _retrieve_requests(bm25_server)
    episodes = engine.collect(envs, [0, 1, 2])
    # Round 1: 12 searches, round 2: 6 searches + 6 answers, round 3: 6 answers -> 2 requests, not 18.
    assert _retrieve_requests(bm25_server) == before + 2
    assert gen.calls == 3
    for i, ep in enumerate(episodes):
        assert ep.terminated and ep.reward == 1.0 and ep.info["em"] == 1.0
        assert ep.turns == (3 if i % 2 == 0 else 2) and ep.searches == ep.turns - 1
        assert all(o.startswith("\n\n<information>Doc 1(Title: ") for o in ep.observations)
        _check_transcript(ep, tokenizer)
        assert ep.transcript.response_ids[-1] == tokenizer.eos_token_id  # the EOS is trained on too
    stats = engine.last_stats
    assert stats.valid_action_rate == 1.0 and stats.mean_reward == 1.0 and stats.terminated_share == 1.0
    batch = RolloutBatch.from_episodes(episodes, tokenizer)
    _check_batch(batch, episodes)
    for row in range(len(episodes)):  # the answer mask covers the last action's <answer>...</answer>
        answer = tokenizer.decode(batch.input_ids[row][batch.answer_mask[row]].tolist())
        assert answer.strip().startswith("<answer>") and answer.strip().endswith("</answer>")
        assert batch.answer_mask[row].sum() < batch.loss_mask[row].sum()
    assert (batch.sampler_logprobs[batch.loss_mask] == -0.5).all()
    for env in envs:
        env.close()
    client.close()


def test_remote_envs_through_the_env_server(env_server, model, tokenizer):
    made: list[RemoteSearchEnv] = []

    def factory() -> RemoteSearchEnv:
        made.append(RemoteSearchEnv(env_server.url, data=DATA, split="test", max_turns=2))
        return made[-1]

    engine = RolloutEngine(HFGenerator(model, tokenizer), tokenizer, group_size=2, max_new_tokens_per_turn=16,
                           max_total_tokens=2048)
    for questions in ([0, 1], [2, 3]):
        episodes = engine.collect(factory, questions)
        assert [e.group_id for e in episodes] == [questions[0]] * 2 + [questions[1]] * 2
        for ep in episodes:
            assert ep.done and ep.turns <= 2 and "question_id" in ep.info
            _check_transcript(ep, tokenizer)
    assert len(made) == 4  # the factory filled the pool once; the second collection reused it
    engine.close()


def test_the_trainer_rolls_out_remotely_with_one_request_per_round(env_server, model, tokenizer):
    from trainer.config import TrainConfig
    from trainer.grpo_trainer import GRPOTrainer

    config = TrainConfig.model_validate({"env": {"env_url": env_server.url, "data": DATA, "split": "test"}})
    trainer = GRPOTrainer.__new__(GRPOTrainer)  # rollout_envs needs only the config and the env options
    trainer.config, trainer.env_options, trainer.remote_envs = config, {"max_turns": 2, "topk": 2}, None
    envs = trainer.rollout_envs(4)
    assert trainer.remote_envs is not None and list(envs) == list(trainer.remote_envs.envs)
    assert len({id(env.http) for env in envs}) == 1 and trainer.rollout_envs(4) == envs  # kept across steps
    sent: list[str] = []
    trainer.remote_envs.http._sync().event_hooks["request"].append(lambda r: sent.append(r.url.path))
    engine = RolloutEngine(HFGenerator(model, tokenizer), tokenizer, group_size=2, max_new_tokens_per_turn=16,
                           max_total_tokens=2048)
    episodes = engine.collect(envs, [0, 1])
    assert all(ep.done and ep.turns <= 2 for ep in episodes)
    steps = [p for p in sent if p.endswith("/step")]
    assert steps == ["/sessions/step"] * engine.last_stats.generate_calls  # one request per round, all sessions
    assert sum(p.endswith("/reset") for p in sent) == 4
    trainer.remote_envs.close()


# -- evaluation: the same engine, greedy ------------------------------------------------------------------
def test_evaluation_plays_the_token_stream_training_sees(bm25_server, records, model, tokenizer, tmp_path):
    """The trainer's held-out evaluation (`EnginePlayer.like` its engine, through the benchmark harness)
    and a greedy training rollout of the same question are the same tokens; a text policy still plays
    beside it in the same benchmark run."""
    from search_env.evaluation import ScriptedPolicy, parse_data_specs, read_jsonl, run_benchmark
    from trainer.evaluation import EnginePlayer

    client = RetrieverClient(bm25_server.url)
    envs = [SearchQAEnv(records, split="test", retriever=client, max_turns=3) for _ in range(6)]
    engine = RolloutEngine(
        HFGenerator(model, tokenizer),
        tokenizer,
        group_size=2,
        max_new_tokens_per_turn=12,
        max_total_tokens=512,
        temperature=0.0,
    )
    questions = [0, 4, 9]
    trained = engine.collect(envs, questions)
    assert [e.transcript.input_ids for e in trained[::2]] == [e.transcript.input_ids for e in trained[1::2]]
    trained = trained[::2]
    assert any(e.turns > 1 for e in trained)  # observations were appended between turns
    player = EnginePlayer.like(engine, name="tiny")
    assert player.settings["temperature"] == 0.0 and player.settings["max_total_tokens"] == 512
    evaluated = player.play_episodes(envs[:2], questions)  # two at a time: other batches than training's
    for t, e in zip(trained, evaluated, strict=True):
        assert e.group_id == t.group_id and e.prompt == t.prompt
        assert (e.transcript.input_ids, e.transcript.gen_mask, e.transcript.action_ids) == (
            t.transcript.input_ids,
            t.transcript.gen_mask,
            t.transcript.action_ids,
        )
        assert (e.actions, e.observations, e.reward, e.truncated_by) == (
            t.actions,
            t.observations,
            t.reward,
            t.truncated_by,
        )
    for env in envs:
        env.close()
    client.close()

    # Through the harness (gym.make'd envs, the JSONL), with a scripted text policy as the reference.
    out = tmp_path / "eval.jsonl"
    result = asyncio.run(
        run_benchmark(
            player,
            parse_data_specs(["world:small"], "test"),
            retriever_url=bm25_server.url,
            max_turns=3,
            concurrency=3,
            limit=10,
            reference=ScriptedPolicy("entity"),
            out=out,
            progress=False,
        )
    )
    assert [(m.policy, m.n) for m in result.metrics] == [("tiny", 10), ("scripted-entity", 10)]
    rows = {(r["policy"], r["index"]): r for r in read_jsonl(out)}
    for t in trained:
        row = rows["tiny", t.group_id]
        text = [{"role": "prompt", "text": t.prompt}]
        for i, action in enumerate(t.actions):
            text.append({"role": "policy", "text": action})
            if i < len(t.observations) and t.observations[i]:  # (a budget can cut one to nothing)
                text.append({"role": "env", "text": t.observations[i]})
        assert row["transcript"] == text and row["turns"] == t.turns and row["reward"] == t.reward
        assert row["question"] == t.reset_info["question"] and row["truncated"] == t.truncated
    scripted = [r for (policy, _), r in rows.items() if policy == "scripted-entity"]
    assert all(r["turns"] == 2 and r["num_searches"] == 1 and r["terminated"] for r in scripted)


def test_search_trainer_eval_benchmarks_a_saved_model(bm25_server, model, tokenizer, tmp_path, capsys):
    from search_env.evaluation import read_jsonl
    from trainer.cli import main as trainer_main

    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    out = tmp_path / "eval" / "hf.jsonl"
    code = trainer_main(
        [
            "eval",
            "--model",
            str(tmp_path / "policy"),
            "--data",
            "world:small:single",
            "--limit",
            "3",
            "--retriever-url",
            bm25_server.url,
            "--max-turns",
            "2",
            "--max-new-tokens",
            "8",
            "--max-total-tokens",
            "600",
            "--with-reference",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "world:small:single" in printed and str(out) in printed
    rows = read_jsonl(out)
    assert sorted((r["policy"], r["index"]) for r in rows) == sorted(
        (p, i) for p in (f"hf:{tmp_path / 'policy'}", "scripted") for i in range(3)
    )
    assert all(1 <= r["turns"] <= 2 for r in rows)
    assert (tmp_path / "eval" / "hf.summary.json").exists()
    assert trainer_main(["eval", "--model", "embedded", "--no-progress"]) == 2
    assert "by its path" in capsys.readouterr().err


# -- OpenAI-compatible backend (a fake vLLM) -------------------------------------------------------------
class _FakeVLLM:
    def __init__(self):
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        app = FastAPI()

        @app.post("/v1/completions")
        async def completions(request: Request):
            body = await request.json()
            self.requests.append(body)
            if self.fail_next:
                self.fail_next -= 1
                return JSONResponse({"error": "overloaded"}, status_code=503)
            prompts = body["prompt"]
            ok = (
                isinstance(prompts, list) and all(isinstance(p, list) and all(isinstance(t, int) for t in p)
                                                  for p in prompts)
                and body["stop"] == ["</search>", "</answer>"] and body["logprobs"] == 1
                and body["return_tokens_as_token_ids"] is True and isinstance(body["max_tokens"], int)
            )
            if not ok:
                return JSONResponse({"error": "bad request shape"}, status_code=400)
            as_ids = body["model"] != "no-ids"
            choices = [{
                "index": i,
                "text": "<search> q </search>",
                "logprobs": {
                    "tokens": [f"token_id:{t}" if as_ids else "tok" for t in (5, 17, 9 + i)],
                    "token_logprobs": [-0.5, -1.0, -0.25],
                    "top_logprobs": None,
                    "text_offset": [0, 1, 2],
                },
                "finish_reason": "stop",
                "stop_reason": "</search>",
            } for i in range(len(prompts))]
            return {"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": choices}

        self.app = app


@pytest.fixture(scope="module")
def fake_vllm():

    fake = _FakeVLLM()
    with serving(fake.app) as url:
        fake.url = url
        yield fake


def test_openai_generator_sends_token_ids_and_reads_them_back(fake_vllm):
    with OpenAIGenerator(fake_vllm.url, "policy", batch_size=2, backoff=0.01) as gen:
        out = gen.generate([[1, 2, 3], [4], [5, 6]], 64, temperature=1.0)
    assert [o.token_ids for o in out] == [[5, 17, 9], [5, 17, 10], [5, 17, 9]]  # 3 prompts in 2 requests
    assert out[0].logprobs == [-0.5, -1.0, -0.25] and out[0].finish_reason == "stop"
    sent = fake_vllm.requests[-2:]
    assert sorted(len(r["prompt"]) for r in sent) == [1, 2] and all(r["max_tokens"] == 64 for r in sent)


def test_openai_generator_retries_a_503(fake_vllm):
    fake_vllm.fail_next = 1
    n = len(fake_vllm.requests)
    with OpenAIGenerator(fake_vllm.url + "/v1", "policy", backoff=0.01) as gen:
        out = gen.generate([[1, 2]], 8)
    assert len(fake_vllm.requests) == n + 2 and out[0].token_ids == [5, 17, 9]


def test_openai_generator_needs_token_ids(fake_vllm):
    with OpenAIGenerator(fake_vllm.url, "no-ids", backoff=0.01) as gen, pytest.raises(
        OpenAIGeneratorError, match="return_tokens_as_token_ids"
    ):
        gen.generate([[1, 2]], 8)


def test_search_trainer_eval_samples_from_an_openai_server_with_no_weights_loaded(
    bm25_server, fake_vllm, tokenizer, tmp_path, capsys
):
    # Training refuses the openai backend (its server never gets the updated weights); evaluation keeps it.
    from search_env.evaluation import read_jsonl
    from trainer.cli import main as trainer_main

    tokenizer.save_pretrained(tmp_path / "tokenizer")  # only a tokenizer: no model weights to load
    out = tmp_path / "eval" / "openai.jsonl"
    n = len(fake_vllm.requests)
    code = trainer_main(
        ["eval", "--model", str(tmp_path / "tokenizer"), "--openai-base-url", fake_vllm.url, "--served-model",
         "policy", "--data", "world:small:single", "--limit", "2", "--retriever-url", bm25_server.url,
         "--max-turns", "2", "--max-new-tokens", "8", "--max-total-tokens", "600", "--out", str(out), "--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    rows = read_jsonl(out)
    assert sorted((r["policy"], r["index"]) for r in rows) == [("openai:policy", 0), ("openai:policy", 1)]
    sent = fake_vllm.requests[n:]
    assert sent and all(r["model"] == "policy" and r["temperature"] == 0.0 and r["max_tokens"] <= 8 for r in sent)
    first = rows[0]["transcript"][1]["text"]  # the fake's sampled ids, decoded by the tokenizer
    assert first == tokenizer.decode([5, 17, 9], skip_special_tokens=True)


def test_engine_step_survives_a_search_the_retriever_refuses(strict_server, records):
    # An action at the env's full 8,192 characters whose query the (strict) retriever refuses, among
    # ordinary searches: that episode reads why, the others their documents, and the rollout goes on.
    client = RetrieverClient(strict_server.url)
    envs = [SearchQAEnv(records, split="test", retriever=client, max_turns=3) for _ in range(3)]
    for i, env in enumerate(envs):
        env.reset(options={"index": i})
    head, tail = "<search> ", " </search>"
    query = ("river " * 2000)[: envs[0].max_action_chars - len(head) - len(tail)]
    runaway = head + query + tail + " and on and on" * 100  # the engine cuts it to the 8,192 the env takes
    actions = [f"<search> {envs[0].question.question} </search>", runaway, "<answer> x </answer>"]
    results = RolloutEngine._step(envs, actions)
    assert results[0][0].startswith("\n\n<information>Doc 1(Title:") and results[0][4]["search_error"] is None
    assert results[1][0].startswith("\n\n<information>Search failed: the retrieval server (strict) refuses")
    assert results[1][4]["turn"] == 1 and not results[1][2] and not results[1][3]
    assert results[2][2] and results[2][4]["answer"] == "x"
    for env in envs:
        env.close()
    client.close()
