"""
Output folders that never cost the user a file: the one place every tool decides whether it may
create, reuse or replace an output path, and how a command-line input error is reported.

A tool that creates an output folder writes a marker into it, ``.cyclediff-output.json``:
``{"tool": NAME, "files": [every file it wrote, relative]}``. Replacing a folder (``--overwrite``)
is then allowed only for a folder carrying that tool's marker and holding nothing but the files
the marker lists. Everything else is refused with one line, before any work and without touching
anything: the input itself, a folder containing the input, a regular file, a folder with other
contents, the current folder or one of its parents, a path below a regular file. Folders written
before the marker existed can be recognised by a tool's own ``recognise(folder)`` (e.g. a
synthetic dataset by its identities.json). docs/bad_inputs.md lists the refusals.

Torch-free (argument checks must answer before torch is imported).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

from .atomic import atomic_write
from .mpi_launch import launcher_rank

MARKER = ".cyclediff-output.json"


class InputError(ValueError):
    """A bad command-line input: one `error: ...` line, exit status 2."""


# --------------------------------------------------------------------------- reporting

def report_input_error(exc, stream=None):
    """Print ``error: <one line>`` (on rank 0 only: every rank finds the same error) and return 2."""
    if launcher_rank() == 0:
        print(f"error: {' '.join(str(exc).split())}", file=stream or sys.stderr)
    return 2


INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def parse_checked(parser, check, argv=None, errors=INPUT_ERRORS):
    """``parser.parse_args(argv)``, then ``check(args)``: an input error it raises is one ``error:``
    line (said once under mpiexec) and exit status 2. Returns the args."""
    args = parser.parse_args(argv)
    try:
        check(args)
    except errors as err:
        sys.exit(report_input_error(err))
    return args


class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusals are one `error: ...` line and exit status 2 (no usage block), printed
    once under mpiexec; --help is unchanged."""

    def error(self, message):
        report_input_error(f"{message} (python {self.prog} --help lists the flags)")
        sys.exit(2)


# --------------------------------------------------------------------------- markers

def read_marker(folder):
    """The marker's dict, or None (absent or unreadable)."""
    try:
        with open(os.path.join(folder, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def listing(folder):
    """Sorted relative paths of every file (and link) below ``folder``, the marker left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != MARKER:
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def write_marker(folder, tool, files=True):
    """Mark ``folder`` as written by ``tool``. ``files``: True lists every file now in it (a folder
    built whole); None lists none (a folder the tool keeps adding to and never replaces)."""
    record = {"tool": tool}
    if files is not None:
        record["files"] = listing(folder) if files is True else sorted(files)
    atomic_write(os.path.join(folder, MARKER), json.dumps(record, separators=(",", ":")) + "\n")


def written_by(folder, tool, recognise=None):
    """True when ``folder`` carries ``tool``'s marker, or ``recognise(folder)`` says it is ``tool``'s
    output from before markers."""
    marker = read_marker(folder)
    if marker is not None:
        return marker.get("tool") == tool
    return bool(recognise and recognise(folder))


def foreign_files(folder, tool, recognise=None):
    """The files of ``folder`` that ``tool`` did not write (all of them when it is not ``tool``'s)."""
    present = listing(folder)
    if not written_by(folder, tool, recognise):
        return present
    marker = read_marker(folder)
    if marker is None or "files" not in marker:  # recognised, or a folder the tool only adds to
        return []
    listed = set(marker["files"])
    return [f for f in present if f not in listed]


def _examples(names, limit=3):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --------------------------------------------------------------------------- path checks

def _real(path):
    return os.path.realpath(os.path.abspath(path))


def _inside(path, folder):
    """True when ``path`` is ``folder`` or below it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_not_below_file(path, flag):
    """InputError when a folder above ``path`` is a regular file (nothing could be written there)."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder")


def check_output_file(path, flag):
    """For a file a tool writes: not below a file, not an existing folder."""
    if not str(path).strip():
        raise InputError(f"{flag}: empty path")
    check_not_below_file(path, flag)
    if os.path.isdir(path):
        raise InputError(f"{flag} {path} is a folder; give a file name")


def _check_placement(out, flag, inputs):
    check_not_below_file(out, flag)
    real = _real(out)
    cwd = _real(os.getcwd())
    if _inside(cwd, real):
        raise InputError(f"{flag} {out} is the current folder or one above it; choose a new folder")
    for input_flag, path in inputs:
        if path is None:
            continue
        source = _real(path)
        if source == real:
            raise InputError(f"{flag} {out} is the input ({input_flag}); choose a new folder")
        if _inside(source, real):
            raise InputError(f"{flag} {out} contains the input {path} ({input_flag}); choose a new folder")


def check_new_folder(out, flag, tool, overwrite, inputs=(), recognise=None):
    """
    For a tool that builds a whole folder and publishes it at ``out``: InputError unless ``out`` is
    absent, an empty folder, or (with ``overwrite``) a folder that only ``tool`` wrote.

    :param inputs: (flag, path) of the tool's inputs, which ``out`` may neither be nor contain.
    """
    _check_placement(out, flag, inputs)
    if not os.path.lexists(out):
        return
    if os.path.islink(out) or not os.path.isdir(out):
        raise InputError(f"{flag} {out} is a file, not a folder; choose a new folder")
    present = listing(out)
    if not present and read_marker(out) is None:
        return
    if not written_by(out, tool, recognise):
        other = (read_marker(out) or {}).get("tool")
        what = f"was written by {other}" if other else f"holds files {tool} did not write ({_examples(present)})"
        raise InputError(f"{flag} {out} {what}; choose a new folder")
    foreign = foreign_files(out, tool, recognise)
    if foreign:
        raise InputError(f"{flag} {out} holds files {tool} did not write ({_examples(foreign)}); "
                         "choose a new folder or move them away")
    if not overwrite:
        raise InputError(f"{flag} {out} already exists (written by {tool}); pass --overwrite to replace it")


def check_reusable_folder(out, flag, tool, recognise=None):
    """
    For a tool that writes into ``out`` and resumes there: InputError when ``out`` is a file, below a
    file, or a non-empty folder that ``tool`` did not write (its files could be replaced).
    """
    check_not_below_file(out, flag)
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out):
        raise InputError(f"{flag} {out} is a file, not a folder")
    present = listing(out)
    if present and not written_by(out, tool, recognise):
        raise InputError(f"{flag} {out} holds files {tool} did not write ({_examples(present)}); "
                         "choose a new folder")


# --------------------------------------------------------------------------- building and publishing

def building_prefix(out):
    return f".{os.path.basename(os.path.abspath(out))}.building-"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_builds(out):
    """Remove the ``.NAME.building-<pid>-*`` folders beside ``out`` whose process is gone (left by a
    killed run); return their paths. A folder whose pid is alive is kept (a concurrent run)."""
    out = os.path.abspath(out)
    parent, prefix = os.path.dirname(out), building_prefix(out)
    removed = []
    if not os.path.isdir(parent):
        return removed
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if not (name.startswith(prefix) and os.path.isdir(path) and not os.path.islink(path)):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue  # older versions wrote no pid: such folders are stale by now
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def start_building(out):
    """A new hidden folder beside ``out`` to build it in, after removing (and saying so) the ones a
    killed run left. Its mode follows the umask like a plain mkdir."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    for path in remove_stale_builds(out):
        print(f"removed {path}, left by an interrupted run", file=sys.stderr)
    building = tempfile.mkdtemp(dir=parent, prefix=f"{building_prefix(out)}{os.getpid()}-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(building, 0o777 & ~umask)  # mkdtemp makes it private
    return building


def publish(building, out, tool, flag="--out", recognise=None):
    """Mark ``building`` as ``tool``'s and move it to ``out``. A previous ``out`` is checked again
    (it may have changed during the build) and replaced only once the new folder is complete."""
    write_marker(building, tool)
    out = os.path.abspath(out)
    if os.path.lexists(out):
        check_new_folder(out, flag, tool, overwrite=True, recognise=recognise)
        previous = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.old-")
        os.replace(out, os.path.join(previous, "dataset"))
        os.replace(building, out)
        shutil.rmtree(previous)
    else:
        os.replace(building, out)
