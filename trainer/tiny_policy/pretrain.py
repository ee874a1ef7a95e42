"""Language-model pretraining of the embedded policy on its world's corpus, before the SFT warm start.

The paper's policies are pretrained LMs fine-tuned slowly; a tiny policy trained from nothing knows
only its SFT scripts, so GRPO moves it by large, local steps (the toy collapse of the 2-layer run).
Pretraining on the passages as plain next-token prediction gives the model the passages' language
and representations shared across entities, as a real LM has, so RL starts from a smoother policy.

The data are the corpus passages as stored (wiki-18's ``"Title"\ntext``), each followed by the eos
token, concatenated and read as random windows of ``seq_len`` + 1 tokens (GPT-2's packing). A
seeded 5% of the passages is held out; the held-out next-token loss before and after is reported,
so a build shows whether the model learnt the language and did not merely memorise.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from search_env.corpus import iter_corpus
from search_env.world.store import WorldPaths

HELD_OUT_SHARE = 0.05


def warmup_cosine(steps: int, warmup: int, floor: float = 0.1) -> Any:
    """The learning-rate factor of step s: linear warm-up over `warmup` steps, then cosine to `floor`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return factor


def corpus_streams(world: WorldPaths, tokenizer: Any, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, held-out) token streams of the world's passages, each passage followed by eos.

    The held-out share (`HELD_OUT_SHARE` of the passages, at least one) is drawn by `seed`."""
    passages = [p.contents for p in iter_corpus(world.corpus)]
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(len(order) * HELD_OUT_SHARE))])
    train: list[int] = []
    held_out: list[int] = []
    eos = tokenizer.eos_token_id
    for i, text in enumerate(passages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        (held_out if i in held else train).extend([*ids, eos])
    return train, held_out


@torch.no_grad()
def lm_loss(model: Any, stream: list[int], seq_len: int, max_windows: int = 64) -> float:
    """Mean next-token loss over consecutive windows of `stream` (at most `max_windows` of them)."""
    model.eval()
    windows = [stream[i : i + seq_len + 1] for i in range(0, len(stream) - 1, seq_len)][:max_windows]
    windows = [w for w in windows if len(w) > 1]
    total, count = 0.0, 0
    for w in windows:
        ids = torch.tensor([w])
        logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits[0].float(), ids[0, 1:], reduction="sum")
        total, count = total + float(loss), count + ids.shape[1] - 1
    return total / max(1, count)


def pretrain_lm(
    model: Any,
    tokenizer: Any,
    world: WorldPaths,
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 16,
    seq_len: int = 256,
    warmup_steps: int = 20,
    weight_decay: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """`steps` AdamW steps (betas 0.9/0.95, warm-up then cosine to 10% of `lr`, gradient clip 1) of
    next-token prediction on `batch_size` random windows of `seq_len` tokens of the corpus; `model` is
    trained in place. Returns the losses, the held-out loss before, after and at every fifth of the
    steps (`held_out_curve`: (step, loss) pairs), tokens seen and seconds.

    Raises ValueError when the corpus is shorter than one window."""
    train, held_out = corpus_streams(world, tokenizer, seed)
    if len(train) <= seq_len + 1:
        raise ValueError(f"the corpus has {len(train)} training tokens: fewer than one window of {seq_len} + 1")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    started = time.monotonic()
    held_curve = [(0, lm_loss(model, held_out, seq_len))]
    checks = {max(1, steps * k // 5) for k in range(1, 6)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, min(warmup_steps, steps)))
    data = torch.tensor(train)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(steps), desc="pretraining on the corpus", disable=not progress, leave=False)
    for _ in bar:
        starts = torch.tensor([rng.randrange(len(train) - seq_len - 1) for _ in range(batch_size)])
        window = data[starts[:, None] + torch.arange(seq_len + 1)]
        logits = model(input_ids=window[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if len(losses) in checks:  # the held-out curve shows where memorising starts
            held_curve.append((len(losses), lm_loss(model, held_out, seq_len)))
            model.train()
    model.eval()
    return {
        "steps": steps,
        "train_tokens": len(train),
        "held_out_tokens": len(held_out),
        "tokens_seen": steps * batch_size * seq_len,
        "epochs": steps * batch_size * seq_len / len(train),
        "loss_first": losses[0] if losses else None,
        "loss_last": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
        "held_out_loss_before": held_curve[0][1],
        "held_out_loss_after": held_curve[-1][1],
        "held_out_curve": held_curve,
        "losses": losses,
        "seconds": time.monotonic() - started,
    }
