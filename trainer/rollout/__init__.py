"""The rollout engine of the GRPO trainer: generation backends, multi-turn episodes, loss tensors.

    generator = HFGenerator(model, tokenizer)            # OpenAIGenerator(url, model): vLLM, evaluation only
    engine = RolloutEngine(generator, tokenizer, group_size=5, max_new_tokens_per_turn=500)
    episodes = engine.collect(env_factory, question_indices)   # G episodes per question
    batch = RolloutBatch.from_episodes(episodes, tokenizer)
    logp, _ = token_logprobs(model, batch, micro_batch_size=8)
"""

from trainer.rollout.batch import RolloutBatch, token_logprobs
from trainer.rollout.engine import Episode, RolloutEngine
from trainer.rollout.generation import STOP_STRINGS, Generated, Generator, stop_cut
from trainer.rollout.hf_generator import HFGenerator
from trainer.rollout.openai_generator import OpenAIGenerator, OpenAIGeneratorError
from trainer.rollout.stats import RolloutStats

__all__ = [
    "STOP_STRINGS",
    "Episode",
    "Generated",
    "Generator",
    "HFGenerator",
    "OpenAIGenerator",
    "OpenAIGeneratorError",
    "RolloutBatch",
    "RolloutEngine",
    "RolloutStats",
    "stop_cut",
    "token_logprobs",
]
