"""`search-env download` against a fake Hugging Face Hub on loopback (tests/fake_hub.py; no internet):
the files land where the README says, a dropped connection or an interrupted run resumes with a Range
request, every file is checked against the hub's hashes, and failures are one line with exit code 2.
The command runs as a real process with HF_ENDPOINT pointing at the fake hub, so huggingface_hub's
own download code is what is tested."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from search_env.hub_download import ASSETS, DEFAULT_ASSETS, MANIFEST
from search_env.server_process import free_port
from tests.fake_hub import COMMIT, FakeHub

pytest.importorskip("huggingface_hub")

REPO = Path(__file__).resolve().parents[1]
PASSAGES = [{"id": str(i), "contents": f'"Title {i}"\nText of passage {i}. ' + "word " * 40} for i in range(200)]
CORPUS = "".join(json.dumps(p) + "\n" for p in PASSAGES).encode()
CORPUS_GZ = gzip.compress(CORPUS, mtime=0)
# A download is continued from the last byte written: a file cut after 10.5 MiB resumes at 10.5 MiB.
CHUNK = 10 * 1024 * 1024
BIG = CHUNK + CHUNK // 10


def hub_repos() -> dict[str, dict[str, bytes]]:
    return {
        "PeterJinGo/wiki-18-corpus": {"wiki-18.jsonl.gz": CORPUS_GZ, "README.md": b"# wiki-18\n"},
        "PeterJinGo/wiki-18-bm25-index": {
            "bm25/segments_1": b"small lucene file",  # a small (git) file: checked by its blob sha1
            "bm25/_0.cfs": os.urandom(50_000),  # an LFS file: checked by its sha256
            ".gitattributes": b"* filter=lfs\n",
        },
        "PeterJinGo/wiki-18-e5-index": {"part_aa": os.urandom(1000), "part_ab": os.urandom(BIG)},
        "PeterJinGo/nq_hotpotqa_train": {"train.parquet": os.urandom(BIG), "test.parquet": os.urandom(2000)},
    }


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub(hub_repos())
    try:
        yield fake
    finally:
        fake.close()


def download(hub_url: str, out: Path, *args: str, offline: str = "0", wait: bool = True):
    env = {
        **os.environ,
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": offline,
        "HF_HOME": str(out.parent / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("HF_TOKEN", None)
    command = [sys.executable, "-m", "search_env.cli", "download", "--out", str(out), *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("search-env download: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_default_assets_are_fetched_verified_and_unpacked(hub: FakeHub, tmp_path: Path):
    out = tmp_path / "wiki-18"
    hub.cut_after["train.parquet"] = CHUNK + CHUNK // 20  # the first GET drops the connection after 10.5 MiB
    result = download(hub.url, out)
    assert result.returncode == 0, result.stderr

    corpus = out / "wiki-18-corpus"
    assert (corpus / "wiki-18.jsonl.gz").read_bytes() == CORPUS_GZ
    assert (corpus / "wiki-18.jsonl").read_bytes() == CORPUS  # unpacked for the servers
    assert (out / "wiki-18-bm25-index" / "bm25" / "_0.cfs").read_bytes() == hub.repos["PeterJinGo/wiki-18-bm25-index"][
        "bm25/_0.cfs"
    ]
    assert (out / "wiki-18-bm25-index" / "bm25" / "segments_1").is_file()
    assert sorted(p.name for p in (out / "nq_hotpotqa_train").glob("*.parquet")) == ["test.parquet", "train.parquet"]
    # Only the asset's files: not the repo's README or .gitattributes, and no e5 (64 GB) unless asked for.
    assert not (corpus / "README.md").exists() and not (out / "wiki-18-bm25-index" / ".gitattributes").exists()
    assert not (out / "wiki-18-e5-index").exists()
    assert not any("wiki-18-e5-index" in path for _, path, _ in hub.requests)

    # The dropped connection was resumed where it stopped (the last byte written), in the same run.
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("/train.parquet")]
    assert ranges == [None, f"bytes={CHUNK + CHUNK // 20}-"]

    manifest = json.loads((corpus / MANIFEST).read_text())
    assert manifest["revision"] == COMMIT and manifest["repo_id"] == "PeterJinGo/wiki-18-corpus"
    assert set(manifest["files"]) == {"wiki-18.jsonl.gz"}
    bm25 = json.loads((out / "wiki-18-bm25-index" / MANIFEST).read_text())["files"]
    assert "sha256" in bm25["bm25/_0.cfs"] and "git_sha1" in bm25["bm25/segments_1"]

    # A second run finds everything in place: no file is fetched again.
    hub.requests.clear()
    again = download(hub.url, out)
    assert again.returncode == 0, again.stderr
    assert not [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]


def test_an_interrupted_run_is_resumed_by_the_next(hub: FakeHub, tmp_path: Path, sigint_reaches_children):
    """Ctrl-C in the middle of a file: the next run continues it with a Range request."""
    out = tmp_path / "wiki-18"
    hub.stall_after["part_ab"] = CHUNK + CHUNK // 20
    proc = download(hub.url, out, "e5", wait=False)
    partial = out / "wiki-18-e5-index" / "part_ab.part"
    deadline = time.monotonic() + 60
    while not (partial.is_file() and partial.stat().st_size >= CHUNK):
        assert proc.poll() is None and time.monotonic() < deadline, "the download did not reach 10 MiB"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "run the same command again to resume" in stderr, stderr
    assert not (out / "wiki-18-e5-index" / "part_ab").exists()

    hub.stall_after.clear()
    hub.requests.clear()
    result = download(hub.url, out, "e5")
    assert result.returncode == 0, result.stderr
    assert (out / "wiki-18-e5-index" / "part_ab").read_bytes() == hub.repos["PeterJinGo/wiki-18-e5-index"]["part_ab"]
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("/part_ab")]
    assert ranges == [f"bytes={CHUNK + CHUNK // 20}-"], "the next run must continue the partial file, not start over"


def test_a_file_that_does_not_match_the_hubs_hash_is_named_and_deleted(hub: FakeHub, tmp_path: Path):
    out = tmp_path / "wiki-18"
    hub.corrupt.add("train.parquet")
    message = one_line_error(download(hub.url, out, "qa"))
    assert "train.parquet does not match the hub's sha256" in message and "run again" in message
    assert not (out / "nq_hotpotqa_train" / "train.parquet").exists()
    hub.corrupt.clear()
    assert download(hub.url, out, "qa").returncode == 0  # and the next run fetches it anew
    assert (out / "nq_hotpotqa_train" / "train.parquet").read_bytes() == hub.repos["PeterJinGo/nq_hotpotqa_train"][
        "train.parquet"
    ]


def test_user_errors_are_one_line(hub: FakeHub, tmp_path: Path):
    out = tmp_path / "wiki-18"
    assert "unknown asset 'wiki19'" in one_line_error(download(hub.url, out, "wiki19"))
    assert "HF_HUB_OFFLINE is set" in one_line_error(download(hub.url, out, offline="1"))
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert "PeterJinGo/wiki-18-corpus@main" in one_line_error(download(nowhere, out, "corpus"))
    del hub.repos["PeterJinGo/nq_hotpotqa_train"]
    assert "PeterJinGo/nq_hotpotqa_train@main" in one_line_error(download(hub.url, out, "qa"))


def test_the_asset_table():
    assert set(DEFAULT_ASSETS) < set(ASSETS) and "e5" not in DEFAULT_ASSETS
    result = subprocess.run(
        [sys.executable, "-m", "search_env.cli", "download", "--list"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 0
    for asset in ASSETS.values():
        assert asset.repo_id in result.stdout and asset.size in result.stdout


# -- hostile hubs: names that would leave --out, bodies that do not end, files that cannot be verified --


def tree(root: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, object]:
    """Everything under `root` (links not followed): a file's bytes, a link's target, "dir" for a folder."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            path = here / name
            if path.is_symlink():
                found[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                found[str(path)] = "dir"
            else:
                found[str(path)] = path.read_bytes()
    return found


def hostile_cases(tmp_path: Path) -> list[tuple[str, str, str]]:
    """(asset, repo, listed name) of entries that would land outside the asset folder or are no plain name."""
    qa, bm25 = "PeterJinGo/nq_hotpotqa_train", "PeterJinGo/wiki-18-bm25-index"
    return [
        ("qa", qa, "../../x.parquet"),
        ("qa", qa, str(tmp_path / "victim.parquet")),  # an absolute name: an existing file it would replace
        ("bm25", bm25, "bm25/../../../victim"),  # fnmatch's `*` matches `/` and `..`
        ("qa", qa, "a/./../../b.parquet"),
        ("qa", qa, "x\x00.parquet"),
        ("qa", qa, "..\\..\\x.parquet"),
        ("qa", qa, "C:x.parquet"),
        ("qa", qa, "sub//x.parquet"),
        ("qa", qa, "link/x.parquet"),  # through a symlink inside the asset folder that points outside
        ("qa", qa, "planted.parquet"),  # a plain name, but its .part is a link out of the folder
    ]


@pytest.mark.parametrize("case", range(10))
def test_a_listed_name_that_would_leave_the_out_folder_refuses_the_listing(hub: FakeHub, tmp_path: Path, case: int):
    asset, repo, name = hostile_cases(tmp_path)[case]
    out = tmp_path / "a" / "b" / "wiki-18"
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "victim.parquet").write_bytes(b"keep me")
    if name.startswith("link/"):
        (out / "nq_hotpotqa_train").mkdir(parents=True)
        (out / "nq_hotpotqa_train" / "link").symlink_to(outside, target_is_directory=True)
    if name == "planted.parquet":
        (out / "nq_hotpotqa_train").mkdir(parents=True)
        (out / "nq_hotpotqa_train" / "planted.parquet.part").symlink_to(outside / "written-through.parquet")
    hub.repos[repo][name] = os.urandom(3000)
    skip = (out, out.parent / "hf-home")
    before = tree(tmp_path, skip=skip)

    message = one_line_error(download(hub.url, out, asset))

    shown = name + ".part" if name == "planted.parquet" else name
    assert repr(shown) in message and "refused" in message, message
    assert tree(tmp_path, skip=skip) == before  # nothing created or replaced outside --out
    # One hostile entry refuses the whole listing before anything is fetched or made: no file, no .part.
    assert not [p for m, p, _ in hub.requests if "/resolve/" in p]
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_an_endless_body_is_cut_off_at_the_listed_size_and_not_kept(hub: FakeHub, tmp_path: Path):
    out = tmp_path / "wiki-18"
    hub.endless.add("part_aa")  # 1,000 bytes listed, then zeros without end and no Content-Length
    message = one_line_error(download(hub.url, out, "e5"))
    assert "part_aa is refused: longer than its listed 1,000 bytes" in message, message
    folder = out / "wiki-18-e5-index"
    assert not (folder / "part_aa").exists() and not (folder / "part_aa.part").exists()


def test_a_body_announced_longer_than_listed_is_refused_before_it_is_written(hub: FakeHub, tmp_path: Path):
    out = tmp_path / "wiki-18"
    hub.overannounce["test.parquet"] = 10
    message = one_line_error(download(hub.url, out, "qa"))
    assert "test.parquet is refused: longer than its listed 2,000 bytes (the hub announces 2,010)" in message
    assert not list((out / "nq_hotpotqa_train").glob("test.parquet*"))


def test_only_verified_files_reach_their_names(hub: FakeHub, tmp_path: Path):
    """A file that fails its hash leaves neither its name nor a .part; one fetched before a later failure is
    at its name only because it matched; a file altered at its name is fetched anew by the next run."""
    out = tmp_path / "wiki-18"
    folder = out / "nq_hotpotqa_train"
    files = hub.repos["PeterJinGo/nq_hotpotqa_train"]
    hub.corrupt.add("test.parquet")
    assert "test.parquet does not match the hub's sha256" in one_line_error(download(hub.url, out, "qa"))
    assert not list(folder.glob("test.parquet*"))

    hub.corrupt.clear()
    hub.unserved.add("train.parquet")  # listed, but its GET fails: after test.parquet was fetched
    assert "train.parquet" in one_line_error(download(hub.url, out, "qa"))
    assert (folder / "test.parquet").read_bytes() == files["test.parquet"]
    assert not (folder / "train.parquet").exists()
    assert not (folder / MANIFEST).exists()  # the asset is not recorded as downloaded

    hub.unserved.clear()
    assert download(hub.url, out, "qa").returncode == 0
    (folder / "test.parquet").write_bytes(os.urandom(2000))  # same size, other bytes
    hub.requests.clear()
    again = download(hub.url, out, "qa")
    assert again.returncode == 0, again.stderr
    assert (folder / "test.parquet").read_bytes() == files["test.parquet"]
    assert [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p] == [
        f"/datasets/PeterJinGo/nq_hotpotqa_train/resolve/{COMMIT}/test.parquet"
    ]


@pytest.mark.parametrize("name", ["test.parquet", "train.parquet"])
def test_a_file_the_listing_gives_no_hash_for_is_refused_not_counted_verified(hub: FakeHub, tmp_path: Path, name):
    out = tmp_path / "wiki-18"
    hub.unhashed.add(name)  # a git file (test.parquet, 2,000 bytes, listed small) and an LFS one alike
    message = one_line_error(download(hub.url, out, "qa"))
    assert f"the hub lists no usable hash for {name!r}" in message, message
    assert not [p for p in out.rglob("*.parquet")]
    assert not [p for m, p, _ in hub.requests if "/resolve/" in p]


def test_a_dripping_body_meets_the_file_deadline_and_the_next_run_resumes_it(hub: FakeHub, tmp_path: Path):
    out = tmp_path / "wiki-18"
    folder = out / "wiki-18-e5-index"
    hub.drip["part_aa"] = 0.02  # 1,000 bytes a byte at a time: 20 s, far past a 1 s deadline
    message = one_line_error(download(hub.url, out, "e5", "--file-deadline", "1"))
    assert "part_aa took longer than --file-deadline 1 s" in message and "run again to resume" in message
    assert not (folder / "part_aa").exists()
    kept = (folder / "part_aa.part").stat().st_size
    assert 0 < kept < 1000

    hub.drip.clear()
    hub.requests.clear()
    result = download(hub.url, out, "e5")
    assert result.returncode == 0, result.stderr
    assert (folder / "part_aa").read_bytes() == hub.repos["PeterJinGo/wiki-18-e5-index"]["part_aa"]
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("/part_aa")]
    assert ranges == [f"bytes={kept}-"]


def test_the_file_deadline_must_be_a_positive_number(hub: FakeHub, tmp_path: Path):
    for bad in ("0", "-5", "inf", "soon"):
        result = download(hub.url, tmp_path / "wiki-18", "qa", "--file-deadline", bad)
        assert result.returncode == 2 and "--file-deadline" in result.stderr and "Traceback" not in result.stderr
