"""
Atomic file writes, for every file the project writes that someone may read
while it is written, or that a killed run must not leave half-written:
checkpoints, configs, logs, tables, images.

The content goes to a hidden temporary file beside the destination
(``.tmp-<random>-<name>``, so it keeps the destination's extension), which is
then renamed onto it: a reader sees the old file or the new one, never part of
one, and a failed write leaves the old file and no temporary behind.

The file is created like ``open(path, "w")`` creates one: mode 0o666 less the
process umask (tempfile.mkstemp's private 0o600 is not used).
"""

import os
import secrets

__all__ = ["atomic_write", "atomic_torch_save", "atomic_save_image"]


def atomic_write(path, content):
    """
    Write ``path`` atomically (see the module docstring).

    :param path: destination file; its folder is created if missing.
    :param content: bytes; str (written as UTF-8); or a callable ``write(tmp_path)``
        that writes the whole file at ``tmp_path``, e.g.
        ``lambda tmp: torch.save(obj, tmp)``. ``tmp_path`` ends with the
        destination's file name, so writers that choose a format by extension
        (PIL, matplotlib, numpy) see the right one.
    """
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    while True:
        tmp = os.path.join(directory, f".tmp-{secrets.token_hex(4)}-{name}")
        try:
            # O_EXCL: never another writer's temporary; 0o666: the umask decides the mode.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        if callable(content):
            os.close(fd)
            fd = None
            content(tmp)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            with os.fdopen(fd, "wb") as f:
                fd = None
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_torch_save(obj, path):
    """``torch.save(obj, path)``, atomically."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_image(image, path, **save_kwargs):
    """Save a PIL image atomically; the format follows the extension (PNG when there is none)."""
    if not os.path.splitext(path)[1] and "format" not in save_kwargs:
        save_kwargs["format"] = "PNG"
    atomic_write(path, lambda tmp: image.save(tmp, **save_kwargs))
