"""`orchestrate data fetch` against an HTTP server on loopback serving small archives in the real formats."""
from __future__ import annotations

import dataclasses
import io
import re
import tarfile

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.data.fetch import PARTIAL_DIR, FetchError, fetch, fetchable, manifest_of
from workers.data.dataset import load_dataset
from tests.helpers.archive_server import Server, archive_of, mnist_manifest, use_manifest
from tests.helpers.data_writers import write_cifar, write_mnist


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    src = tmp_path_factory.mktemp("mnist-src")
    arrays = write_mnist(src, n_train=40, n_test=3, compress=True)
    return {p.name: p.read_bytes() for p in sorted(src.iterdir())}, arrays


@pytest.fixture(scope="module")
def cifar_file(tmp_path_factory):
    src = tmp_path_factory.mktemp("cifar-src")
    batches = write_cifar(src / "cifar-10-batches-py", per_batch=3)
    (src / "readme.html").write_text("outside the batches folder: not unpacked")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        tar.add(src / "readme.html", arcname="readme.html")
    return buf.getvalue(), batches


@pytest.fixture
def mnist_server(mnist_files):
    files, _ = mnist_files
    server = Server(dict(files))
    yield server
    server.close()


def test_published_manifests_are_complete():
    assert fetchable() and all(manifest_of(name).dataset == name for name in fetchable())
    for m in map(manifest_of, fetchable()):
        for a in m.archives:
            assert re.fullmatch(r"[0-9a-f]{64}", a.sha256) and re.fullmatch(r"[0-9a-f]{32}", a.md5) and a.size > 0
    assert [a.name for a in manifest_of("mnist").archives] == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz"]
    assert manifest_of("cifar10").archives[0].md5 == "c58f30108f718f92721af3b95e74349a"


def test_mnist_fetch_installs_what_the_loader_reads_and_a_second_fetch_does_nothing(mnist_files, mnist_server,
                                                                                     tmp_path):
    files, arrays = mnist_files
    root = tmp_path / "data"
    lines = []
    where = fetch("mnist", root, manifest=mnist_manifest(files, mnist_server), echo=lines.append)
    assert where == root / "MNIST" / "raw"
    assert sorted(p.name for p in where.iterdir()) == sorted(files)
    assert sorted(p.name for p in root.iterdir()) == ["MNIST"]  # no partial or staging leftovers
    d = load_dataset("mnist", str(root))
    assert d.y_train.tolist() == (arrays["train-labels-idx1-ubyte"]).tolist()
    assert d.x_train.shape == (40, 1, 28, 28) and d.x_test.shape == (3, 1, 28, 28)
    assert lines[0].startswith("mnist: fetching 4 file(s)") and lines[-1] == f"mnist: ready in {where}"

    served = len(mnist_server.requests)
    lines.clear()
    fetch("mnist", root, manifest=mnist_manifest(files, mnist_server), echo=lines.append)
    assert lines == [f"mnist: already in {where}; nothing to do"]
    assert len(mnist_server.requests) == served


def test_corrupted_download_is_deleted_and_nothing_is_installed(mnist_files, mnist_server, tmp_path, monkeypatch):
    files, _ = mnist_files
    good = files["t10k-images-idx3-ubyte.gz"]
    mnist_server.files["t10k-images-idx3-ubyte.gz"] = good[:20] + bytes([good[20] ^ 0xFF]) + good[21:]
    use_manifest(monkeypatch, mnist_manifest(files, mnist_server))
    root = tmp_path / "data"
    root.mkdir()
    r = CliRunner().invoke(main, ["data", "fetch", "mnist", "--root", str(root)])
    assert r.exit_code == 2, r.output
    error = [line for line in r.output.splitlines() if "checksum" in line]
    assert len(error) == 1 and error[0].startswith("t10k-images-idx3-ubyte.gz: checksum mismatch (sha256 ")
    assert "nothing was installed" in error[0]
    assert list(root.iterdir()) == []  # no dataset, no partial downloads

    mnist_server.files["t10k-images-idx3-ubyte.gz"] = files["t10k-images-idx3-ubyte.gz"]
    r = CliRunner().invoke(main, ["data", "fetch", "mnist", "--root", str(root)])
    assert r.exit_code == 0, r.output
    assert load_dataset("mnist", str(root)).x_test.shape == (3, 1, 28, 28)


def test_corrupted_download_into_a_new_root_leaves_no_root(mnist_files, mnist_server, tmp_path):
    files, _ = mnist_files
    manifest = mnist_manifest(files, mnist_server)
    bad = dataclasses.replace(manifest, archives=(dataclasses.replace(manifest.archives[0], md5="0" * 32),
                                                  *manifest.archives[1:]))
    with pytest.raises(FetchError, match=r"train-images-idx3-ubyte.gz: checksum mismatch \(md5 [0-9a-f]{32}, "
                                         r"expected 0{32}\)") as err:
        fetch("mnist", tmp_path / "new" / "data", manifest=bad, echo=lambda _: None)
    assert err.value.bad_input and "\n" not in str(err.value)
    assert not (tmp_path / "new").exists()


def test_interrupted_download_leaves_nothing_half_unpacked_and_the_retry_resumes(mnist_files, mnist_server,
                                                                                 tmp_path):
    files, arrays = mnist_files
    name = "train-images-idx3-ubyte.gz"
    size = len(files[name])
    mnist_server.cut[name] = 1
    root = tmp_path / "data"
    manifest = mnist_manifest(files, mnist_server)
    with pytest.raises(FetchError) as err:
        fetch("mnist", root, manifest=manifest, echo=lambda _: None)
    message = str(err.value)
    assert not err.value.bad_input and "\n" not in message
    assert f"connection closed after {size // 2} of {size} bytes" in message
    assert "the same command resumes" in message
    assert not (root / "MNIST").exists()
    assert (root / PARTIAL_DIR / f"{name}.part").stat().st_size == size // 2

    lines = []
    fetch("mnist", root, manifest=manifest, echo=lines.append)
    assert (name, f"bytes={size // 2}-") in mnist_server.requests
    assert any("resuming at" in line for line in lines)
    assert load_dataset("mnist", str(root)).x_train.shape == (40, 1, 28, 28)
    assert sorted(p.name for p in root.iterdir()) == ["MNIST"]


def test_a_server_that_ignores_ranges_gets_a_fresh_download(mnist_files, tmp_path):
    files, arrays = mnist_files
    server = Server(dict(files), honor_range=False)
    try:
        name = "t10k-images-idx3-ubyte.gz"
        server.cut[name] = 1
        manifest = mnist_manifest(files, server)
        with pytest.raises(FetchError, match="connection closed"):
            fetch("mnist", tmp_path, manifest=manifest, echo=lambda _: None)
        fetch("mnist", tmp_path, manifest=manifest, echo=lambda _: None)
        d = load_dataset("mnist", str(tmp_path))
        assert d.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
        assert d.x_test.shape == (3, 1, 28, 28)
    finally:
        server.close()


def test_cli_interrupted_fetch_exits_1_with_one_line_then_succeeds(mnist_files, mnist_server, tmp_path,
                                                                   monkeypatch):
    files, _ = mnist_files
    use_manifest(monkeypatch, mnist_manifest(files, mnist_server))
    mnist_server.cut["t10k-labels-idx1-ubyte.gz"] = 1
    args = ["data", "fetch", "mnist", "--root", str(tmp_path)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and "t10k-labels-idx1-ubyte.gz: download failed" in r.stderr
    mnist_server.cut.clear()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "mnist: ready in" in r.output


def test_cifar_via_the_cli_with_the_archive_url_and_the_default_root(cifar_file, tmp_path, monkeypatch):
    data, batches = cifar_file
    server = Server({"mirror/cifar-10-python.tar.gz": data})
    try:
        use_manifest(monkeypatch, dataclasses.replace(
            manifest_of("cifar10"), archives=(archive_of("cifar-10-python.tar.gz", data),)))
        monkeypatch.setenv("TICKETSWEEP_DATA", str(tmp_path / "default-root"))
        r = CliRunner().invoke(main, ["data", "fetch", "cifar10", "--url",
                                      server.url + "mirror/cifar-10-python.tar.gz"])
        assert r.exit_code == 0, r.output
        root = tmp_path / "default-root"
        assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # readme.html not unpacked
        d = load_dataset("cifar10")  # the loader's default root is the fetch's default root
        assert d.x_train.shape == (15, 3, 32, 32)
        assert d.y_test.tolist() == batches["test_batch"][b"labels"]
        r = CliRunner().invoke(main, ["data", "fetch", "cifar10", "--url", server.url + "mirror/"])
        assert r.exit_code == 0 and "nothing to do" in r.output
        assert len(server.requests) == 1
    finally:
        server.close()


@pytest.mark.parametrize("setup, args, expected", [
    (None, ["data", "fetch", "mnsit"], "data fetch: unknown dataset 'mnsit'; did you mean 'mnist'?"),
    (None, ["data", "fetch", "imagenet"], f"data fetch: unknown dataset 'imagenet'; known: {', '.join(fetchable())}"),
    ("file", ["data", "fetch", "mnist", "--root", "{root}"], "data root {root}: is a file, expected a directory"),
    ("partial", ["data", "fetch", "mnist", "--root", "{root}"],
     "{root}/MNIST/raw: exists but lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; "
     "move it away or fetch into another --root"),
    (None, ["data", "fetch", "mnist", "--root", "{root}", "--url", "ftp://example.org/"],
     "--url ftp://example.org/: expected an http://, https:// or file:// URL"),
])
def test_cli_bad_input_exits_2_with_one_line_and_changes_nothing(tmp_path, setup, args, expected):
    root = tmp_path / "root"
    if setup == "file":
        root.write_text("x")
    elif setup == "partial":
        (root / "MNIST" / "raw").mkdir(parents=True)
        (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"mine")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    r = CliRunner().invoke(main, [a.format(root=root) for a in args])
    assert r.exit_code == 2
    assert r.output.strip() == expected.format(root=root)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_file_urls_work_for_offline_mirrors(mnist_files, tmp_path):
    files, _ = mnist_files
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in files.items():
        (mirror / name).write_bytes(data)
    manifest = dataclasses.replace(manifest_of("mnist"), archives=tuple(
        archive_of(a.name, files[a.name]) for a in manifest_of("mnist").archives))
    fetch("mnist", tmp_path / "data", url=mirror.as_uri(), manifest=manifest, echo=lambda _: None)
    assert load_dataset("mnist", str(tmp_path / "data")).x_train.shape == (40, 1, 28, 28)
