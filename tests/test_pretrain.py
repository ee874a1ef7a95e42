"""trainer.tiny_policy.pretrain: the embedded policy pretrained as a language model on its world's corpus,
and its cache (a real tokenizer and model on the small world; one torch thread)."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.tiny_policy.model import build_tiny_model
from trainer.tiny_policy.pretrain import HELD_OUT_SHARE, corpus_streams, lm_loss, pretrain_lm, warmup_cosine
from trainer.tiny_policy.tokenizer import train_tokenizer
from trainer.tiny_policy.warm_start import POLICY_META, PretrainSettings, pretrained_lm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(small_world):
    return train_tokenizer(small_world)


def test_streams_hold_every_passage_once_with_a_held_out_share(small_world, tokenizer):
    train, held = corpus_streams(small_world, tokenizer, seed=0)
    eos = tokenizer.eos_token_id
    passages = sum(1 for line in small_world.corpus.open() if line.strip())
    assert train.count(eos) + held.count(eos) == passages
    assert held.count(eos) == max(1, round(passages * HELD_OUT_SHARE))
    again = corpus_streams(small_world, tokenizer, seed=0)
    assert again == (train, held)  # the held-out draw is the seed's
    assert corpus_streams(small_world, tokenizer, seed=1)[1] != held


def test_pretraining_lowers_the_held_out_loss_and_is_deterministic(small_world, tokenizer):
    reports, weights = [], []
    for _ in range(2):
        model = build_tiny_model(tokenizer, "tiny", seed=0, max_positions=128)
        reports.append(pretrain_lm(model, tokenizer, small_world, steps=30, lr=3e-3, batch_size=4, seq_len=64,
                                   warmup_steps=3, progress=False))
        weights.append(model.model.embed_tokens.weight.detach().clone())
    report = reports[0]
    # From ~ln(vocab) (8.7 nats) at random weights; 30 steps of 256 tokens learn the common words.
    assert report["held_out_loss_before"] > 8.0
    assert report["held_out_loss_after"] < report["held_out_loss_before"] - 1.5
    assert [s for s, _ in report["held_out_curve"]] == [0, 6, 12, 18, 24, 30]
    assert report["tokens_seen"] == 30 * 4 * 64
    assert reports[0]["losses"] == reports[1]["losses"] and torch.equal(weights[0], weights[1])


def test_lm_loss_of_a_stream_is_the_mean_token_loss(tokenizer):
    model = build_tiny_model(tokenizer, "tiny", seed=0, max_positions=64).eval()
    stream = list(range(5, 5 + 40))
    with torch.no_grad():
        ids = torch.tensor([stream[:33]])
        expected = torch.nn.functional.cross_entropy(model(input_ids=ids[:, :-1]).logits[0], ids[0, 1:]).item()
    assert lm_loss(model, stream[:33], seq_len=32) == pytest.approx(expected, rel=1e-5)


def test_warmup_cosine_rises_then_decays_to_its_floor():
    factor = warmup_cosine(100, 10, floor=0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(99) == pytest.approx(0.1, abs=1e-3)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 99))


def test_pretrained_lm_is_cached_by_its_settings(small_world, tmp_path):
    settings = PretrainSettings(steps=3, lr=1e-3, batch_size=2, seq_len=32)
    common = dict(size="tiny", vocab_size=4096, entity_tokens=True, max_len=128, seed=0, progress=False)
    path = pretrained_lm(small_world, tmp_path, settings, **common)
    meta = json.loads((path / POLICY_META).read_text())
    assert meta["pretrain"]["steps"] == 3 and meta["settings"]["lr"] == 1e-3
    stamp = (path / POLICY_META).stat().st_mtime_ns
    assert pretrained_lm(small_world, tmp_path, settings, **common) == path
    assert (path / POLICY_META).stat().st_mtime_ns == stamp  # reused
    other = pretrained_lm(small_world, tmp_path, PretrainSettings(steps=4, batch_size=2, seq_len=32), **common)
    assert other != path and path.is_dir()  # another setting: its own folder, the first kept
