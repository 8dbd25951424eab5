"""A stored budget shared by every process working on an experiment (issue 23).

Each worker's `Budget` caps what it may spend at what the experiment's budget had left when it started.
Before an item starts, `reserve` reads in one write transaction what the stored results cost now (so what
the other processes spent since this one started) and what the other live workers have reserved, lets the
`Budget` decide, and publishes this worker's own reservations on its worker row, where the others read
them. The transaction (`BEGIN IMMEDIATE` on SQLite, the experiment row locked on PostgreSQL) makes two
processes' decisions one after the other, so together they pass the cap by at most one item's reservation.
A result committed but not yet settled counts twice for a moment: that only errs on the side of the cap.
"""

import time
from dataclasses import dataclass

from experiment_runner.engine.budget import Budget
from experiment_runner.engine.lease import Lease, is_live
from experiment_runner.store.queries import claims
from experiment_runner.store.queries import experiments as q

POLL_SECONDS = 0.2  # how often a worker waiting on other processes' reservations looks again


@dataclass
class SharedBudget:
    """One worker's view of the experiment's stored budget."""

    budget: Budget
    lease: Lease
    spent_at_start: float  # what the stored results cost when this worker started
    replayed: bool  # target replies count (not a pass-through's copies)

    def reserve(self, price: float) -> bool | None:
        """`Budget.try_start(price)` with the other processes' spend and reservations read from the store."""
        store, lease = self.lease.store, self.lease
        with store.write() as session:
            conn = session.connection()
            claims.lock_experiment(conn, lease.experiment_id)
            spent_now = q.spent_usd(conn, lease.experiment_id, replayed=self.replayed)
            others = [row for row in claims.workers(conn, lease.experiment_id) if row.id != lease.owner and is_live(row, lease.timings)]
            self.budget.others_spent = max(0.0, spent_now - self.spent_at_start - self.budget.spent)
            self.budget.others_reserved = sum(row.reserved_usd for row in others)
            decision = self.budget.try_start(price)
            lease.reserved_usd = self.budget.reserved
            claims.renew(conn, lease.owner, time.time(), lease.reserved_usd)
        return decision

    def settled(self) -> None:
        """After `Budget.settle`: publish the smaller reservation with the next heartbeat or write."""
        self.lease.reserved_usd = self.budget.reserved
