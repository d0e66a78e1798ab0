"""Image/mask decode and encode, parquet manifests, and paths that may be URIs.

Every path here may be local (``data/x.png``) or an object-store URI (``s3://bucket/x.png``,
``gs://...``); :func:`resolve` turns it into a ``pyarrow.fs`` filesystem and a path on it.

Images are ``(H, W, 3) uint8`` RGB; RGBA cutouts ``(H, W, 4) uint8``; masks ``(H, W) uint8
0..255``. Decoding failures raise :class:`ImageDecodeError`, which names the input.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageDecodeError(ValueError):
    """Bytes that are not a readable image; the message names where they came from."""


class InputError(ValueError):
    """A path the user gave that cannot be used (missing, unreadable, unwritable, not a URI we
    can open); the message names the config key or argument and the fix. ``segsynth`` prints
    it as one line and exits with status 2."""


class StorageError(InputError, OSError):
    """An object-store path that cannot be used (no such bucket, access denied, endpoint not
    reachable): one line naming the path and the fix. Also an ``OSError``, so code that tolerates
    an unreadable or unwritable file (a log copy, an optional input) still does."""


class MissingPathError(StorageError, FileNotFoundError):
    """An object-store path that is not there; also a ``FileNotFoundError`` for callers that
    treat a missing file as "none yet"."""


# ---------------------------------------------------------------- paths and URIs
def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def resolve(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """A filesystem and the path on it, for a local path or a ``scheme://`` URI."""
    path = str(path)
    if is_uri(path) and not path.startswith("file://"):
        try:
            return pafs.FileSystem.from_uri(path)
        except (pa.ArrowException, ValueError, OSError) as e:
            raise InputError(f"{path} is not a URI segsynth can open ({str(e).splitlines()[0]}); use a local path "
                             "or an object-store URI such as s3://bucket/key or gs://bucket/key") from None
    if path.startswith("file://"):
        path = path[len("file://"):]
    return pafs.LocalFileSystem(), str(Path(path).expanduser().absolute())


# the standard AWS variables pyarrow's S3 filesystem reads (with ~/.aws/config and credentials)
AWS_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                      "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
_DENIED = ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH",
           "SignatureDoesNotMatch", "EXPIRED_TOKEN", "ExpiredToken", "MISSING_AUTHENTICATION_TOKEN")
_UNREACHABLE = ("curlCode", "NETWORK_CONNECTION", "Couldn't connect", "Could not resolve", "Connection refused",
                "connect to host")


def storage_error(error: OSError, path: str, doing: str, key: str | None = None) -> StorageError:
    """One line for an object-store failure on ``path`` (the value of config key ``key``) while
    ``doing`` (``read``, ``write``, ``list``): what went wrong and the fix, not the SDK's message."""
    where = f"{key}: {path}" if key else path
    text = str(error)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    at = f" at {endpoint}" if endpoint else ""
    bucket = path.split("://", 1)[-1].split("/", 1)[0]
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text or re.search(r"Bucket '[^']*' not found", text):
        return StorageError(f"{where}: the bucket {bucket} does not exist{at}; create it (aws s3 mb s3://{bucket}) "
                          "or fix the bucket name")
    if isinstance(error, FileNotFoundError):
        return MissingPathError(f"{where} does not exist; fix the path, or run the stage that writes it first")
    code = next((c for c in _DENIED if c in text), None)
    if code:
        if not any(os.environ.get(k) for k in AWS_CREDENTIAL_ENV) and not _aws_files():
            return StorageError(f"{where}: access denied ({code}) and no AWS credentials are set; set AWS_ACCESS_KEY_ID "
                              "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run where an instance role grants access")
        return StorageError(f"{where}: access denied ({code}) to {doing} it; check AWS_ACCESS_KEY_ID and "
                          f"AWS_SECRET_ACCESS_KEY, and that they may {doing} s3://{bucket}")
    if any(c in text for c in _UNREACHABLE):
        return StorageError(f"{where}: cannot reach the object store{at} ({text.splitlines()[0][:160]}); check "
                          "AWS_ENDPOINT_URL, AWS_REGION and the network")
    return StorageError(f"{where}: cannot {doing} it ({text.splitlines()[0][:200]}); check the URI, AWS_ENDPOINT_URL "
                      "and the credentials")


def _aws_files() -> bool:
    """Whether a shared credentials or config file exists (the SDK may find credentials there)."""
    files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
             os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    return any(Path(f).expanduser().is_file() for f in files)


@contextlib.contextmanager
def _storage(path: str | Path, doing: str, key: str | None = None) -> Iterator[None]:
    """Object-store errors inside the block become :func:`storage_error`'s one line; local
    paths keep their own errors."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        if not is_uri(path) or str(path).startswith("file://"):
            raise
        raise storage_error(e, str(path), doing, key) from None


def join(base: str | Path, *parts: str) -> str:
    base = str(base)
    if is_uri(base):
        return posixpath.join(base, *parts)
    return str(Path(base, *parts))


def exists(path: str | Path) -> bool:
    fs, p = resolve(path)
    with _storage(path, "read"):
        return fs.get_file_info(p).type != pafs.FileType.NotFound


def makedirs(path: str | Path) -> None:
    fs, p = resolve(path)
    with _storage(path, "write"):
        fs.create_dir(p, recursive=True)


def read_bytes(path: str | Path) -> bytes:
    fs, p = resolve(path)
    with _storage(path, "read"), fs.open_input_stream(p) as f:
        return f.read()


class AtomicOutput:
    """An output stream to the file ``path`` that appears whole or not at all.

    On local disk the bytes go to a temp file beside it (``NAME.<pid>-<random>.tmp``: two writers
    of one file, a retried task or two threads, never share one) that :meth:`commit` renames onto
    ``path``; on an object store the object appears when the upload completes on commit, and
    :meth:`abort` deletes what a failed write left. The parent folder is created. As a context
    manager it gives the stream, commits when the block ends and aborts on an exception::

        with AtomicOutput(path) as f:
            f.write(data)
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._fs, self._final = resolve(path)
        local = isinstance(self._fs, pafs.LocalFileSystem)
        self._tmp = f"{self._final}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp" if local else None
        with _storage(self.path, "write"):
            self._fs.create_dir(posixpath.dirname(self._final), recursive=True)
            self.stream = self._fs.open_output_stream(self._tmp or self._final)
        self._done = False

    def commit(self) -> None:
        """Close the stream and put the file in place (no-op once committed or aborted)."""
        if self._done:
            return
        try:
            with _storage(self.path, "write"):
                self.stream.close()
            if self._tmp:
                Path(self._tmp).replace(self._final)
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Stop and leave no file (no-op once committed or aborted)."""
        if self._done:
            return
        self._done = True
        if not self.stream.closed:
            try:
                self.stream.close()  # an object store completes the upload here: deleted below
            except OSError as e:  # the write failed already; that error is the one to raise
                logging.getLogger(__name__).debug("%s: closing the aborted write: %s", self.path, e)
        if self._tmp:
            Path(self._tmp).unlink(missing_ok=True)
            return
        try:
            if self._fs.get_file_info(self._final).type != pafs.FileType.NotFound:
                self._fs.delete_file(self._final)
        except OSError as e:
            logging.getLogger(__name__).warning("could not delete the incomplete %s (%s); delete it by hand", self.path, e)

    def __enter__(self):
        return self.stream

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (:class:`AtomicOutput`): a crash leaves no
    half file."""
    with _storage(path, "write"), AtomicOutput(path) as f:
        f.write(data)


def delete(path: str | Path) -> bool:
    """Delete the file ``path`` when it is there; returns whether it was."""
    fs, p = resolve(path)
    with _storage(path, "write"):
        if fs.get_file_info(p).type == pafs.FileType.NotFound:
            return False
        fs.delete_file(p)
    return True


# ---------------------------------------------------------------- a stage's completion marker
SUMMARY = "summary.json"  # a stage writes it into its out last, once the output is complete (segsynth.demo resumes on it)


def mark_incomplete(out: str | Path) -> None:
    """Say that the stage output ``out`` is not complete: delete its ``summary.json`` (a previous
    run's). A stage calls it before its first write into ``out`` and :func:`mark_complete` last,
    so a run that fails in between leaves no summary claiming the folder is complete."""
    delete(join(out, SUMMARY))


def mark_complete(out: str | Path, summary: dict, default=None) -> dict:
    """Write ``summary`` as ``out/summary.json`` (whole or not at all), the stage's last write;
    ``default``: :func:`json.dumps`'s, for values JSON has no type for. Returns ``summary``."""
    write_bytes(join(out, SUMMARY), json.dumps(summary, indent=2, default=default).encode())
    return summary


def list_files(folder: str | Path, exts: Iterable[str] | None = None, recursive: bool = False) -> list[str]:
    """Sorted file paths (URIs keep their scheme) in ``folder`` with one of ``exts``."""
    fs, p = resolve(folder)
    with _storage(folder, "list"):
        info = fs.get_file_info(p)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{folder} is not a folder")
    sel = pafs.FileSelector(p, recursive=recursive)
    exts = tuple(e.lower() for e in exts) if exts else None
    out = []
    try:
        with _storage(folder, "list"):
            infos = fs.get_file_info(sel)
    except PermissionError as e:
        raise InputError(f"{folder} cannot be read ({e.strerror or e}); give the folder read permission or use another") from None
    for fi in infos:
        if fi.type != pafs.FileType.File or fi.base_name.startswith("."):
            continue
        if exts and not fi.base_name.lower().endswith(exts):
            continue
        rel = posixpath.relpath(fi.path, p)
        out.append(join(folder, rel) if is_uri(folder) else str(Path(p, rel)))
    return sorted(out)


def require_input(path: str | Path | None, key: str, kind: str = "any") -> None:
    """Check that ``path`` (the value of config key or argument ``key``) exists and can be read:
    ``kind`` is ``file``, ``folder`` or ``any``. Raises :class:`InputError` naming ``key``."""
    if path is None or str(path) == "":
        raise InputError(f"{key} is empty; set it to a {kind if kind != 'any' else 'file or folder'}")
    fs, p = resolve(path)
    try:
        info = fs.get_file_info(p)
    except OSError as e:
        if is_uri(path) and not str(path).startswith("file://"):
            raise storage_error(e, str(path), "read", key) from None
        if isinstance(e, PermissionError):
            raise InputError(f"{key}: {path} cannot be read ({e.strerror or e}); check its permissions") from None
        raise InputError(f"{key}: {path} cannot be reached ({str(e).splitlines()[0]}); check the URI and credentials") from None
    if info.type == pafs.FileType.NotFound and is_uri(path) and not str(path).startswith("file://"):
        bucket = p.split("/", 1)[0]
        with _storage(path, "read", key):
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:  # no such bucket: say so, not "no such key"
                raise storage_error(OSError(f"Bucket '{bucket}' not found"), str(path), "read", key)
    if info.type == pafs.FileType.NotFound:
        where = "run the stage that writes it first" if is_uri(path) else f"relative paths start at {Path.cwd()}"
        raise InputError(f"{key}: {path} does not exist; fix the path ({where})")
    if kind == "folder" and info.type != pafs.FileType.Directory:
        raise InputError(f"{key}: {path} is a file, not a folder; give the folder that holds the files")
    if kind == "file" and info.type != pafs.FileType.File:
        raise InputError(f"{key}: {path} is a folder, not a file; give the file itself")
    if isinstance(fs, pafs.LocalFileSystem):
        if not os.access(p, os.R_OK | (os.X_OK if info.type == pafs.FileType.Directory else 0)):
            raise InputError(f"{key}: {path} cannot be read (permission denied); give it read permission or use another")


def require_output(folder: str | Path, key: str = "out") -> None:
    """Create ``folder`` (the value of ``key``) and check a file can be written in it; raises
    :class:`InputError` naming ``key`` before a stage does any work."""
    fs, p = resolve(folder)
    try:
        fs.create_dir(p, recursive=True)
        if isinstance(fs, pafs.LocalFileSystem):
            import tempfile

            with tempfile.NamedTemporaryFile(dir=p, prefix=".write-check-"):
                pass
    except (PermissionError, FileExistsError, NotADirectoryError, OSError) as e:
        if is_uri(folder) and not str(folder).startswith("file://"):
            raise storage_error(e, str(folder), "write", key) from None
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise InputError(f"{key}: cannot write to {folder} ({reason}); choose a folder you can write, "
                         f"e.g. {key}=outputs/<name>") from None


def require_port(host: str, port: int, key: str = "port") -> None:
    """Raise :class:`InputError` naming ``key`` when ``host:port`` cannot be bound (another
    server holds it), before a server starts."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(f"{key}: {host}:{port} cannot be used ({e.strerror or e}); pass another, e.g. "
                             f"{key}={port + 1}, or stop the server that holds it") from None


def stem(path: str | Path) -> str:
    name = posixpath.basename(str(path))
    return name.rsplit(".", 1)[0] if "." in name else name


# ---------------------------------------------------------------- images
def _decode(data: bytes, flags: int, name: str) -> np.ndarray:
    if not data:
        raise ImageDecodeError(f"{name}: empty file; expected an image (JPEG, PNG, WebP)")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if arr is None:
        raise ImageDecodeError(f"{name}: not a readable image (corrupt, truncated or unsupported format); re-export it as JPEG or PNG")
    return arr


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        hi = float(arr.max()) if arr.size else 1.0
        return np.clip(arr * (255.0 / max(hi, 1e-6) if hi > 1.0 else 255.0), 0, 255).astype(np.uint8)
    return arr


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1..8) of encoded image bytes; 1 (as stored) when there is none.
    Reads the header only (Pillow opens lazily), never the pixels."""
    import io as _pyio

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(_pyio.BytesIO(data)) as im:
            value = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # not for Pillow: OpenCV decides
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn ``arr`` (``(H, W[, C])``) upright for an EXIF ``orientation`` (1..8), as viewers show it.
    The one place images, masks and RGBA cutouts are rotated: a mask stays aligned with its photo."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],                     # mirrored
        3: lambda a: a[::-1, ::-1],                  # rotated 180
        4: lambda a: a[::-1],                        # flipped vertically
        5: lambda a: a.swapaxes(0, 1),               # transposed
        6: lambda a: np.rot90(a, -1),                # rotated 90 clockwise to view
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),   # transversed
        8: lambda a: np.rot90(a, 1),                 # rotated 90 counter-clockwise to view
    }
    return np.ascontiguousarray(ops.get(int(orientation), ops[1])(arr))


def _decode_upright(data: bytes, flags: int, name: str) -> np.ndarray:
    """Decode with OpenCV (ignoring its own orientation handling, which only some flags apply)
    and turn upright with :func:`apply_orientation`: one rule for images, masks and RGBA."""
    arr = _to_uint8(_decode(data, flags | cv2.IMREAD_IGNORE_ORIENTATION, name))
    return apply_orientation(arr, exif_orientation(data))


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes -> ``(H, W, 3) uint8`` RGB (EXIF orientation applied; gray/16-bit converted)."""
    arr = _decode_upright(data, cv2.IMREAD_COLOR, name)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def decode_rgba(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes -> ``(H, W, 4) uint8`` RGBA (EXIF orientation applied); images without alpha get an
    opaque alpha."""
    arr = _decode_upright(data, cv2.IMREAD_UNCHANGED, name)
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGBA)
    elif arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGBA)
    else:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return arr


def decode_mask(data: bytes, name: str = "mask") -> np.ndarray:
    """Bytes -> ``(H, W) uint8 0..255`` (EXIF orientation applied, as for its image); an RGBA file
    gives its alpha, RGB its luminance."""
    arr = _decode_upright(data, cv2.IMREAD_UNCHANGED, name)
    if arr.ndim == 3:
        arr = arr[:, :, 3] if arr.shape[2] == 4 else cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    return arr


def encode_png(arr: np.ndarray, compression: int = 1) -> bytes:
    """``(H, W)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 -> PNG bytes (fast level 1 by default)."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError(f"could not encode PNG of shape {arr.shape}")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """``(H, W, 3) uint8`` RGB -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode JPEG of shape {rgb.shape}")
    return buf.tobytes()


def read_image(path: str | Path) -> np.ndarray:
    return decode_image(read_bytes(path), name=str(path))


def read_rgba(path: str | Path) -> np.ndarray:
    return decode_rgba(read_bytes(path), name=str(path))


def read_mask(path: str | Path) -> np.ndarray:
    return decode_mask(read_bytes(path), name=str(path))


# ---------------------------------------------------------------- parquet
def write_parquet(table: pa.Table | list[dict], path: str | Path, row_group_size: int | None = None) -> None:
    """``table`` to ``path`` in one write (atomic on local disk); ``row_group_size`` rows per
    group (None: one group) lets :class:`ParquetIndex` read a few rows without the rest."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(table)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size)
    write_bytes(path, sink.getvalue().to_pybytes())


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """One parquet file, or every ``*.parquet`` in a folder (sorted), as one table."""
    fs, p = resolve(path)
    with _storage(path, "read"):
        is_folder = fs.get_file_info(p).type == pafs.FileType.Directory
    if is_folder:
        files = [f for f in list_files(path, [".parquet"], recursive=True)]
        if not files:
            raise FileNotFoundError(f"{path} holds no parquet files")
        return pa.concat_tables([read_parquet(f, columns) for f in files])
    with _storage(path, "read"):
        return pq.read_table(p, filesystem=fs, columns=columns)


class ParquetIndex:
    """Rows of parquet files found by a key column, without holding them in memory.

    The index keeps each key's place (file, row group, row) and the ``keep`` columns' values
    (small ones: ids, categories); :meth:`fetch` reads only the row groups that hold the keys
    asked for, one group at a time, so memory is one row group plus the rows asked for, however
    large the files. A key that repeats (in a file or in a later one) keeps its first row and is
    listed in ``duplicates`` as ``(key, file)``.
    """

    def __init__(self, files: Iterable[str], key: str, keep: Iterable[str] = ()):
        self.files, self.key, self.keep = [str(f) for f in files], key, tuple(keep)
        self._open: dict[int, pq.ParquetFile] = {}
        self.where: dict[str, tuple[int, int, int]] = {}
        self.values: dict[str, dict] = {}
        self.duplicates: list[tuple[str, str]] = []
        self.columns: list[str] = []
        for fi, f in enumerate(self.files):
            pf = self._file(fi)
            self.columns = self.columns or pf.schema_arrow.names
            for g in range(pf.num_row_groups):
                with _storage(f, "read"):
                    t = pf.read_row_group(g, columns=[key, *self.keep])
                kept = {c: t.column(c).to_pylist() for c in self.keep}
                for r, k in enumerate(t.column(key).to_pylist()):
                    k = str(k)
                    if k in self.where:
                        self.duplicates.append((k, f))
                        continue
                    self.where[k] = (fi, g, r)
                    self.values[k] = {c: kept[c][r] for c in self.keep}

    def _file(self, fi: int) -> pq.ParquetFile:
        if fi not in self._open:
            fs, p = resolve(self.files[fi])
            with _storage(self.files[fi], "read"):
                self._open[fi] = pq.ParquetFile(fs.open_input_file(p))
        return self._open[fi]

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def file_of(self, key: str) -> str:
        return self.files[self.where[key][0]]

    def group_values(self, column: str) -> Iterator[tuple[list[str], pa.Array]]:
        """``(keys, values of column)`` one row group at a time (for a column too big to keep)."""
        for fi, f in enumerate(self.files):
            pf = self._file(fi)
            for g in range(pf.num_row_groups):
                with _storage(f, "read"):
                    t = pf.read_row_group(g, columns=[self.key, column])
                yield [str(k) for k in t.column(self.key).to_pylist()], t.column(column).combine_chunks()

    def fetch(self, keys: Iterable[str], columns: Iterable[str]) -> dict[str, dict]:
        """``{key: {column: value}}`` for ``keys`` (each must be in the index)."""
        columns = list(columns)
        groups: dict[tuple[int, int], list[str]] = {}
        for k in dict.fromkeys(keys):
            fi, g, _ = self.where[k]
            groups.setdefault((fi, g), []).append(k)
        out: dict[str, dict] = {}
        for (fi, g), ks in sorted(groups.items()):
            with _storage(self.files[fi], "read"):
                t = self._file(fi).read_row_group(g, columns=columns)
            for k in ks:
                r = self.where[k][2]
                out[k] = {c: t.column(c)[r].as_py() for c in columns}
            del t
        return out


# ---------------------------------------------------------------- labelled folders
def read_categories(path: str | Path, key: str = "stem", value: str = "category") -> dict[str, str]:
    """A CSV with a ``stem`` (or other ``key``) column and a ``category`` column -> mapping."""
    import csv
    import io as _io

    text = read_bytes(path).decode("utf-8-sig")
    rows = list(csv.DictReader(_io.StringIO(text)))
    if rows and (key not in rows[0] or value not in rows[0]):
        raise ValueError(f"{path}: expected columns {key!r} and {value!r}, found {list(rows[0])}")
    return {r[key]: r[value] for r in rows}


def parse_stem_ranges(spec: str) -> list[tuple[int, int]]:
    """``"1-50"``, ``"51-100,120"`` -> ``[(1, 50)]``, ``[(51, 100), (120, 120)]`` (inclusive)."""
    ranges = []
    for part in str(spec).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"stems: {spec!r} is not a list of numeric ranges; write e.g. '1-50' or '51-100,120'") from None
        if a > b:
            raise ValueError(f"stems: range {part!r} is empty; write low-high, e.g. '1-50'")
        ranges.append((a, b))
    return ranges


def select_stems(items: list[dict], spec: str | None, folder: str | Path = "", half: str | None = None) -> list[dict]:
    """The items whose stem ``spec`` names, of the fixed ``half`` (``"select"`` or ``"report"``,
    :func:`segsynth.split.dev_half`) when given; all items when both are None.

    ``spec`` is numeric ranges (``"1-50"``: ``0001`` .. ``0050``, see :func:`parse_stem_ranges`)
    or the path of a CSV file whose ``stem`` column lists the stems to keep (any stems, e.g.
    ``bed_003a7e3a85``). An empty selection, a non-numeric stem under ranges, or a listed stem
    the folder lacks is a ValueError that says how to fix it."""
    chosen = items
    if spec is not None and str(spec).lower().endswith(".csv"):
        wanted = read_stem_list(str(spec))
        have = {it["stem"] for it in items}
        missing = [s for s in wanted if s not in have]
        if missing:
            raise ValueError(f"stems={spec!r} lists {len(missing)} stems that {folder} lacks (e.g. {missing[0]!r}); "
                             "list only stems of images that have a mask")
        chosen = [it for it in items if it["stem"] in wanted]
    elif spec is not None:
        ranges = parse_stem_ranges(spec)
        bad = [it["stem"] for it in items if not it["stem"].isdigit()]
        if bad:
            raise ValueError(f"stems={spec!r}: {folder} has non-numeric stems (e.g. {bad[0]!r}); select by number "
                             "only in folders of numbered files, or use split: {half: select} (or report), or "
                             "stems: FILE.csv with a stem column")
        chosen = [it for it in items if any(a <= int(it["stem"]) <= b for a, b in ranges)]
    if half is not None:
        from segsynth.split import DEV_HALVES, dev_half

        if half not in DEV_HALVES:
            raise ValueError(f"split.half={half!r}; valid: {', '.join(DEV_HALVES)}")
        chosen = [it for it in chosen if dev_half(it["stem"]) == half]
    if not chosen and (spec is not None or half is not None):
        raise ValueError(f"stems={spec!r}, half={half!r} selects none of the {len(items)} items of {folder}")
    return chosen


def read_stem_list(path: str) -> set[str]:
    """The ``stem`` column of a CSV file (a header line naming ``stem``; other columns ignored)."""
    import csv

    if not exists(path):
        raise ValueError(f"stems: the stem list {path} does not exist; give a CSV with a 'stem' column or ranges like '1-50'")
    rows = list(csv.DictReader(read_bytes(path).decode("utf-8-sig").splitlines()))
    if not rows or "stem" not in rows[0]:
        raise ValueError(f"stems: {path} has no 'stem' column (or no rows); write a header line 'stem' and one stem per line")
    return {r["stem"].strip() for r in rows if r["stem"] and r["stem"].strip()}


def labelled_folder(folder: str | Path, stems: str | None = None, half: str | None = None) -> list[dict]:
    """Items of a labelled folder: ``images/<stem>.<ext>`` with ``masks/<stem>.png``.

    Returns dicts ``{stem, image, mask, category}`` (paths; category from an optional
    ``categories.csv`` with ``stem, category``, else ``"unknown"``), sorted by stem. Images
    without a mask are left out and logged. ``stems`` keeps numbered items in ranges
    (``"1-50"``: ``0001`` .. ``0050``) or lists them in a CSV; ``half`` keeps one fixed half
    (``"select"`` or ``"report"``); see :func:`select_stems`.
    """
    import logging

    images = list_files(join(folder, "images"), IMAGE_EXTS)
    masks = {stem(m): m for m in list_files(join(folder, "masks"), IMAGE_EXTS)}
    cats_path = join(folder, "categories.csv")
    cats = read_categories(cats_path) if exists(cats_path) else {}
    items, missing = [], []
    for img in images:
        s = stem(img)
        if s not in masks:
            missing.append(s)
            continue
        items.append({"stem": s, "image": img, "mask": masks[s], "category": cats.get(s, "unknown")})
    if missing:
        logging.getLogger(__name__).warning("%s: %d images have no mask in masks/ and are left out (e.g. %s)",
                                            folder, len(missing), missing[0])
    return select_stems(items, stems, folder, half)
