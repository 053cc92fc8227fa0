"""Minting the user tokens herald accepts: HS256 JWTs signed with ``HERALD_JWT_SECRET``.

The claims are herald's (``src/auth/claims.rs``): ``sub`` (the user id, written as a
string; herald also reads integers), ``name`` (herald shows the id when it is missing),
``roles`` among ``creator``, ``team`` and ``admin``, ``creator_id`` (a team member's
creator, a string too) and ``exp`` (seconds since the epoch; herald allows 5 s of leeway).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, get_args

import jwt

from .models import Role, UserId

__all__ = ["ROLES", "mint_token"]

ROLES: tuple[str, ...] = get_args(Role)


def _user_id(value: UserId, what: str) -> str:
    """A user id as the token carries it: a string (herald reads ``7`` and ``"7"`` alike, and
    JWT libraries expect a string ``sub``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{what} must be a string or an integer, not {type(value).__name__}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{what} must not be negative")
    text = str(value)
    if not text or len(text) > 128:
        raise ValueError(f"{what} must be 1 to 128 characters")
    return text


def mint_token(
    secret: str,
    sub: UserId,
    name: str | None = None,
    roles: Iterable[Role] = (),
    ttl: timedelta = timedelta(hours=1),
    creator_id: UserId | None = None,
) -> str:
    """An HS256 token for user ``sub``, valid for ``ttl`` from now."""
    if not secret:
        raise ValueError("a jwt_secret is required to mint tokens")
    claims: dict[str, Any] = {"sub": _user_id(sub, "sub")}
    if name is not None:
        claims["name"] = name
    if isinstance(roles, str):
        raise TypeError("roles must be a list of roles, not a string")
    role_list = list(roles)
    for role in role_list:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: herald knows {', '.join(ROLES)}")
    claims["roles"] = role_list
    if creator_id is not None:
        claims["creator_id"] = _user_id(creator_id, "creator_id")
    seconds = ttl.total_seconds()
    if seconds <= 0:
        raise ValueError("ttl must be positive")
    claims["exp"] = int(time.time() + seconds)
    return jwt.encode(claims, secret, algorithm="HS256")
