"""Finding a user's data files: a file, a folder (searched recursively) or a glob, with one-line errors naming
``data.path``. Shared by the sources that read user data (``text_files``, ``image_folder``, ``array_file``,
``hf_dataset``)."""

from __future__ import annotations

import glob
from pathlib import Path

from collapselab.errors import ConfigError

GLOB_CHARS = "*?["


def find_files(path: str, suffixes: tuple[str, ...], what: str = "data.path") -> list[Path]:
    """The files ``path`` names with one of ``suffixes`` (lower-case, with the dot), sorted; a missing path, an
    empty folder or a glob matching nothing is a :class:`ConfigError` naming ``what`` and what is allowed."""
    allowed = ", ".join(suffixes)
    if any(c in path for c in GLOB_CHARS) and not Path(path).expanduser().exists():  # an existing path is literal
        found = [Path(p) for p in glob.glob(str(Path(path).expanduser()), recursive=True)]
        files = sorted(p for p in found if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise ConfigError(f"{what}: {path!r} matches no {allowed} file")
        return files
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{what}: {path!r} does not exist")
    if p.is_file():
        if p.suffix.lower() not in suffixes:
            raise ConfigError(f"{what}: {path!r} is a {p.suffix or 'suffix-less'} file; allowed: {allowed}")
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files:
        raise ConfigError(f"{what}: the folder {path!r} holds no {allowed} file")
    return files


def read_text(path: Path, what: str = "data.path") -> str:
    """A UTF-8 text file's content; unreadable or not UTF-8 is a :class:`ConfigError` naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what}: {str(path)!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {str(path)!r} ({e.strerror or e})") from None


def pinned_files(path: str) -> list[Path]:
    """Every file ``path`` names (a file, a folder searched recursively without hidden entries, or a glob), sorted:
    what a run's pin of the user's data covers."""
    p = Path(path).expanduser()
    if any(c in path for c in GLOB_CHARS) and not p.exists():
        return sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
    if p.is_file():
        return [p]
    if not p.is_dir():
        return []
    return sorted(f for f in p.rglob("*") if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts))
