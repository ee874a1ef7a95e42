"""LLDS in TRL (trainer/integrations/trl.py): the subclass's loss is TRL's own GRPO loss plus searchgym's
LLDS term on TRL's tensors, and two training steps run with search tool calls answered by a real
retriever on loopback."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

from search_env.qa_data import load_qa  # noqa: E402
from search_env.retriever_client import RetrieverClient  # noqa: E402
from trainer.integrations.trl import (  # noqa: E402
    GRPOLLDSConfig,
    GRPOLLDSTrainer,
    SearchEnvironment,
    exact_match_reward,
    qa_prompt_rows,
    trl_llds_loss,
)
from trainer.losses.llds import llds_loss  # noqa: E402
from trainer.tiny_policy.model import build_tiny_model  # noqa: E402
from trainer.tiny_policy.tool_calling import WARM_QUERY, tool_calling_tokenizer, warm_start_tool_call  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

LAM = 0.5


@pytest.fixture(scope="module")
def chat_tokenizer(small_world):
    return tool_calling_tokenizer(small_world)


def _config(tmp_path, **overrides) -> GRPOLLDSConfig:
    options = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "num_iterations": 2,  # two optimizer steps per generation batch: LLDS's old/current gap
        "max_completion_length": 192,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "seed": 0,
        "bf16": False,  # float32 on CPU: the value and gradient checks use float32 tolerances
        "beta": 0.0,
        "llds_lambda": LAM,
    }
    return GRPOLLDSConfig(**(options | overrides))


def test_config_refuses_one_optimizer_step_per_generation(tmp_path):
    with pytest.raises(ValueError, match="more than one optimizer step per generation batch"):
        _config(tmp_path, num_iterations=1)
    with pytest.raises(ValueError, match="llds_gate"):
        _config(tmp_path, llds_gate="sentence")
    assert _config(tmp_path, num_iterations=1, steps_per_generation=2).steps_per_generation == 2


# ---- (a) the loss on TRL-shaped tensors -------------------------------------------------------------


@pytest.fixture(scope="module")
def loss_trainer(chat_tokenizer, small_world, tmp_path_factory):
    model = build_tiny_model(chat_tokenizer, size="tiny", seed=1, max_positions=512)
    rows = qa_prompt_rows(load_qa(small_world.qa["train"], limit=1))
    trainer = GRPOLLDSTrainer(
        model=model,
        args=_config(tmp_path_factory.mktemp("trl-loss")),
        reward_funcs=exact_match_reward,
        train_dataset=Dataset.from_list(rows),
        processing_class=chat_tokenizer,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _inputs(trainer, old_shift: float, tool_shift: float = 0.0) -> dict:
    """A TRL micro-batch: 4 completions of 12 tokens, the middle 4 of rows 0-1 a tool response, row 3
    padded after 9 tokens, advantages of both signs; old log-probs = current + old_shift (+ tool_shift
    on the tool-response tokens)."""
    g = torch.Generator().manual_seed(0)
    vocab = trainer.model.config.vocab_size
    prompt_ids = torch.randint(10, vocab, (4, 6), generator=g)
    completion_ids = torch.randint(10, vocab, (4, 12), generator=g)
    completion_mask = torch.ones(4, 12, dtype=torch.long)
    completion_mask[3, 9:] = 0
    tool_mask = torch.ones(4, 12, dtype=torch.long)
    tool_mask[:2, 4:8] = 0
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "tool_mask": tool_mask,
        "advantages": torch.tensor([1.0, 0.5, -1.0, 0.0]),
        # TRL's count of the generation batch's generated tokens, larger than this micro-batch's 37: the
        # dapo policy term and the LLDS term are both divided by it.
        "num_items_in_batch": torch.tensor(50),
    }
    with torch.no_grad():
        logps = _logps(trainer, inputs)
    inputs["old_per_token_logps"] = logps + old_shift + tool_shift * (1 - tool_mask)
    return inputs


def _logps(trainer, inputs) -> torch.Tensor:
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    return trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, ids.shape[1] - 6)[0]


def _grads(loss: torch.Tensor, model) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True))


@pytest.mark.parametrize(("loss_type", "normalizer"), [("dapo", 50.0), ("grpo", None)])
def test_loss_is_trls_grpo_loss_plus_llds(loss_trainer, monkeypatch, loss_type, normalizer):
    """dapo (TRL's default) divides both terms by the window's tokens; grpo keeps per-micro-batch means."""
    trainer, model = loss_trainer, loss_trainer.model
    monkeypatch.setattr(trainer, "loss_type", loss_type)
    inputs = _inputs(trainer, old_shift=0.05)  # every token's likelihood fell by 0.05 nats
    got = trainer._compute_loss(model, inputs)
    trl_loss = GRPOTrainer._compute_loss(trainer, model, inputs)
    term, stats = llds_loss(
        _logps(trainer, inputs),
        inputs["old_per_token_logps"],
        inputs["advantages"],
        inputs["completion_mask"] * inputs["tool_mask"],
        lam=LAM,
        gate_tol=trainer.args.llds_gate_tol,
        normalizer=normalizer,  # one process, no accumulation
    )
    assert stats["llds/loss"] > 0
    expected = trl_loss + term
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(_grads(got, model), _grads(expected, model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert trainer._metrics["train"]["llds/loss"][-1] == pytest.approx(stats["llds/loss"], rel=1e-5)


def test_gate_stays_off_when_no_likelihood_fell(loss_trainer):
    trainer, model = loss_trainer, loss_trainer.model
    inputs = _inputs(trainer, old_shift=-0.05)  # every token's likelihood rose
    got = trainer._compute_loss(model, inputs)
    trl_loss = GRPOTrainer._compute_loss(trainer, model, inputs)
    torch.testing.assert_close(got, trl_loss, rtol=0, atol=0)
    for a, b in zip(_grads(got, model), _grads(trl_loss, model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert trainer._metrics["train"]["llds/activation_rate"][-1] == 0.0


def test_tool_response_tokens_are_outside_the_action_spans(loss_trainer):
    trainer, model = loss_trainer, loss_trainer.model
    plain = _inputs(trainer, old_shift=0.05)
    # A large fall on the tool-response tokens alone: it must neither add to the loss nor gate anything.
    tool_fell = _inputs(trainer, old_shift=0.05, tool_shift=5.0)
    torch.testing.assert_close(
        trainer._compute_loss(model, tool_fell), trainer._compute_loss(model, plain), rtol=0, atol=0
    )
    with torch.no_grad():
        _, stats = trl_llds_loss(_logps(trainer, plain), plain, lam=LAM)
    # Rows 0 and 1 are cut in two turns by their tool response; row 3 (A=0) is one turn; row 2 (A<0) is out.
    assert stats["llds/num_units"] == 5
    assert stats["llds/num_preserving_tokens"] == 8 + 8 + 9
    without_old = {k: v for k, v in plain.items() if k != "old_per_token_logps"}
    with pytest.raises(RuntimeError, match="old_per_token_logps"):
        trainer._compute_loss(model, without_old)


# ---- (b) two steps with search tool calls against a real retriever ---------------------------------


def test_two_steps_with_search_tool_calls_log_llds_and_update(chat_tokenizer, small_world, bm25_server, tmp_path):
    rows = qa_prompt_rows(load_qa(small_world.qa["train"], limit=1))
    model = build_tiny_model(chat_tokenizer, size="tiny", seed=0, max_positions=1024)
    factory = SearchEnvironment.factory(bm25_server.url, topk=1)
    warm_start_tool_call(model, chat_tokenizer, rows[0]["prompt"], factory().search)

    def searched_briefly(environments, completion_ids, **_):
        """1 for a rollout that searched, less a small length penalty, so the sampled rollouts of a group
        differ in reward (the warm-started policy nearly always searches) and advantages have both signs."""
        return [
            float(env.searches > 0) - len(ids) / 1000 for env, ids in zip(environments, completion_ids, strict=True)
        ]

    trainer = GRPOLLDSTrainer(
        model=model,
        args=_config(tmp_path, max_steps=2, max_tool_calling_iterations=1),
        reward_funcs=[exact_match_reward, searched_briefly],
        train_dataset=Dataset.from_list(rows * 4),
        processing_class=chat_tokenizer,
        environment_factory=factory,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "llds/loss" in entry]
    assert len(logs) == 2, trainer.state.log_history
    assert logs[0]["tools/call_frequency"] > 0  # the tool loop ran the search tool ...
    assert any(environment.searches for environment in trainer.environments)  # ... against the retriever
    # The first pass over the batch compares the policy with itself (recompute noise stays under the gate
    # tolerance); the second comes after an update, and spans whose likelihood fell are penalised.
    assert logs[0]["llds/loss"] == 0 and logs[0]["llds/activation_rate"] == 0
    assert logs[1]["llds/loss"] > 0 and 0 < logs[1]["llds/activation_rate"] <= 1
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with RetrieverClient(bm25_server.url) as client:  # the server is still answering after the run
        assert client.retrieve([WARM_QUERY], topk=1)
