"""`--max-cost`: a run's spend never passes the cap by more than the calls already under way.

Before an item starts, the spend so far plus what the items in flight and this one are expected to
cost (the average cost of the items finished in this run) must stay within the cap; otherwise no new
item starts, the ones under way finish, and the run ends with the rest still pending.
"""

from dataclasses import dataclass


@dataclass
class Budget:
    """The cap in USD and what this invocation has spent (target and evaluator calls, litellm's costs)."""

    cap: float
    spent: float = 0.0
    finished: int = 0
    in_flight: int = 0
    reached: bool = False

    def per_item(self) -> float:
        """The average cost of an item finished in this run (0 before the first)."""
        return self.spent / self.finished if self.finished else 0.0

    def may_start(self) -> bool:
        """Whether one more item fits; once it does not, no item starts again in this run."""
        if not self.reached and self.spent + (self.in_flight + 1) * self.per_item() > self.cap:
            self.reached = True
        if self.reached:
            return False
        self.in_flight += 1
        return True

    def finish(self, cost: float) -> None:
        """An item that started has ended, costing `cost` (its calls that litellm could price)."""
        self.in_flight -= 1
        self.spent += cost
        self.finished += 1
