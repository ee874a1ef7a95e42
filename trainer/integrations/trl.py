"""LLDS inside TRL: a `GRPOTrainer` whose loss is TRL's own plus searchgym's LLDS term, and a TRL
environment whose `search` tool asks searchgym's retriever.

    from trainer.integrations.trl import GRPOLLDSConfig, GRPOLLDSTrainer, SearchEnvironment, exact_match_reward

    args = GRPOLLDSConfig(num_iterations=2, llds_lambda=0.2, ...)        # any GRPOConfig field, plus llds_*
    trainer = GRPOLLDSTrainer(
        model="Qwen/Qwen2.5-3B-Instruct", args=args, reward_funcs=exact_match_reward,
        train_dataset=qa_prompt_dataset("nq_train.jsonl"),
        environment_factory=SearchEnvironment.factory("http://127.0.0.1:8000", topk=3),
    )

What TRL does unchanged: generation (transformers or vLLM), the multi-turn tool loop (it parses the
model's tool calls with the chat template's response parser, calls `SearchEnvironment.search`, appends
the result as a `tool` message and generates again), rewards, group advantages, and its clipped loss in
whichever ``loss_type`` is set. What this module adds, from TRL's own tensors in ``_compute_loss``:
``lam * L_LLDS`` (arXiv 2512.04220 Eq. 4-6; `trainer.losses.llds.llds_loss`) on

- ``per_token_logps``: the (B, T) completion log-probs TRL's ``_compute_loss`` computes with gradient
  (captured from its one call of ``_get_per_token_logps_and_entropies``, so no second forward pass);
- ``old_per_token_logps``: the (B, T) log-probs TRL computed under no_grad right after generation;
- ``advantages``: (B,), one per completion (the LLDS preserving set is the completions with A >= 0);
- the loss mask ``completion_mask * tool_mask``: TRL's ``tool_mask`` is 0 on the tool-response tokens
  it spliced into the completion, so the action spans (LLDS-A's gate units) are the contiguous runs of
  model-generated tokens between tool responses, the turns.

Why the step-count check: LLDS penalises the fall of a token's likelihood since the rollout, so it is
identically 0 unless the policy is updated between generating a batch and training on (part of) it.
In TRL a generation batch serves ``steps_per_generation * num_iterations`` micro-steps, of which
``gradient_accumulation_steps`` make one optimizer step; TRL computes ``old_per_token_logps`` only when
the former is not a multiple of the latter (or for vLLM importance sampling) and otherwise uses
``per_token_logps.detach()``, which makes the term 0. `GRPOLLDSConfig` therefore requires
``steps_per_generation * num_iterations > gradient_accumulation_steps`` (more than one optimizer step per
generation batch: TRL then always computes old log-probs), and `GRPOLLDSTrainer` raises if a training
batch arrives without them. The first optimizer step of a round compares the policy with itself up to
recompute noise, which ``llds_gate_tol`` keeps from firing the gate.

Normalisation follows the policy term's: with ``llds_normalization="code"`` (the authors' token mean)
and a ``loss_type`` that TRL normalises by the tokens of the whole accumulation window (``dapo``, TRL's
default, ``cispo``, ``vespo``), the LLDS sum is divided by that same count (TRL's ``num_items_in_batch``
rescaled to one optimizer step and process, as it does), so micro-batches add up to the window's token
mean as in verl and searchgym's own trainer. Otherwise (``grpo``, ``bnpo``, ``dr_grpo``, ``luspo``, or
``llds_normalization="paper"``) each micro-batch's term is normalised over itself and divided by
``current_gradient_accumulation_steps``, TRL's convention for those loss types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from search_env.env_search import search_queries
from search_env.protocol import TOOL_CALLING_TEMPLATE, format_passages, format_question, parse_action
from search_env.qa_data import QARecord
from search_env.retriever_client import RetrieverClient
from search_env.rewards import answer_metrics
from trainer.losses._checks import check_choice, check_nonnegative
from trainer.losses.llds import DEFAULT_GATE_TOL, GATES, NORMALIZATIONS, llds_loss

__all__ = [
    "GRPOLLDSConfig",
    "GRPOLLDSTrainer",
    "SearchEnvironment",
    "exact_match_reward",
    "qa_prompt_rows",
    "trl_llds_loss",
]


#: TRL loss types whose policy term is divided by the generated tokens of the accumulation window.
_WINDOW_TOKEN_LOSSES = ("dapo", "cispo", "vespo")


@dataclass
class GRPOLLDSConfig(GRPOConfig):
    """TRL's `GRPOConfig` plus the LLDS knobs (defaults: the authors' run, App. B.2.1).

    Raises ValueError when LLDS could not act: ``steps_per_generation * num_iterations`` must exceed
    ``gradient_accumulation_steps`` (see the module docstring), and for an unknown gate or
    normalisation or a negative lambda / tolerance.
    """

    llds_lambda: float = field(default=0.2, metadata={"help": "LLDS coefficient lambda (Eq. 6)."})
    llds_gate: str = field(default="action", metadata={"help": "LLDS gate: action | response | token."})
    llds_normalization: str = field(default="code", metadata={"help": "LLDS denominator: code | paper."})
    llds_gate_tol: float = field(
        default=DEFAULT_GATE_TOL, metadata={"help": "Gate tolerance, nats per generated token (recompute noise)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # fills steps_per_generation from the batch sizes
        check_nonnegative("llds_lambda", self.llds_lambda)
        check_choice("llds_gate", self.llds_gate, GATES)
        check_choice("llds_normalization", self.llds_normalization, NORMALIZATIONS)
        check_nonnegative("llds_gate_tol", self.llds_gate_tol)
        micro_steps = self.steps_per_generation * self.num_iterations
        if micro_steps <= self.gradient_accumulation_steps:
            raise ValueError(
                f"LLDS needs more than one optimizer step per generation batch: steps_per_generation "
                f"({self.steps_per_generation}) x num_iterations ({self.num_iterations}) = {micro_steps} must exceed "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}); otherwise the old and current "
                f"log-probs are the same policy's and the LLDS term is 0. Raise num_iterations (e.g. 2) or "
                f"steps_per_generation."
            )


def trl_llds_loss(
    per_token_logps: torch.Tensor,
    inputs: dict[str, Any],
    *,
    lam: float = 0.2,
    gate: str = "action",
    normalization: str = "code",
    gate_tol: float = DEFAULT_GATE_TOL,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``lam * L_LLDS`` of one TRL micro-batch, and its stats (`trainer.losses.llds.llds_loss`).

    ``per_token_logps`` (B, T) with gradient; ``inputs`` is the dict TRL's ``_compute_loss`` receives:
    ``old_per_token_logps`` (B, T), ``completion_mask`` (B, T), ``advantages`` (B,), and ``tool_mask``
    (B, T, 0 on tool-response tokens) in multi-turn runs. The loss mask is ``completion_mask * tool_mask``
    and the action spans are its contiguous runs; ``normalizer`` replaces this micro-batch's denominator.
    Raises ValueError without ``old_per_token_logps`` or
    with token-level (B, T) advantages (LLDS's preserving set is per completion).
    """
    old = inputs.get("old_per_token_logps")
    if old is None:
        raise ValueError(
            "TRL passed no old_per_token_logps: LLDS needs more than one optimizer step per generation batch "
            "(use GRPOLLDSConfig, which checks steps_per_generation * num_iterations > gradient_accumulation_steps)"
        )
    advantages = inputs["advantages"]
    if advantages.dim() != 1:
        raise ValueError(f"LLDS needs one advantage per completion (B,); got shape {tuple(advantages.shape)}")
    mask = inputs["completion_mask"]
    if inputs.get("tool_mask") is not None:
        mask = mask * inputs["tool_mask"]
    return llds_loss(
        per_token_logps,
        old,
        advantages,
        mask,
        lam=lam,
        gate=gate,
        normalization=normalization,
        gate_tol=gate_tol,
        normalizer=normalizer,
    )


class GRPOLLDSTrainer(GRPOTrainer):
    """TRL's `GRPOTrainer` with ``+ lam * L_LLDS`` added to its loss; takes every `GRPOTrainer` argument.

    ``args`` must be a `GRPOLLDSConfig` (TypeError otherwise). Logs, next to TRL's metrics,
    ``llds/loss``, ``llds/term``, ``llds/activation_rate``, ``llds/gated_token_frac`` and
    ``llds/mean_penalty`` (means over the logging interval's micro-batches and processes).
    """

    _LOGGED = ("llds/loss", "llds/term", "llds/activation_rate", "llds/gated_token_frac", "llds/mean_penalty")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, GRPOLLDSConfig):
            raise TypeError(f"GRPOLLDSTrainer needs args=GRPOLLDSConfig(...), got {type(config).__name__}")
        self._llds_capture = False
        self._llds_logps: torch.Tensor | None = None
        super().__init__(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._llds_capture:  # the call inside _compute_loss: the log-probs that carry the gradient
            self._llds_logps = out[0]
        return out

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        mode = "train" if self.model.training else "eval"
        if mode == "train" and inputs.get("old_per_token_logps") is None:
            raise RuntimeError(
                "a training batch without old_per_token_logps reached GRPOLLDSTrainer: LLDS would be 0 "
                "(steps_per_generation * num_iterations must exceed gradient_accumulation_steps)"
            )
        self._llds_capture, self._llds_logps = True, None
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._llds_capture = False
        logps, self._llds_logps = self._llds_logps, None
        if logps is None or inputs.get("old_per_token_logps") is None:
            return loss  # evaluation without old log-probs: LLDS is 0 there
        args = self.args
        normalizer, scale = None, self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if args.llds_normalization == "code" and self.loss_type in _WINDOW_TOKEN_LOSSES:
            # TRL's own normaliser for these loss types: the generated tokens of one optimizer step's window.
            normalizer = float(inputs["num_items_in_batch"].clamp(min=1.0)) / self.accelerator.num_processes
            if mode == "train":
                normalizer *= self.current_gradient_accumulation_steps / args.steps_per_generation
            scale = 1.0
        llds, stats = trl_llds_loss(
            logps,
            inputs,
            lam=args.llds_lambda,
            gate=args.llds_gate,
            normalization=args.llds_normalization,
            gate_tol=args.llds_gate_tol,
            normalizer=normalizer,
        )
        values = torch.tensor([stats[name] for name in self._LOGGED], device=loss.device)
        values = self.accelerator.gather(values.unsqueeze(0)).mean(dim=0).tolist()
        for name, value in zip(self._LOGGED, values, strict=True):
            self._metrics[mode][name].append(value)
        return loss + llds / scale


class SearchEnvironment:
    """A TRL environment (``environment_factory=``) whose one tool, `search`, asks searchgym's retriever.

    TRL makes one instance per rollout, calls ``reset(**row)`` with the data set row before generating,
    and exposes the public methods other than ``reset`` as tools (their signature and docstring become
    the tool's JSON schema). `search` runs `search_env.env_search.search_queries` (the queries fitted to
    the server's limits, failures turned into a message the policy reads, never an exception) and
    returns the passages in Search-R1's ``Doc i(Title: ...) text`` form. ``searches`` counts this
    rollout's calls (the paper's valid-search count for LLDS-MA's schedule).
    """

    def __init__(self, client: RetrieverClient, topk: int = 3):
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk={topk!r} must be an int >= 1")
        self._client = client
        self._topk = topk
        self.searches = 0

    @classmethod
    def factory(cls, url: str | Sequence[str], topk: int = 3, **client_options: Any) -> Callable[[], SearchEnvironment]:
        """An ``environment_factory`` for TRL: instances share one `RetrieverClient` of ``url`` (one
        retrieval server, or several replicas: a list or a comma-separated string)."""
        client = RetrieverClient(url, **client_options)
        return lambda: cls(client, topk)

    def reset(self, **row: Any) -> None:
        """Start a rollout; the prompt already holds the question, so nothing is appended to it."""
        self.searches = 0

    def search(self, query: str) -> str:
        """Search the knowledge base and return the top passages for the query.

        Args:
            query: What to look up, in a few keywords.
        """
        outcome = search_queries(self._client, [query], self._topk)[0]
        self.searches += 1
        if outcome.error is not None:
            return f"Search failed: {outcome.error}"
        return format_passages([scored.document.contents for scored in outcome.documents]).strip()


def _final_text(completion: Any) -> str:
    """The last assistant message's text of a conversational completion (or a plain-text completion)."""
    if isinstance(completion, str):
        return completion
    for message in reversed(completion):
        if message.get("role") == "assistant" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def exact_match_reward(completions: Sequence[Any], golden_answers: Sequence[Sequence[str]], **_: Any) -> list[float]:
    """TRL reward function: 1.0 when the final ``<answer>`` matches a golden answer exactly after
    Search-R1's normalisation (`search_env.rewards.answer_metrics`), else 0.0. ``golden_answers`` is the
    data set column of that name (TRL passes columns as keyword arguments)."""
    rewards = []
    for completion, golden in zip(completions, golden_answers, strict=True):
        action = parse_action(_final_text(completion))
        answer = action.content if action.kind == "answer" else None
        rewards.append(answer_metrics(answer, list(golden))["em"])
    return rewards


def qa_prompt_rows(records: Sequence[QARecord], template: str = TOOL_CALLING_TEMPLATE) -> list[dict[str, Any]]:
    """TRL conversational rows from QA records: ``prompt`` (one user message, the question in
    ``template``) and ``golden_answers`` (for `exact_match_reward`). Pass to ``Dataset.from_list``."""
    return [
        {
            "prompt": [{"role": "user", "content": format_question(r.question, template)}],
            "golden_answers": r.golden_answers,
        }
        for r in records
    ]
