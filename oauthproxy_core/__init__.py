"""oauthproxy_core: the sans-IO OAuth 2.1 authorization server of oauthproxy.

Pure code only: no sockets, files, clock, randomness or ``await`` (spec/architecture.md). Adapters in
``oauthproxy_adapters`` supply requests, the clock, randomness and the effects' executors.
"""

from .config import Context, Lifetimes, ProxyConfig
from .effects import (
    CompareAndSet,
    DeleteRecord,
    Effect,
    FetchDocument,
    GetRecord,
    Handler,
    HttpCall,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    PutRecord,
    Stored,
    TakeRecord,
)
from .errors import OAuthError
from .handlers.bearer import Challenge, Principal
from .http import Request, Response
from .keys import Keyring
from .server import AuthorizationServer
from .upstream import UpstreamProfile

__all__ = [
    "AuthorizationServer",
    "Challenge",
    "CompareAndSet",
    "Context",
    "DeleteRecord",
    "Effect",
    "FetchDocument",
    "GetRecord",
    "Handler",
    "HttpCall",
    "HttpFailure",
    "HttpRequest",
    "HttpResponse",
    "Keyring",
    "Lifetimes",
    "OAuthError",
    "Principal",
    "ProxyConfig",
    "PutRecord",
    "Request",
    "Response",
    "Stored",
    "TakeRecord",
    "UpstreamProfile",
]
