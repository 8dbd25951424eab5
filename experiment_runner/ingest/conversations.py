"""Reading conversations from the store: one in full, or a listing with a short summary of each."""

import json
import uuid
from typing import TypedDict

from sqlmodel import Session

from experiment_runner.conversation import Conversation
from experiment_runner.store import Store
from experiment_runner.store.queries import conversations as q

MESSAGE_NAMESPACE = uuid.UUID("7f1d2c3e-9a41-4c55-8a7e-3f5b2e1d0c99")


def message_id_for(conversation_id: str, sequence_number: int) -> str:
    """A stable message id: the same conversation imported anywhere gets the same message ids."""
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{conversation_id}/{sequence_number}"))


def load_conversation(session: Session, conversation_id: str) -> Conversation:
    """A stored conversation in the export's shape: `{"id", "type", "messages"}`."""
    return q.require_conversation(session.connection(), conversation_id)


def source_conversation_ids(session: Session) -> list[str]:
    """Every imported conversation id, in import order."""
    return q.source_conversation_ids(session.connection())


class ConversationListing(TypedDict):
    """One line of `conversations`: id, message count, messages per role, the first user text (trimmed)."""

    id: str
    messages: int
    roles: dict[str, int]
    first_user_text: str
    created_at: str


def list_conversations(store: Store, limit: int | None = None, text_width: int = 80) -> list["ConversationListing"]:
    """Imported conversations in import order: id, message count, role counts, first user text (trimmed)."""
    with store.read() as session:
        rows = q.conversation_listing(session.connection(), limit)
    listing: list[ConversationListing] = []
    for row in rows:
        roles: dict[str, int] = {}
        for role in (row.roles or "").split():
            roles[role] = roles.get(role, 0) + 1
        parts = json.loads(row.first_user_parts) if row.first_user_parts else []
        first = " ".join(" ".join(p["content"] for p in parts if p.get("type") == "text").split())
        if len(first) > text_width:
            first = first[: text_width - 1] + "…"
        listing.append(
            {"id": row.id, "messages": row.n, "roles": roles, "first_user_text": first, "created_at": row.created_at}
        )
    return listing
