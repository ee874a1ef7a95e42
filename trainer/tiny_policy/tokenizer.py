"""A byte-level BPE tokenizer trained on the embedded world, so the tiny policy needs no download.

Byte-level BPE round-trips any text exactly (every byte has a token, the decoder joins bytes back),
which the rollouts need: observations are tokenised once and decoded for logs and answer masks. The
protocol tags are added tokens (one id each, kept by decode) so a turn's stop tag is one sampled id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from search_env.protocol import INVALID_ACTION_MESSAGE, SEARCH_R1_TEMPLATE, format_passages, information_block
from search_env.world.store import WorldPaths
from trainer.tiny_policy.prompt import TINY_PROMPT_TEMPLATE

PAD_TOKEN, EOS_TOKEN = "<|pad|>", "<|eos|>"
PROTOCOL_TAGS = (
    "<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>", "<think>", "</think>",
)


def _world_texts(world: WorldPaths) -> Iterator[str]:
    """The texts the policy will read and write: passages as observations show them, train questions
    (never test: the tokenizer is part of the policy), and the protocol strings."""
    with world.corpus.open(encoding="utf-8") as handle:
        for line in handle:
            yield format_passages([json.loads(line)["contents"]])
    with world.qa["train"].open(encoding="utf-8") as handle:
        for line in handle:
            question = json.loads(line)["question"]
            yield TINY_PROMPT_TEMPLATE.format(question=question)
            yield f"<search> {question} </search>"
    yield from (SEARCH_R1_TEMPLATE, INVALID_ACTION_MESSAGE, information_block(["\"Title\"\ntext"]))
    yield "<answer> Beijing </answer>"


def train_tokenizer(world: WorldPaths, vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train the tiny policy's tokenizer on `world` (deterministic for a given world and size)."""
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: a prefix space would not survive decode, breaking the exact round trip.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Sorted input: the trainer's merges then do not depend on file order quirks.
    tokenizer.train_from_iterator(sorted(_world_texts(world)), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    # Not special: decode(skip_special_tokens=True) must keep the tags the env parses.
    fast.add_tokens(list(PROTOCOL_TAGS), special_tokens=False)
    return fast
