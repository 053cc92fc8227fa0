"""A Python client for herald, for backends: publish, batch, history, presence, the cluster
table, and the user tokens herald accepts.

```python
from herald_client import Herald

with Herald("http://127.0.0.1:8000", api_key, jwt_secret=jwt_secret) as herald:
    published = herald.publish("forum", {"type": "new_thread_created", "thread_id": 7})
    token = herald.token(7, name="ann")   # for the browser's sockets
```

:class:`AsyncHerald` has the same methods, awaitable.
"""

from .async_client import AsyncHerald
from .client import Herald
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HeraldConnectionError,
    HeraldError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from .models import (
    BatchEvent,
    BroadcastSent,
    Cluster,
    History,
    Presence,
    PresenceUser,
    Published,
    PublishedBatch,
    PublishedEvent,
    Role,
    UserId,
)
from .tokens import mint_token

__version__ = "0.1.0"

__all__ = [
    "AsyncHerald",
    "BadRequest",
    "BatchEvent",
    "BroadcastSent",
    "Cluster",
    "Conflict",
    "Forbidden",
    "Herald",
    "HeraldConnectionError",
    "HeraldError",
    "History",
    "NotFound",
    "PayloadTooLarge",
    "Presence",
    "PresenceUser",
    "Published",
    "PublishedBatch",
    "PublishedEvent",
    "RequestTimeout",
    "Role",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UserId",
    "mint_token",
]
