"""Supervised warm start of the tiny policy on scripted transcripts, and the cached embedded policy.

The loss is the policy's own: next-token cross-entropy on generated tokens only (`gen_mask`), so the
model learns to act, never to predict retrieved passages, exactly the tokens RL will later score.
The warm start is deliberately short (`steps`, `fraction`): the policy should know the protocol and
answer some questions, leaving the rest for GRPO to win.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from search_env.qa_data import load_qa
from search_env.world.store import WorldPaths
from trainer.tiny_policy.pretrain import warmup_cosine
from trainer.transcript import Transcript

IGNORE = -100
POLICY_META = "tiny_policy.json"  # the cache key and build report, saved with the policy
BUILD_VERSION = "2"  # bump when the tokenizer, model, script or SFT change what a setting builds


def transcript_tensors(transcripts: Sequence[Transcript], pad_id: int, max_len: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (IGNORE except on generated tokens)."""
    rows = []
    for t in transcripts:
        ids = t.input_ids[:max_len]
        labels = [IGNORE] * len(t.prompt_ids) + [i if g else IGNORE for i, g in zip(t.response_ids, t.gen_mask,
                                                                                      strict=True)]
        rows.append((ids, labels[:max_len]))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, : len(lab)] = torch.tensor(lab)
        mask[r, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def generated_token_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the generated tokens of the batch.

    The output head runs only at the positions that predict a generated token (about a tenth of
    them): on CPU the full-vocabulary head and its softmax otherwise cost as much as the layers.
    """
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _batches(n: int, lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length (sorted inside windows of 8 batches) to waste little padding."""
    order = list(range(n))
    rng.shuffle(order)
    window = batch_size * 8
    batches = []
    for w in range(0, n, window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def first_action_prefix(transcript: Transcript) -> Transcript:
    """The transcript cut after its first action: prompt and first search, no observation."""
    end = transcript.action_ids.count(1) if transcript.turns else 0
    return Transcript(
        prompt_ids=list(transcript.prompt_ids),
        response_ids=transcript.response_ids[:end],
        gen_mask=transcript.gen_mask[:end],
        action_ids=transcript.action_ids[:end],
        sampler_logprobs=transcript.sampler_logprobs[:end],
        turns=min(1, transcript.turns),
    )


def _fit(
    model: Any,
    pad_id: int,
    data: list[Transcript],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    max_len: int,
    rng: random.Random,
    warmup_steps: int,
    weight_decay: float,
    desc: str,
    progress: bool,
    augment: Callable[[Transcript, random.Random], Transcript] | None = None,
) -> list[float]:
    """`steps` AdamW steps over `data` (reshuffled each pass), linear warmup then cosine to 10% of lr.

    `augment` rewrites each example as its batch is drawn (fresh each pass, e.g. an entity renaming).
    """
    lengths = [min(len(t.input_ids), max_len) for t in data]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    warmup = min(warmup_steps, max(1, steps // 4))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, warmup))
    losses: list[float] = []
    queue: list[list[int]] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        if not queue:
            queue = _batches(len(data), lengths, batch_size, rng)
        examples = [data[i] for i in queue.pop(0)]
        if augment is not None:
            examples = [augment(t, rng) for t in examples]
        batch = transcript_tensors(examples, pad_id, max_len)
        loss = generated_token_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def warm_start(
    model: Any,
    tokenizer: Any,
    transcripts: Sequence[Transcript],
    *,
    epochs: float = 1.0,
    lr: float = 3e-3,
    batch_size: int = 8,
    max_len: int = 1024,
    seed: int = 0,
    steps: int | None = None,
    fraction: float = 1.0,
    first_action_steps: int = 0,
    first_action_batch_size: int = 32,
    first_action_extra: Sequence[Transcript] = (),
    warmup_steps: int = 20,
    weight_decay: float = 0.01,
    entity_swap: float = 0.0,
    swapper: Callable[[Transcript, random.Random], Transcript] | None = None,
    closed_book: float = 0.0,
    guesser: Callable[[Transcript, random.Random], Transcript] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `model` in place on the first `fraction` of `transcripts` (after a seeded shuffle).

    A curriculum in two stages, each AdamW with warmup and cosine decay: first `first_action_steps`
    steps on the transcripts cut after their first action (a few dozen tokens each, so cheap: this
    is where the model learns to copy the question into a search), then `steps` steps (or `epochs`
    passes, fractional allowed) on the whole transcripts, where it learns to read the observations.
    `first_action_extra` (prompt + first search transcripts, e.g. `copy_drill`) join the first stage.
    With `swapper` (an `EntitySwapper`), each example drawn is renamed with probability `entity_swap`;
    with `guesser` (a `ClosedBookGuesser`), it is first replaced by a guess with probability `closed_book`.
    Returns loss history and timing.
    """
    if not transcripts:
        raise ValueError("no transcripts to warm-start on")
    if entity_swap > 0 and swapper is None:
        raise ValueError("entity_swap > 0 needs a swapper (an EntitySwapper over the tokenizer's names)")
    if closed_book > 0 and guesser is None:
        raise ValueError("closed_book > 0 needs a guesser (a ClosedBookGuesser over the train answers)")
    rng = random.Random(seed)
    data = list(transcripts)
    rng.shuffle(data)
    data = data[: max(1, round(len(data) * fraction))]
    per_epoch = math.ceil(len(data) / batch_size)
    total = steps if steps is not None else max(1, round(epochs * per_epoch))
    torch.manual_seed(seed)
    started = time.monotonic()

    # A draw only for a share that is on, so settings without it replay the same data.
    def renamed(t: Transcript, r: random.Random) -> Transcript:
        return swapper(t, r) if swapper is not None and entity_swap > 0 and r.random() < entity_swap else t

    # Guesses join the full stage only: the first-action stage is where copying is learnt.
    def renamed_or_guess(t: Transcript, r: random.Random) -> Transcript:
        if guesser is not None and closed_book > 0 and r.random() < closed_book:
            return guesser(t, r)
        return renamed(t, r)

    fit = dict(max_len=max_len, rng=rng, warmup_steps=warmup_steps, weight_decay=weight_decay, progress=progress)
    model.train()
    first_losses: list[float] = []
    if first_action_steps > 0:
        prefixes = [first_action_prefix(t) for t in data] + list(first_action_extra)
        first_losses = _fit(model, tokenizer.pad_token_id, prefixes, steps=first_action_steps, lr=lr,
                            batch_size=first_action_batch_size, desc="warm start: first actions",
                            augment=renamed if entity_swap > 0 else None, **fit)
    first_seconds = time.monotonic() - started
    losses = _fit(model, tokenizer.pad_token_id, data, steps=total, lr=lr, batch_size=batch_size,
                  desc="warm start", augment=renamed_or_guess if entity_swap > 0 or closed_book > 0 else None,
                  **fit) if total > 0 else []
    model.eval()
    return {
        "steps": total,
        "first_action_steps": first_action_steps,
        "examples": len(data),
        "epochs": total / per_epoch,
        "first_action_loss_last": _tail_mean(first_losses),
        "loss_first": losses[0] if losses else None,
        "loss_last": _tail_mean(losses),
        "losses": losses,
        "first_action_losses": first_losses,
        "first_action_seconds": first_seconds,
        "seconds": time.monotonic() - started,
    }


def copy_drill(world: WorldPaths, tokenizer: Any, n: int, *, seed: int = 0) -> list[Transcript]:
    """`n` first actions on train questions whose subject is swapped for a random corpus title.

    Trained on the real questions alone, the first-action stage memorises them (its loss reaches ~0
    on train while test questions come out garbled); with ever new names the cheap way to predict the
    search is to copy the question, which is what the policy needs on unseen questions.
    """
    from search_env.corpus import iter_corpus
    from search_env.qa_data import load_qa
    from trainer.tiny_policy.prompt import TINY_PROMPT_TEMPLATE
    from trainer.tiny_policy.scripted_trajectories import search_action
    from trainer.transcript import encode_prompt, encode_text

    if n <= 0:
        return []
    rng = random.Random(seed)
    titles = [passage.title for passage in iter_corpus(world.corpus)]
    records = [r for r in load_qa(world.qa["train"]) if r.metadata.get("entities")]
    out: list[Transcript] = []
    while len(out) < n:
        record = rng.choice(records)
        subject = str(record.metadata["entities"][0])
        if subject not in record.question:
            continue
        question = record.question.replace(subject, rng.choice(titles), 1)
        t = Transcript(prompt_ids=encode_prompt(tokenizer, TINY_PROMPT_TEMPLATE.format(question=question)))
        t.add_action(encode_text(tokenizer, search_action(question)))
        out.append(t)
    return out


def _tail_mean(values: list[float], n: int = 10) -> float | None:
    return sum(values[-n:]) / len(values[-n:]) if values else None


def _retriever_identity(retriever_url: str) -> dict[str, Any]:
    """What of the retriever shapes the observations (backend and its parameters), not where it runs."""
    from search_env.retriever_client import RetrieverClient

    client = RetrieverClient(retriever_url)
    try:
        backend = dict(client.info().get("backend") or {})
    finally:
        client.close()
    if "index" in backend:
        backend["index"] = Path(str(backend["index"])).name  # content-hashed folder name, not the home
    return {k: v for k, v in backend.items() if k not in {"corpus", "threads", "java"}}


def build_embedded_policy(
    world: WorldPaths,
    retriever_url: str,
    out_dir: str | Path,
    *,
    sft_examples: int | None = None,
    sft_epochs: float = 5.0,
    sft_steps: int | None = None,
    sft_first_action_steps: int = 400,
    sft_lr: float = 3e-3,
    sft_batch_size: int = 8,
    sft_max_hops: int | None = None,
    sft_copy_drill: int = 0,
    sft_entity_swap: float = 0.0,
    sft_closed_book: float = 0.0,
    size: str = "tiny",
    vocab_size: int = 4096,
    entity_tokens: bool = True,
    topk: int = 3,
    max_len: int = 1024,
    seed: int = 0,
    pretrain: PretrainSettings | None = None,
    keyed: bool = False,
    progress: bool = True,
) -> Path:
    """Train the tokenizer, build the model, script the SFT data, warm-start, save into `out_dir`.

    `out_dir` is a cache: a complete policy there built with the same world, retriever and settings
    is reused as is; anything else there is replaced. With `keyed`, `out_dir` is a folder of such
    caches and the policy goes into ``out_dir/embedded-<world>-<seed>-<key>`` (the key hashes every
    setting), so policies of different settings live side by side and runs of several experiments
    never replace each other's. Load it with `AutoModelForCausalLM` /
    `AutoTokenizer.from_pretrained(out_dir)`.

    On the small world with BM25 top-1, entity tokens and 20,000 copy-drill examples, 300 first-action
    then 900 full steps at batch 8, lr 3e-3, reach greedy test EM 0.18 (0.00 untrained) in ~3 minutes
    on one CPU thread; with plain BPE, comparable SFT settings gave 0.02-0.07. configs/embedded.yaml
    draws half the full-stage examples as closed-book guesses (1,500 + 1,800 steps, ~6 minutes): test
    EM 0.05, as it mostly answers without searching, which is what its GRPO run has to unlearn.

    With `pretrain` (steps > 0) the model is first pretrained as a language model on the corpus
    (trainer.tiny_policy.pretrain), cached on its own beside `out_dir` (`pretrained_lm`), so warm
    starts of other SFT settings reuse it.
    """
    from trainer.tiny_policy.closed_book import ClosedBookGuesser
    from trainer.tiny_policy.entity_swap import EntitySwapper, world_entity_kinds
    from trainer.tiny_policy.model import build_tiny_model
    from trainer.tiny_policy.scripted_trajectories import scripted_trajectories
    from trainer.tiny_policy.tokenizer import train_tokenizer, world_entity_names

    out = Path(out_dir)
    settings = {
        "version": BUILD_VERSION, "world": world.fingerprint, "retriever": _retriever_identity(retriever_url),
        "sft_examples": sft_examples, "sft_epochs": sft_epochs, "sft_steps": sft_steps, "sft_lr": sft_lr,
        "sft_first_action_steps": sft_first_action_steps,
        "sft_batch_size": sft_batch_size, "sft_max_hops": sft_max_hops,
        "sft_copy_drill": sft_copy_drill, "sft_entity_swap": sft_entity_swap, "sft_closed_book": sft_closed_book,
        "size": size, "vocab_size": vocab_size,
        "entity_tokens": entity_tokens, "topk": topk,
        "max_len": max_len, "seed": seed,
    }
    pretraining = pretrain is not None and pretrain.steps > 0
    if pretraining:  # only then, so the keys of policies built without it stay what they were
        settings["pretrain"] = pretrain.as_dict()
    key = _settings_key(settings)
    if keyed:
        out = out / f"embedded-{world.fingerprint}-{seed}-{key}"
    meta_path = out / POLICY_META
    if meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8")).get("key") == key:
        return out
    started = time.monotonic()
    pretrain_report: dict[str, Any] | None = None
    if pretraining:
        assert pretrain is not None
        lm_dir = pretrained_lm(world, out.parent, pretrain, size=size, vocab_size=vocab_size,
                               entity_tokens=entity_tokens, max_len=max_len, seed=seed, progress=progress)
        tokenizer, model = _load_policy(lm_dir)
        pretrain_report = json.loads((lm_dir / POLICY_META).read_text(encoding="utf-8"))["pretrain"]
    else:
        tokenizer = train_tokenizer(world, vocab_size, entity_tokens)
        model = build_tiny_model(tokenizer, size, seed=seed, max_positions=max_len)
    transcripts, data_stats = scripted_trajectories(world, retriever_url, tokenizer, limit=sft_examples, topk=topk)
    if sft_max_hops is not None:  # a script of h hops has h searches and an answer: h + 1 turns
        transcripts = [t for t in transcripts if t.turns <= sft_max_hops + 1]
        data_stats["sft_kept_max_hops"] = len(transcripts)
    swapper = None
    if sft_entity_swap > 0:
        swapper = EntitySwapper.from_tokenizer(tokenizer, world_entity_kinds(world, world_entity_names(world)))
    guesser = None
    if sft_closed_book > 0:
        train_answers = [r.golden_answers[0] for r in load_qa(world.qa["train"]) if r.golden_answers]
        guesser = ClosedBookGuesser.from_answers(tokenizer, train_answers)
    report = warm_start(model, tokenizer, transcripts, epochs=sft_epochs, steps=sft_steps, lr=sft_lr,
                        batch_size=sft_batch_size, first_action_steps=sft_first_action_steps, max_len=max_len,
                        first_action_extra=copy_drill(world, tokenizer, sft_copy_drill, seed=seed),
                        entity_swap=sft_entity_swap, swapper=swapper, closed_book=sft_closed_book,
                        guesser=guesser, seed=seed, progress=progress)
    meta = {"key": key, "settings": settings, "data": data_stats,
            "sft": {k: v for k, v in report.items() if not k.endswith("losses")},
            "build_seconds": time.monotonic() - started}
    if pretrain_report is not None:
        meta["pretrain"] = pretrain_report
    _save_policy(out, model, tokenizer, meta)
    return out


@dataclass(frozen=True)
class PretrainSettings:
    """The corpus pretraining of the embedded policy (`trainer.tiny_policy.pretrain.pretrain_lm`'s
    arguments); `steps` 0 means none."""

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 16
    seq_len: int = 256

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _load_policy(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    return AutoTokenizer.from_pretrained(folder), model


def _save_policy(out: Path, model: Any, tokenizer: Any, meta: dict[str, Any]) -> None:
    """Written beside `out` and renamed into place: readers see no policy or a complete one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / POLICY_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def pretrained_lm(
    world: WorldPaths,
    cache: Path,
    settings: PretrainSettings,
    *,
    size: str,
    vocab_size: int,
    entity_tokens: bool,
    max_len: int,
    seed: int,
    progress: bool = True,
) -> Path:
    """The embedded model of `size` pretrained on `world`'s corpus by `settings`, with its tokenizer:
    built once into ``cache/pretrained-<world>-<key>`` (the key hashes every setting) and reused."""
    from trainer.tiny_policy.model import build_tiny_model
    from trainer.tiny_policy.pretrain import pretrain_lm
    from trainer.tiny_policy.tokenizer import train_tokenizer

    identity = {"version": BUILD_VERSION, "world": world.fingerprint, "size": size, "vocab_size": vocab_size,
                "entity_tokens": entity_tokens, "max_len": max_len, "seed": seed, **settings.as_dict()}
    key = _settings_key(identity)
    out = cache / f"pretrained-{world.fingerprint}-{key}"
    meta_path = out / POLICY_META
    if meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8")).get("key") == key:
        return out
    tokenizer = train_tokenizer(world, vocab_size, entity_tokens)
    model = build_tiny_model(tokenizer, size, seed=seed, max_positions=max_len)
    report = pretrain_lm(model, tokenizer, world, steps=settings.steps, lr=settings.lr,
                         batch_size=settings.batch_size, seq_len=min(settings.seq_len, max_len - 1), seed=seed,
                         progress=progress)
    meta = {"key": key, "settings": identity, "pretrain": {k: v for k, v in report.items() if k != "losses"}}
    _save_policy(out, model, tokenizer, meta)
    return out
