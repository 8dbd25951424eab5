"""Reading conversations from the store: one in full, or a listing with a short summary of each."""

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from experiment_runner.errors import NotFoundError
from experiment_runner.store import Store
from experiment_runner.store.tables import Conversation, Message

MESSAGE_NAMESPACE = uuid.UUID("7f1d2c3e-9a41-4c55-8a7e-3f5b2e1d0c99")


def message_id_for(conversation_id: str, sequence_number: int) -> str:
    """A stable message id: the same conversation imported anywhere gets the same message ids."""
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{conversation_id}/{sequence_number}"))


def message_dict(row: Message) -> dict[str, Any]:
    """A stored message in the export's shape."""
    return {
        "id": row.id,
        "role": row.role,
        "parts": row.parts,
        "sequence_number": row.sequence_number,
        "generation": row.generation,
    }


def load_conversation(session: Session, conversation_id: str) -> dict[str, Any]:
    """A stored conversation in the export's shape: `{"id", "type", "messages"}`."""
    conv = session.get(Conversation, conversation_id)
    if conv is None:
        raise NotFoundError(f"no conversation with id {conversation_id!r}")
    rows = session.exec(
        select(Message).where(Message.conversation_id == conversation_id).order_by(col(Message.sequence_number))
    ).all()
    return {"id": conv.id, "type": conv.type, "messages": [message_dict(r) for r in rows]}


def missing_conversations(session: Session, ids: list[str]) -> list[str]:
    """The ids among `ids` that name no stored source conversation, in the given order."""
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(
            session.exec(
                select(Conversation.id).where(Conversation.id.in_(chunk), Conversation.type == "source")  # type: ignore[attr-defined]
            ).all()
        )
    return [i for i in ids if i not in found]


def source_conversation_ids(session: Session) -> list[str]:
    """Every imported conversation id, in import order."""
    return list(
        session.exec(
            select(Conversation.id).where(Conversation.type == "source").order_by(Conversation.created_at, text("rowid"))
        ).all()
    )


_LISTING = text(
    """
    SELECT c.id, c.created_at,
           (SELECT count(*) FROM message m WHERE m.conversation_id = c.id) AS n,
           (SELECT group_concat(role, ' ') FROM
               (SELECT role FROM message m WHERE m.conversation_id = c.id ORDER BY sequence_number)) AS roles,
           (SELECT parts FROM message m WHERE m.conversation_id = c.id AND m.role = 'user'
               ORDER BY sequence_number LIMIT 1) AS first_user_parts
    FROM conversation c WHERE c.type = 'source'
    ORDER BY c.created_at, c.rowid
    LIMIT :limit
    """
)


def list_conversations(store: Store, limit: int | None = None, text_width: int = 80) -> list[dict[str, Any]]:
    """Imported conversations in import order: id, message count, role counts, first user text (trimmed)."""
    with store.read() as session:
        rows = session.connection().execute(_LISTING, {"limit": -1 if limit is None else limit}).all()
    listing = []
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
