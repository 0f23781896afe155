"""The site rules directory as the API changes it.

``<id>.yaml`` holds one entry: a site rule, or an ``{id, enabled}`` override of a default.
Before a file is written (or removed) the directory as it would be is loaded from a scratch
copy, so the gateway never finds site rules it cannot load; then the file is replaced
atomically and the gateway is told to reload. Callers hold ``ApiContext.rules_lock``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any

import yaml

from gateway.api.auth import NotInScopeError
from gateway.api.errors import ConflictError, UnavailableError
from gateway.api.schemas_rules import default_rules
from rules import Rule, RuleError, RuleSet, load_rules

logger = logging.getLogger(__name__)

HEADER = "# Written through the gateway's REST API (/rules).\n"


def find_rule(ruleset: RuleSet, rule_id: str) -> Rule:
    """The rule, or a 404."""
    rule = ruleset.get(rule_id)
    if rule is None:
        raise NotInScopeError(f"rule {rule_id!r} not found")
    return rule


def write_atomic(target: Path, text: str) -> None:
    """Replace ``target`` with ``text`` in one step (fsynced first)."""
    # The temporary name ends in .tmp, so a reload running meanwhile never reads it.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def to_yaml(entry: Mapping[str, Any]) -> str:
    """A site rule file holding ``entry``."""
    body = yaml.safe_dump({"rules": [dict(entry)]}, sort_keys=False, allow_unicode=True)
    return HEADER + body


class SiteRules:
    """Reads, checks and writes ``<directory>/<id>.yaml``; ``notify`` asks for a reload."""

    def __init__(self, directory: Path, notify: Callable[[], None] | None) -> None:
        self.directory = directory
        self.notify = notify

    def entry(self, rule_id: str) -> dict[str, Any] | None:
        """The one entry of ``<id>.yaml``; None without such a file; 409 if it holds more."""
        path = self.directory / f"{rule_id}.yaml"
        if not path.exists():
            return None
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ConflictError(f"site file {path.name} cannot be read ({err}); fix it") from err
        entries = doc.get("rules") if isinstance(doc, dict) else None
        entry = entries[0] if isinstance(entries, list) and len(entries) == 1 else None
        if isinstance(entry, dict) and entry.get("id") == rule_id:
            return dict(entry)
        raise ConflictError(f"site file {path.name} is not one entry for rule {rule_id}; edit it")

    def trial(self, rule_id: str, entry: Mapping[str, Any] | None) -> RuleSet:
        """The rules the directory gives with ``<id>.yaml`` holding ``entry`` (None: removed).

        Loaded from a scratch copy; a 409 names every problem when they would not load.
        """
        name = f"{rule_id}.yaml"
        with tempfile.TemporaryDirectory(prefix="scc-rules-") as tmp:
            scratch = Path(tmp)
            try:
                for path in self.directory.glob("*.yaml") if self.directory.is_dir() else ():
                    if path.name != name:
                        shutil.copyfile(path, scratch / path.name)
            except OSError as err:
                raise UnavailableError(f"the site rules directory cannot be read: {err}") from err
            if entry is not None:
                (scratch / name).write_text(to_yaml(entry), encoding="utf-8")
            try:
                return load_rules(scratch)
            except RuleError as err:
                problems = "; ".join(p.replace(f"{scratch}{os.sep}", "") for p in err.problems)
                raise ConflictError(f"the site rules would not load: {problems}") from err

    def current(self, rule_id: str) -> Rule:
        """The rule as the directory defines it now, when it has no ``<id>.yaml``.

        404 for an unknown rule; 409 when a hand-written site file of another name holds it.
        """
        ruleset = self.trial(rule_id, None)
        rule = find_rule(ruleset, rule_id)
        label = ruleset.sources.get(rule_id, "")
        if label not in default_rules()[1]:
            name = PurePath(label).name
            raise ConflictError(f"rule {rule_id} is defined in site file {name}; change it there")
        return rule

    def commit(self, rule_id: str, entry: Mapping[str, Any] | None) -> None:
        """Write ``<id>.yaml`` with ``entry`` (None: remove it), then ask for a reload."""
        target = self.directory / f"{rule_id}.yaml"
        try:
            if entry is None:
                target.unlink(missing_ok=True)
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                write_atomic(target, to_yaml(entry))
        except OSError as err:
            raise UnavailableError(f"the site rules directory cannot be written: {err}") from err
        logger.info("site rules: %s %s", target.name, "removed" if entry is None else "written")
        if self.notify is not None:
            try:
                self.notify()
            except Exception:  # the file is in place; the gateway's own poll will load it
                logger.exception("on_rules_changed failed")
