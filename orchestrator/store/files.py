"""The store's files under its root, local or on a pyarrow filesystem: opening a location, listing, atomic
writes that never overwrite, and moving files aside to quarantine. Nothing here knows what the files hold.

On a local disk nothing is listed, read, written or moved through a symbolic link (`list_dir`,
`check_no_link`): what the store touches stays inside it.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.store.layout import layout_path, temporary_name


class StoreError(ValueError):
    """A store location or file that cannot be used; the message is one line naming it."""


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def open_store(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a local path or a URI; one line naming the location if unusable."""
    try:
        if "://" in location:
            fs, root = pafs.FileSystem.from_uri(location)
        else:
            fs, root = pafs.LocalFileSystem(), os.path.abspath(location)
        info = fs.get_file_info(root)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise StoreError(f"store {location}: cannot open ({one_line(err)})") from None
    if info.type == pafs.FileType.File:
        raise StoreError(f"store {location}: is a file, expected a directory")
    if info.type == pafs.FileType.NotFound and isinstance(fs, pafs.LocalFileSystem):
        above = os.path.dirname(root)
        while not os.path.exists(above):  # the first ancestor that exists must be a directory to create it in
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise StoreError(f"store {location}: {above} is a file, expected a directory")
    return fs, root.rstrip("/")


def _local_listing(base: str, recursive: bool) -> list[pafs.FileInfo]:
    """What a local directory holds, never through a symbolic link: a link (or a socket, a FIFO) is listed as
    itself, with type Unknown, and not followed; so nothing outside the store is ever listed, read, moved,
    deleted or written as the store's.

    Size and modification time are read only where the store uses them (artifacts, temporaries, anything not
    Parquet): a table holds tens of thousands of Parquet files, and a stat each made listing them slower than
    pyarrow's own listing."""
    out, todo = [], [base]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    out.append(pafs.FileInfo(e.path, pafs.FileType.Directory))
                    if recursive:
                        todo.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    if e.name.endswith(".parquet") and not e.name.startswith("."):
                        out.append(pafs.FileInfo(e.path, pafs.FileType.File))
                        continue
                    st = e.stat(follow_symlinks=False)
                    out.append(pafs.FileInfo(e.path, pafs.FileType.File, size=st.st_size, mtime_ns=st.st_mtime_ns))
                else:
                    out.append(pafs.FileInfo(e.path, pafs.FileType.Unknown))
    return out

@dataclass
class StoreFiles:
    location: str

    def __post_init__(self):
        self.fs, self.root = open_store(self.location)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)  # reads are tuned for a local disk or not
        self._made_dirs: set[str] = set()  # a sweep writes thousands of files into a few directories

    def _io(self, what: str, fn, *args):
        """Run a filesystem call; any I/O error becomes a one-line StoreError naming the path."""
        try:
            return fn(*args)
        except StoreError:
            raise
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"store {self.location}: cannot {what} ({one_line(err)})") from None

    def check_writable(self) -> None:
        """Create the root and prove a file can be written there, before any work starts."""
        def probe():
            self.fs.create_dir(self.root, recursive=True)
            path = f"{self.root}/{temporary_name('probe')}"
            with self.fs.open_output_stream(path) as f:
                f.write(b"ok")
            self.fs.delete_file(path)
        self._io(f"write to {self.root}", probe)

    def list_dir(self, base: str, recursive: bool = False) -> list[pafs.FileInfo]:
        """What a directory of the store holds ([] if it is missing). On a local disk nothing is listed through a
        symbolic link: a link is listed as itself (type Unknown), and a `base` reached through one holds nothing."""
        def ls():
            if self.local:
                if self._link_on_the_way(base) is not None or not os.path.isdir(base):
                    return []
                return _local_listing(base, recursive)
            if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
                return []
            return self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive))
        return self._io(f"list {base}", ls)

    def _link_on_the_way(self, path: str) -> str | None:
        """The first symbolic link between the store's root (which may be one) and `path`, itself included."""
        if not self.local or not path.startswith(self.root + "/"):
            return None
        here = self.root
        for part in self.rel(path).split("/"):
            here = f"{here}/{part}"
            if os.path.islink(here):
                return here
            if not os.path.exists(here):
                return None
        return None

    def check_no_link(self, path: str) -> None:
        """Refuse to write `path` through a symbolic link: what the store writes stays inside it."""
        link = self._link_on_the_way(path)
        if link is not None:
            raise StoreError(f"store {self.location}: {link} is a symbolic link, and the store never writes through "
                             f"one (remove it, or let submit move it to quarantine)")

    def exists(self, path: str) -> bool:
        return self._io(f"stat {path}", self.fs.get_file_info, path).type != pafs.FileType.NotFound

    def put_bytes(self, path: str, data: bytes) -> None:
        """Write a new file atomically (hidden temporary name, then rename); an existing file is an error."""
        def put():
            directory, name = path.rsplit("/", 1)
            if directory not in self._made_dirs:
                self.check_no_link(directory)
                self.fs.create_dir(directory, recursive=True)
                self._made_dirs.add(directory)
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                raise StoreError(f"store {self.location}: refusing to overwrite {path}")
            tmp = f"{directory}/{temporary_name(name)}"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)
        self._io(f"write {path}", put)

    def get_bytes(self, path: str) -> bytes:
        def get():
            with self.fs.open_input_stream(path) as f:
                return f.read()
        return self._io(f"read {path}", get)

    def put_table(self, path: str, table: pa.Table, small: bool = True) -> None:
        buf = io.BytesIO()
        if small:  # one attempt's rows: statistics, dictionaries and compression cost more than they save
            pq.write_table(table, buf, write_statistics=False, compression="NONE", use_dictionary=False)
        else:
            pq.write_table(table, buf)
        self.put_bytes(path, buf.getvalue())

    def rel(self, path: str) -> str:
        """`path` relative to the store's root."""
        return path[len(self.root) + 1:]

    def quarantine(self, path: str, stamp: str) -> str | None:
        """Move a file or directory aside under quarantine/<stamp>/ (never deleted), so readers stop meeting it.
        A symbolic link is moved as itself: what it points to is never touched. Returns where it went, or None
        if another process moved it first."""
        target = layout_path(self.root, "quarantine", rest=f"{stamp}/{self.rel(path)}")
        self.check_no_link(target)
        if self.local and os.path.islink(path):
            self.check_no_link(path.rsplit("/", 1)[0])
            def move_link():
                os.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                try:
                    os.rename(path, target)  # rename(2) moves the link, never its target
                except FileNotFoundError:
                    return None  # moved by another process meanwhile
                return target
            return self._io(f"move {path} to quarantine", move_link)
        self.check_no_link(path)
        info = self._io(f"stat {path}", self.fs.get_file_info, path)
        if info.type == pafs.FileType.NotFound:
            return None  # another process moved it first
        if info.type == pafs.FileType.Directory and not isinstance(self.fs, pafs.LocalFileSystem):
            # Object stores move single objects only: move what the directory holds, then drop its marker.
            def files():
                inside = self._io(f"list {path}", self.fs.get_file_info, pafs.FileSelector(path, recursive=True))
                return [f.path for f in inside if f.type == pafs.FileType.File]
            for f in files():
                self.quarantine(f, stamp)
            if not files():  # only markers are left (a file written meanwhile stays where it is)
                self._io(f"remove the emptied {path}", self.fs.delete_dir, path)
            return target
        self._io(f"create {target.rsplit('/', 1)[0]}", self.fs.create_dir, target.rsplit("/", 1)[0])
        try:
            self.fs.move(path, target)
        except FileNotFoundError:
            return None  # moved by another process meanwhile
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"store {self.location}: cannot move {path} to quarantine ({one_line(err)})") from None
        return target

