"""``dcsync new-connector NAME``: a connector package that installs, registers and passes its tests.

A new connector should start from something that already works end to end -- a connector, a fake of its
remote, a mapping with golden samples, and the contract suite wired to all of them -- so the author's first
change is protocol code, not plumbing. The templates are plain files beside this module (``*.tmpl``,
shipped as package data) with ``{{token}}`` placeholders, filled by :func:`generate`.
"""

from __future__ import annotations

import importlib.metadata as md
import keyword
import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_LEFTOVER = re.compile(r"\{\{[A-Za-z_]+\}\}")
TEMPLATES = Path(__file__).resolve().parent

# template file -> where it goes in the new package ({module} and {name} filled in)
LAYOUT = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "gitignore.tmpl": ".gitignore",
    "dcsync.yaml.tmpl": "dcsync.yaml",
    "package_init.py.tmpl": "{module}/__init__.py",
    "connector.py.tmpl": "{module}/connector.py",
    "fake.py.tmpl": "{module}/fake.py",
    "plugin.py.tmpl": "{module}/plugin.py",
    "mapping.yaml.tmpl": "mappings/{name}.yaml",
    "events.jsonl.tmpl": "mappings/samples/events.jsonl",
    "expected.jsonl.tmpl": "mappings/samples/expected.jsonl",
    "test_contract.py.tmpl": "tests/test_contract.py",
    "test_mapping.py.tmpl": "tests/test_mapping.py",
}


class ScaffoldError(ValueError):
    """The name or the target directory cannot be used; the message says why."""


@dataclass(frozen=True)
class Names:
    """Every spelling of the connector's name the package needs."""

    name: str  # the connector type users write as `type:` and the entry point's name
    module: str  # the Python package
    cls: str  # class name prefix
    title: str  # for prose
    dist: str  # the distribution on PyPI
    env: str  # environment variable prefix

    @classmethod
    def of(cls, name: str) -> Names:
        if not _NAME.match(name):
            raise ScaffoldError(
                f"connector name {name!r}: use lower-case letters and digits, words joined by '-' or '_' "
                "(it becomes the `type:` in dcsync.yaml), e.g. acme or acme-registry"
            )
        words = re.split(r"[-_]", name)
        module = "_".join(words) + "_dcsync"
        if keyword.iskeyword(module):
            raise ScaffoldError(f"connector name {name!r} makes a Python keyword")
        return cls(
            name=name,
            module=module,
            cls="".join(w.capitalize() for w in words),
            title=" ".join(w.capitalize() for w in words),
            dist="dcsync-" + "-".join(words),
            env="_".join(words).upper(),
        )

    def tokens(self) -> dict[str, str]:
        return {
            "{{name}}": self.name,
            "{{module}}": self.module,
            "{{Class}}": self.cls,
            "{{title}}": self.title,
            "{{dist}}": self.dist,
            "{{ENV}}": self.env,
            "{{dcsync_version}}": _dcsync_version(),
        }


def _dcsync_version() -> str:
    try:
        return md.version("dcsync")
    except md.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"


def render(template: str, names: Names) -> str:
    """Fill a template's ``{{token}}`` placeholders; an unknown token is a bug in the template."""
    text = template
    for token, value in names.tokens().items():
        text = text.replace(token, value)
    leftover = _LEFTOVER.search(text)
    if leftover:
        raise ScaffoldError(f"template placeholder {leftover.group(0)} has no value")
    return text


def generate(name: str, directory: Path) -> list[Path]:
    """Write the package for connector ``name`` into ``directory`` (new or empty); return the files."""
    names = Names.of(name)
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(f"{target} already exists and is not an empty directory; nothing was written")
    rendered = {
        target / dest.format(module=names.module, name=names.name): render(
            (TEMPLATES / source).read_text(encoding="utf-8"), names
        )
        for source, dest in LAYOUT.items()
    }
    written = []
    for path, text in rendered.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
