"""GRPO + LLDS (arXiv 2512.04220) for any Hugging Face causal LM against any `search_env` env.

The Python API (the README's "Python API" section runs it)::

    from trainer import GRPOTrainer, TrainConfig, load_config

    config = TrainConfig(env={"retriever_url": "http://127.0.0.1:8000"}, run={"steps": 10})
    # or: config = load_config("configs/embedded.yaml", ["run.steps=10"])
    trainer = GRPOTrainer(config)
    result = trainer.train()           # TrainResult: run_dir, steps, before / after metrics, plot
    metrics = trainer.evaluate("final")  # greedy held-out evaluation: one SetMetrics per data set

Names are imported on first use, so `import trainer` (and `search-trainer --help`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search_env.evaluation.results import SetMetrics
    from trainer.config import ConfigError, TrainConfig, load_config
    from trainer.grpo_trainer import GRPOTrainer, TrainResult

# public name -> the module that defines it
_EXPORTS = {
    "TrainConfig": "trainer.config",
    "load_config": "trainer.config",
    "ConfigError": "trainer.config",
    "GRPOTrainer": "trainer.grpo_trainer",
    "TrainResult": "trainer.grpo_trainer",
    "SetMetrics": "search_env.evaluation.results",
}

__all__ = ["ConfigError", "GRPOTrainer", "SetMetrics", "TrainConfig", "TrainResult", "load_config"]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
