"""Python client for raftkv: :class:`AsyncClient` (asyncio) and :class:`Client` (blocking)."""

from raftkv.client.async_client import AsyncClient, new_idempotency_key
from raftkv.client.errors import (
    ClientError,
    InvalidResponse,
    NotFound,
    OutcomeUnknown,
    PreconditionFailed,
    RequestRejected,
    ResultExpired,
    TLSFailure,
    Unavailable,
)
from raftkv.client.leases import AsyncKeepAlive, KeepAlive, LeaseGrant, LeaseInfo, RevokeResult
from raftkv.client.lock import AsyncLock, Lock, LockLost
from raftkv.client.models import (
    DeleteResult,
    GetResult,
    KeyValue,
    ListResult,
    MemberInfo,
    NodeStatus,
    PutResult,
    TxnOpResult,
    TxnResult,
)
from raftkv.client.sync_client import Client
from raftkv.client.txn import Compare, Op
from raftkv.client.watch import Watch, WatchCompacted, WatchEvent

__all__ = [
    "AsyncClient",
    "AsyncKeepAlive",
    "AsyncLock",
    "Client",
    "ClientError",
    "Compare",
    "DeleteResult",
    "GetResult",
    "InvalidResponse",
    "KeepAlive",
    "KeyValue",
    "LeaseGrant",
    "LeaseInfo",
    "ListResult",
    "Lock",
    "LockLost",
    "MemberInfo",
    "NodeStatus",
    "NotFound",
    "Op",
    "OutcomeUnknown",
    "PreconditionFailed",
    "PutResult",
    "RequestRejected",
    "ResultExpired",
    "RevokeResult",
    "TLSFailure",
    "TxnOpResult",
    "TxnResult",
    "Unavailable",
    "Watch",
    "WatchCompacted",
    "WatchEvent",
    "new_idempotency_key",
]
