"""The embedded tiny policy: tokenizer, scripted SFT data through the real env, warm start, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from search_env.protocol import information_block
from search_env.search_qa_env import SearchQAEnv
from trainer.tiny_policy.evaluate import evaluate_greedy
from trainer.tiny_policy.model import build_tiny_model
from trainer.tiny_policy.prompt import TINY_PROMPT_TEMPLATE
from trainer.tiny_policy.scripted_trajectories import ScriptedGenerator, scripted_actions, scripted_trajectories
from trainer.tiny_policy.tokenizer import PROTOCOL_TAGS, train_tokenizer, world_entity_names
from trainer.tiny_policy.warm_start import (
    IGNORE,
    POLICY_META,
    build_embedded_policy,
    first_action_prefix,
    generated_token_loss,
    transcript_tensors,
    warm_start,
)
from trainer.transcript import Transcript, encode_prompt, encode_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(world_tokenizer):
    return world_tokenizer


@pytest.fixture(scope="module")
def scripted(small_world, bm25_server, tokenizer):
    return scripted_trajectories(small_world, bm25_server.url, tokenizer, limit=24, batch_size=8)


def _spans(t: Transcript) -> list[tuple[bool, list[int]]]:
    """The response cut into runs of generated / inserted tokens."""
    spans: list[tuple[bool, list[int]]] = []
    for tok, gen in zip(t.response_ids, t.gen_mask, strict=True):
        if spans and spans[-1][0] == gen:
            spans[-1][1].append(tok)
        else:
            spans.append((gen, [tok]))
    return spans


def test_tokenizer_round_trips_and_keeps_tags_whole(small_world, tokenizer):
    lines = [json.loads(line)["contents"] for line in small_world.corpus.read_text(encoding="utf-8").splitlines()]
    question = json.loads(small_world.qa["test"].read_text(encoding="utf-8").splitlines()[0])["question"]
    texts = [
        *lines[::50],
        TINY_PROMPT_TEMPLATE.format(question=question),
        information_block(lines[:3]),
        "<search> Who is Ünïcødé?  tabs\tand  spaces </search>",
        "<think> x </think>\n<answer> 1905 </answer>",
    ]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == text
    for tag in PROTOCOL_TAGS:
        ids = tokenizer(f" a {tag} b", add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_tokens_to_ids(tag) in ids
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.decode(tokenizer("<answer> x </answer>")["input_ids"], skip_special_tokens=True) == \
        "<answer> x </answer>"
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|eos|>"
    assert not tokenizer.chat_template
    assert train_tokenizer(small_world).get_vocab() == tokenizer.get_vocab()  # deterministic


def test_world_names_are_one_token_each_and_still_round_trip(small_world, tokenizer):
    from search_env.corpus import iter_corpus
    from search_env.qa_data import load_qa

    names = world_entity_names(small_world)
    assert names == sorted(set(names))
    # Every test answer that names a passage is one token: copying it out of a passage is one lookup.
    titles = {passage.title for passage in iter_corpus(small_world.corpus)}
    answers = [a for r in load_qa(small_world.qa["test"]) for a in r.golden_answers if a in titles]
    assert answers and set(answers) <= set(names)
    for answer in answers[:20]:
        ids = tokenizer(f"<answer> {answer} </answer>", add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_tokens_to_ids(answer) in ids
        assert tokenizer.decode(ids) == f"<answer> {answer} </answer>"
    # Sentence starts are not names; a name inside a longer word stays BPE (and round-trips).
    assert not any(n.startswith(("The city", "In ")) for n in names)
    name = next(n for n in names if n.isalpha() and len(n) > 4)
    ids = tokenizer(f"{name}ians", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids(name) not in ids and tokenizer.decode(ids) == f"{name}ians"
    plain = train_tokenizer(small_world, entity_tokens=False)
    assert len(tokenizer) - len(plain) == len(set(names) - set(plain.get_vocab()))


def test_scripted_transcripts_mask_actions_and_hold_the_envs_text(small_world, bm25_server, tokenizer, scripted):
    transcripts, stats = scripted
    assert stats["played"] == 24 and 0 < stats["kept"] == len(transcripts)
    assert stats["kept"] + sum(stats["dropped"].values()) == 24
    from search_env.qa_data import load_qa

    records = load_qa(small_world.qa["train"], limit=24)
    env = SearchQAEnv(data=records, split="train", retriever_url=bm25_server.url,
                      prompt_template=TINY_PROMPT_TEMPLATE, max_turns=4)
    # Transcripts keep question order; match each to its question through the decoded prompt.
    by_prompt = {TINY_PROMPT_TEMPLATE.format(question=r.question): i for i, r in enumerate(records)}
    try:
        for t in transcripts[:6]:
            index = by_prompt[tokenizer.decode(t.prompt_ids)]
            prompt, _ = env.reset(options={"index": index})
            actions = scripted_actions(records[index])
            spans = _spans(t)
            assert [gen for gen, _ in spans] == [True, False] * (len(actions) - 1) + [True]
            assert t.turns == len(actions)
            for turn, action in enumerate(actions):
                gen_ids = spans[2 * turn][1]
                assert tokenizer.decode(gen_ids) == action + ("<|eos|>" if turn == len(actions) - 1 else "")
                obs, reward, *_ = env.step(action)
                if turn < len(actions) - 1:
                    assert tokenizer.decode(spans[2 * turn + 1][1]) == obs
                else:
                    assert reward == 1.0
            assert t.response_ids[-1] == tokenizer.eos_token_id and t.gen_mask[-1]
            assert t.action_ids == [a if g else 0 for a, g in zip(t.action_ids, t.gen_mask, strict=True)]
    finally:
        env.close()


def test_scripted_generator_writes_each_prompts_script_turn_by_turn(tokenizer):
    """The rollout engine's stand-in model for the SFT data: a script per prompt, EOS after the last turn."""
    a, b = "Question: Who a?\n", "Question: Who b?\n"
    scripts = [(a, ["<search> a </search>", "<answer> x </answer>"]), (b, ["<answer> y </answer>"])]
    gen = ScriptedGenerator(tokenizer, scripts)
    pa, pb = encode_prompt(tokenizer, a), encode_prompt(tokenizer, b)
    first = gen.generate([pa, pb], 8)
    assert [(tokenizer.decode(g.token_ids), g.finish_reason) for g in first] == [
        ("<search> a </search>", "stop"),
        ("<answer> y </answer><|eos|>", "eos"),
    ]
    (second,) = gen.generate([pa + first[0].token_ids + encode_text(tokenizer, "<information>x</information>")], 8)
    assert tokenizer.decode(second.token_ids) == "<answer> x </answer><|eos|>"
    assert second.logprobs == [0.0] * len(second)
    with pytest.raises(KeyError):
        gen.generate([encode_prompt(tokenizer, "Question: Who c?\n")], 8)
    with pytest.raises(ValueError, match="two scripts for one prompt"):
        ScriptedGenerator(tokenizer, [(a, ["<answer> x </answer>"]), (a, ["<answer> z </answer>"])])


def test_first_action_prefix_is_prompt_and_first_search(tokenizer, scripted):
    t = scripted[0][0]
    cut = first_action_prefix(t)
    assert cut.prompt_ids == t.prompt_ids and cut.turns == 1 and all(cut.gen_mask)
    assert tokenizer.decode(cut.response_ids).startswith("<search>")
    assert tokenizer.decode(cut.response_ids).endswith("</search>")
    assert cut.response_ids == t.response_ids[: len(cut.response_ids)]


def test_warm_start_lowers_the_loss_on_generated_tokens(tokenizer, scripted):
    transcripts = scripted[0][:6]
    model = build_tiny_model(tokenizer, "tiny", seed=0)
    batch = transcript_tensors(transcripts, tokenizer.pad_token_id, 160)  # the first turns are enough here
    with torch.no_grad():
        before = generated_token_loss(model, batch).item()
    report = warm_start(model, tokenizer, transcripts, steps=10, lr=3e-3, batch_size=6, max_len=160, seed=0,
                        warmup_steps=2, progress=False)
    with torch.no_grad():
        after = generated_token_loss(model, batch).item()
    assert report["steps"] == 10 and after < before - 1.0


def test_observation_tokens_give_no_gradient(tokenizer, scripted):
    transcripts = scripted[0][:2]
    model = build_tiny_model(tokenizer, "tiny", seed=0)
    batch = transcript_tensors(transcripts, tokenizer.pad_token_id, 1024)
    captured = {}

    def keep_grad(_module, _args, output):
        output.last_hidden_state.retain_grad()
        captured["hidden"] = output.last_hidden_state

    handle = model.base_model.register_forward_hook(keep_grad)
    try:
        generated_token_loss(model, batch).backward()
    finally:
        handle.remove()
    grad = captured["hidden"].grad.abs().sum(-1)  # (batch, positions): the loss's pull on each prediction
    predicts_generated = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicts_generated[:, :-1] = batch["labels"][:, 1:] != IGNORE
    assert (grad[~predicts_generated] == 0).all()
    assert (grad[predicts_generated] > 0).all()
    # and the labels are exactly the generated tokens
    for row, t in enumerate(transcripts):
        labelled = (batch["labels"][row] != IGNORE).tolist()[: len(t.input_ids)]
        assert labelled == [False] * len(t.prompt_ids) + t.gen_mask


def test_warm_start_is_deterministic(tokenizer, scripted):
    losses = []
    for _ in range(2):
        model = build_tiny_model(tokenizer, "tiny", seed=3)
        report = warm_start(model, tokenizer, scripted[0][:6], steps=3, batch_size=2, lr=1e-3, max_len=128,
                            seed=5, fraction=0.5, progress=False)
        losses.append(report["losses"])
        assert report["examples"] == 3
    assert losses[0] == losses[1]


def test_embedded_policy_saves_loads_and_is_cached(small_world, bm25_server, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "policy"
    kwargs = dict(sft_examples=8, sft_steps=2, sft_first_action_steps=2, sft_batch_size=4, size="tiny", seed=0,
                  progress=False)
    path = build_embedded_policy(small_world, bm25_server.url, out, **kwargs)
    meta = json.loads((path / POLICY_META).read_text())
    assert meta["sft"]["steps"] == 2 and meta["data"]["played"] == 8
    stamp = (path / POLICY_META).stat().st_mtime_ns
    assert build_embedded_policy(small_world, bm25_server.url, out, **kwargs) == path
    assert (path / POLICY_META).stat().st_mtime_ns == stamp  # reused, not rebuilt

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    fresh_tok = train_tokenizer(small_world)
    text = "Question: When was Zoubraix Fakeisteck born?\n<search> Zoubraix Fakeisteck </search>"
    ids = tokenizer(text)["input_ids"]
    assert ids == fresh_tok(text)["input_ids"] and tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("</answer>") == fresh_tok.convert_tokens_to_ids("</answer>")
    again = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        a = model(input_ids=torch.tensor([ids])).logits
        b = again(input_ids=torch.tensor([ids])).logits
    assert torch.equal(a, b)

    # Round trip of an in-memory model: identical logits after save/load.
    built = build_tiny_model(fresh_tok, "tiny", seed=1).eval()
    built.save_pretrained(tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(built(input_ids=torch.tensor([ids])).logits, loaded(input_ids=torch.tensor([ids])).logits)


def test_greedy_evaluation_plays_the_env(small_world, bm25_server, tokenizer):
    model = build_tiny_model(tokenizer, "tiny", seed=0)
    env_kwargs = dict(data=small_world.qa["test"], split="test", retriever_url=bm25_server.url,
                      prompt_template=TINY_PROMPT_TEMPLATE, max_turns=2)
    result = evaluate_greedy(model, tokenizer, env_kwargs, 4, batch_size=3, max_new_tokens=6)
    assert result["n"] == 4 and sum(result["n_by_hops"].values()) == 4
    assert result["em"] == 0.0 and 1 <= result["mean_turns"] <= 2
    assert [e["index"] for e in result["episodes"]] == [0, 1, 2, 3]
