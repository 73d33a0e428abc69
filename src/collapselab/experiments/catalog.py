"""The built-in experiment catalog (``catalog/*.yaml`` shipped in the package); imports only PyYAML."""

from __future__ import annotations

import re
from importlib import resources

import yaml


def catalog_names() -> list[str]:
    """Names of the built-in experiments."""
    folder = resources.files("collapselab.experiments") / "catalog"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def catalog_text(name: str) -> str:
    """The YAML text of a built-in experiment."""
    return (resources.files("collapselab.experiments") / "catalog" / f"{name}.yaml").read_text(encoding="utf-8")


def catalog_summaries() -> list[tuple[str, str]]:
    """``(name, first sentence of the description)`` of every built-in experiment, without validating them."""
    out = []
    for name in catalog_names():
        raw = yaml.safe_load(catalog_text(name)) or {}
        out.append((name, first_sentence(str(raw.get("description", "")))))
    return out


#: a sentence ends at ". " before a capital letter, but not after an abbreviation ("et al.", "e.g.", "i.e.")
_SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)\.\s+(?=[A-Z(])")


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (abbreviations such as "et al." do not end one)."""
    return _SENTENCE_END.split(" ".join(text.split()), maxsplit=1)[0].strip()
