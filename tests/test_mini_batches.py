"""trainer.mini_batches: verl-style mini-batches of whole groups, and one mini-batch's gradient accumulated
over micro-batches through the trainer's own code path (a tiny real Llama, no server): the loss and the
gradient must not depend on the micro-batch size."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainer.losses import DEFAULT_GATE_TOL, LossOptions, grpo_llds_loss
from trainer.mini_batches import accumulate_mini_batch, mini_batch_rows
from trainer.rollout.batch import RolloutBatch, token_logprobs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Only the loss terms named by each test: no KL (no reference), no entropy bonus, LLDS off unless asked.
PLAIN = LossOptions(kl_coef=0.0, entropy_coef=0.0, llds=False)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def make_batch(prompts: list[int], generated: list[int], group_ids: list[int]) -> RolloutBatch:
    """Rows of `prompts[i]` prompt tokens then `generated[i]` generated ones (one action), right-padded."""
    gen = torch.Generator().manual_seed(1)
    lengths = [p + g for p, g in zip(prompts, generated, strict=True)]
    b, width = len(lengths), max(lengths)
    ids = torch.zeros(b, width, dtype=torch.long)
    attention = torch.zeros(b, width, dtype=torch.long)
    loss_mask = torch.zeros(b, width, dtype=torch.bool)
    action_ids = torch.zeros(b, width, dtype=torch.long)
    for row, (p, n) in enumerate(zip(prompts, lengths, strict=True)):
        ids[row, :n] = torch.randint(1, 48, (n,), generator=gen)
        attention[row, :n] = 1
        loss_mask[row, p:n] = True
        action_ids[row, p:n] = 1
    return RolloutBatch(
        input_ids=ids,
        attention_mask=attention,
        loss_mask=loss_mask,
        action_ids=action_ids,
        answer_mask=torch.zeros(b, width, dtype=torch.bool),
        sampler_logprobs=torch.zeros(b, width),
        response_start=torch.tensor(prompts),
        rewards=torch.zeros(b),
        group_ids=torch.tensor(group_ids),
    )


def gradients(model: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def accumulate(model, batch, rows, micro, **kwargs) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    stats = accumulate_mini_batch(model, batch, rows, micro_batch_size=micro, **kwargs)
    return stats, gradients(model)


def one_pass(model, batch, rows, *, old_logp, advantages, options) -> tuple[float, dict[str, torch.Tensor]]:
    """The full mini-batch in one forward/backward, the loss normalised over itself (a lone call)."""
    model.zero_grad(set_to_none=True)
    sub = batch.select(rows)
    width = sub.input_ids.shape[1]
    logp, entropy = token_logprobs(model, sub, len(rows), with_entropy=True)
    loss, _ = grpo_llds_loss(
        logp,
        old_logp[rows, :width],
        advantages[rows],
        sub.loss_mask,
        action_ids=sub.action_ids,
        entropy=entropy,
        options=options,
    )
    loss.backward()
    return loss.item(), gradients(model)


def assert_same_gradients(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys() and expected
    for name, grad in expected.items():
        # float32 sums in another order: relative 1e-5 of the largest entry
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()) + 1e-9)


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_token_mean_does_not_change_with_the_micro_batch_size(model, micro):
    """The issue's example: rows of 1 token with loss 1 and of 3 tokens with loss 0 are 2 / 8 = 0.25 over
    the mini-batch; a token mean per micro-batch weighted by rows gave 0.5 with micro-batches 1 and 2."""
    batch = make_batch(prompts=[3, 2, 4, 3], generated=[1, 1, 3, 3], group_ids=[0, 0, 1, 1])
    rows = torch.arange(4)
    with torch.no_grad():
        old_logp = token_logprobs(model, batch, 4)[0]
    # ratio = 1, so each token's loss is -A: 1 on the 1-token rows, 0 on the 3-token rows
    advantages = torch.tensor([-1.0, -1.0, 0.0, 0.0])
    kwargs = {"old_logp": old_logp, "advantages": advantages, "options": PLAIN}
    stats, grads = accumulate(model, batch, rows, micro, **kwargs)
    value, expected = one_pass(model, batch, rows, **kwargs)
    assert value == pytest.approx(0.25, abs=1e-6)
    assert stats["policy/loss"] == pytest.approx(0.25, abs=1e-6) and stats["loss/total"] == pytest.approx(
        value, abs=1e-6
    )
    assert_same_gradients(grads, expected)


@pytest.mark.parametrize("micro", [1, 2, 3])
@pytest.mark.parametrize(
    "options",
    [
        LossOptions(kl_coef=0.0, entropy_coef=0.01, aggregation="seq-mean-token-mean", llds_normalization="code"),
        LossOptions(kl_coef=0.0, entropy_coef=0.01, aggregation="seq-mean-token-sum-norm", llds_normalization="paper"),
        LossOptions(kl_coef=0.0, entropy_coef=0.01, aggregation="token-mean", llds_gate="response"),
    ],
    ids=["seq-mean-token-mean+code", "seq-mean-token-sum-norm+paper", "token-mean+response-gate"],
)
def test_every_term_is_normalised_over_the_mini_batch(model, micro, options):
    """Policy, entropy and LLDS (both normalisations) on a displaced batch with rows of unequal length: the
    same value and gradient for every micro-batch size as one pass over the mini-batch."""
    batch = make_batch(prompts=[2, 5, 3, 4, 2, 3], generated=[6, 2, 4, 1, 5, 3], group_ids=[0, 0, 0, 1, 1, 1])
    rows = torch.tensor([4, 0, 2, 5, 1])  # a mini-batch in shuffled order, one row left out
    with torch.no_grad():
        logp = token_logprobs(model, batch, 6)[0]
    # old = new + d with d of both signs (some actions fell, some rose), so LLDS and the clip both act
    d = 0.3 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(2)) + 0.05
    old_logp = torch.where(batch.loss_mask, logp + d, logp)
    advantages = torch.tensor([0.8, -1.2, 0.0, 1.1, -0.4, 0.0])
    kwargs = {"old_logp": old_logp, "advantages": advantages, "options": options}
    stats, grads = accumulate(model, batch, rows, micro, **kwargs)
    value, expected = one_pass(model, batch, rows, **kwargs)
    assert stats["llds/num_fired"] > 0 and stats["llds/term"] > 0  # the LLDS path was exercised
    assert stats["loss/total"] == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert_same_gradients(grads, expected)


@pytest.mark.parametrize("gate", ["action", "response", "token"])
def test_identical_weights_and_other_micro_batching_fire_no_gate(model, gate):
    """The first optimizer step of a round: old_logp recomputed by the same weights with other padding and
    micro-batching differs by rounding alone; with the default gate tolerance nothing fires and the LLDS
    term and its gradient are zero."""
    batch = make_batch(
        prompts=[2, 7, 3, 5, 4, 2, 6, 3], generated=[9, 3, 6, 8, 2, 7, 4, 5], group_ids=[0] * 4 + [1] * 4
    )
    with torch.no_grad():
        old_logp = token_logprobs(model, batch, 8)[0]
        again = token_logprobs(model, batch, 1)[0]
    noise = (old_logp - again)[batch.loss_mask].abs().max().item()
    assert noise < DEFAULT_GATE_TOL / 10  # float32 rounding, well under the tolerance
    advantages = torch.tensor([0.5, 0.0, -0.5, 1.0, 0.0, 0.3, -0.2, 0.1])  # most rows preserving
    options = dataclasses.replace(PLAIN, llds=True, llds_gate=gate)
    rows = torch.tensor([6, 1, 3, 0, 7, 2, 5, 4])
    for micro in (1, 3):
        stats, grads = accumulate(model, batch, rows, micro, old_logp=old_logp, advantages=advantages, options=options)
        assert stats["llds/num_fired"] == 0 and stats["llds/activation_rate"] == 0.0 and stats["llds/term"] == 0.0
        _, without_llds = accumulate(model, batch, rows, micro, old_logp=old_logp, advantages=advantages, options=PLAIN)
        assert_same_gradients(grads, without_llds)


def test_a_real_displacement_still_fires_through_the_accumulation(model):
    batch = make_batch(prompts=[2, 3, 4, 2], generated=[4, 5, 3, 6], group_ids=[0, 0, 1, 1])
    with torch.no_grad():
        logp = token_logprobs(model, batch, 4)[0]
    old_logp = torch.where(batch.loss_mask, logp + 1e-4, logp)  # every token fell by 1e-4 nats: 10x the tolerance
    options = dataclasses.replace(PLAIN, llds=True)
    stats, _ = accumulate(
        model, batch, torch.arange(4), 2, old_logp=old_logp, advantages=torch.zeros(4), options=options
    )
    assert stats["llds/activation_rate"] == 1.0 and stats["llds/num_fired"] == 4
    assert stats["llds/term"] == pytest.approx(1e-4, rel=1e-2)  # "code": the mean fall over the tokens


def test_mini_batches_hold_whole_groups():
    group_ids = torch.tensor([7, 7, 3, 3, 9, 9, 1, 1, 5, 5])
    parts = mini_batch_rows(group_ids, 2, torch.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [4, 4, 2] == [2 * 2, 2 * 2, 2]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    for part in parts:
        groups = group_ids[part]
        assert all(int((group_ids == g).sum()) == int((groups == g).sum()) for g in groups.unique())
    with pytest.raises(ValueError, match="ppo_mini_batch_size"):
        mini_batch_rows(group_ids, 0, torch.Generator())


def _norm(grads: dict[str, torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])))


def test_split_gradient_norms_are_each_terms_own(model):
    """`split_grad_norm`: the regulariser's norm is the norm of the gradient of LLDS alone (the accumulated
    gradient with LLDS minus the one without), the policy's the norm of the gradient without LLDS, for any
    micro-batch size, and the accumulated gradient itself is unchanged by the split."""
    batch = make_batch(prompts=[2, 5, 3, 4, 2, 3], generated=[6, 2, 4, 1, 5, 3], group_ids=[0, 0, 0, 1, 1, 1])
    rows = torch.tensor([4, 0, 2, 5, 1])
    with torch.no_grad():
        logp = token_logprobs(model, batch, 6)[0]
    d = 0.3 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(2)) + 0.05
    old_logp = torch.where(batch.loss_mask, logp + d, logp)
    advantages = torch.tensor([0.8, -1.2, 0.0, 1.1, -0.4, 0.0])
    with_llds = dataclasses.replace(PLAIN, entropy_coef=0.01, llds=True, llds_lambda=0.7)
    without = dataclasses.replace(with_llds, llds=False)
    kwargs = {"old_logp": old_logp, "advantages": advantages}
    for micro in (1, 2, 5):
        stats, grads = accumulate(model, batch, rows, micro, options=with_llds, split_grad_norm=True, **kwargs)
        _, plain_grads = accumulate(model, batch, rows, micro, options=without, **kwargs)
        _, unsplit = accumulate(model, batch, rows, micro, options=with_llds, **kwargs)
        assert stats["llds/num_fired"] > 0
        assert_same_gradients(grads, unsplit)
        llds_only = {k: grads[k] - plain_grads[k] for k in grads}
        assert stats["grad_norm/policy"] == pytest.approx(_norm(plain_grads), rel=1e-4)
        assert stats["grad_norm/regularizer"] == pytest.approx(_norm(llds_only), rel=1e-3, abs=1e-7)
        assert stats["grad_norm/regularizer"] > 0


def test_split_gradient_norms_without_a_regulariser(model):
    """Plain GRPO (or LLDS not firing): the regulariser's norm is 0 and the policy's is the whole gradient's;
    zero advantages and no LLDS: both 0."""
    batch = make_batch(prompts=[2, 3, 4, 2], generated=[4, 5, 3, 6], group_ids=[0, 0, 1, 1])
    with torch.no_grad():
        old_logp = token_logprobs(model, batch, 4)[0]
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    stats, grads = accumulate(
        model, batch, torch.arange(4), 2, old_logp=old_logp, advantages=advantages, options=PLAIN, split_grad_norm=True
    )
    assert stats["grad_norm/regularizer"] == 0.0
    assert stats["grad_norm/policy"] == pytest.approx(_norm(grads), rel=1e-5) and stats["grad_norm/policy"] > 0
    stats, _ = accumulate(
        model, batch, torch.arange(4), 2, old_logp=old_logp, advantages=torch.zeros(4), options=PLAIN,
        split_grad_norm=True,
    )
    assert stats["grad_norm/policy"] == 0.0 and stats["grad_norm/regularizer"] == 0.0
