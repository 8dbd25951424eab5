"""`--max-cost`: a run's spend passes the cap by at most one item's reserved price, whatever the items cost.

Before an item starts, the run reserves a price for it: the most its own calls can cost
(`estimate.item_bound`: its counted input tokens, output at the stated bound, at litellm's prices).
An item may start while what is spent plus what is reserved for the items under way is still below
the cap; otherwise it waits for an item under way to end, which settles its reservation with its real
cost and frees the difference. Once the spend itself reaches the cap, or nothing is under way and the
reservations still do not fit, no item starts again and the run ends with the rest pending.

Why this holds: when the last item started, spent + reserved was below the cap, and every item under
way then costs at most its reservation, so the run ends below the cap plus that last item's
reservation, which is at most the dearest one. (An average of the finished items, the old rule, let a
run of cheap items followed by dear ones pass the cap many times over.)

Several processes share the budget through the store (`engine.shared_budget`): before each item a process
reads, in one write transaction, what the others spent since it started and have reserved now
(`others_spent`, `others_reserved`), decides, and publishes its own reservations; the rule above then holds
across all of them, as if they were one run.
"""

import logging
import threading
from dataclasses import dataclass, field

import anyio

log = logging.getLogger(__name__)


@dataclass
class Budget:
    """The cap in USD, this invocation's spend (litellm's costs), and the prices reserved for items under way."""

    cap: float
    spent: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0
    reached: bool = False
    dearest: float = 0.0  # the largest price reserved for one item in this run
    others_spent: float = 0.0  # other processes' spend since this one started (a shared budget)
    others_reserved: float = 0.0  # what other processes have reserved for their items under way
    _settled: anyio.Event | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # a shared budget decides in a thread

    def try_start(self, price: float) -> bool | None:
        """Reserve `price` and say True when the item may start now, False when no item starts again in this
        run (the cap is reached), None when it must wait for an item under way (here or elsewhere) to end."""
        with self._lock:
            spent = self.spent + self.others_spent
            if not self.reached and spent >= self.cap:
                self.reached = True
            if self.reached:
                return False
            if spent + self.reserved + self.others_reserved >= self.cap:  # (never with nothing under way anywhere)
                return None
            self.reserved += price
            self.in_flight += 1
            self.dearest = max(self.dearest, price)
        log.debug("reserved $%.6f: $%.6f spent, $%.6f reserved, %d under way", price, spent, self.reserved, self.in_flight)
        return True

    async def start(self, price: float) -> bool:
        """Wait until an item reserving `price` may start (True), or until the cap is reached (False)."""
        while True:
            decision = self.try_start(price)
            if decision is not None:
                return decision
            await self.wait_settled()

    async def wait_settled(self, timeout: float = float("inf")) -> None:
        """Wait until an item of this process ends, or `timeout` seconds (another process's items end unseen)."""
        if self._settled is None or self._settled.is_set():
            self._settled = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._settled.wait()

    def settle(self, price: float, cost: float) -> None:
        """An item that reserved `price` has ended, costing `cost` (its calls that litellm could price)."""
        with self._lock:
            self.in_flight -= 1
            self.reserved = max(0.0, self.reserved - price) if self.in_flight else 0.0
            self.spent += cost
        if self._settled is not None:
            self._settled.set()
