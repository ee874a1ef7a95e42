"""Scripted search episodes on the world's train split, played through the real env: the SFT data.

A script knows the question's chain (metadata "entities" and "type"), so it searches the question,
then each bridge entity with a short relation phrase, then answers the gold. The scripts are played
by the RL rollouts' own engine (`RolloutEngine` with a `ScriptedGenerator` in place of the model),
so the transcripts are the token stream GRPO will see: the env's observations tokenised as the
rollouts tokenise them. Only grounded episodes are kept: every hop's supporting passage was
retrieved, so the answer (and each bridge name) is in what the policy read and the warm start
teaches reading, not recalling.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from search_env.protocol import format_question
from search_env.qa_data import QARecord, load_qa
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import SearchQAEnv
from search_env.world.store import WorldPaths
from trainer.rollout.engine import RolloutEngine
from trainer.rollout.generation import STOP_STRINGS, Generated
from trainer.tiny_policy.prompt import TINY_PROMPT_TEMPLATE
from trainer.transcript import Transcript, encode_prompt, encode_text

# The fact asked of an entity -> a word its passages use for it (BM25 matches it next to the name).
RELATION_PHRASES: dict[str, str] = {
    "birthplace": "born", "birth_year": "born", "employer": "career", "spouse": "married",
    "occupation": "occupation", "founder": "founder", "founded": "founded", "hq": "based",
    "industry": "industry", "river": "river", "landmark": "known for", "region": "region",
    "country": "country", "creator": "by", "year": "published", "publisher": "published by",
    "genre": "genre",
}


def search_action(query: str) -> str:
    return f"<search> {query} </search>"


def answer_action(answer: str) -> str:
    return f"<answer> {answer} </answer>"


def scripted_actions(record: QARecord) -> list[str]:
    """The script's turns for one question: search it, search each bridge entity, answer the gold."""
    meta = record.metadata
    facts = [step.split(".", 1)[1] for step in str(meta.get("type", "")).split(">") if "." in step]
    bridges = list(meta.get("entities", []))[1:]
    actions = [search_action(record.question)]
    for hop, entity in enumerate(bridges, start=1):
        phrase = RELATION_PHRASES.get(facts[hop], "") if hop < len(facts) else ""
        actions.append(search_action(f"{entity} {phrase}".strip()))
    actions.append(answer_action(record.golden_answers[0]))
    return actions


class ScriptedGenerator:
    """A rollout `Generator` that writes each episode's script instead of sampling.

    An episode is known by its prompt (the ids the engine encoded), its turn by how many times that
    prompt has been asked for one; the script's last turn ends with EOS, so the policy learns to stop
    after answering. Raises ValueError when two scripts share a prompt (they could not be told apart),
    KeyError for a prompt with no script, IndexError when asked past a script's end.
    """

    def __init__(self, tokenizer: Any, scripts: Sequence[tuple[str, list[str]]]):
        """`scripts`: (prompt text as the env writes it, the actions of its turns) per episode."""
        self._turns: dict[tuple[int, ...], list[list[int]]] = {}
        for prompt, actions in scripts:
            key = tuple(encode_prompt(tokenizer, prompt))
            if key in self._turns:
                raise ValueError(f"two scripts for one prompt: {prompt!r}")
            turns = [encode_text(tokenizer, a) for a in actions]
            turns[-1] = turns[-1] + [tokenizer.eos_token_id]
            self._turns[key] = turns
        self._lengths = sorted({len(k) for k in self._turns}, reverse=True)
        self._asked: Counter[tuple[int, ...]] = Counter()

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = STOP_STRINGS,
    ) -> list[Generated]:
        out = []
        for ids in prompts:
            key = next((k for k in (tuple(ids[:n]) for n in self._lengths) if k in self._turns), None)
            if key is None:
                raise KeyError("a prompt with no script")
            turn, turns = self._asked[key], self._turns[key]
            self._asked[key] += 1
            out.append(
                Generated(list(turns[turn]), [0.0] * len(turns[turn]), "eos" if turn == len(turns) - 1 else "stop")
            )
        return out


def _grounded(record: QARecord, retrieved: list[list[str]]) -> bool:
    """Each hop's supporting passage came back from that hop's search."""
    support = [str(p) for p in record.metadata.get("supporting_passages", [])]
    if len(support) != len(retrieved):
        return False
    return all(p in ids for p, ids in zip(support, retrieved, strict=True))


def scripted_trajectories(
    world: WorldPaths,
    retriever_url: str,
    tokenizer: Any,
    *,
    limit: int | None = None,
    batch_size: int = 64,
    topk: int = 3,
    max_turns: int = 4,
    require_grounded: bool = True,
) -> tuple[list[Transcript], dict[str, Any]]:
    """Play the script on the train split (first `limit` questions) and record the kept episodes.

    Returns the transcripts (question order) and stats: counts played/kept/dropped by reason and by hops.
    """
    records = load_qa(world.qa["train"], limit=limit)
    retriever = RetrieverClient(retriever_url)
    envs = [
        SearchQAEnv(data=records, split="train", retriever=retriever, prompt_template=TINY_PROMPT_TEMPLATE,
                    topk=topk, max_turns=max_turns)
        for _ in range(min(batch_size, len(records)))
    ]
    scripts = ScriptedGenerator(
        tokenizer, [(format_question(r.question, TINY_PROMPT_TEMPLATE), scripted_actions(r)) for r in records]
    )
    # No token budget: a script is as long as it is (a plan longer than max_turns is truncated, then dropped).
    engine = RolloutEngine(scripts, tokenizer, group_size=1, max_total_tokens=sys.maxsize)
    transcripts: list[Transcript] = []
    played, kept, dropped = Counter(), Counter(), Counter()
    try:
        for start in range(0, len(records), batch_size):
            for ep in engine.collect(envs, range(start, min(start + batch_size, len(records)))):
                record = records[ep.group_id]
                hops = int(record.metadata.get("hops", 1))
                played[hops] += 1
                retrieved = [info["retrieved_ids"] for info in ep.step_infos if info["is_search"]]
                if not ep.terminated or ep.reward < 1.0:
                    dropped["wrong_or_unanswered"] += 1
                elif require_grounded and not _grounded(record, retrieved):
                    dropped["not_grounded"] += 1
                else:
                    kept[hops] += 1
                    transcripts.append(ep.transcript)
    finally:
        for env in envs:
            env.close()
        retriever.close()
    stats = {
        "played": sum(played.values()),
        "kept": sum(kept.values()),
        "played_by_hops": dict(sorted(played.items())),
        "kept_by_hops": dict(sorted(kept.items())),
        "dropped": dict(dropped),
        "mean_tokens": sum(len(t.input_ids) for t in transcripts) / max(1, len(transcripts)),
        "max_tokens": max((len(t.input_ids) for t in transcripts), default=0),
    }
    return transcripts, stats
