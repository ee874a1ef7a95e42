"""Checkpoints that let a run continue exactly: weights, optimizer and scheduler, RNG states, step.

A checkpoint is written into a temporary folder and renamed into place, so a crash mid-write never
leaves a half checkpoint that resume would pick. Resuming checks that the checkpoint was made with
the same configuration (all but the run's length, paths and evaluation schedule) before any compute.

Nothing in a checkpoint is unpickled: the weights are safetensors, the optimizer and scheduler state and
torch's RNG states (tensors, numbers, lists and dicts) are read with `torch.load(weights_only=True)`, and
the rest (step, config fingerprint, Python's and numpy's RNG states, the question sampler) is JSON. A
checkpoint file that would run code when loaded is refused (CheckpointUnreadable), not executed.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search_env.safe_paths import UnsafeName, resolve_under
from trainer.config import WARMUP_KEYS, TrainConfig

STATE_FILE = "trainer_state.pt"  # tensors: optimizer, scheduler, torch RNG (weights_only)
STATE_JSON = "trainer_state.json"  # everything else
CONFIG_FILE = "train_config.json"
# A checkpoint folder's name gives its step; 12 digits bound it (and int() of a 5,000-digit name).
_STEP_NAME = re.compile(r"step-([0-9]{1,12})")
FORMAT = 2  # 1: one pickled trainer_state.pt (numpy arrays in it), refused since it needs full unpickling


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another configuration."""


class CheckpointUnreadable(ValueError):
    """The checkpoint's state cannot be loaded safely: it holds objects beyond tensors and plain data
    (a pickle that would run code, or a checkpoint of the old pickled format), or is malformed."""


@dataclass
class Checkpoint:
    path: Path
    step: int

    @property
    def model_dir(self) -> Path:
        return self.path / "model"


def python_random_to_json(state: tuple[Any, ...]) -> list[Any]:
    """`random.Random.getstate()` (version, 625 ints, gauss_next) as JSON-ready lists."""
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def python_random_from_json(data: list[Any]) -> tuple[Any, ...]:
    """The inverse of python_random_to_json: a state `random.Random.setstate` takes."""
    version, internal, gauss_next = data
    return (int(version), tuple(int(x) for x in internal), None if gauss_next is None else float(gauss_next))


def _numpy_rng_to_json(state: tuple[Any, ...]) -> list[Any]:
    name, keys, pos, has_gauss, cached = state  # the legacy MT19937 state of np.random
    return [str(name), np.asarray(keys, dtype=np.uint32).tolist(), int(pos), int(has_gauss), float(cached)]


def _numpy_rng_from_json(data: list[Any]) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = data
    return (str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached))


def rng_state() -> dict[str, Any]:
    """All RNG states: "python" and "numpy" as JSON-ready lists, "torch" (and "cuda") as ByteTensors."""
    state = {
        "python": python_random_to_json(random.getstate()),
        "numpy": _numpy_rng_to_json(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(python_random_from_json(state["python"]))
    np.random.set_state(_numpy_rng_from_json(state["numpy"]))
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
    """Write checkpoint `step` under run_dir/checkpoints/ and keep only the newest `keep`.

    `extra` must be JSON-serialisable (a Random's state: python_random_to_json). Raises TypeError if not.
    """
    root = run_dir / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    rng = rng_state()
    tensors = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch": rng.pop("torch")}
    if "cuda" in rng:
        tensors["cuda"] = rng.pop("cuda")
    torch.save(tensors, tmp / STATE_FILE)
    plain = {"format": FORMAT, "step": step, "fingerprint": config.fingerprint(), "rng": rng, "extra": extra or {}}
    (tmp / STATE_JSON).write_text(json.dumps(plain))
    (tmp / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    found, _ = _step_folders(root)
    # Only real step-<digits> folders inside `root` are pruned, oldest by number (step-1000000 sorts
    # after step-999999); a link or another name is never followed into and deleted.
    for old in found[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return Checkpoint(final, step)


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint folder name `step-<digits>` (1 to 12 digits), None for any other name."""
    match = _STEP_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _step_folders(root: Path) -> tuple[list[Checkpoint], list[UnsafeName]]:
    """The `step-<digits>` folders directly in `root` holding a state file, by step; and the refusals:
    a `step-<digits>` entry that resolves outside `root` (a symlink). Other names are no checkpoints."""
    found: list[Checkpoint] = []
    refused: list[UnsafeName] = []
    if not root.is_dir():
        return found, refused
    for entry in root.iterdir():
        step = checkpoint_step(entry.name)
        if step is None:
            continue
        try:
            resolve_under(root, entry.name, what="checkpoint folder", single=True)
        except UnsafeName as err:
            refused.append(err)
            continue
        if entry.is_dir() and not entry.is_symlink() and (entry / STATE_FILE).is_file():
            found.append(Checkpoint(entry, step))
    return sorted(found, key=lambda c: c.step), refused


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The checkpoints of a run directory (`checkpoints/step-<digits>` with a state file), oldest first.

    Raises CheckpointUnreadable naming the entry for a `step-<digits>` entry that points outside the
    checkpoints folder (nothing is read through it).
    """
    found, refused = _step_folders(Path(run_dir) / "checkpoints")
    if refused:
        raise CheckpointUnreadable(str(refused[0]))
    return found


def find_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint folder (named `step-<digits>`), or the newest one in a run directory.

    Raises FileNotFoundError when there is none, CheckpointUnreadable naming the folder for a checkpoint
    folder of another name or one that points outside its run's checkpoints folder.
    """
    path = Path(path)
    if (path / STATE_FILE).is_file():
        step = checkpoint_step(path.name)
        if step is None:
            raise CheckpointUnreadable(
                f"checkpoint folder {path.name!r} ({path}) refused: a checkpoint folder is named step-<digits> "
                "(1 to 12), which gives its step"
            )
        return Checkpoint(path, step)
    candidates = list_checkpoints(path)
    if not candidates:
        raise FileNotFoundError(f"no checkpoint at {path} (expected {STATE_FILE} or checkpoints/step-<digits>)")
    return candidates[-1]


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
            if section == "optim" and key in WARMUP_KEYS:
                continue
            if ours.get(section, {}).get(key) != value:
                differ.append(f"{section}.{key}: checkpoint {value!r}, config {ours[section].get(key)!r}")
    saved_warmup, our_warmup = saved_config.lr_warmup_optimizer_steps, config.lr_warmup_optimizer_steps
    if saved_warmup != our_warmup:
        differ.append(
            f"warm-up: checkpoint {saved_warmup} optimizer steps, config {our_warmup} (optim.lr_warmup_steps_ratio "
            "x run.steps, or optim.lr_warmup_steps; pin optim.lr_warmup_steps to change run.steps on resume)"
        )
    raise CheckpointMismatch(f"checkpoint {checkpoint.path} was made with another config: " + "; ".join(differ))


def load_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The state save_checkpoint wrote: step, optimizer, scheduler, rng, fingerprint, extra.

    Raises CheckpointUnreadable when a file holds anything but tensors and plain data (nothing in it is
    run), is of the old pickled format, or is malformed.
    """
    plain_path, tensor_path = checkpoint.path / STATE_JSON, checkpoint.path / STATE_FILE
    if not plain_path.is_file():
        raise CheckpointUnreadable(
            f"checkpoint {checkpoint.path} has no {STATE_JSON}: it is of the old pickled format, which is not "
            "loaded (unpickling can run code); start the run afresh"
        )
    try:
        # weights_only: only tensors and plain containers are rebuilt; any other global is refused unrun.
        tensors = torch.load(tensor_path, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the refused global in one of two phrasings (allowlistable or blocked module).
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointUnreadable(
            f"checkpoint {tensor_path} holds objects beyond tensors and plain data{what}: refused, nothing in it "
            "was run"
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise CheckpointUnreadable(f"checkpoint {tensor_path} cannot be read: {_first_line(err)}") from err
    try:
        plain = json.loads(plain_path.read_text())
        if plain.get("format") != FORMAT:
            raise ValueError(f"format {plain.get('format')!r}, not {FORMAT}")
        rng = dict(plain["rng"], torch=tensors["torch"])
        if "cuda" in tensors:
            rng["cuda"] = tensors["cuda"]
        return {
            "step": int(plain["step"]),
            "fingerprint": plain["fingerprint"],
            "optimizer": tensors["optimizer"],
            "scheduler": tensors["scheduler"],
            "rng": rng,
            "extra": plain.get("extra", {}),
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointUnreadable(f"checkpoint {checkpoint.path} is malformed: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
