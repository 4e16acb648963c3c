"""`orchestrate data fetch`: download a file dataset (its descriptor's manifest) into a data root, verified,
unpacked atomically.

Archives download into `<root>/.ticketsweep-partial/` (same filesystem as the root, so a later rename is
atomic); an interrupted download stays there and the next fetch resumes it with an HTTP Range request (or
starts it again if the server ignores ranges). A complete archive is checked against the published size and
checksums before anything is unpacked; a mismatch deletes it. Unpacking goes to a temporary directory in the
root that is renamed into place only when complete, so the loader never sees a half-written dataset.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from workers.data.registry import Archive, Manifest, dataset_names, get_dataset_descriptor

PARTIAL_DIR = ".ticketsweep-partial"
_CHUNK = 1 << 16
_TIMEOUT_S = 60


class FetchError(Exception):
    """A fetch that did not complete; `bad_input` (exit 2) for what the user must change: a corrupted
    download, a root that is a file, a dataset directory that exists but is incomplete."""

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


def fetchable() -> list[str]:
    """The registered datasets `fetch` downloads: those whose descriptor has a manifest."""
    return [n for n in dataset_names() if get_dataset_descriptor(n).manifest is not None]


def manifest_of(name: str) -> Manifest:
    """The registered dataset's download manifest; FetchError (bad input) for a dataset with none."""
    if name not in fetchable():
        raise FetchError(f"unknown dataset {name!r}; fetchable: {', '.join(fetchable())}", bad_input=True)
    return get_dataset_descriptor(name).manifest


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def found_in(manifest: Manifest, root: Path) -> Path | None:
    """Where the loader would find the dataset already: the target directory, or the root itself."""
    def has(d: Path, name: str) -> bool:
        return (d / name).is_file() or (manifest.gz_ok and (d / f"{name}.gz").is_file())

    for d in (root / manifest.target, root):
        if all(has(d, n) for n in manifest.required):
            return d
    return None


def mirrors_for(manifest: Manifest, url: str | None) -> tuple[str, ...]:
    """Base URLs to try: the usual mirrors, or `url` (a base, or for a one-archive dataset the archive's URL)."""
    if not url:
        return manifest.mirrors
    if len(manifest.archives) == 1 and url.endswith("/" + manifest.archives[0].name):
        return (url[: -len(manifest.archives[0].name)],)
    return (url if url.endswith("/") else url + "/",)


def fetch(name: str, root: str | Path, url: str | None = None, manifest: Manifest | None = None,
          echo: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Download, verify and unpack dataset `name` into `root`; returns the directory holding its files.

    `manifest` replaces the published one (tests serve small archives with their own checksums).
    """
    if manifest is None:
        manifest = manifest_of(name)
    if url and url.split("://", 1)[0].lower() not in ("http", "https", "file"):
        raise FetchError(f"--url {url}: expected an http://, https:// or file:// URL", bad_input=True)
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise FetchError(f"data root {root}: is a file, expected a directory", bad_input=True)
    present = found_in(manifest, root)
    if present is not None:
        echo(f"{name}: already in {present}; nothing to do")
        return present
    target = root / manifest.target
    if target.exists():
        missing = [n for n in manifest.required if not (target / n).exists() and not (target / f"{n}.gz").exists()]
        raise FetchError(f"{target}: exists but lacks {', '.join(missing)}; move it away or fetch into "
                         f"another --root", bad_input=True)
    created = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        partial = root / PARTIAL_DIR
        partial.mkdir(exist_ok=True)
    except OSError as err:
        raise FetchError(f"data root {root}: cannot create ({err.strerror or err})", bad_input=True) from None
    try:
        total = sum(a.size or 0 for a in manifest.archives)
        echo(f"{name}: fetching {len(manifest.archives)} file(s)" + (f" ({_mb(total)})" if total else "")
             + f" into {target}")
        parts = []
        for archive in manifest.archives:
            part = partial / f"{archive.name}.part"
            _download(mirrors_for(manifest, url), archive, part, echo, progress)
            try:
                _verify(archive, part)
            except FetchError:
                # A mirror that served one corrupted file is not trusted for the others either.
                for other in manifest.archives:
                    (partial / f"{other.name}.part").unlink(missing_ok=True)
                raise
            parts.append(part)
        _install(manifest, parts, root, target)
    except BaseException:
        _tidy(root, partial, created)
        raise
    _tidy(root, partial, created)
    echo(f"{name}: ready in {target}")
    return target


def _tidy(root: Path, partial: Path, created: list[Path]) -> None:
    # Kept partial downloads are how a retry resumes; only empty leftovers are removed.
    for d in (partial, *sorted(created, key=lambda p: len(p.parts), reverse=True)):
        try:
            d.rmdir()
        except OSError:
            pass


# ---------------------------------------------------------------- download

class _Interrupted(Exception):
    pass


def _download(bases: tuple[str, ...], archive: Archive, part: Path, echo, progress: bool) -> None:
    if archive.size is not None and part.exists() and part.stat().st_size == archive.size:
        return  # complete from an earlier run; verification decides whether it is good
    errors = []
    for base in bases:
        url = base + archive.name
        try:
            _download_from(url, archive, part, echo, progress)
            return
        except (_Interrupted, urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            errors.append(f"{url}: {reason}")
    have = part.stat().st_size if part.exists() else 0
    kept = f"; {_mb(have)} kept in {part}, the same command resumes" if have else ""
    raise FetchError(f"{archive.name}: download failed ({'; '.join(errors)}){kept}")


def _download_from(url: str, archive: Archive, part: Path, echo, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    if archive.size is not None and have > archive.size:
        part.unlink()
        have = 0
    headers = {"User-Agent": "ticketsweep-data-fetch"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)  # noqa: S310 - http(s)/file URLs only
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return  # nothing past what we have: it is complete, or verification will say otherwise
        raise
    with response:
        start = 0
        if have and getattr(response, "status", 200) == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            start = int(match.group(1)) if match else -1
        if start != have:
            start = 0  # the server sent the whole file (or an unexpected range): start again
        length = response.headers.get("Content-Length")
        expected = start + int(length) if length and length.isdigit() else archive.size
        echo(f"  {archive.name}: " + (f"resuming at {_mb(start)} from {url}" if start else f"downloading {url}"))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=expected, initial=start, unit="B", unit_scale=True, desc=archive.name,
                       file=sys.stderr, dynamic_ncols=True)
        t0, got = time.perf_counter(), start
        try:
            with open(part, "ab" if start else "wb") as f:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if expected is not None and got < expected:
        # http.client returns a short body without an error when the connection closes early.
        raise _Interrupted(f"connection closed after {got} of {expected} bytes")
    echo(f"  {archive.name}: {_mb(got - start)} in {time.perf_counter() - t0:.1f} s")


def _verify(archive: Archive, part: Path) -> None:
    sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0  # noqa: S324 - md5 only to compare a published sum
    with open(part, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    problems = []
    if archive.size is not None and size != archive.size:
        problems.append(f"{size} bytes, expected {archive.size}")
    if archive.sha256 and sha256.hexdigest() != archive.sha256:
        problems.append(f"sha256 {sha256.hexdigest()}, expected {archive.sha256}")
    if archive.md5 and md5.hexdigest() != archive.md5:
        problems.append(f"md5 {md5.hexdigest()}, expected {archive.md5}")
    if problems:
        part.unlink()
        raise FetchError(f"{archive.name}: checksum mismatch ({'; '.join(problems)}); the downloads were deleted "
                         f"and nothing was installed", bad_input=True)


# ---------------------------------------------------------------- install

def _install(manifest: Manifest, parts: list[Path], root: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        if manifest.unpack == "keep":
            for archive, part in zip(manifest.archives, parts):
                os.replace(part, staging / archive.name)
            complete = staging
        elif manifest.unpack == "tar":
            (part,) = parts
            _extract(part, staging, manifest.target)
            complete = staging / manifest.target
        else:
            raise ValueError(f"unknown unpack mode {manifest.unpack!r}")
        missing = [n for n in manifest.required
                   if not (complete / n).is_file() and not (manifest.gz_ok and (complete / f"{n}.gz").is_file())]
        if missing:
            raise FetchError(f"{parts[0].name}: verified, but holds no {', '.join(missing)} under "
                             f"{manifest.target}/", bad_input=True)
        os.rename(complete, target)  # the only step that makes the dataset visible
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for part in parts:
        part.unlink(missing_ok=True)


def _extract(archive: Path, into: Path, prefix: str) -> None:
    """Only regular files and directories under `prefix`/, with the 'data' filter (no absolute paths, links
    out of the tree or device files)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if (m.isfile() or m.isdir()) and (m.name == prefix or m.name.startswith(prefix + "/"))]
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise FetchError(f"{archive.name}: cannot unpack ({err})") from None
