"""The whole relational schema: every module that declares tables, and the engine with them.

Each stage keeps its own tables on ``gateway.core.db.Base`` (the registry's hierarchy and
devices, the dead letters, alerts and rule state, work orders, API tokens); the base imports
none of them back. This module imports them all, so that :func:`make_engine` creates every
table a gateway needs.
"""

from __future__ import annotations

from types import ModuleType

from sqlalchemy import Engine

from gateway.alerting import models as alerting_models
from gateway.api import models as api_models
from gateway.core.db import Base, engine_for
from gateway.registry import models as registry_models
from gateway.storage import deadletter
from gateway.workorders import models as workorder_models

#: The modules whose tables make up the schema.
TABLE_MODULES: tuple[ModuleType, ...] = (
    registry_models,
    deadletter,
    alerting_models,
    workorder_models,
    api_models,
)


def create_tables(engine: Engine) -> None:
    """Create every table of the schema that ``engine``'s database does not have yet."""
    Base.metadata.create_all(engine)


def make_engine(url: str) -> Engine:
    """Engine for ``url`` (see ``gateway.core.db.engine_for``) with every table created."""
    engine = engine_for(url)
    create_tables(engine)
    return engine
