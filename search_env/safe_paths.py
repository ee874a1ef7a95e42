"""Untrusted names become paths only here: a name from a hub listing, a data registry, a checkpoint
folder or a client is checked and resolved against the folder it must stay in before anything is
opened or created.

`resolve_under(root, name)` accepts a relative, `/`-separated name of plain components and returns
the resolved path, symlinks followed, provided it lies strictly under the resolved root. Refused, as
`UnsafeName` naming the entry: a name that is not a string or is empty, absolute (`/x`), a drive
(`C:x`), one holding a backslash, NUL or another control character, an empty component (`a//b`, a
trailing `/`), a `.` or `..` component, and one whose resolved path leaves the root (a symlink inside
the root that points out of it). The checks are lexical first, so a refused name touches nothing on
disk; the resolution then reads only the links already there. What it cannot close is a race with
someone who swaps a component for a link between this check and the open: the folders it guards
belong to the user running the command.
"""

from __future__ import annotations

import re
from pathlib import Path

# A drive letter or a drive-relative name (`C:x`, `c:\\x`): absolute on Windows, whatever the OS here.
_DRIVE = re.compile(r"^[A-Za-z]:")
# NUL ends a C string (the name opened would be another), and the other control characters forge
# log lines and terminal output wherever the name is printed.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafeName(ValueError):
    """An untrusted name refused as a path: it names the entry, its folder and why, in one line."""

    def __init__(self, name: object, root: Path | str, reason: str, *, what: str = "entry"):
        self.name = name
        self.root = Path(root)
        self.reason = reason
        super().__init__(f"{what} {name!r} refused: {reason} (it must stay inside {root})")


def name_parts(name: object, root: Path | str = ".", *, what: str = "entry", single: bool = False) -> tuple[str, ...]:
    """The components of `name` after the lexical checks (nothing on disk is read).

    Raises UnsafeName for a name that is not a non-empty string, is absolute or a drive, holds a
    backslash, NUL or control character, or has an empty, `.` or `..` component; with `single`, also
    for a name of more than one component (a split or a folder name, never a path).
    """
    if not isinstance(name, str):
        raise UnsafeName(name, root, f"not a string ({type(name).__name__})", what=what)
    if not name:
        raise UnsafeName(name, root, "empty name", what=what)
    if _CONTROL.search(name):
        raise UnsafeName(name, root, "holds NUL or a control character", what=what)
    if "\\" in name:
        raise UnsafeName(name, root, "holds a backslash (a separator on Windows)", what=what)
    if name.startswith("/"):
        raise UnsafeName(name, root, "absolute path", what=what)
    if _DRIVE.match(name):
        raise UnsafeName(name, root, "drive letter", what=what)
    parts = tuple(name.split("/"))
    for part in parts:
        if part == "":
            raise UnsafeName(name, root, "empty path component", what=what)
        if part in (".", ".."):
            raise UnsafeName(name, root, f"{part!r} path component", what=what)
    if single and len(parts) > 1:
        raise UnsafeName(name, root, "holds a '/': a name here is one component, not a path", what=what)
    return parts


def resolve_under(root: Path | str, name: object, *, what: str = "entry", single: bool = False) -> Path:
    """`root / name` resolved (symlinks followed), checked to lie strictly under the resolved root.

    The lexical checks of `name_parts` run first (`single`: one component only), so a refused name
    creates and opens nothing; the root need not exist yet. Raises UnsafeName naming the entry (`what`
    says what kind of entry, e.g. "hub listing entry", "split") for any refusal.
    """
    parts = name_parts(name, root, what=what, single=single)
    base = Path(root).resolve()
    resolved = base.joinpath(*parts).resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise UnsafeName(name, root, f"resolves to {resolved}, outside the folder (a symlink?)", what=what)
    return resolved
