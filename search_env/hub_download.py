"""`search-env download`: Search-R1's data from the Hugging Face Hub into `$SEARCHGYM_HOME/wiki-18`.

What Search-R1 trains and evaluates on, from the data set repos its README and scripts name
(github.com/PeterGriffinJin/Search-R1: docs/retriever.md, scripts/download.py, scripts/nq_hotpotqa/).
Each asset goes into a folder named after its repo, `<out>/<repo name>/`, as the repo lays it out.

huggingface_hub gives the listing, each file's `hf_hub_url`, the session and its headers
(`HF_ENDPOINT` / `HF_TOKEN` respected) and the hub's errors; the byte loop is ours (`_fetch`: see
there why not `http_get`). Each file is written to `<file>.part`, kept across runs, so a run stopped
by Ctrl-C, a crash or a dropped connection is continued (by the same run or the next) with an HTTP
Range request from the last byte written. A body is cut off the moment it passes the listed size
(its `.part` removed), and a file that takes longer than `--file-deadline` (a body dripping a byte
at a time) fails, its `.part` kept. A finished `.part` is hashed in chunks and compared with what the
hub lists for the revision downloaded (the sha256 of an LFS file, the git blob sha1 of a small one)
before it is renamed to its name: a file at its name is a verified one. One that does not match is
deleted, so the next run fetches it again, and the command fails naming it; an entry the listing
gives no hash for is refused, never counted as verified. The revision actually downloaded (a commit
id, even when asked for `main`) is written to `<folder>/searchgym-download.json` with each file's
size and hash.

Every name in a hub listing is untrusted: each is checked by `search_env.safe_paths.resolve_under`
against the asset's folder before anything is created, and one that would leave it (`../x`, an
absolute path, `bm25/../../x`, a symlink out of the folder, NUL...) refuses the whole listing.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_env.home import searchgym_home
from search_env.safe_paths import UnsafeName, resolve_under

MANIFEST = "searchgym-download.json"
#: seconds one file may take, retries included, before the run gives it up (`--file-deadline`): six
#: hours, a 32 GB index part at 1.5 MB/s; a body dripping a byte at a time is stopped by it
DEFAULT_FILE_DEADLINE = 6 * 3600.0
_RETRIES = 5  # dropped connections in a row, without a byte between them, before a file fails
_HASH_CHUNK = 4 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX40 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubAsset:
    """One Hub data set repo, the files of it that are fetched, and what is done with them after."""

    name: str
    repo_id: str
    #: fnmatch patterns of the repo paths fetched (`*` also matches `/`)
    patterns: tuple[str, ...]
    #: the download's size as its users report it (the hub's exact sizes are printed before a download)
    size: str
    what: str
    #: repo path of a gzip file to unpack beside it (the servers read the plain JSONL by byte offsets)
    gunzip: str | None = None


# Sizes: wiki-18.jsonl.gz 5.12 GB and the BM25 index 2.3 GB as reported by users who downloaded them
# (/work/shared/research notes); the e5 Flat index is 21,015,324 passages x 768 float32 = 64.6 GB.
ASSETS: dict[str, HubAsset] = {
    a.name: a
    for a in (
        HubAsset(
            "corpus",
            "PeterJinGo/wiki-18-corpus",
            ("wiki-18.jsonl.gz",),
            "5.1 GB (+14 GB unpacked)",
            "wiki-18, 21,015,324 passages ({id, contents}); unpacked to wiki-18.jsonl",
            gunzip="wiki-18.jsonl.gz",
        ),
        HubAsset(
            "bm25",
            "PeterJinGo/wiki-18-bm25-index",
            ("bm25/*",),
            "2.3 GB",
            "Search-R1's prebuilt Lucene BM25 index of wiki-18 (folder bm25/)",
        ),
        HubAsset(
            "e5",
            "PeterJinGo/wiki-18-e5-index",
            ("part_aa", "part_ab"),
            "64.6 GB",
            "Search-R1's e5-base-v2 faiss Flat index in two parts (cat part_aa part_ab > e5_Flat.index)",
        ),
        HubAsset(
            "qa",
            "PeterJinGo/nq_hotpotqa_train",
            ("*.parquet",),
            "not measured",
            "NQ+HotpotQA, Search-R1's training set (verl parquet rows; search_env.qa_data reads them)",
        ),
    )
}
#: fetched when no asset is named: what serving wiki-18 with BM25 and training on NQ+HotpotQA need
DEFAULT_ASSETS = ("corpus", "bm25", "qa")


class DownloadError(RuntimeError):
    """A download that cannot be done or did not verify; the message is one line."""


def default_out() -> Path:
    return searchgym_home() / "wiki-18"


def asset_folder(out: Path, asset: HubAsset) -> Path:
    return out / asset.repo_id.split("/")[-1]


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError


def download_asset(
    asset: HubAsset,
    out: Path,
    *,
    endpoint: str | None = None,
    revision: str = "main",
    token: str | None = None,
    file_deadline: float = DEFAULT_FILE_DEADLINE,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch, verify and unpack one asset into `asset_folder(out, asset)`; returns that folder.

    Each file is written to `<file>.part`, hashed and only then renamed to its name, so a file at its
    name has matched the hub's hash. Raises `DownloadError` (one line, naming the file or entry) for
    an unreachable hub, an unknown repo or revision, a pattern that matches nothing, a listed name
    that would leave the folder (`UnsafeName`, checked for every entry before anything is created), an
    entry with no hash, a body longer than its listed size (its `.part` is removed), a file that takes
    longer than `file_deadline` seconds (its `.part` is kept for the next run), or a hash mismatch (the
    file is removed: the next run fetches it anew).
    """
    from huggingface_hub import HfApi, RepoFile
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    folder = asset_folder(out, asset)
    where = f"{asset.repo_id}@{revision} ({api.endpoint})"
    try:
        commit = api.repo_info(asset.repo_id, repo_type="dataset", revision=revision).sha
        assert commit is not None
        files = [
            f
            for f in api.list_repo_tree(asset.repo_id, repo_type="dataset", revision=commit, recursive=True)
            if isinstance(f, RepoFile) and _matches(f.path, asset.patterns)
        ]
        if not files:
            raise DownloadError(f"{where}: no file matches {', '.join(asset.patterns)}")
        # Every name is checked before the first folder or file is made: one hostile entry refuses the
        # whole listing, so nothing of it lands anywhere.
        targets = {f.path: _target(folder, asset, f) for f in files}
        total = sum(f.size for f in files)
        log(f"{asset.name}: {asset.repo_id} at {commit[:12]}, {len(files)} files, {_size(total)} -> {folder}")
        for f in files:
            target, partial = targets[f.path]
            _fetch_verified(api, asset, commit, f, target, partial, token=token, file_deadline=file_deadline, log=log)
    except DownloadError:
        raise
    except (HfHubHTTPError, OSError) as err:
        raise DownloadError(f"{where}: {_one_line(err)}") from err
    except Exception as err:  # httpx errors and the like, whatever huggingface_hub lets through
        raise DownloadError(f"{where}: {type(err).__name__}: {_one_line(err)}") from err

    manifest = {
        "repo_id": asset.repo_id,
        "revision": commit,
        "endpoint": api.endpoint,
        "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {
            f.path: dict([("size", f.size), _expected_hash(f, repo_id=asset.repo_id)]) for f in sorted(files, key=_path)
        },
    }
    if asset.gunzip:
        _gunzip(folder / asset.gunzip, manifest["files"][asset.gunzip], log)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"{asset.name}: {len(files)} files verified in {folder}")
    return folder


def _path(f: Any) -> str:
    return str(f.path)


def _target(folder: Path, asset: HubAsset, f: Any) -> tuple[Path, Path]:
    """Where listing entry `f` goes under `folder`, and its `.part`; DownloadError naming it for an
    unsafe name (a `.part` already there that links out of the folder included) or no hash."""
    try:
        target = resolve_under(folder, f.path, what="hub listing entry")
        partial = resolve_under(folder, f.path + ".part", what="hub listing entry's partial file")
    except UnsafeName as err:
        raise DownloadError(f"{asset.repo_id}: {err}; nothing was written") from None
    if target.name == MANIFEST or target.name.endswith(".part"):
        # Our own bookkeeping names: a hub file by that name would be overwritten or taken for a partial.
        raise DownloadError(
            f"{asset.repo_id}: hub listing entry {f.path!r} refused: a name this command keeps for itself"
        )
    _expected_hash(f, repo_id=asset.repo_id)
    return target, partial


def _expected_hash(f: Any, *, repo_id: str = "") -> tuple[str, str]:
    """("sha256" | "git_sha1", the hex digest the listing gives); DownloadError when it gives none.

    A file the listing holds no hash for cannot be verified, so it is refused rather than taken on trust.
    """
    if f.lfs is not None and _HEX64.fullmatch(str(f.lfs.sha256 or "").lower()):
        return "sha256", str(f.lfs.sha256).lower()
    if _HEX40.fullmatch(str(f.blob_id or "").lower()):
        return "git_sha1", str(f.blob_id).lower()
    raise DownloadError(f"{repo_id}: the hub lists no usable hash for {f.path!r}: refused, it could not be verified")


def file_hash(path: Path, algorithm: str) -> str:
    """The sha256 or git blob sha1 (`git_sha1`) of a file, read in 4 MiB chunks (a 32 GB part never
    sits in memory); ValueError for another algorithm."""
    if algorithm == "sha256":
        digest = hashlib.sha256()
    elif algorithm == "git_sha1":
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    else:
        raise ValueError(f"unknown hash algorithm {algorithm!r}")
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_verified(
    api: Any,
    asset: HubAsset,
    commit: str,
    f: Any,
    target: Path,
    partial: Path,
    *,
    token: str | None,
    file_deadline: float,
    log: Callable[[str], None],
) -> None:
    """`target` holding the listed file, its hash checked: fetched into `partial`, its `.part` (resumed
    when one is there), verified, then renamed. A file already at `target` is hashed again and fetched anew when it
    does not match. Raises DownloadError naming the file."""
    algorithm, expected = _expected_hash(f, repo_id=asset.repo_id)
    if target.is_file() and target.stat().st_size == f.size:
        if file_hash(target, algorithm) == expected:
            return  # fetched and verified before
        log(f"{asset.name}: {f.path} does not match the hub's {algorithm}: fetching it anew")
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    _fetch(api, asset, commit, f, partial, token=token, file_deadline=file_deadline)
    actual = file_hash(partial, algorithm)
    if actual != expected:
        partial.unlink(missing_ok=True)  # the next run fetches it anew
        raise DownloadError(
            f"{asset.repo_id}: {f.path} does not match the hub's {algorithm.replace('_', '-')} {expected} "
            f"(got {actual}); deleted: run again to fetch it anew"
        )
    os.replace(partial, target)


def _fetch(
    api: Any, asset: HubAsset, commit: str, f: Any, partial: Path, *, token: str | None, file_deadline: float
) -> None:
    """The listed file's bytes into `partial`, continued from what it holds with a Range request.

    The byte loop is ours, not huggingface_hub's `http_get`: that one writes whatever the server sends and
    compares the size only at the end (an endless body fills the disk first), and it reads in 10 MiB
    chunks, so a body dripping a byte at a time never returns to a place a deadline could be checked.
    Here every chunk is checked against the listed size (a longer body is cut off and its `.part`
    removed) and against the file's deadline; a dropped connection is continued from the last byte
    written, up to `_RETRIES` times in a row without progress. Raises DownloadError naming the file.
    """
    import httpx2
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff, tqdm

    url = hf_hub_url(asset.repo_id, f.path, repo_type="dataset", revision=commit, endpoint=api.endpoint)
    deadline = time.monotonic() + file_deadline
    retries = _RETRIES
    with partial.open("ab") as sink, tqdm(total=f.size, unit="B", unit_scale=True, desc=f.path[-40:]) as bar:
        done = sink.tell()
        if done > f.size:  # not this file's partial (the repo changed): start over
            sink.truncate(0)
            done = 0
        bar.update(done)
        while done < f.size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _late(asset, f, file_deadline, done)
            headers = build_hf_headers(token=token)
            if done:
                headers["Range"] = f"bytes={done}-"
            # The read timeout is cut to the deadline's rest, so a stalled body ends by it too.
            timeout = httpx2.Timeout(
                constants.HF_HUB_DOWNLOAD_TIMEOUT, read=min(constants.HF_HUB_DOWNLOAD_TIMEOUT, left)
            )
            try:
                with http_stream_backoff(
                    "GET",
                    url,
                    headers=headers,
                    timeout=timeout,
                    retry_on_exceptions=(),
                    retry_on_status_codes=(408, 429),
                ) as response:
                    hf_raise_for_status(response)
                    if done and response.status_code != 206:  # the server ignored the Range: from the start
                        sink.truncate(0)
                        bar.update(-done)
                        done = 0
                    elif done and not response.headers.get("Content-Range", "").startswith(f"bytes {done}-"):
                        # Bytes from elsewhere in the file would be appended at the wrong place.
                        raise _refused_part(asset, f, sink, partial, "the hub answered the Range from another offset")
                    announced = response.headers.get("Content-Length")
                    if announced is not None and announced.isdigit() and done + int(announced) > f.size:
                        raise _too_long(asset, f, sink, partial, f"the hub announces {done + int(announced):,}")
                    for chunk in response.iter_bytes():
                        if done + len(chunk) > f.size:
                            raise _too_long(asset, f, sink, partial, "the body went on past it")
                        sink.write(chunk)
                        done += len(chunk)
                        bar.update(len(chunk))
                        retries = _RETRIES  # progress: a later drop starts its count again
                        if time.monotonic() > deadline and done < f.size:
                            raise _late(asset, f, file_deadline, done)
            except (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError) as err:
                if time.monotonic() > deadline:
                    raise _late(asset, f, file_deadline, done) from err
                if retries <= 0:
                    raise DownloadError(
                        f"{asset.repo_id}: {f.path}: {type(err).__name__}: {_one_line(err)} ({_RETRIES} tries "
                        f"in a row, {done:,} of {f.size:,} bytes kept in its .part): run again to resume"
                    ) from err
                retries -= 1
                sink.flush()
                time.sleep(1)
                continue
            if done < f.size:
                raise DownloadError(
                    f"{asset.repo_id}: {f.path}: the hub sent {done:,} of its listed {f.size:,} bytes; "
                    "run again to resume"
                )


def _too_long(asset: HubAsset, f: Any, sink: Any, partial: Path, how: str) -> DownloadError:
    """Cut off a body longer than the listing says: the partial is removed (its bytes are not the file's)."""
    return _refused_part(asset, f, sink, partial, f"longer than its listed {f.size:,} bytes ({how}): cut off")


def _refused_part(asset: HubAsset, f: Any, sink: Any, partial: Path, why: str) -> DownloadError:
    """The error for a body that is not the listed file's; its partial is closed and removed first."""
    sink.close()
    partial.unlink(missing_ok=True)
    return DownloadError(f"{asset.repo_id}: {f.path} is refused: {why}; its .part was removed")


def _late(asset: HubAsset, f: Any, file_deadline: float, done: int) -> DownloadError:
    return DownloadError(
        f"{asset.repo_id}: {f.path} took longer than --file-deadline {file_deadline:g} s ({done:,} of {f.size:,} "
        "bytes); its .part is kept: run again to resume, or raise --file-deadline"
    )


def _gunzip(source: Path, entry: dict[str, Any], log: Callable[[str], None]) -> None:
    """`x.jsonl.gz` -> `x.jsonl`, once per downloaded version (a marker beside it names the source's hash)."""
    from tqdm.auto import tqdm

    target = source.with_suffix("")
    marker = target.with_name(target.name + ".from")
    source_id = json.dumps(entry, sort_keys=True)
    if target.is_file() and marker.is_file() and marker.read_text() == source_id:
        return
    log(f"unpacking {source.name} -> {target.name}")
    partial = target.with_name(target.name + ".partial")
    with (
        source.open("rb") as raw,
        gzip.open(raw) as unpacked,
        partial.open("wb") as sink,
        tqdm(total=source.stat().st_size, unit="B", unit_scale=True, desc=f"unpack {source.name}") as bar,
    ):
        while chunk := unpacked.read(1 << 22):
            sink.write(chunk)
            bar.update(raw.tell() - bar.n)
    os.replace(partial, target)
    marker.write_text(source_id)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:500] or type(err).__name__


def describe_assets() -> str:
    """The asset table `search-env download --list` prints."""
    rows = [f"{'asset':<8} {'size':<26} {'Hub data set':<32} what"]
    for a in ASSETS.values():
        default = " (default)" if a.name in DEFAULT_ASSETS else ""
        rows.append(f"{a.name:<8} {a.size:<26} {a.repo_id:<32} {a.what}{default}")
    return "\n".join(rows)


def resolve_assets(names: Sequence[str]) -> list[HubAsset]:
    """`names` as given on the command line ('all' for every asset; none: the defaults)."""
    if not names:
        names = DEFAULT_ASSETS
    if "all" in names:
        names = list(ASSETS)
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        raise DownloadError(f"unknown asset {unknown[0]!r}; known: {', '.join(ASSETS)}, all")
    return [ASSETS[n] for n in dict.fromkeys(names)]


def disk_needed(out: Path) -> str:
    """Free space where the files go, for the start-up line."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    return _size(shutil.disk_usage(probe).free)
