"""``models:/`` URIs and the grammar of model names, aliases and tags.

::

    models:/iris/3            version 3 of the model "iris"
    models:/iris@production   the version the alias "production" points to
    models:/iris/latest       the highest version number that exists
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from amber.registry._errors import InvalidURI

__all__ = [
    "MAX_VERSION",
    "SCHEME",
    "ModelRef",
    "check_alias",
    "check_name",
    "check_version",
    "parse_uri",
]

SCHEME = "models:/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
_RESERVED_ALIASES = {"latest"}


def check_name(name: object) -> str:
    """A model name: 1-128 characters, letters, digits, ``_ . -``, starting alphanumeric."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith("."):
        raise InvalidURI(
            f"model name {name!r} is not valid: use 1-128 letters, digits, '_', '.' or '-', "
            f"starting with a letter or digit (e.g. 'iris' or 'fraud-detector.v2')"
        )
    return name


def check_alias(alias: object) -> str:
    """An alias: 1-64 characters, letters, digits, ``_ -``, starting with a letter."""
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidURI(
            f"alias {alias!r} is not valid: use 1-64 letters, digits, '_' or '-', starting with "
            f"a letter (e.g. 'production', 'staging', 'champion')"
        )
    if alias in _RESERVED_ALIASES:
        raise InvalidURI(
            f"alias {alias!r} is reserved: models:/NAME/latest always means the highest version; "
            f"pick another alias name"
        )
    return alias


#: The highest version number: what the catalog's 32-bit INTEGER columns hold on PostgreSQL
#: (SQLite's would hold more; one range on every backend).
MAX_VERSION = 2**31 - 1
_RANGE = f"from 1 to {MAX_VERSION} (2**31-1)"


def check_version(version: object) -> int:
    """A version number: an ``int`` from 1 to :data:`MAX_VERSION` (2**31-1)."""
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MAX_VERSION:
        raise InvalidURI(f"version must be an integer {_RANGE}, got {version!r:.40}")
    return version


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: a name and exactly one of a version, an alias, or ``latest``."""

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def latest(self) -> bool:
        return self.version is None and self.alias is None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{SCHEME}{self.name}/{self.version}"
        if self.alias is not None:
            return f"{SCHEME}{self.name}@{self.alias}"
        return f"{SCHEME}{self.name}/latest"


def parse_uri(uri: object) -> ModelRef:
    """Parse ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/NAME/latest``.

    Examples
    --------
    >>> parse_uri("models:/iris@production")
    ModelRef(name='iris', version=None, alias='production')
    >>> parse_uri("models:/iris/3").version
    3
    """
    if not isinstance(uri, str):
        raise InvalidURI(f"a model URI must be a string, got a {type(uri).__name__}: {uri!r}")
    usage = (
        "write models:/NAME/VERSION (models:/iris/3), models:/NAME@ALIAS "
        "(models:/iris@production) or models:/NAME/latest"
    )
    if not uri.startswith(SCHEME) or uri.startswith(SCHEME + "/"):
        raise InvalidURI(f"{uri!r} is not a model URI; {usage}")
    rest = uri[len(SCHEME) :]
    if "@" in rest:
        name, _, alias = rest.partition("@")
        if "/" in alias or "@" in alias:
            raise InvalidURI(f"{uri!r} has more than one alias or version part; {usage}")
        try:
            return ModelRef(check_name(name), alias=check_alias(alias))
        except InvalidURI as exc:
            raise InvalidURI(f"{uri!r}: {exc}") from None
    name, slash, version = rest.partition("/")
    if not slash:
        raise InvalidURI(f"{uri!r} names no version or alias; {usage}")
    try:
        check_name(name)
    except InvalidURI as exc:
        raise InvalidURI(f"{uri!r}: {exc}") from None
    if version == "latest":
        return ModelRef(name)
    if not version.isdecimal() or version.startswith("0") or not version.isascii():
        raise InvalidURI(f"{uri!r}: version {version!r} is not a positive integer; {usage}")
    if len(version) > 10 or int(version) > MAX_VERSION:
        raise InvalidURI(
            f"{uri!r:.80}: version {version[:30]} is beyond {MAX_VERSION} (2**31-1), the highest "
            f"version number; {usage}"
        )
    return ModelRef(name, version=int(version))
