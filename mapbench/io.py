"""Atomic file output: write to a temporary file beside the target, then rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path in the target's directory; on success rename it onto ``target``.

    On any error the temporary file is removed and ``target`` is left untouched, so a killed or
    failed job never leaves a partial output behind.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise write_error(e, target) from e
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise write_error(e, target) from e
        raise


def write_json(target: str | os.PathLike, obj) -> None:
    """``obj`` as indented JSON with a final newline, atomically."""
    import json
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")


def write_error(e: OSError, target: Path) -> OSError:
    """The same error (its errno, hence its OSError subclass) naming ``target``, not the temporary
    file: disk full, read-only file system, permission denied."""
    return OSError(e.errno, f"cannot write {target}: {os.strerror(e.errno)}")
