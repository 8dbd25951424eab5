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
"""

import logging
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
    _settled: anyio.Event | None = field(default=None, repr=False)

    def try_start(self, price: float) -> bool | None:
        """Reserve `price` and say True when the item may start now, False when no item starts again in this
        run (the cap is reached), None when it must wait for an item under way to end."""
        if not self.reached and self.spent >= self.cap:
            self.reached = True
        if self.reached:
            return False
        if self.spent + self.reserved >= self.cap:  # (never with nothing under way: then nothing is reserved)
            return None
        self.reserved += price
        self.in_flight += 1
        self.dearest = max(self.dearest, price)
        log.debug("reserved $%.6f: $%.6f spent, $%.6f reserved, %d under way", price, self.spent, self.reserved, self.in_flight)
        return True

    async def start(self, price: float) -> bool:
        """Wait until an item reserving `price` may start (True), or until the cap is reached (False)."""
        while True:
            decision = self.try_start(price)
            if decision is not None:
                return decision
            if self._settled is None or self._settled.is_set():
                self._settled = anyio.Event()
            await self._settled.wait()

    def settle(self, price: float, cost: float) -> None:
        """An item that reserved `price` has ended, costing `cost` (its calls that litellm could price)."""
        self.in_flight -= 1
        self.reserved = max(0.0, self.reserved - price) if self.in_flight else 0.0
        self.spent += cost
        if self._settled is not None:
            self._settled.set()
