"""Scripted search episodes on the world's train split, played through the real env: the SFT data.

A script knows the question's chain (metadata "entities" and "type"), so it searches the question,
then each bridge entity with a short relation phrase, then answers the gold. Only the env's own
observations enter the transcript, tokenised exactly as the RL rollouts will tokenise them, and only
grounded episodes are kept: every hop's supporting passage was retrieved, so the answer (and each
bridge name) is in what the policy read and the warm start teaches reading, not recalling.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from search_env.qa_data import QARecord, load_qa
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import SearchQAEnv, batched_step
from search_env.world.store import WorldPaths
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
    eos = [tokenizer.eos_token_id]
    transcripts: list[Transcript] = []
    played, kept, dropped = Counter(), Counter(), Counter()
    try:
        for start in range(0, len(records), batch_size):
            chunk = list(range(start, min(start + batch_size, len(records))))
            plans = [scripted_actions(records[i]) for i in chunk]
            batch: list[Transcript] = []
            for env, i in zip(envs, chunk, strict=False):
                prompt, _ = env.reset(options={"index": i})
                batch.append(Transcript(prompt_ids=encode_prompt(tokenizer, prompt)))
            retrieved: list[list[list[str]]] = [[] for _ in chunk]
            final: list[tuple[float, bool]] = [(0.0, False)] * len(chunk)
            active = list(range(len(chunk)))  # a plan longer than max_turns is truncated, then dropped
            for turn in range(max_turns):
                active = [k for k in active if turn < len(plans[k])]
                if not active:
                    break
                results = batched_step([envs[k] for k in active], [plans[k][turn] for k in active], retriever)
                for k, (obs, reward, terminated, truncated, info) in zip(active, results, strict=True):
                    is_last = turn == len(plans[k]) - 1
                    # EOS ends the answer turn: the policy must learn to stop after answering.
                    batch[k].add_action(encode_text(tokenizer, plans[k][turn]) + (eos if is_last else []))
                    if info["is_search"]:
                        retrieved[k].append(info["retrieved_ids"])
                    if obs:
                        batch[k].add_observation(encode_text(tokenizer, obs))
                    if terminated or truncated:
                        final[k] = (float(reward), bool(terminated))
                active = [k for k in active if not envs[k].done]
            for k, i in enumerate(chunk):
                record = records[i]
                hops = int(record.metadata.get("hops", 1))
                played[hops] += 1
                reward, answered = final[k]
                if not answered or reward < 1.0:
                    dropped["wrong_or_unanswered"] += 1
                elif require_grounded and not _grounded(record, retrieved[k]):
                    dropped["not_grounded"] += 1
                else:
                    kept[hops] += 1
                    transcripts.append(batch[k])
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
