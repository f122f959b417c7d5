"""The local provider's rule catalogue and the ``rules=`` selector syntax.

A selector is either a category (``"security"``) or one rule id (``"security.eval"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sluice.errors import InvalidInput


@dataclass(frozen=True)
class Rule:
    """A rule id with its default severity and a one-line description."""

    id: str
    severity: str
    description: str

    @property
    def category(self) -> str:
        return self.id.partition(".")[0]


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule("security.eval", "high", "eval()/exec() or new Function() runs arbitrary code"),
        Rule("security.command-injection", "high", "a command runs through the shell"),
        Rule("security.deserialization", "high", "pickle/marshal/shelve load untrusted data"),
        Rule("security.yaml-load", "high", "yaml.load without SafeLoader builds arbitrary objects"),
        Rule("security.hardcoded-secret", "high", "a password, token or key is in the source"),
        Rule("security.sql-injection", "high", "SQL is built by string formatting"),
        Rule("security.xss", "medium", "HTML is written from strings (innerHTML, document.write)"),
        Rule("quality.bare-except", "medium", "bare except: also catches KeyboardInterrupt"),
        Rule("quality.mutable-default", "medium", "a mutable default argument is shared by calls"),
        Rule("quality.long-function", "low", "a function has too many statements"),
        Rule("quality.assert-validation", "low", "assert validates arguments (stripped by -O)"),
        Rule("style.line-too-long", "info", "a line is longer than the limit"),
        Rule("style.todo", "info", "a TODO/FIXME/XXX/HACK comment"),
        Rule("syntax.error", "high", "the file does not parse (always reported)"),
    )
}

CATEGORIES: frozenset[str] = frozenset(rule.category for rule in RULES.values())


def select_rules(rules: Sequence[str] | None) -> frozenset[str]:
    """Expand selectors into rule ids; None selects every rule.

    Raises :class:`InvalidInput` for an empty list, a bare string, or an unknown selector.
    """
    if rules is None:
        return frozenset(RULES)
    if isinstance(rules, str) or not isinstance(rules, Sequence):
        raise InvalidInput(f"rules must be a list such as ['security'], got {rules!r}")
    if not rules:
        raise InvalidInput("rules is empty; pass None to run every rule")
    selected: set[str] = set()
    for selector in rules:
        if selector in RULES:
            selected.add(selector)
        elif selector in CATEGORIES:
            selected.update(rule_id for rule_id, rule in RULES.items() if rule.category == selector)
        else:
            raise InvalidInput(
                f"unknown rule {selector!r}; use a category ({', '.join(sorted(CATEGORIES))}) "
                f"or a rule id ({', '.join(sorted(RULES))})"
            )
    return frozenset(selected)
