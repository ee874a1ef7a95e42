"""LLDS in verl: the loss verl's registry returns for loss_mode=llds is verl's vanilla loss + searchgym's
LLDS term (value and gradient), on random tensors in verl's layout; the recipe's config and tool build.

verl is installed by `make install` (verl==0.9.1 with --no-deps plus the `verl` extra); without it the
module is skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

core_algos = pytest.importorskip(
    "verl.trainer.ppo.core_algos", reason="verl is not installed (make install: verl==0.9.1 --no-deps + the verl extra)"
)

from verl.utils.config import omega_conf_to_dataclass  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402

from search_env.retriever_client import RetrieverClient  # noqa: E402
from trainer.integrations.verl import (  # noqa: E402
    LOSS_MODE,
    LLDSPolicyLossConfig,
    compute_policy_loss_llds,
    response_advantages,
)
from trainer.integrations.verl_search_tool import QUERY_SEPARATOR, SearchTool  # noqa: E402
from trainer.losses import llds_loss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "verl" / "config"
AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-12, "atol": 1e-12}}
ROW_ADV = [1.2, -0.7, 0.0, 0.5, -1.1, 0.9]  # GRPO-like: positive, negative and a tied (0) group


def verl_batch(seed: int, dtype: torch.dtype, length: int = 28) -> dict[str, torch.Tensor]:
    """A micro-batch as verl's ppo_loss hands it over: (B, L) bool response_mask whose 0-runs between
    turns are tool/observation tokens (then padding), token-level advantages = row advantage * mask
    (verl's compute_grpo_outcome_advantage), old_log_prob and a displaced log_prob leaf."""
    g = torch.Generator().manual_seed(seed)
    batch = len(ROW_ADV)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        pos = 0
        for _ in range(1 + b % 3):  # 1 to 3 model turns
            n = int(torch.randint(2, 6, (1,), generator=g))
            mask[b, pos : pos + n] = True
            pos += n + int(torch.randint(2, 5, (1,), generator=g))  # an observation block
            if pos >= length:
                break
    row_adv = torch.tensor(ROW_ADV, dtype=dtype)
    old = -(torch.rand(batch, length, generator=g, dtype=dtype) * 3 + 0.05)
    log_prob = (old + 0.3 * torch.randn(batch, length, generator=g, dtype=dtype)).requires_grad_()
    return {
        "old_log_prob": old,
        "log_prob": log_prob,
        "advantages": row_adv.unsqueeze(-1) * mask,
        "response_mask": mask,
        "row_adv": row_adv,
    }


def actor_config(loss_agg_mode: str = "token-mean", global_batch_info: dict | None = None, **llds) -> ActorConfig:
    cfg = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode=loss_agg_mode,
        policy_loss=LLDSPolicyLossConfig(loss_mode=LOSS_MODE, **llds),
    )
    cfg.global_batch_info.update(global_batch_info or {})
    return cfg


def registry_loss(batch: dict, cfg: ActorConfig) -> tuple[torch.Tensor, dict]:
    fn = core_algos.get_policy_loss_fn(cfg.policy_loss.loss_mode)
    return fn(
        old_log_prob=batch["old_log_prob"],
        log_prob=batch["log_prob"],
        advantages=batch["advantages"],
        response_mask=batch["response_mask"],
        loss_agg_mode=cfg.loss_agg_mode,
        config=cfg,
    )


def vanilla_loss(batch: dict, cfg: ActorConfig) -> torch.Tensor:
    loss, _ = core_algos.get_policy_loss_fn("vanilla")(
        old_log_prob=batch["old_log_prob"],
        log_prob=batch["log_prob"],
        advantages=batch["advantages"],
        response_mask=batch["response_mask"],
        loss_agg_mode=cfg.loss_agg_mode,
        config=cfg,
    )
    return loss


def grad(loss: torch.Tensor, batch: dict) -> torch.Tensor:
    return torch.autograd.grad(loss, batch["log_prob"], retain_graph=True)[0]


def test_llds_is_in_verls_registry():
    assert core_algos.get_policy_loss_fn("llds") is compute_policy_loss_llds


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("normalization", ["code", "paper"])
@pytest.mark.parametrize("gate", ["action", "response", "token"])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_registry_loss_is_vanilla_plus_llds_term(agg, gate, normalization, dtype):
    batch = verl_batch(seed=len(agg) * 7 + len(gate), dtype=dtype)
    cfg = actor_config(agg, llds_lambda=0.3, llds_gate=gate, llds_normalization=normalization)
    loss, metrics = registry_loss(batch, cfg)

    term, _ = llds_loss(
        batch["log_prob"],
        batch["old_log_prob"],
        batch["row_adv"],
        batch["response_mask"],
        lam=0.3,
        gate=gate,
        normalization=normalization,
        gate_tol=cfg.policy_loss.llds_gate_tol,
    )
    vanilla = vanilla_loss(batch, cfg)
    expected = vanilla + term
    torch.testing.assert_close(loss, expected, **TOL[dtype])
    torch.testing.assert_close(grad(loss, batch), grad(expected, batch), **TOL[dtype])
    # the term is really there: some unit fired and it moved the loss and its gradient
    assert metrics["actor/llds/num_fired"] > 0
    assert term.item() > 1e-4
    assert (grad(loss, batch) - grad(vanilla, batch)).abs().max() > 1e-4
    assert {"actor/pg_clipfrac", "actor/ppo_kl", "actor/llds/activation_rate"} <= metrics.keys()


def test_rollout_importance_weights_reach_the_vanilla_term_only():
    batch = verl_batch(seed=9, dtype=torch.float64)
    weights = torch.rand(batch["log_prob"].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cfg = actor_config()
    args = {k: batch[k] for k in ("old_log_prob", "log_prob", "advantages", "response_mask")}
    loss, _ = compute_policy_loss_llds(**args, loss_agg_mode=cfg.loss_agg_mode, config=cfg, rollout_is_weights=weights)
    vanilla, _ = core_algos.get_policy_loss_fn("vanilla")(
        **args, loss_agg_mode=cfg.loss_agg_mode, config=cfg, rollout_is_weights=weights
    )
    term, _ = llds_loss(
        batch["log_prob"],
        batch["old_log_prob"],
        batch["row_adv"],
        batch["response_mask"],
        lam=cfg.policy_loss.llds_lambda,
        gate_tol=cfg.policy_loss.llds_gate_tol,
    )
    torch.testing.assert_close(loss, vanilla + term, **TOL[torch.float64])
    torch.testing.assert_close(grad(loss, batch), grad(vanilla + term, batch), **TOL[torch.float64])
    assert not torch.allclose(vanilla, vanilla_loss(batch, cfg))  # the weights did change the vanilla term


def authors_llds_term(batch: dict, lam: float) -> torch.Tensor:
    """The authors' dp_actor.py computation, written out (LLDS-A, chunk sums > 0, masked_mean over
    the response mask): preserving tokens by the per-token advantage sign, chunks as runs of mask * pos."""
    mask = batch["response_mask"].to(batch["log_prob"].dtype)
    pos = (batch["advantages"] >= 0).to(mask.dtype)
    diff = batch["old_log_prob"] - batch["log_prob"]
    base = torch.clamp(diff, min=0)
    m = mask * pos
    previous = torch.nn.functional.pad(m[:, :-1], (1, 0))
    starts = (m == 1) & (previous == 0)
    chunk = torch.cumsum(starts.long(), dim=-1) * m.long()
    sums = torch.zeros(m.shape[0], int(chunk.max()) + 1, dtype=m.dtype).scatter_add(1, chunk, diff.detach() * m)
    fired = sums > 0
    fired[:, 0] = False
    token_fired = torch.gather(fired, 1, chunk) & (m > 0)
    return lam * (token_fired.to(m.dtype) * base * mask).sum() / mask.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_code_form_is_the_authors_computation(dtype):
    batch = verl_batch(seed=3, dtype=dtype)
    cfg = actor_config(llds_lambda=0.2, llds_gate_tol=0.0)
    loss, _ = registry_loss(batch, cfg)
    expected = vanilla_loss(batch, cfg) + authors_llds_term(batch, 0.2)
    torch.testing.assert_close(loss, expected, **TOL[dtype])
    torch.testing.assert_close(grad(loss, batch), grad(expected, batch), **TOL[dtype])


def gate_batch(turn_b_d: list[float]) -> dict[str, torch.Tensor]:
    """Row 0 (advantage +1): turn A at 0-2, an observation at 3-4, turn B at 5-7, padding. Row 1
    (advantage -1): one turn 0-5 whose likelihood fell. d = old_log_prob - log_prob per token."""
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, [0, 1, 2, 5, 6, 7]] = True
    mask[1, :6] = True
    d = torch.zeros(2, 10, dtype=torch.float64)
    d[0, :3] = torch.tensor([0.2, -0.5, 0.1], dtype=torch.float64)  # turn A rose overall (sum -0.2)
    d[0, 5:8] = torch.tensor(turn_b_d, dtype=torch.float64)
    d[1, :6] = 0.5
    old = torch.full((2, 10), -1.0, dtype=torch.float64)
    row_adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    return {
        "old_log_prob": old,
        "log_prob": (old - d).requires_grad_(),
        "advantages": row_adv.unsqueeze(-1) * mask,
        "response_mask": mask,
        "row_adv": row_adv,
    }


def test_gate_no_term_when_no_action_fell():
    # every action of the preserving row rose (summed); tokens fell inside turn A and all of row 1
    batch = gate_batch([-0.1, -0.1, -0.1])
    cfg = actor_config(llds_lambda=0.2)
    loss, metrics = registry_loss(batch, cfg)
    vanilla = vanilla_loss(batch, cfg)
    torch.testing.assert_close(loss, vanilla, rtol=0, atol=0)
    torch.testing.assert_close(grad(loss, batch), grad(vanilla, batch), rtol=0, atol=0)
    assert metrics["actor/llds/activation_rate"] == 0.0
    assert metrics["actor/llds/num_units"] == 2  # the two turns of row 0; row 1 is not preserving


def test_gate_fires_on_the_fallen_action_only():
    batch = gate_batch([0.3, -0.1, 0.2])  # turn B fell (sum 0.4); turn A still rose
    lam, tokens = 0.2, int(batch["response_mask"].sum())
    extra = {}
    for gate in ("action", "response"):
        cfg = actor_config(llds_lambda=lam, llds_gate=gate)
        loss, _ = registry_loss(batch, cfg)
        extra[gate] = grad(loss, batch) - grad(vanilla_loss(batch, cfg), batch)
    # d(lam * relu(d) / N)/d log_prob = -lam / N on each gated token whose own d > 0
    step = -lam / tokens
    expected = torch.zeros(2, 10, dtype=torch.float64)
    expected[0, [5, 7]] = step
    torch.testing.assert_close(extra["action"], expected, rtol=1e-12, atol=1e-15)
    # the observation run splits the actions: the response gate (row sum 0.2 > 0) also hits turn A
    expected[0, [0, 2]] = step
    torch.testing.assert_close(extra["response"], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("normalization", ["code", "paper"])
def test_micro_batches_and_ranks_add_up_to_the_mini_batch(normalization):
    """With verl's global_batch_info, micro-batch losses sum (and data-parallel ranks average) to the
    whole mini-batch's loss and gradient. Each half holds one negative response of three, so the
    paper form's per-micro-batch weighting is exact too."""
    batch = verl_batch(seed=11, dtype=torch.float64)
    tokens, rows = int(batch["response_mask"].sum()), batch["response_mask"].shape[0]
    whole = actor_config(llds_normalization=normalization)
    whole_loss, _ = registry_loss(batch, whole)
    whole_grad = grad(whole_loss, batch)
    halves = [slice(0, 3), slice(3, 6)]

    def part(rows_slice: slice) -> dict:
        leaf = batch["log_prob"].detach()[rows_slice].clone().requires_grad_()
        return {k: (leaf if k == "log_prob" else v[rows_slice]) for k, v in batch.items()}

    for dp_size in (1, 2):
        info = {"dp_size": dp_size, "batch_num_tokens": tokens, "global_batch_size": rows, "loss_scale_factor": None}
        cfg = actor_config(global_batch_info=info, llds_normalization=normalization)
        parts = [part(s) for s in halves]
        losses = [registry_loss(p, cfg)[0] for p in parts]
        # one rank holding both micro-batches sums them; two ranks (one each) are averaged by DDP/FSDP
        combined = sum(losses) if dp_size == 1 else sum(losses) / dp_size
        grads = torch.cat([grad(loss, p) for loss, p in zip(losses, parts, strict=True)])
        torch.testing.assert_close(combined, whole_loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads / (1 if dp_size == 1 else dp_size), whole_grad, rtol=1e-12, atol=1e-12)


def test_response_advantages_take_the_rows_scalar_and_refuse_mixed_signs():
    batch = verl_batch(seed=5, dtype=torch.float32)
    torch.testing.assert_close(response_advantages(batch["advantages"], batch["response_mask"]), batch["row_adv"])
    mixed = batch["advantages"].clone()
    first = int(batch["response_mask"][0].nonzero()[0])
    mixed[0, first] = -1.0  # row 0 is positive elsewhere: a token-level (GAE-like) advantage
    with pytest.raises(ValueError, match="both signs"):
        response_advantages(mixed, batch["response_mask"])


def test_bad_llds_option_fails_when_the_config_is_built():
    with pytest.raises(ValueError, match="llds_gate"):
        LLDSPolicyLossConfig(loss_mode=LOSS_MODE, llds_gate="chunk")
    with pytest.raises(ValueError, match="llds_lambda"):
        LLDSPolicyLossConfig(loss_mode=LOSS_MODE, llds_lambda=-0.1)


def test_recipe_config_builds_verls_actor_with_llds():
    """examples/verl's yaml composed on verl's ppo_trainer, checked by verl's validate_config (as
    main_ppo does, for the recipe's 8 GPUs) and instantiated as verl's workers do."""
    from hydra import compose, initialize_config_dir
    from verl.utils.config import validate_config

    overrides = [
        "actor_rollout_ref.actor.policy_loss.llds_lambda=0.3",
        "data.train_files=train.parquet",
        "data.val_files=test.parquet",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={RECIPE / 'search_tool_config.yaml'}",
    ]
    with initialize_config_dir(config_dir=str(RECIPE), version_base=None):
        cfg = compose(config_name="search_r1_llds", overrides=overrides)
    validate_config(cfg, use_reference_policy=True, use_critic=False)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, LLDSPolicyLossConfig)
    assert actor.policy_loss.loss_mode == LOSS_MODE and actor.policy_loss.llds_lambda == 0.3
    assert core_algos.get_policy_loss_fn(actor.policy_loss.loss_mode) is compute_policy_loss_llds
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.actor_rollout_ref.rollout.multi_turn.enable


def test_import_verl_alone_registers_llds_through_the_entry_point():
    if not any(ep.value == "trainer.integrations.verl" for ep in entry_points(group="verl.plugins")):
        pytest.skip("searchgym's verl.plugins entry point is not installed here (pip install -e . installs it)")
    code = "import verl.trainer.ppo.core_algos as c; print('llds' in c.POLICY_LOSS_REGISTRY)"
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_search_tool_from_the_recipe_config_against_a_real_retriever(bm25_server, tmp_path):
    from verl.tools.tool_registry import initialize_tools_from_config

    config = (RECIPE / "search_tool_config.yaml").read_text().replace("http://127.0.0.1:8000", bm25_server.url)
    path = tmp_path / "tools.yaml"
    path.write_text(config)
    [tool] = initialize_tools_from_config(str(path))
    assert isinstance(tool, SearchTool) and tool.name == "search"
    queries = ["Who founded the company?", "Which city is the capital?"]

    async def call(parameters: dict) -> tuple:
        instance, _ = await tool.create()
        try:
            return await tool.execute(instance, parameters)
        finally:
            await tool.release(instance)

    response, reward, metrics = asyncio.run(call({"query_list": queries}))
    with RetrieverClient(bm25_server.url) as client:
        expected = client.retrieve(queries, topk=3)
    blocks = response.text.split(QUERY_SEPARATOR)
    assert len(blocks) == 2 and reward == 0.0 and metrics["status"] == "success"
    assert metrics["total_results"] == sum(len(docs) for docs in expected) == 6
    for block, docs in zip(blocks, expected, strict=True):
        assert block.startswith("Doc 1(Title: ") and "Doc 3(Title: " in block
        assert docs[0].document.contents.partition("\n")[2] in block

    response, _, metrics = asyncio.run(call({"query_list": "not a list"}))
    assert metrics["status"] == "bad_arguments" and "query_list" in response.text
