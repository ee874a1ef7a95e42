"""The embedded tiny policy: a world-trained tokenizer, a few-million-parameter Llama, scripted
search episodes through the real env, and the supervised warm start GRPO starts from."""

from trainer.tiny_policy.evaluate import evaluate_greedy
from trainer.tiny_policy.model import build_tiny_model, tiny_model_config
from trainer.tiny_policy.prompt import TINY_PROMPT_TEMPLATE
from trainer.tiny_policy.scripted_trajectories import scripted_actions, scripted_trajectories
from trainer.tiny_policy.tokenizer import train_tokenizer
from trainer.tiny_policy.warm_start import build_embedded_policy, warm_start

__all__ = [
    "TINY_PROMPT_TEMPLATE",
    "build_embedded_policy",
    "build_tiny_model",
    "evaluate_greedy",
    "scripted_actions",
    "scripted_trajectories",
    "tiny_model_config",
    "train_tokenizer",
    "warm_start",
]
