"""The benchmark harness: policies, data sets, the runner and the results table.

    from search_env.evaluation import ScriptedPolicy, parse_data_specs, run_benchmark
    result = asyncio.run(run_benchmark(ScriptedPolicy(), parse_data_specs(["world:default"]),
                                       retriever_url="http://127.0.0.1:8000"))
    print(render_table(result.metrics))

`OpenAIPolicy` is imported from its module. Hugging Face models are played token by token by the
trainer (`trainer.evaluation.EnginePlayer`, an `EpisodePlayer`), through this same harness.
"""

from search_env.evaluation.benchmark import BenchmarkResult, run_benchmark
from search_env.evaluation.datasets import (
    FLASHRAG,
    SEARCH_R1_EVAL_SETS,
    EvalDataError,
    EvalSet,
    load_eval_records,
    parse_data_spec,
    parse_data_specs,
)
from search_env.evaluation.env_factory import EnvFactory, LocalEnvFactory, RemoteEnvFactory
from search_env.evaluation.policy import STOP_STRINGS, EpisodePlayer, Policy, close_policy
from search_env.evaluation.results import EpisodeResult, SetMetrics, aggregate, read_jsonl
from search_env.evaluation.runner import EpisodeError, evaluate, play_episode, select_indices
from search_env.evaluation.scripted import ScriptedPolicy
from search_env.evaluation.table import render_table
from search_env.evaluation.transcript import Transcript, Turn

__all__ = [
    "FLASHRAG",
    "SEARCH_R1_EVAL_SETS",
    "STOP_STRINGS",
    "BenchmarkResult",
    "EnvFactory",
    "EpisodePlayer",
    "EpisodeError",
    "EpisodeResult",
    "EvalDataError",
    "EvalSet",
    "LocalEnvFactory",
    "Policy",
    "RemoteEnvFactory",
    "ScriptedPolicy",
    "SetMetrics",
    "Transcript",
    "Turn",
    "aggregate",
    "close_policy",
    "evaluate",
    "load_eval_records",
    "parse_data_spec",
    "parse_data_specs",
    "play_episode",
    "read_jsonl",
    "render_table",
    "run_benchmark",
    "select_indices",
]
