"""The GRPO(+LLDS) training loop: roll out groups through the Gym API, then several optimizer steps
on the batch with the clipped loss, KL to a frozen reference and LLDS, logging the diagnostics of
the death spiral every step.

One RL step = one rollout batch (`questions_per_step` x `group_size` episodes) + one update round of
`ppo_epochs` x ceil(questions_per_step / `ppo_mini_batch_size`) optimizer steps (verl's names; see
trainer.mini_batches). LLDS compares the current policy with the rollout policy of the same step, so
it can only fire from the round's second optimizer step on: the default round has ten, as the
authors' run (512 prompts x 5 episodes in mini-batches of 256 episodes).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from search_env.env_data import load_env_records
from search_env.evaluation.benchmark import run_benchmark
from search_env.evaluation.datasets import EvalSet, parse_data_specs
from search_env.evaluation.results import SetMetrics, summary_path
from search_env.home import searchgym_home
from search_env.protocol import SEARCH_R1_TEMPLATE
from search_env.remote_vector_env import RemoteSearchVectorEnv
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import SearchQAEnv
from trainer.checkpoint import (
    check_compatible,
    find_checkpoint,
    load_trainer_state,
    python_random_from_json,
    python_random_to_json,
    save_checkpoint,
    set_rng_state,
)
from trainer.config import TrainConfig
from trainer.diagnostics import CollapseMonitor, MetricsLogger, MonitorConfig, StepMetrics, plot_metrics, read_metrics
from trainer.diagnostics.metrics_log import REPLACED_FILE
from trainer.diagnostics.update_probe import mixed_groups, probe_questions
from trainer.evaluation import EnginePlayer
from trainer.losses import LossOptions, answer_weight_schedule, group_advantages
from trainer.mini_batches import accumulate_mini_batch, mini_batch_rows
from trainer.policy_loading import (
    build_embedded,
    check_policy_source,
    check_tokenizer,
    load_model,
    load_tokenizer,
    resolve_device,
)
from trainer.preflight import check_env_reachable
from trainer.rollout.batch import RolloutBatch, token_logprobs
from trainer.rollout.engine import EnvSource, RolloutEngine
from trainer.rollout.hf_generator import HFGenerator
from trainer.tiny_policy.prompt import TINY_PROMPT_TEMPLATE

log = logging.getLogger("trainer")

# The loss's stat names -> the diagnostics' metric keys (trainer.diagnostics.METRIC_KEYS).
_STAT_KEYS = {
    "llds/mean_penalty": "llds/magnitude",
    "entropy/mean": "policy/entropy",
    "kl/loss": "kl/ref",
    "grad_norm/policy": "grad/norm_policy",
    "grad_norm/regularizer": "grad/norm_regularizer",
}


def method_name(cfg: TrainConfig) -> str:
    """The trained objective in a few letters: GRPO, DPPO-TV or DPPO-KL, then +LLDS and +SAPO where on."""
    name = {"grpo": "GRPO", "dppo_tv": "DPPO-TV", "dppo_kl": "DPPO-KL"}[cfg.loss.policy_loss]
    return name + ("+LLDS" if cfg.llds.enabled else "") + ("+SAPO" if cfg.loss.sapo else "")


def prompt_template(name: str) -> str:
    return {"search-r1": SEARCH_R1_TEMPLATE, "tiny": TINY_PROMPT_TEMPLATE}.get(name, name)


@dataclass
class TrainResult:
    """What `GRPOTrainer.train` returns: the run folder (metrics.jsonl, checkpoints/, eval/, summary.json),
    the RL steps run, the greedy held-out metrics before and after training (one `SetMetrics` per data
    set: the whole split, its single-hop and its multi-hop questions for a world; empty when
    run.eval_before_after is off), and the diagnostics plot."""

    run_dir: Path
    steps: int
    before: list[SetMetrics]
    after: list[SetMetrics]
    plot: Path | None


class GRPOTrainer:
    """GRPO(+LLDS) on `config` (a `TrainConfig`): `train()` runs the whole loop and returns a `TrainResult`,
    `evaluate(tag)` a greedy held-out evaluation. Construction only sets up accelerate; the checks that
    can fail fast (policy source, env reachable, checkpoint), the world, the policy and the optimizer come
    with `setup()`, which `train()` and `evaluate()` call when needed. Raises `EnvUnreachable`,
    `PolicyError`, `CheckpointMismatch` or `CheckpointUnreadable` (one-line messages) from `setup()`."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.run_dir = Path(config.run.out_dir)
        self.accelerator = Accelerator(
            mixed_precision={"bfloat16": "bf16", "float16": "fp16"}.get(config.model.dtype, "no"),
            cpu=resolve_device(config.model.device).type == "cpu",
        )
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.ready = False
        self.remote_envs: RemoteSearchVectorEnv | None = None
        # One client for every in-process env: the engine batches a round's searches by client, so
        # envs with a client each would cost one /retrieve request per episode per round.
        self.retriever: RetrieverClient | None = None

    # -- setup ------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Everything that can fail fast is checked here, before any model is loaded or trained."""
        cfg = self.config
        check_policy_source(cfg.model, cfg.rollout.max_total_tokens)  # local and instant: first
        check_env_reachable(cfg.env, retriever_too=cfg.model.name_or_path == "embedded")
        self.resume_from = None
        resume_state = None
        if cfg.run.resume:
            self.resume_from = find_checkpoint(cfg.run.resume)
            check_compatible(self.resume_from, cfg)
            resume_state = load_trainer_state(self.resume_from)  # an unsafe or malformed file fails here
        seed = cfg.run.seed + self.accelerator.process_index
        random.seed(seed)
        torch.manual_seed(seed)
        self.sampler = random.Random(seed)
        self.template = prompt_template(cfg.env.prompt_template)
        self.env_options = {
            "data_config": cfg.env.data_config,
            "topk": cfg.env.topk,
            "max_turns": cfg.env.max_turns,
            "prompt_template": self.template,
            "reward": cfg.env.reward,
            "format_score": cfg.env.format_score,
        }
        self.records = load_env_records(cfg.env.data, split=cfg.env.split, config=cfg.env.data_config)

        embedded_dir = None
        if cfg.model.name_or_path == "embedded":
            # One process builds (or finds) the cached policy; the others then find it complete.
            with self.accelerator.main_process_first():
                warm_seed = cfg.run.seed if cfg.model.embedded_seed is None else cfg.model.embedded_seed
                embedded_dir = build_embedded(cfg.env, cfg.model, warm_seed, searchgym_home())
        self.tokenizer = load_tokenizer(cfg.model, embedded_dir)
        check_tokenizer(self.tokenizer, cfg.model)
        source_cfg = cfg.model
        model = load_model(source_cfg, self.device, embedded_dir)
        self.reference = None
        if cfg.loss.kl_coef > 0 and cfg.model.lora is None:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        if self.resume_from is not None:
            model.load_state_dict(self._checkpoint_weights(model), strict=True)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
        )
        # Linear warm-up then constant, stepped once per optimizer step. verl's starts at lr 0 (s / W);
        # (s + 1) / W makes the first step count.
        warmup = cfg.lr_warmup_optimizer_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)))
        compares = [name for name, on in (("LLDS", cfg.llds.enabled), ("SAPO", cfg.loss.sapo)) if on]
        if cfg.loss.policy_loss != "grpo":
            compares.append("DPPO's trust region")
        if compares and cfg.optimizer_steps_per_round < 2:
            log.warning(
                "one optimizer step per round: %s compare(s) the policy with the rollout policy of the round, so "
                "it never acts; lower optim.ppo_mini_batch_size below rollout.questions_per_step",
                " and ".join(compares),
            )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.start_step = 0
        if self.resume_from is not None:
            assert resume_state is not None
            state = resume_state
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            self.sampler.setstate(python_random_from_json(state["extra"]["sampler"]))
            self.start_step = state["step"]
            log.info("resumed from %s at step %d", self.resume_from.path, self.start_step)

        # Rollouts are sampled by the model being trained (the config refuses rollout.backend 'openai').
        generator = HFGenerator(
            self.accelerator.unwrap_model(self.model), self.tokenizer, batch_size=cfg.rollout.generation_batch_size
        )
        self.engine = RolloutEngine(
            generator,
            self.tokenizer,
            group_size=cfg.rollout.group_size,
            max_new_tokens_per_turn=cfg.rollout.max_new_tokens,
            max_total_tokens=cfg.rollout.max_total_tokens,
            max_obs_tokens=cfg.rollout.max_obs_tokens,
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            pipeline_splits=cfg.rollout.pipeline_splits,
            overlap_env=cfg.rollout.overlap_env,
        )
        self.monitor = CollapseMonitor(MonitorConfig(window=cfg.diagnostics.monitor_window))
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
            self.logger = MetricsLogger(self.run_dir)
            if self.resume_from is not None:
                moved = self.logger.set_aside_after(self.start_step)
                if moved:
                    log.info(
                        "resume: %d records logged after step %d moved to %s", moved, self.start_step, REPLACED_FILE
                    )
                self.monitor.replay(r for r in read_metrics(self.run_dir) if r["step"] <= self.start_step)
        self.ready = True

    def _checkpoint_weights(self, model: Any) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        assert self.resume_from is not None
        files = sorted(self.resume_from.model_dir.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no weights in {self.resume_from.model_dir}")
        weights: dict[str, torch.Tensor] = {}
        for f in files:
            weights.update(load_file(f))
        if "lm_head.weight" not in weights and getattr(model.config, "tie_word_embeddings", False):
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        return weights

    def rollout_envs(self, n: int) -> EnvSource:
        """What a rollout of `n` episodes plays on: with an env server, the sessions of one
        RemoteSearchVectorEnv (each round of turns is one `/sessions/step` request; made again only if
        a rollout needs more sessions), else the in-process env factory `make_env`."""
        cfg = self.config.env
        if not cfg.env_url:
            return self.make_env
        if self.remote_envs is None or self.remote_envs.num_envs < n:
            if self.remote_envs is not None:
                self.remote_envs.close()
                self.remote_envs = None
            options = {k: v for k, v in self.env_options.items() if v is not None}
            # The env server's own retriever outages come back as 503s: waited out here too.
            self.remote_envs = RemoteSearchVectorEnv(
                n, server_url=cfg.env_url, data=cfg.data, split=cfg.split, outage_wait_s=cfg.outage_wait_s, **options
            )
        return self.remote_envs.envs

    def make_env(self) -> SearchQAEnv:
        cfg = self.config.env
        options = {k: v for k, v in self.env_options.items() if v is not None}
        if self.retriever is None:
            self.retriever = RetrieverClient(cfg.retriever_url, outage_wait_s=cfg.outage_wait_s)
        return SearchQAEnv(self.records, split=cfg.split, retriever=self.retriever, **options)

    # -- one RL step --------------------------------------------------------------------------------
    def _loss_options(self, mean_searches: float) -> LossOptions:
        cfg = self.config
        weight = cfg.llds.answer_weight
        if cfg.llds.answer_weight_schedule is not None:
            weight = answer_weight_schedule(mean_searches, form=cfg.llds.answer_weight_schedule)
        return LossOptions(
            clip_low=cfg.loss.clip_low,
            clip_high=cfg.loss.clip_high,
            aggregation=cfg.loss.aggregation,
            kl_coef=cfg.loss.kl_coef if (self.reference is not None or cfg.model.lora is not None) else 0.0,
            kl_estimator=cfg.loss.kl_estimator,
            entropy_coef=cfg.loss.entropy_coef,
            llds=cfg.llds.enabled,
            llds_lambda=cfg.llds.lam,
            llds_gate=cfg.llds.gate,
            llds_normalization=cfg.llds.normalization,
            llds_gate_tol=cfg.llds.gate_tol,
            answer_weight=weight,
            policy_loss=cfg.loss.policy_loss,
            dppo_delta_low=cfg.loss.dppo_delta_low,
            dppo_delta_high=cfg.loss.dppo_delta_high,
            dppo_clip_ratio_c=cfg.loss.dppo_clip_ratio_c,
            sapo=cfg.loss.sapo,
            sapo_coef=cfg.loss.sapo_coef,
            sapo_estimator=cfg.loss.sapo_estimator,
        )

    @torch.no_grad()
    def _logprobs(self, model: Any, batch: RolloutBatch) -> torch.Tensor:
        return token_logprobs(model, batch, self.config.optim.micro_batch_size)[0]

    def _reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor | None:
        if self.reference is not None:
            return self._logprobs(self.reference, batch)
        if self.config.model.lora is not None and self.config.loss.kl_coef > 0:
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                return self._logprobs(self.model, batch)
        return None

    def collect(self) -> tuple[list[Any], RolloutBatch, float]:
        """One rollout batch: (episodes, tensors on the device, seconds)."""
        cfg = self.config
        started = time.perf_counter()
        n = min(cfg.rollout.questions_per_step, len(self.records))
        envs = self.rollout_envs(n * cfg.rollout.group_size)
        episodes = self.engine.collect(envs, self.sampler.sample(range(len(self.records)), n))
        with_answer = cfg.llds.answer_weight != 1 or cfg.llds.answer_weight_schedule is not None
        with_answer = with_answer or cfg.diagnostics.displacement_by_span
        batch = RolloutBatch.from_episodes(episodes, self.tokenizer, with_answer_mask=with_answer).to(self.device)
        return episodes, batch, time.perf_counter() - started

    def update(self, batch: RolloutBatch, options: LossOptions, metrics: StepMetrics, step: int) -> None:
        """The update round on one rollout batch: `ppo_epochs` passes, one optimizer step per mini-batch of
        `ppo_mini_batch_size` questions."""
        cfg = self.config
        advantages = group_advantages(batch.rewards, batch.group_ids, scale_by_std=cfg.loss.scale_by_std)
        self.model.eval()
        old_logp = self._logprobs(self.model, batch)
        ref_logp = self._reference_logprobs(batch)
        metrics.likelihood(old_logp, batch.loss_mask, rewards=batch.rewards, advantages=advantages)
        metrics.sampler_gap(batch.sampler_logprobs, old_logp, batch.loss_mask)
        if cfg.diagnostics.probe_every and step % cfg.diagnostics.probe_every == 0:
            for key, value in self._probe(batch, old_logp, ref_logp, advantages, options).items():
                metrics.set(key, value)
        self.model.train()
        shuffle = torch.Generator().manual_seed(cfg.run.seed * 100_003 + step)
        zero_signal = mini_batches = 0
        for _ in range(cfg.optim.ppo_epochs):
            for rows in mini_batch_rows(batch.group_ids, cfg.optim.ppo_mini_batch_size, shuffle):
                # A mini-batch whose groups all have one reward has zero advantages: no policy gradient,
                # so whatever the step does comes from the KL, entropy and LLDS terms alone.
                zero_signal += int(not bool(advantages[rows.to(advantages.device)].any()))
                mini_batches += 1
                stats = self._optimizer_step(batch, rows, old_logp, ref_logp, advantages, options)
                metrics.optimizer_step(stats["loss"], grad_norm=stats["grad_norm"], lr=self.scheduler.get_last_lr()[0])
        metrics.set("update/zero_advantage_minibatch_frac", zero_signal / max(1, mini_batches))
        if cfg.diagnostics.displacement:
            self.model.eval()
            new_logp = self._logprobs(self.model, batch)
            metrics.displacement(
                old_logp,
                new_logp,
                batch.loss_mask,
                rewards=batch.rewards,
                group_ids=batch.group_ids,
                answer_mask=batch.answer_mask[:, : old_logp.shape[1]] if cfg.diagnostics.displacement_by_span else None,
            )

    def _probe(
        self,
        batch: RolloutBatch,
        old_logp: torch.Tensor,
        ref_logp: torch.Tensor | None,
        advantages: torch.Tensor,
        options: LossOptions,
    ) -> dict[str, float]:
        """The paper's one-step probe on this batch's mixed groups (trainer.diagnostics.update_probe)."""
        micro = self.config.optim.micro_batch_size

        def update(rows: torch.Tensor) -> None:
            self.model.train()
            self._optimizer_step(batch, rows, old_logp, ref_logp, advantages, options)

        @torch.no_grad()
        def logprobs_after(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.model.eval()
            sub = batch.select(rows)
            return token_logprobs(self.model, sub, micro)[0], sub.loss_mask

        groups = mixed_groups(batch.rewards, batch.group_ids, self.config.diagnostics.probe_questions)
        return probe_questions(
            self.accelerator.unwrap_model(self.model),
            self.optimizer,
            self.scheduler,
            groups,
            update=update,
            logprobs_after=logprobs_after,
            old_logp=old_logp,
            rewards=batch.rewards,
        )

    def rl_step(self, step: int) -> dict[str, Any]:
        metrics = StepMetrics(step)
        episodes, batch, rollout_s = self.collect()
        searches = [float(e.info.get("num_searches", e.searches)) for e in episodes]
        metrics.rollout(
            rewards=batch.rewards,
            group_ids=batch.group_ids,
            em=[float(e.info.get("em", 0.0)) for e in episodes],
            f1=[float(e.info.get("f1", 0.0)) for e in episodes],
            valid_action=[e.valid_actions / max(1, e.steps) for e in episodes],
            turns=[float(e.turns) for e in episodes],
            searches=searches,
            failed_searches=[float(sum(bool(i.get("search_error")) for i in e.step_infos)) for e in episodes],
            gen_tokens=[float(e.transcript.num_generated) for e in episodes],
        )
        options = self._loss_options(sum(searches) / len(searches))
        metrics.set("llds/answer_weight", options.answer_weight)
        started = time.perf_counter()
        self.update(batch, options, metrics, step)
        metrics.timings(rollout_s=rollout_s, update_s=time.perf_counter() - started)
        return metrics.build()

    def _optimizer_step(
        self,
        batch: RolloutBatch,
        rows: torch.Tensor,
        old_logp: torch.Tensor,
        ref_logp: torch.Tensor | None,
        advantages: torch.Tensor,
        options: LossOptions,
    ) -> dict[str, Any]:
        """One optimizer step over the mini-batch `rows`, accumulating gradients over micro-batches."""
        self.optimizer.zero_grad(set_to_none=True)
        stats = accumulate_mini_batch(
            self.model,
            batch,
            rows,
            old_logp=old_logp,
            advantages=advantages,
            options=options,
            micro_batch_size=self.config.optim.micro_batch_size,
            ref_logp=ref_logp,
            backward=self.accelerator.backward,
            # fp16's loss scaling would leave .grad scaled and the regulariser's gradient not: no split there.
            split_grad_norm=self.config.diagnostics.grad_norm_split and self.config.model.dtype != "float16",
        )
        sums = {_STAT_KEYS.get(key, key): value for key, value in stats.items()}
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        grad_norm = float(grad_norm)
        if math.isfinite(grad_norm):
            self.optimizer.step()
        else:
            log.warning("non-finite gradient norm (%s): optimizer step skipped", grad_norm)
        self.scheduler.step()
        return {"loss": sums, "grad_norm": grad_norm}

    # -- evaluation ---------------------------------------------------------------------------------
    def eval_sets(self) -> list[EvalSet]:
        cfg = self.config.env
        if cfg.data.startswith("world"):
            return parse_data_specs([cfg.data, f"{cfg.data}:single", f"{cfg.data}:multi"], cfg.eval_split)
        return [EvalSet(name=f"{cfg.data}", data=cfg.data, split=cfg.eval_split, config=cfg.data_config)]

    def _written_evaluation(self, tag: str) -> list[SetMetrics]:
        """The rows of `<run_dir>/eval/<tag>.summary.json` (what `evaluate(tag)` wrote), [] without it."""
        path = summary_path(self.run_dir / "eval" / f"{tag}.jsonl")  # where evaluate(tag) wrote them
        try:
            rows = json.loads(path.read_text())["results"]
            return [SetMetrics(**row) for row in rows]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def evaluate(self, tag: str = "eval") -> list[SetMetrics]:
        """Greedy evaluation on the held-out split (env.eval_split, run.eval_questions questions) through the
        benchmark harness, played by the rollout engine's generator with its budgets: the token stream
        training sees, at temperature 0. One `SetMetrics` per data set; the episodes are written to
        `<run_dir>/eval/<tag>.jsonl`."""
        cfg = self.config
        if not self.ready:
            self.setup()
        result = asyncio.run(
            run_benchmark(
                EnginePlayer.like(self.engine, name=tag),
                self.eval_sets(),
                retriever_url=cfg.env.retriever_url,
                env_url=cfg.env.env_url,
                max_turns=cfg.env.eval_max_turns or cfg.env.max_turns,
                topk=cfg.env.topk,
                concurrency=cfg.rollout.generation_batch_size,
                limit=cfg.run.eval_questions,
                seed=cfg.run.seed,
                out=self.run_dir / "eval" / f"{tag}.jsonl",
                progress=self.is_main,
                env_options={"prompt_template": self.template, "reward": cfg.env.reward},
            )
        )
        return result.metrics

    # -- the run ------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        cfg = self.config
        if not self.ready:
            self.setup()
        evaluate = self.is_main and cfg.run.eval_before_after
        before: list[SetMetrics] = []
        if evaluate and self.start_step == 0:
            before = self.evaluate("before")
        elif self.is_main and self.start_step > 0:  # resumed: the evaluation its first process made, as written
            before = self._written_evaluation("before")
        progress = tqdm(
            range(self.start_step, cfg.run.steps),
            desc=method_name(cfg),
            initial=self.start_step,
            total=cfg.run.steps,
            disable=not self.is_main,
        )
        for step in progress:
            metrics = self.rl_step(step + 1)
            # ln |V| in every record: the monitor, live or replaying the log, never calls a near-uniform
            # policy healthy
            metrics["policy/entropy_uniform"] = math.log(len(self.tokenizer))
            if self.is_main:
                status = self.monitor.update(metrics)
                metrics |= status.as_metrics()
                if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and step + 1 < cfg.run.steps:
                    for m in self.evaluate(f"step-{step + 1:06d}"):
                        metrics[f"heldout/{m.data_set}/em"] = m.em
                self.logger.log(metrics)
                progress.set_postfix(
                    reward=f"{metrics['reward/mean']:.2f}",
                    llds=f"{metrics.get('llds/activation_rate', 0.0):.2f}",
                    phase=metrics.get("monitor/phase", "-"),
                )
                if (step + 1) % cfg.run.checkpoint_every == 0 or step + 1 == cfg.run.steps:
                    save_checkpoint(
                        self.run_dir,
                        step + 1,
                        cfg,
                        self.accelerator.unwrap_model(self.model),
                        self.tokenizer,
                        self.optimizer,
                        self.scheduler,
                        extra={"sampler": python_random_to_json(self.sampler.getstate())},
                    )
        after = self.evaluate("after") if evaluate else []
        plot = None
        if self.is_main:
            self.logger.close()
            plot = plot_metrics(
                self.run_dir / "metrics.jsonl",
                self.run_dir / "diagnostics.png",
                title=f"{cfg.model.name_or_path}: {method_name(cfg)}",
            )
            summary = {
                "steps": cfg.run.steps,
                "before": [m.__dict__ for m in before],
                "after": [m.__dict__ for m in after],
                "plot": str(plot),
            }
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        self.engine.close()
        if self.retriever is not None:
            self.retriever.close()
            self.retriever = None
        if self.remote_envs is not None:
            self.remote_envs.close()
            self.remote_envs = None
        return TrainResult(self.run_dir, cfg.run.steps, before, after, plot)
