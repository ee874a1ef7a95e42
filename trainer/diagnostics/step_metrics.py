"""One RL step's metrics: a builder the training loop fills as the step runs, then `build()`s into a flat dict.

Keys are flat slash-separated strings, documented in `METRIC_KEYS` (the one table the README links).
A step has one rollout batch and one update round of several optimizer steps; the loss's per-optimizer-step
stats are averaged over the round (the grad norm also keeps its max: a spike inside the round matters), and
the LLDS activation rate of the first step is kept apart (the policy there is the rollout policy).
Undefined values (no correct response in the batch, say) are NaN; the JSONL log writes them as null.

Order in the loop, all optional:
    m = StepMetrics(step)
    m.rollout(rewards=..., group_ids=..., em=..., f1=..., valid_action=..., turns=..., searches=..., gen_tokens=...)
    m.likelihood(old_logp, gen_mask, rewards=..., advantages=...)       # rollout policy's log-probs
    m.sampler_gap(sampler_logp, old_logp, gen_mask)                     # the sampler's own against them
    for each optimizer step: m.optimizer_step(loss_stats, grad_norm=..., lr=...)
    m.displacement(old_logp, new_logp, gen_mask, rewards=..., group_ids=...)  # needs one extra forward pass
    m.timings(rollout_s=..., update_s=...)
    metrics = m.build()
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch

from trainer.diagnostics.likelihood import (
    correct_from_rewards,
    displacement_stats,
    likelihood_by_outcome,
    likelihood_displacement,
    span_displacement_stats,
)

# key -> description. "correct" = reward > 0 (configurable threshold); token means pool the generated
# tokens of the selected responses; "seq" means the mean over responses of the summed log-prob.
METRIC_KEYS: dict[str, str] = {
    "step": "RL step (one rollout batch + one update round)",
    # rollout
    "reward/mean": "mean reward over the rollout batch",
    "reward/std": "standard deviation of the rewards over the batch (population)",
    "reward/group_std_mean": "mean over groups (prompts) of the within-group reward std (unbiased, as GRPO uses)",
    "reward/zero_var_group_share": "share of groups whose rewards are all equal (advantage 0, no policy signal)",
    "reward/correct_share": "share of responses counted correct (reward > threshold)",
    "eval/em": "mean exact match of the final answers",
    "eval/f1": "mean token F1 of the final answers",
    "env/valid_action_rate": "mean share of well-formed actions (search or answer) per response",
    "env/turns_mean": "mean number of turns (actions) per response",
    "env/searches_mean": "mean number of search calls per response",
    "env/failed_searches": "searches of the step's rollouts the retriever refused or failed (info's search_error)",
    "env/failed_search_share": "failed searches / all searches of the step (NaN without searches)",
    "response/gen_tokens_mean": "mean generated tokens per response (tool observations excluded)",
    "response/gen_tokens_max": "max generated tokens of a response in the batch",
    # update round (averaged over its optimizer steps)
    "policy/entropy": "mean token entropy of the policy over generated tokens",
    "policy/entropy_uniform": "ln(vocabulary size): a uniform policy's entropy, nats/token (the monitor's ceiling)",
    "policy/clipfrac": "share of generated tokens where the PPO clip was active (under DPPO: dppo/masked_frac)",
    "policy/approx_kl": "approx KL(old||new), mean of old_logp - logp (verl's ppo_kl)",
    "policy/approx_kl_k3": "approx KL(old||new), k3 estimator mean of ratio - 1 - log ratio",
    "policy/ratio_mean": "mean importance ratio pi/pi_old over generated tokens",
    "policy/loss": "policy (PPO clip) loss",
    "kl/ref": "KL to the frozen reference model over generated tokens (the estimator the loss uses)",
    "llds/activation_rate": "share of preserving-set (A >= 0) actions (responses, tokens for those gates) whose "
    "LLDS gate fired: summed displacement above llds.gate_tol x their tokens",
    "llds/first_step_activation_rate": "llds/activation_rate on the round's first optimizer step, where the policy "
    "is the rollout policy: above 0 only if llds.gate_tol is below the log-prob recompute noise",
    "llds/magnitude": "mean hinge max(0, old_logp - logp) over the tokens where LLDS is active",
    "llds/loss": "LLDS regulariser value (before lambda unless the loss reports otherwise)",
    "sapo/activation_rate": "(loss.sapo) share of generated tokens where SAPO's conditional KL is on: "
    "positive-advantage tokens whose log-prob fell below the rollout policy's (recompute noise on the round's "
    "first optimizer step)",
    "sapo/kl_mean": "(loss.sapo) mean per-token KL to the rollout policy (loss.sapo_estimator) over those tokens",
    "sapo/num_active": "(loss.sapo) tokens where SAPO's KL is on, per optimizer step (round mean)",
    "sapo/loss": "(loss.sapo) SAPO's term in the loss, sapo_coef x the aggregated KL",
    "dppo/masked_frac": "(loss.policy_loss dppo_tv / dppo_kl) share of generated tokens outside DPPO's trust "
    "region, their gradient masked (verl's actor/pg_clipfrac); policy/clipfrac reports the same under DPPO",
    "dppo/truncated_frac": "(dppo_tv / dppo_kl) share of generated tokens kept whose ratio exceeds "
    "loss.dppo_clip_ratio_c, truncated (verl's actor/pg_clipfrac_lower)",
    "loss/total": "total loss optimised",
    "grad/norm": "gradient norm before clipping, mean over the round's finite optimizer steps",
    "grad/norm_max": "max pre-clip gradient norm over the round's finite optimizer steps",
    "grad/norm_policy": "(diagnostics.grad_norm_split) pre-clip norm of the gradient of the policy loss with its KL "
    "and entropy terms, mean over the round",
    "grad/norm_regularizer": "(diagnostics.grad_norm_split) pre-clip norm of the regulariser's gradient "
    "(lam * L_LLDS, plus SAPO's term under loss.sapo), mean over the round; 0 where it did not fire",
    "update/zero_advantage_minibatch_frac": "share of the round's optimizer steps whose mini-batch has all "
    "advantages 0 (every group of one reward): no policy gradient there",
    "grad/nonfinite_steps": "optimizer steps in the round whose gradient norm was inf or NaN",
    "optim/lr": "learning rate at the round's last optimizer step",
    "optim/steps": "optimizer steps in the round",
    # likelihood of the rollout batch under the rollout policy (authors' pos/neg_avg_old_log_prob family)
    "likelihood/correct_mean": "token-mean log-prob of correct responses (Fig. 2 curve)",
    "likelihood/incorrect_mean": "token-mean log-prob of incorrect responses (Fig. 9a)",
    "likelihood/correct_seq_mean": "mean summed log-prob ln pi(y|x) of correct responses",
    "likelihood/incorrect_seq_mean": "mean summed log-prob ln pi(y|x) of incorrect responses",
    "likelihood/adv_nonneg_mean": "token-mean log-prob of responses with advantage >= 0 (LLDS preserving set)",
    "likelihood/adv_neg_mean": "token-mean log-prob of responses with advantage < 0",
    "likelihood/adv_nonneg_seq_mean": "mean summed log-prob of responses with advantage >= 0",
    "likelihood/adv_neg_seq_mean": "mean summed log-prob of responses with advantage < 0",
    "likelihood/authors_pos_avg": "authors' pos_avg_old_log_prob: sum over A >= 0 tokens / all generated tokens",
    "likelihood/authors_neg_avg": "authors' neg_avg_old_log_prob: sum over A < 0 tokens / all generated tokens",
    # sampler vs trainer: the rollout's own log-probs against the training model's recomputed old_logp
    "rollout/logprob_gap_mean": "mean over generated tokens of sampler log-prob - trainer's old_logp (nats): "
    "recompute noise when both are the same policy at temperature 1 and top_p 1; top_p < 1 raises it (the sampler "
    "renormalises over the nucleus), a stale or different sampler moves it",
    "rollout/probs_diff_mean": "mean over generated tokens of |p_sampler - p_trainer| (verl's "
    "training/rollout_probs_diff_mean)",
    "rollout/probs_diff_max": "max over generated tokens of |p_sampler - p_trainer| (verl's "
    "training/rollout_probs_diff_max)",
    # displacement across the update round: same rollout batch, policy before vs after the round
    "likelihood/displacement_correct": "mean over correct responses of Δ = Σ_t (logp_after - logp_before)",
    "likelihood/displacement_incorrect": "mean over incorrect responses of Δ",
    "likelihood/displacement_correct_neg_share": "share of correct responses with Δ < 0 (Fig. 3a; > 0.5 is alarming)",
    "likelihood/delta_correct_answer_token_mean": "(diagnostics.displacement_by_span) mean per-token change of ln pi "
    "over correct responses' answer spans across the round",
    "likelihood/delta_correct_answer_fell_share": "(displacement_by_span) share of those answer tokens whose ln pi "
    "fell",
    "likelihood/delta_correct_other_token_mean": "(displacement_by_span) the same over their other generated tokens "
    "(searches, tags)",
    "likelihood/delta_correct_other_fell_share": "(displacement_by_span) share of those other tokens whose ln pi fell",
    "likelihood/displacement_question_neg_share": "share of questions whose mean Δ over correct responses is < 0",
    # the paper's one-step probe (trainer.diagnostics.update_probe), on steps where it runs
    "likelihood/probe_neg_share": "share of probed questions whose correct responses lost likelihood in one "
    "GRPO step on that question alone (Fig. 3a, Eq. 3)",
    "likelihood/probe_delta_mean": "mean over probed questions of Δ(x), the mean Σ_t Δ logp of its correct responses",
    "likelihood/probe_questions": "questions probed (groups with both correct and incorrect responses)",
    # timings
    "time/rollout_s": "wall seconds spent rolling out",
    "time/update_s": "wall seconds spent in the update round",
    "time/step_s": "rollout_s + update_s",
    "perf/rollout_tokens_per_s": "generated tokens per rollout second",
    "perf/tokens_per_s": "generated tokens per step second (rollout + update)",
    # collapse monitor (trainer.diagnostics.collapse_monitor)
    "monitor/phase": "CollapseMonitor's phase: warmup, healthy, stagnation, steady_decay, accelerated_collapse, "
    "collapsed",
    "monitor/phase_id": "numeric phase: -1 warmup, 0 healthy, 1 stagnation, 2 steady_decay, 3 accelerated_collapse, "
    "4 collapsed",
    "monitor/warning": "1 when the monitor warns (decay, acceleration, collapsed, displacement majority or drops, "
    "reward falling)",
    "monitor/likelihood_slope": "Theil-Sen slope per step of the correct-response likelihood over the long window",
    "monitor/reward_slope": "Theil-Sen slope per step of the reward over the monitor's long window",
    "monitor/grad_spike": "1 when grad norm > factor x running median and > z robust sds (log), or a norm was inf/NaN",
    "monitor/entropy_surge": "1 when entropy > running median + z x robust sd",
    "monitor/neg_displacement_majority": "1 when the recent mean share of correct responses with Δ < 0 is "
    "significantly > 0.5 (Fig. 3a)",
    "monitor/displacement_drop": "1 when correct responses lost likelihood in the update (Δ < 0, far below its "
    "running median) on 2+ of the last 10 steps",
    "monitor/incorrect_below_correct": "1 when incorrect-response likelihood is significantly below correct's, once "
    "above (Fig. 9a)",
    "monitor/reward_falling": "1 when the reward's trend is significantly (and practically) falling",
    "monitor/searches_failing": "1 when more than 10% of the step's searches failed or were refused",
}


def metric_table_markdown() -> str:
    """`METRIC_KEYS` as a Markdown table, for the README."""
    escaped = {key: text.replace("|", "\\|") for key, text in METRIC_KEYS.items()}  # "|" would split a cell
    rows = [f"| `{key}` | {text} |" for key, text in escaped.items()]
    return "\n".join(["| key | meaning |", "|---|---|", *rows])


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().double().mean()) if value.numel() else math.nan
    return float(value)


def _vector(values: Any) -> torch.Tensor:
    tensor = values.detach() if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    return tensor.double().reshape(-1)


def _mean(values: Any) -> float:
    tensor = _vector(values)
    return float(tensor.mean()) if tensor.numel() else math.nan


class StepMetrics:
    """Collects one RL step's metrics; every method returns self so calls can chain."""

    def __init__(self, step: int, *, correct_threshold: float = 0.0) -> None:
        self.step = step
        self.correct_threshold = correct_threshold
        self._values: dict[str, float] = {}
        self._round: defaultdict[str, list[float]] = defaultdict(list)
        self._grad_norms: list[float] = []
        self._nonfinite_grads = 0
        self._opt_steps = 0
        self._lr: float | None = None
        self._gen_tokens_total: float | None = None

    def set(self, key: str, value: Any) -> StepMetrics:
        """Any extra value, e.g. a key of `METRIC_KEYS` this builder has no method for."""
        self._values[key] = value if isinstance(value, str) else _scalar(value)
        return self

    def rollout(
        self,
        *,
        rewards: Any,
        group_ids: Any | None = None,
        em: Any | None = None,
        f1: Any | None = None,
        valid_action: Any | None = None,
        turns: Any | None = None,
        searches: Any | None = None,
        failed_searches: Any | None = None,
        gen_tokens: Any | None = None,
    ) -> StepMetrics:
        """Per-response (B,) values of the rollout batch; `group_ids` marks responses to the same prompt."""
        r = _vector(rewards)
        self._values["reward/mean"] = _mean(r)
        self._values["reward/std"] = float(r.std(correction=0)) if r.numel() else math.nan
        self._values["reward/correct_share"] = _mean((r > self.correct_threshold).double())
        if group_ids is not None:
            _, group = torch.unique(_vector(group_ids), return_inverse=True)
            stds, zero_var = [], []
            for g in range(int(group.max()) + 1 if r.numel() else 0):
                members = r[group == g]
                zero_var.append(float(bool((members == members[0]).all())))
                if members.numel() > 1:
                    stds.append(float(members.std()))
            self._values["reward/group_std_mean"] = _mean(stds)
            self._values["reward/zero_var_group_share"] = _mean(zero_var)
        for key, values in (
            ("eval/em", em),
            ("eval/f1", f1),
            ("env/valid_action_rate", valid_action),
            ("env/turns_mean", turns),
            ("env/searches_mean", searches),
            ("response/gen_tokens_mean", gen_tokens),
        ):
            if values is not None:
                self._values[key] = _mean(values)
        if failed_searches is not None:  # refused or failed by the retriever: the observation says so
            failed = float(_vector(failed_searches).sum())
            total = float(_vector(searches).sum()) if searches is not None else math.nan
            self._values["env/failed_searches"] = failed
            self._values["env/failed_search_share"] = failed / total if total > 0 else math.nan
        if gen_tokens is not None:
            lengths = _vector(gen_tokens)
            self._values["response/gen_tokens_max"] = float(lengths.max()) if lengths.numel() else math.nan
            self._gen_tokens_total = float(lengths.sum())
        return self

    def likelihood(
        self, logp: torch.Tensor, gen_mask: torch.Tensor, *, rewards: Any, advantages: torch.Tensor | None = None
    ) -> StepMetrics:
        """Likelihood of the rollout batch (normally the old/rollout policy's log-probs, computed anyway)."""
        correct = correct_from_rewards(_vector(rewards), self.correct_threshold).to(logp.device)
        self._values.update(likelihood_by_outcome(logp, gen_mask, correct=correct, advantages=advantages))
        if "response/gen_tokens_mean" not in self._values:
            lengths = gen_mask.bool().sum(-1).double()
            self._values["response/gen_tokens_mean"] = _mean(lengths)
            self._values["response/gen_tokens_max"] = float(lengths.max()) if lengths.numel() else math.nan
            self._gen_tokens_total = float(lengths.sum())
        return self

    def sampler_gap(self, sampler_logp: torch.Tensor, logp: torch.Tensor, gen_mask: torch.Tensor) -> StepMetrics:
        """The sampler/trainer log-prob gap over the generated tokens: `sampler_logp` (B, T) as the rollout
        backend returned them, `logp` (B, T) the training model's recomputed old_logp (verl logs the
        probability form as training/rollout_probs_diff_*)."""
        mask = gen_mask.bool()
        if not bool(mask.any()):
            return self
        sampler, trainer = sampler_logp.to(logp.device)[mask].double(), logp[mask].double()
        diff = (sampler.exp() - trainer.exp()).abs()
        self._values["rollout/logprob_gap_mean"] = float((sampler - trainer).mean())
        self._values["rollout/probs_diff_mean"] = float(diff.mean())
        self._values["rollout/probs_diff_max"] = float(diff.max())
        return self

    def displacement(
        self,
        logp_before: torch.Tensor,
        logp_after: torch.Tensor,
        gen_mask: torch.Tensor,
        *,
        rewards: Any,
        group_ids: torch.Tensor | None = None,
        answer_mask: torch.Tensor | None = None,
    ) -> StepMetrics:
        """Likelihood displacement of the rollout batch across this step's update round; with
        `answer_mask` (B, T), also split into answer-span and other tokens (`span_displacement_stats`)."""
        delta = likelihood_displacement(logp_before, logp_after, gen_mask)
        correct = correct_from_rewards(_vector(rewards), self.correct_threshold).to(delta.device)
        if group_ids is not None:
            group_ids = _vector(group_ids).to(delta.device)
        self._values.update(displacement_stats(delta, correct, group_ids=group_ids))
        if answer_mask is not None:
            self._values.update(span_displacement_stats(logp_before, logp_after, gen_mask, answer_mask, correct))
        return self

    def optimizer_step(
        self, stats: Mapping[str, Any] | None = None, *, grad_norm: Any | None = None, lr: float | None = None
    ) -> StepMetrics:
        """One optimizer step of the round: the loss's stats dict (any keys; averaged over the round),
        the gradient norm before clipping (clip_grad_norm_'s return value) and the learning rate."""
        self._opt_steps += 1
        if self._opt_steps == 1 and stats is not None and "llds/activation_rate" in stats:
            self._values["llds/first_step_activation_rate"] = _scalar(stats["llds/activation_rate"])
        for key, value in (stats or {}).items():
            if not isinstance(value, str):
                self._round[key].append(_scalar(value))
        if grad_norm is not None:
            norm = _scalar(grad_norm)
            if math.isfinite(norm):
                self._grad_norms.append(norm)
            else:
                self._nonfinite_grads += 1
        if lr is not None:
            self._lr = float(lr)
        return self

    def timings(self, *, rollout_s: float | None = None, update_s: float | None = None) -> StepMetrics:
        if rollout_s is not None:
            self._values["time/rollout_s"] = float(rollout_s)
        if update_s is not None:
            self._values["time/update_s"] = float(update_s)
        if rollout_s is not None and update_s is not None:
            self._values["time/step_s"] = float(rollout_s + update_s)
        tokens = self._gen_tokens_total
        if tokens is not None:
            if rollout_s:
                self._values["perf/rollout_tokens_per_s"] = tokens / rollout_s
            if rollout_s is not None and update_s is not None and rollout_s + update_s > 0:
                self._values["perf/tokens_per_s"] = tokens / (rollout_s + update_s)
        return self

    def build(self) -> dict[str, Any]:
        """The flat metrics dict: {"step": step, key: value, ...}."""
        out: dict[str, Any] = {"step": self.step}
        out.update(self._values)
        for key, values in self._round.items():
            out[key] = sum(values) / len(values)
        if self._opt_steps:
            out["optim/steps"] = float(self._opt_steps)
            out["grad/nonfinite_steps"] = float(self._nonfinite_grads)
        if self._grad_norms:
            out["grad/norm"] = sum(self._grad_norms) / len(self._grad_norms)
            out["grad/norm_max"] = max(self._grad_norms)
        if self._lr is not None:
            out["optim/lr"] = self._lr
        return out
