"""``ignore:`` rules of ``.gitops.yaml``: fields other controllers own.

A rule selects objects (``group``, ``kind``, ``name``, ``namespace``; each
optional, shell globs allowed) and names fields by JSON pointer
(``jsonPointers``) or by the field managers that own them in the live object
(``managedFieldsManagers``), as Argo CD's ``ignoreDifferences`` does. Ignored
fields are removed from what sync applies, so this tool neither sets nor
owns them, and from both sides of every comparison, so diff never shows them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from kubectl_gitops import fields

_SELECTORS = ("group", "kind", "name", "namespace")
_KEYS = (*_SELECTORS, "jsonPointers", "managedFieldsManagers")


@dataclass(frozen=True)
class Rule:
    group: str | None = None
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    pointers: tuple[tuple[str, ...], ...] = ()
    managers: tuple[str, ...] = ()

    def matches(self, group: str, kind: str, namespace: str, name: str) -> bool:
        return all(want is None or fnmatch.fnmatchcase(have, want)
                   for want, have in ((self.group, group), (self.kind, kind),
                                      (self.namespace, namespace), (self.name, name)))


def parse(doc: Any, where: str) -> tuple[Rule, ...]:
    """The ``ignore:`` list; raises ValueError naming the entry at fault."""
    if doc is None:
        return ()
    if not isinstance(doc, list):
        raise ValueError(f"{where}: ignore must be a list of rules")
    rules = []
    for n, entry in enumerate(doc, 1):
        at = f"{where}: ignore[{n}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}: expected a mapping with kind, name, jsonPointers...")
        unknown = set(entry) - set(_KEYS)
        if unknown:
            raise ValueError(f"{at}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        for key in _SELECTORS:
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise ValueError(f"{at}: {key} must be a string")
        pointers = _strings(entry.get("jsonPointers"), f"{at}: jsonPointers")
        managers = _strings(entry.get("managedFieldsManagers"), f"{at}: managedFieldsManagers")
        if not pointers and not managers:
            raise ValueError(f"{at}: give jsonPointers or managedFieldsManagers")
        try:
            parsed = tuple(fields.pointer(p) for p in pointers)
        except ValueError as e:
            raise ValueError(f"{at}: {e}") from None
        rules.append(Rule(*(entry.get(k) for k in _SELECTORS), pointers=parsed,
                          managers=tuple(managers)))
    return tuple(rules)


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of strings")
    return value


def pointers_for(rules: tuple[Rule, ...], group: str, kind: str, namespace: str,
                 name: str) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """The JSON pointers and managers every matching rule ignores."""
    ptrs: list[tuple[str, ...]] = []
    managers: list[str] = []
    for rule in rules:
        if rule.matches(group, kind, namespace, name):
            ptrs += rule.pointers
            managers += rule.managers
    return tuple(ptrs), tuple(managers)


def strip(obj: dict[str, Any], ptrs: tuple[tuple[str, ...], ...],
          managers: tuple[str, ...], live: dict[str, Any] | None) -> None:
    """Remove the ignored fields from ``obj`` in place: the pointers, and
    whatever ``managers`` own in ``live``."""
    for p in ptrs:
        fields.remove(obj, p)
    for entry in ((live or {}).get("metadata") or {}).get("managedFields") or []:
        owned = entry.get("fieldsV1")
        if entry.get("manager") in managers and isinstance(owned, dict):
            fields.remove_owned(obj, owned)
