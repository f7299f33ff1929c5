"""Tax gateway: the interface (``base``), the sandbox and Nuonuo adapters, and ``get_gateway``."""

from app.integrations.tax.base import (
    Accepted,
    AuthExpired,
    CreditExhausted,
    GatewayPaused,
    IdempotencyConflict,
    IssueRequest,
    IssueResult,
    IssueStatus,
    NotFound,
    OutcomeUnknown,
    PermanentGatewayError,
    RedConfirm,
    RedConfirmRequest,
    RedRequest,
    TaxGateway,
    TaxGatewayError,
    TransientGatewayError,
)
from app.integrations.tax.factory import get_gateway

__all__ = [
    "Accepted",
    "AuthExpired",
    "CreditExhausted",
    "GatewayPaused",
    "IdempotencyConflict",
    "IssueRequest",
    "IssueResult",
    "IssueStatus",
    "NotFound",
    "OutcomeUnknown",
    "PermanentGatewayError",
    "RedConfirm",
    "RedConfirmRequest",
    "RedRequest",
    "TaxGateway",
    "TaxGatewayError",
    "TransientGatewayError",
    "get_gateway",
]
