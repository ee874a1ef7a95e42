"""`search-env download`: Search-R1's data from the Hugging Face Hub into `$SEARCHGYM_HOME/wiki-18`.

What Search-R1 trains and evaluates on, from the data set repos its README and scripts name
(github.com/PeterGriffinJin/Search-R1: docs/retriever.md, scripts/download.py, scripts/nq_hotpotqa/).
Each asset goes into a folder named after its repo, `<out>/<repo name>/`, as the repo lays it out.

Downloading is huggingface_hub's (`http_get` on each file's `hf_hub_url`): a progress bar per file,
`HF_ENDPOINT` / `HF_TOKEN` respected, a dropped connection resumed within the run from the last whole
10 MiB chunk with an HTTP Range request. huggingface_hub 2.4's own `hf_hub_download` deletes a partial
file when its process fails (the partial's name is unique to the process), so a run stopped by Ctrl-C
or a crash would start a 32 GB index part over: here each file is written to `<file>.part`, kept
across runs, and the next run continues it with a Range request. huggingface_hub checks only each
file's size; afterwards every file is hashed and compared with what the hub lists for the revision
downloaded (`HfApi.verify_repo_checksums`: the sha256 of an LFS file, the git blob sha1 of a small
one). A file that does not match is deleted, so the next run fetches it again, and the command fails
naming it. The revision actually downloaded (a commit id, even when asked for `main`) is written to
`<folder>/searchgym-download.json` with each file's size and hash.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_env.home import searchgym_home

MANIFEST = "searchgym-download.json"


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
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch, verify and unpack one asset into `asset_folder(out, asset)`; returns that folder.

    Raises `DownloadError` (one line) for an unreachable hub, an unknown repo or revision, a pattern
    that matches nothing, or a checksum mismatch (the bad file is deleted first).
    """
    from huggingface_hub import HfApi, RepoFile, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

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
        total = sum(f.size for f in files)
        log(f"{asset.name}: {asset.repo_id} at {commit[:12]}, {len(files)} files, {_size(total)} -> {folder}")
        headers = build_hf_headers(token=token)
        for f in files:
            target = folder / f.path
            if target.is_file() and target.stat().st_size == f.size:
                continue  # fetched before; the hash check below still reads it
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            url = hf_hub_url(asset.repo_id, f.path, repo_type="dataset", revision=commit, endpoint=api.endpoint)
            with partial.open("ab") as sink:
                done = sink.tell()
                if done > f.size:  # not this file's partial (the repo changed): start over
                    sink.truncate(0)
                    done = 0
                http_get(url, sink, resume_size=done, headers=headers, expected_size=f.size, displayed_filename=f.path)
            os.replace(partial, target)
        log(f"{asset.name}: verifying {len(files)} files against the hub's hashes")
        check = api.verify_repo_checksums(asset.repo_id, repo_type="dataset", revision=commit, local_dir=folder)
    except DownloadError:
        raise
    except (HfHubHTTPError, OSError) as err:
        raise DownloadError(f"{where}: {_one_line(err)}") from err
    except Exception as err:  # httpx errors and the like, whatever huggingface_hub lets through
        raise DownloadError(f"{where}: {type(err).__name__}: {_one_line(err)}") from err

    wanted = {f.path: f for f in files}
    bad = [m for m in check.mismatches if m["path"] in wanted]
    missing = [p for p in check.missing_paths if p in wanted]
    for mismatch in bad:
        (folder / mismatch["path"]).unlink(missing_ok=True)  # the next run fetches it again
    if bad:
        m = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DownloadError(
            f"{asset.repo_id}: {m['path']} does not match the hub's {m['algorithm']} {m['expected']} "
            f"(got {m['actual']}){more}; deleted: run again to fetch it anew"
        )
    if missing:
        raise DownloadError(f"{asset.repo_id}: {missing[0]} is missing after the download")
    manifest = {
        "repo_id": asset.repo_id,
        "revision": commit,
        "endpoint": api.endpoint,
        "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {
            p: {"size": f.size, "sha256" if f.lfs else "git_sha1": f.lfs.sha256 if f.lfs else f.blob_id}
            for p, f in sorted(wanted.items())
        },
    }
    if asset.gunzip:
        _gunzip(folder / asset.gunzip, manifest["files"][asset.gunzip], log)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"{asset.name}: {len(files)} files verified in {folder}")
    return folder


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
