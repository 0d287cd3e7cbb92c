"""What exactly is signed: defined in the contract (`schemas.signed`), so services and clients agree."""

from schemas.signed import action_digest, approval_document, approval_message, authorization_message

__all__ = ["action_digest", "approval_document", "approval_message", "authorization_message"]
