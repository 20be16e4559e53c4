"""
Small file I/O shared by every part of the package: atomic writes, content hashes, safe loading.

- ``atomic_write(path, write_fn)``: ``write_fn(tmp_path)`` writes a temporary file with a unique name
  next to ``path``; it is fsync'ed, given the permissions a plain ``open()`` would give under the
  current umask (``mkstemp`` alone gives 0600), and renamed onto ``path``. Readers never see a
  partial file; two writers never share a temporary file; a failure leaves no temporary behind.
- ``atomic_write_bytes`` / ``atomic_write_text`` / ``atomic_write_json``: the common cases.
- ``sha256_file``, ``digest_json``: content hashes (files, and identities of settings).
- ``safe_torch_load``: ``torch.load(weights_only=True)`` with a message that names the file.
"""
import hashlib
import json
import os
import tempfile

TEMP_PREFIX = ".tmp-gridclip-"


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows, else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: str) -> None:
    """Persist a rename in folder ``path`` (best effort: not every filesystem / OS supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write_fn, mode: int = None) -> str:
    """
    Write ``path`` atomically.

    Args:
        path (str): the file to (re)place; its folder must exist.
        write_fn (callable): ``write_fn(tmp_path)`` writes the complete content to ``tmp_path``
            (a file that already exists, empty, in the same folder as ``path``).
        mode (int or None): permission bits before the umask (default 0o666, as ``open()`` uses).

    Returns:
        str: ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path)[:80] + ".", dir=folder)
    os.close(fd)
    try:
        write_fn(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, (0o666 if mode is None else mode) & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    fsync_dir(folder)
    return path


def atomic_write_bytes(path: str, data: bytes) -> str:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj, indent=2, sort_keys=False) -> str:
    """Write ``obj`` as JSON (with a final newline) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_json(obj, length: int = None) -> str:
    """Hex sha256 of ``obj`` serialised as canonical JSON (sorted keys), cut to ``length`` characters."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()
    return digest if length is None else digest[:length]


def read_json(path: str, what: str = "JSON file"):
    """Read a JSON file; a parse error names the file and says it can be deleted to rebuild it."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{what} {path} is not valid JSON ({e}): it is corrupt or truncated") from None


def safe_torch_load(path: str, what: str = "file", advice: str = None):
    """
    ``torch.load(path, map_location="cpu", weights_only=True)``: only tensors and plain containers are
    unpickled. Any failure raises ``ValueError("Cannot read {what} from {path} with
    torch.load(weights_only=True): {error}. {advice}")``.

    Args:
        what (str): what the file should hold, e.g. "CLIP weights".
        advice (str or None): the sentence that says what to do (default: re-save the tensors).
    """
    import torch

    if advice is None:
        advice = ("Only tensors and plain containers are loaded; re-save the tensors (or use .safetensors) if "
                  "you trust the file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"Cannot read {what} from {path} with torch.load(weights_only=True): {e}. {advice}") from None
