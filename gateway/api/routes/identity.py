"""Who the calling token is."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import PrincipalDep
from gateway.api.schemas import ErrorBody, WhoAmI

router = APIRouter(prefix="/auth", tags=["auth"], responses={401: {"model": ErrorBody}})


@router.get("/whoami", summary="The calling token", response_model=WhoAmI)
def whoami(principal: PrincipalDep) -> WhoAmI:
    """Role, scope node and permissions of the token in ``Authorization``."""
    return WhoAmI(
        token=principal.token_prefix,
        name=principal.name,
        role=principal.role,
        scope=principal.scope_code,
        permissions=sorted(principal.permissions),
    )
