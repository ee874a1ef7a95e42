"""Checkpoints that let a run continue exactly: weights, optimizer and scheduler, RNG states, step.

A checkpoint is written into a temporary folder and renamed into place, so a crash mid-write never
leaves a half checkpoint that resume would pick. Resuming checks that the checkpoint was made with
the same configuration (all but the run's length, paths and evaluation schedule) before any compute.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import TrainConfig

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another configuration."""


@dataclass
class Checkpoint:
    path: Path
    step: int

    @property
    def model_dir(self) -> Path:
        return self.path / "model"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Checkpoint:
    """Write checkpoint `step` under run_dir/checkpoints/ and keep only the newest `keep`."""
    root = run_dir / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "fingerprint": config.fingerprint(),
            "extra": extra or {},
        },
        tmp / STATE_FILE,
    )
    (tmp / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return Checkpoint(final, step)


def find_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint folder, or the newest one in a run directory."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        candidates = [path]
    else:
        candidates = sorted(p for p in (path / "checkpoints").glob("step-*") if (p / STATE_FILE).is_file())
    if not candidates:
        raise FileNotFoundError(f"no checkpoint at {path} (expected {STATE_FILE} or checkpoints/step-*)")
    chosen = candidates[-1]
    return Checkpoint(chosen, int(chosen.name.split("-")[-1]))


def check_compatible(checkpoint: Checkpoint, config: TrainConfig) -> None:
    """Raise CheckpointMismatch naming the sections that differ, before any weights are loaded."""
    saved = json.loads((checkpoint.path / CONFIG_FILE).read_text())
    saved_config = TrainConfig.model_validate(saved)
    if saved_config.fingerprint() == config.fingerprint():
        return
    ours = config.model_dump(mode="json")
    differ = []
    for section, values in saved.items():
        if section == "run":
            if values.get("seed") != ours["run"]["seed"]:
                differ.append(f"run.seed: {values.get('seed')} != {ours['run']['seed']}")
            continue
        for key, value in values.items():
            if ours.get(section, {}).get(key) != value:
                differ.append(f"{section}.{key}: checkpoint {value!r}, config {ours[section].get(key)!r}")
    raise CheckpointMismatch(f"checkpoint {checkpoint.path} was made with another config: " + "; ".join(differ))


def load_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    return torch.load(checkpoint.path / STATE_FILE, weights_only=False)
