"""Untrusted names never leave their folder (search_env.safe_paths): the checks themselves, a QA folder's
split names (load_qa, load_env_records) and a run's checkpoint folder names (listing, resuming, pruning).
The download's hub listing names are tested against a hostile hub in tests/test_hub_download.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from search_env.env_data import load_env_records
from search_env.qa_data import load_qa
from search_env.safe_paths import UnsafeName, name_parts, resolve_under
from trainer.checkpoint import (
    STATE_FILE,
    CheckpointUnreadable,
    checkpoint_step,
    find_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from trainer.config import load_config

HOSTILE = {
    "../x": "'..' path component",
    "a/./../../b": "'.' path component",
    "/etc/passwd": "absolute path",
    "C:x": "drive letter",
    "c:x": "drive letter",
    "..\\x": "backslash",
    "x\x00y": "NUL",
    "x\ny": "control character",
    "a//b": "empty path component",
    "a/": "empty path component",
    "": "empty name",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_names_are_refused_before_the_disk_is_touched(tmp_path: Path, name: str):
    root = tmp_path / "not-made-yet"
    with pytest.raises(UnsafeName) as refused:
        resolve_under(root, name, what="hub listing entry")
    message = str(refused.value)
    assert message.startswith(f"hub listing entry {name!r} refused: ") and HOSTILE[name] in message
    assert str(root) in message and "\n" not in message
    assert not root.exists()  # lexical checks: nothing was made


def test_a_symlink_out_of_the_root_is_refused_and_one_inside_it_is_followed(tmp_path: Path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "inner").mkdir(parents=True)
    outside.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "in").symlink_to(root / "inner", target_is_directory=True)
    (root / "self").symlink_to(root, target_is_directory=True)
    for name in ("out", "out/x.parquet", "self"):
        with pytest.raises(UnsafeName, match="outside the folder"):
            resolve_under(root, name)
    assert resolve_under(root, "in/x") == (root / "inner" / "x").resolve()
    assert resolve_under(root, "bm25/_0.cfs") == root.resolve() / "bm25" / "_0.cfs"
    assert resolve_under(root, "a..b/..c") == root.resolve() / "a..b" / "..c"  # dots inside a name are a name


def test_a_single_name_has_no_separator(tmp_path: Path):
    assert name_parts("train", tmp_path, single=True) == ("train",)
    with pytest.raises(UnsafeName, match="one component"):
        name_parts("sub/train", tmp_path, what="split", single=True)
    with pytest.raises(UnsafeName, match="not a string"):
        name_parts(None, tmp_path)


# -- split names ---------------------------------------------------------------------------------------
def _qa_line(question: str) -> str:
    return json.dumps({"id": "1", "question": question, "golden_answers": ["a"]}) + "\n"


@pytest.mark.parametrize("split", ["../secret", "../outside/secret", "/abs", "sub/train", "x\x00", "..\\secret"])
def test_a_split_name_never_reaches_a_file_outside_the_folder(tmp_path: Path, split: str):
    folder = tmp_path / "qa"
    folder.mkdir()
    (folder / "train.jsonl").write_text(_qa_line("inside"))
    (tmp_path / "secret.jsonl").write_text(_qa_line("the secret"))  # what `../secret` would read
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.jsonl").write_text(_qa_line("the secret"))
    with pytest.raises(UnsafeName) as refused:
        load_qa(folder, split=split)
    assert str(refused.value).startswith(f"split {split!r} refused: ")
    with pytest.raises(UnsafeName):
        load_env_records(str(folder), split=split)
    assert [r.question for r in load_qa(folder, split="train")] == ["inside"]


def test_a_split_file_that_links_out_of_the_folder_is_refused(tmp_path: Path):
    folder = tmp_path / "qa"
    folder.mkdir()
    (tmp_path / "secret.jsonl").write_text(_qa_line("the secret"))
    (folder / "dev.jsonl").symlink_to(tmp_path / "secret.jsonl")
    with pytest.raises(UnsafeName, match=r"split 'dev.jsonl' refused: .*outside the folder"):
        load_qa(folder, split="dev")


def test_an_unknown_world_split_is_one_error_naming_it():
    with pytest.raises(ValueError, match=r"no split '\.\./x': its splits are"):
        load_env_records("world:tiny", split="../x")


# -- checkpoint folder names ---------------------------------------------------------------------------
def _state_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / STATE_FILE).write_bytes(b"")  # only its presence marks a checkpoint for the listing
    return path


def test_only_step_digits_folders_are_checkpoints_ordered_by_number(tmp_path: Path):
    root = tmp_path / "run" / "checkpoints"
    for name in ("step-000002", "step-999999", "step-1000000"):
        _state_folder(root / name)
    for other in ("step-abc", "step-", "step-1-2", "step-" + "9" * 200, ".tmp-step-000003", "best"):
        _state_folder(root / other)
    assert [c.step for c in list_checkpoints(tmp_path / "run")] == [2, 999_999, 1_000_000]
    assert find_checkpoint(tmp_path / "run").path == root / "step-1000000"
    assert checkpoint_step("step-000007") == 7 and checkpoint_step("step-" + "1" * 13) is None


def test_a_checkpoint_link_out_of_the_run_is_refused_naming_it(tmp_path: Path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    _state_folder(run / "checkpoints" / "step-000001")
    _state_folder(elsewhere / "step-000009")
    (run / "checkpoints" / "step-000009").symlink_to(elsewhere / "step-000009", target_is_directory=True)
    with pytest.raises(CheckpointUnreadable, match=r"checkpoint folder 'step-000009' refused: .*outside the folder"):
        find_checkpoint(run)


def test_a_checkpoint_folder_named_otherwise_is_refused_not_a_traceback(tmp_path: Path):
    folder = _state_folder(tmp_path / "best")
    with pytest.raises(CheckpointUnreadable, match=r"checkpoint folder 'best' .*refused: .*step-<digits>"):
        find_checkpoint(folder)
    assert find_checkpoint(_state_folder(tmp_path / "step-000004")).step == 4


class _Saved:
    """What save_checkpoint needs of a model and tokenizer (Hugging Face's save_pretrained): a file."""

    def save_pretrained(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "weights").write_bytes(b"w")


def test_pruning_deletes_only_the_oldest_real_checkpoints_never_through_a_link(tmp_path: Path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    precious = _state_folder(elsewhere / "precious")
    _state_folder(run / "checkpoints" / "step-999999")
    (run / "checkpoints" / "step-000000").symlink_to(precious, target_is_directory=True)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    config = load_config(None, [])
    saved = save_checkpoint(run, 1_000_000, config, _Saved(), _Saved(), optimizer, scheduler, keep=1)
    assert saved.path == run / "checkpoints" / "step-1000000" and (saved.path / STATE_FILE).is_file()
    # By number, step-999999 is older than step-1000000 (by name it sorts after it): it is the one pruned.
    assert not (run / "checkpoints" / "step-999999").exists()
    assert (precious / STATE_FILE).is_file()  # the link was not followed into
