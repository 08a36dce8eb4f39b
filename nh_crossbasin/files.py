"""Writing files without losing anything: one rule for every file the plugin writes next to a user's files.

- :func:`next_free_path`: a new record never replaces an old one (``name.nc``, ``name_2.nc``, ``name_3.nc``, ...);
- :func:`write_text_once`: a file the plugin owns is written once; writing it again with other content is refused;
- :func:`replace_keeping_previous`: a derived table that is re-computed replaces the old one only after moving it to
  ``name.previous_N.ext`` (when the content differs).
"""
from __future__ import annotations

from pathlib import Path


def next_free_path(path: Path) -> Path:
    """``path`` if it does not exist, else ``stem_2.ext``, ``stem_3.ext``, ...: nothing is ever overwritten."""
    path = Path(path)
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


def write_text_once(path: Path, text: str) -> None:
    """Write ``text``; an existing file must already hold exactly it (nothing a user wrote is overwritten).

    Raises
    ------
    FileExistsError
        If ``path`` exists with other content.
    """
    path = Path(path)
    if path.exists():
        if path.read_text() != text:
            raise FileExistsError(f"{path} exists with other content; choose a new --out folder.")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def replace_keeping_previous(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; different content already there is first moved to ``stem.previous_N.ext``."""
    path = Path(path)
    if path.exists() and path.read_text() != text:
        n = 1
        while path.with_name(f"{path.stem}.previous_{n}{path.suffix}").exists():
            n += 1
        path.replace(path.with_name(f"{path.stem}.previous_{n}{path.suffix}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
