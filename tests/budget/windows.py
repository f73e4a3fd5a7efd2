"""Counting requests at the localnet: when each one arrived, and the most in any 1 s window."""

import threading
import time
from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from premix.localnet import Localnet
from premix.localnet.intercept import InterceptedRequest, Stage


@dataclass
class RequestClock:
    """The arrival time (monotonic seconds) of every HTTP request the localnet received."""

    arrivals: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: InterceptedRequest) -> None:
        if request.stage is Stage.RECEIVED:
            with self.lock:
                self.arrivals.append(time.monotonic())

    @property
    def count(self) -> int:
        return len(self.arrivals)

    def busiest_second(self, since: float | None = None) -> int:
        """The most requests that arrived in any 1 s window (from `since`, if given)."""
        with self.lock:
            times = sorted(t for t in self.arrivals if since is None or t >= since)
        return max((bisect_right(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


@contextmanager
def request_clock(net: Localnet) -> Iterator[RequestClock]:
    clock = RequestClock()
    net.intercept(clock)
    try:
        yield clock
    finally:
        net.stop_intercepting(clock)


def tolerance(requests_per_second: float) -> int:
    """How far above N a 1 s window may go: the bucket's one-request capacity, plus requests
    that took their token just before the window but reached the node inside it (delayed by
    a loaded CPU: up to a quarter of a second's worth)."""
    return 1 + max(2, int(requests_per_second * 0.25))
