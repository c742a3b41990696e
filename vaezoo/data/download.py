"""Download of dataset files from a list of mirrors, with a progress bar, verified and atomic.

Tests (and users behind a proxy) can replace the network: :data:`MIRRORS` lists the base URLs
tried in order for each dataset, and :func:`urlopen` is looked up at call time, so
``monkeypatch.setattr(vaezoo.data.download, "urlopen", fake)`` intercepts every request.
"""

import http.client
import socket
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from vaezoo.data.paths import atomic_writer
from vaezoo.errors import DataError

MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}
TIMEOUT = 10.0  # seconds, for connecting and for each read
CHUNK = 1 << 16

urlopen = urllib.request.urlopen


def describe(err):
    """A short one-line description of a download error."""
    if isinstance(err, urllib.error.HTTPError):
        text = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, urllib.error.URLError):
        text = str(err.reason)
    elif isinstance(err, (socket.timeout, TimeoutError)):
        text = f"timed out after {TIMEOUT:g} s"
    elif isinstance(err, OSError) and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def fetch(url, verify=None, progress=None, desc=None):
    """The bytes at ``url``, downloaded with a progress bar.

    ``verify(content)``, if given, is called on the downloaded bytes and must raise
    :class:`DataError` to reject them. ``progress=None`` shows a progress bar only on a terminal.
    Network errors propagate (as :class:`OSError`, mostly :class:`urllib.error.URLError`).
    """
    content = bytearray()
    with urlopen(url, timeout=TIMEOUT) as response:
        headers = getattr(response, "headers", None) or {}
        length = str(headers.get("Content-Length") or "")
        total = int(length) if length.isdigit() else None
        disable = None if progress is None else not progress
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=desc or url.rsplit("/", 1)[-1], disable=disable, leave=False) as bar:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                content += chunk
                bar.update(len(chunk))
    if total is not None and len(content) != total:
        raise DataError(f"incomplete download: {len(content)} of {total} bytes")
    content = bytes(content)
    if verify is not None:
        verify(content)
    return content


def fetch_from_mirrors(mirrors, filename, dest, verify=None, progress=None):
    """Download ``filename`` from the first of ``mirrors`` that works and write it atomically to ``dest``.

    Returns ``dest``. Raises :class:`DataError` whose message is the reason the last mirror failed
    (with the number of mirrors tried) when none works, or why ``dest`` cannot be written.
    """
    if not mirrors:
        raise DataError("no download mirror is configured")
    content, reason = None, None
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            content = fetch(url, verify=verify, progress=progress, desc=filename)
            break
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError, timeouts, DataError
            reason = f"{url}: {describe(err)}"
    if content is None:
        tried = f"{len(mirrors)} mirrors tried, last " if len(mirrors) > 1 else ""
        raise DataError(f"{tried}{reason}")
    try:
        with atomic_writer(dest) as f:
            f.write(content)
    except OSError as err:
        raise DataError(f"cannot write {dest}: {describe(err)}") from None
    return Path(dest)
