"""A byte-level BPE tokenizer trained on the embedded world, so the tiny policy needs no download.

Byte-level BPE round-trips any text exactly (every byte has a token, the decoder joins bytes back),
which the rollouts need: observations are tokenised once and decoded for logs and answer masks. The
protocol tags are added tokens (one id each, kept by decode) so a turn's stop tag is one sampled id.

The world's names are added tokens too (one id per entity, year or number). A model of a million
parameters trained for minutes never learns to copy a name spelled in five BPE pieces (measured: its
searches swap unseen names for memorised ones, and test EM stays ~0); with one id per name, putting
the question's subject into a search or a passage's fact into an answer is a single attention lookup.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from search_env.corpus import iter_corpus, split_contents
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
    for passage in iter_corpus(world.corpus):
        yield format_passages([passage.contents])
    with world.qa["train"].open(encoding="utf-8") as handle:
        for line in handle:
            question = json.loads(line)["question"]
            yield TINY_PROMPT_TEMPLATE.format(question=question)
            yield f"<search> {question} </search>"
    yield from (SEARCH_R1_TEMPLATE, INVALID_ACTION_MESSAGE, information_block(["\"Title\"\ntext"]))
    yield "<answer> Beijing </answer>"


_MULTI_WORD_NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)+\b")
_NUMBER = re.compile(r"\b\d{1,4}\b")
_LOWER_WORD = re.compile(r"\b[a-z]+\b")


def world_entity_names(world: WorldPaths) -> list[str]:
    """The names the corpus uses: every passage title, every multi-word capitalised name seen twice
    (rivers, landmarks, people mentioned without a page) and every number of up to four digits.

    A capitalised run whose first word also occurs in lower case ("In Kizea", "The city") is a
    sentence start, not a name, and is left to BPE. Sorted, so the token ids are deterministic.
    """
    titles: set[str] = set()
    runs: Counter[str] = Counter()
    lower: set[str] = set()
    numbers: set[str] = set()
    for passage in iter_corpus(world.corpus):
        title, text = split_contents(passage.contents)
        titles.add(title)
        runs.update(_MULTI_WORD_NAME.findall(text))
        lower.update(_LOWER_WORD.findall(text))
        numbers.update(_NUMBER.findall(text))
    names = {run for run, count in runs.items() if count >= 2 and run.split(" ", 1)[0].lower() not in lower}
    return sorted(titles | names | numbers)


def train_tokenizer(world: WorldPaths, vocab_size: int = 4096, entity_tokens: bool = True) -> PreTrainedTokenizerFast:
    """Train the tiny policy's tokenizer on `world` (deterministic for a given world and size), with
    one token per name of `world_entity_names` when `entity_tokens`."""
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
    if entity_tokens:
        # single_word: a name inside a longer word ("Kizeans") stays BPE; normalized=False: exact text.
        names = [AddedToken(name, single_word=True, normalized=False) for name in world_entity_names(world)]
        fast.add_tokens(names, special_tokens=False)
    return fast
