"""crowdcut's storage: the SQLite database and the media store.

- ``storage.migrations``: the schema, as append-only migrations applied at start-up.
- ``storage.models``: the dataclasses rows map to.
- ``storage.store``: ``Store``, the one object with named methods (no SQL elsewhere),
  and ``AsyncStore``, which keeps SQLite off the asyncio event loop.
- ``storage.media``: ``MediaStore``, content-addressed files written atomically.
"""

from __future__ import annotations

from storage.media import MediaStore
from storage.store import AsyncStore, Store

__all__ = ["AsyncStore", "MediaStore", "Store"]
