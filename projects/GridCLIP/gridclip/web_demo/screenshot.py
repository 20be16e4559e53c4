"""
A screenshot of a page in headless Chromium (Debian's ``chromium`` package: ``apt-get install
chromium``), for the web demo's test and its picture in the docs.
"""
import os
import shutil
import subprocess
import tempfile
from typing import Optional, Tuple

__all__ = ["CHROMIUM_NAMES", "find_chromium", "screenshot", "to_palette_png"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> Optional[str]:
    """The first Chromium binary on PATH (``$CHROMIUM`` first when set), or None."""
    explicit = os.environ.get("CHROMIUM")
    for name in ((explicit,) if explicit else ()) + CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def to_palette_png(path: str, colours: int = 256) -> str:
    """Rewrite a PNG with a ``colours``-entry palette (median cut, no dithering): a third of the bytes for docs."""
    from PIL import Image

    from ..file_io import atomic_write

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=int(colours), method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    atomic_write(path, lambda tmp: palette.save(tmp, format="PNG", optimize=True))
    return path


def screenshot(url: str, path: str, window_size: Tuple[int, int] = (1280, 1000), wait_ms: int = 8000,
               timeout: float = 90.0, binary: Optional[str] = None) -> str:
    """
    Load ``url`` in headless Chromium and write a PNG of the window to ``path``.

    ``wait_ms``: virtual time the page gets to run its scripts before the shot (Chromium's
    ``--virtual-time-budget``). Raises FileNotFoundError without a Chromium binary, RuntimeError
    when Chromium fails or writes no PNG within ``timeout`` seconds.
    """
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("No Chromium binary on PATH: apt-get install chromium (or set $CHROMIUM).")
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gridclip-chromium-") as profile:
        command = [
            binary, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--no-default-browser-check",
            "--disable-dev-shm-usage", "--disable-extensions", "--disable-background-networking",
            f"--user-data-dir={profile}", f"--window-size={int(window_size[0])},{int(window_size[1])}",
            f"--virtual-time-budget={int(wait_ms)}", f"--screenshot={path}", url,
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to start its sandbox as root
        if os.path.exists(path):
            os.remove(path)
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Chromium took more than {timeout:.0f} s to screenshot {url}.") from None
    if proc.returncode != 0 or not os.path.isfile(path):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"Chromium wrote no screenshot of {url} (exit {proc.returncode}): {' | '.join(tail)}")
    return path
