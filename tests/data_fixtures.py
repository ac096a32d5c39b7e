"""Tiny files in each dataset's exact original format, and a local HTTP server for them.

Shared by the tests of `pixel_rnn_jax.data.{download,formats,prepare}`. Everything is
generated here (nothing is downloaded); the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import http.server
import io
import os
import re
import struct
import tarfile
import threading

import numpy as np
from PIL import Image

CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def write_amat(path, images):
    """images: {0,1} [n, 28, 28, 1] -> one line of 784 space-separated values per image."""
    lines = [" ".join(str(int(v)) for v in image.reshape(-1)) for image in images]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def write_idx_gz(path, array):
    """uint8 [n, ...] -> gzip of the IDX header (0, 0, 0x08, rank, sizes) and the bytes."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def _add(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def cifar_records(images, labels):
    """[n, 32, 32, 3] + [n] -> the binary version's rows: label byte, R, G, B planes."""
    planes = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    rows = np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1)
    return rows.tobytes()


def write_cifar_tarball(path, train, test, extra_members=()):
    """train/test: (images, labels); train is cut into the five data_batch files."""
    with tarfile.open(path, "w:gz") as tar:
        images, labels = train
        for i, chunk in enumerate(np.array_split(np.arange(len(labels)), 5)):
            _add(
                tar,
                f"cifar-10-batches-bin/data_batch_{i + 1}.bin",
                cifar_records(images[chunk], labels[chunk]),
            )
        _add(tar, "cifar-10-batches-bin/test_batch.bin", cifar_records(*test))
        _add(
            tar, "cifar-10-batches-bin/batches.meta.txt", ("\n".join(CIFAR_NAMES) + "\n\n").encode()
        )
        _add(tar, "cifar-10-batches-bin/readme.html", b"<html></html>")
        for name, payload in extra_members:
            _add(tar, name, payload)


def png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def write_imagenet_tar(path, folder, images):
    """[n, s, s, 3] -> an uncompressed tar of `<folder>/<index>.png` (as image-net.org/small)."""
    names = []
    with tarfile.open(path, "w") as tar:
        dir_info = tarfile.TarInfo(folder)
        dir_info.type = tarfile.DIRTYPE
        tar.addfile(dir_info)
        for i, image in enumerate(images):
            name = f"{folder}/{i:07d}.png"
            _add(tar, name, png(image))
            names.append(name)
    return names


def make_sources(directory, seed=0):
    """Writes small fixtures of every dataset into `directory`; returns their arrays.

    Returns:
        `{dataset: {split: arrays}}`: binarized_mnist `{split: images}`; mnist and
        cifar10 `{split: (images, labels)}`; downsampled_imagenet/32x32 `{split:
        {member name: image}}`.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    out = {}

    binarized = {
        split: rng.integers(0, 2, (n, 28, 28, 1), dtype=np.uint8)
        for split, n in (("train", 24), ("validation", 9), ("test", 7))
    }
    for split, filename in (("train", "train"), ("validation", "valid"), ("test", "test")):
        write_amat(os.path.join(directory, f"binarized_mnist_{filename}.amat"), binarized[split])
    out["binarized_mnist"] = binarized

    mnist = {}
    for split, prefix, n in (("train", "train", 12), ("test", "t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx_gz(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx_gz(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels)
        mnist[split] = (images[..., None], labels.astype(np.int64))
    out["mnist"] = mnist

    cifar = {
        split: (
            rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.int64),
        )
        for split, n in (("train", 11), ("test", 6))
    }
    write_cifar_tarball(
        os.path.join(directory, "cifar-10-binary.tar.gz"), cifar["train"], cifar["test"]
    )
    out["cifar10"] = cifar

    imagenet = {}
    for split, prefix, n in (("train", "train", 10), ("validation", "valid", 4)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        names = write_imagenet_tar(
            os.path.join(directory, f"{prefix}_32x32.tar"), f"{prefix}_32x32", images
        )
        imagenet[split] = dict(zip(names, images, strict=True))
    out["downsampled_imagenet/32x32"] = imagenet
    return out


def make_fashion_sources(official_dir, recompressed_dir, seed=1):
    """Writes tiny Fashion-MNIST IDX files twice: as Zalando's, and re-compressed as Debian's.

    `official_dir` gets gzip files whose header names the file (as the originals, whose
    archive digests TFDS lists); `recompressed_dir` the same IDX content re-compressed without
    a file name (as Debian's package ships it: another archive digest, the same content).

    Returns:
        `{split: (images [n, 28, 28, 1], labels [n])}`.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(official_dir, exist_ok=True)
    os.makedirs(recompressed_dir, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", 10), ("test", "t10k", 4)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            filename = f"{prefix}-{kind}-ubyte.gz"
            write_idx_gz(os.path.join(official_dir, filename), array)
            with gzip.open(os.path.join(official_dir, filename), "rb") as handle:
                content = handle.read()
            with open(os.path.join(recompressed_dir, filename), "wb") as handle:
                handle.write(gzip.compress(content, compresslevel=9, mtime=0))
        out[split] = (images[..., None], labels.astype(np.int64))
    return out


class FixtureServer:
    """Serves the files of a directory over HTTP on 127.0.0.1, with byte ranges.

    Records every request's path and Range header in `requests`. `drop_after`
    maps a file name to a byte count: the next response for it announces the
    full length, sends that many bytes and closes the connection (once).
    `hide_length` holds file names whose responses carry no Content-Length
    (the body ends when the connection closes).
    """

    def __init__(self, directory):
        self.directory = directory
        self.requests = []
        self.drop_after = {}
        self.hide_length = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("/")[-1]
                server.requests.append((name, self.headers.get("Range")))
                path = os.path.join(server.directory, name)
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                with open(path, "rb") as handle:
                    payload = handle.read()
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(payload):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(payload)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}"
                    )
                else:
                    self.send_response(200)
                body = payload[start:]
                if name in server.hide_length:
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.drop_after.pop(name, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


def allow_only_localhost(monkeypatch):
    """Makes any DNS lookup or connection to a host other than 127.0.0.1 fail loudly."""
    import socket

    real_getaddrinfo = socket.getaddrinfo
    attempts = []

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", b"127.0.0.1"):
            attempts.append(host)
            raise OSError(f"test network guard: {host!r} is not 127.0.0.1")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (a hung server)."""

    def __init__(self):
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._socket.close()
