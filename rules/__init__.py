"""Rules engine: rule schema, loading and validation, evaluation (see issue 3).

``load_rules(site_dir)`` gives an immutable ``RuleSet`` (defaults from every
``devices/<kind>/rules.yaml``, overridden by a site directory); ``Engine`` evaluates it over
batches of ``Observation`` and returns ``Transition`` records. The engine is pure: no I/O,
time is passed in.
"""

from rules.engine import Engine
from rules.loader import RuleError, load_rules
from rules.model import Rule, RuleSet
from rules.records import Observation, Transition

__all__ = ["Engine", "Observation", "Rule", "RuleError", "RuleSet", "Transition", "load_rules"]
