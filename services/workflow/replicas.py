"""Which replicas of each step app answer the workflow's calls: plain logic, fed by the step client.

Every step answer names the replica that gave it (``taskfan.dapr_app.step_method``, the scorer's own
``SlotsReport``), so the workflow app can tell the console, per declared step, each replica heard from
lately and how many tasks it answered through this process. Names come from the step apps, so they are
bounded: a name not heard from for ``FORGET_S`` is forgotten (on a cluster every restarted pod is a new
name), and at most ``MAX_NAMES`` are kept per step (a step app making up a new name per answer pushes out
its own oldest ones, not the others').
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.workflow.models import StepReplica, StepReplicasNow
from taskfan.pipeline import Step

SEEN_S = 30.0  # a replica not heard from for this long no longer counts (it was scaled away)
# ... and after this long it is forgotten, counters and all: on a cluster every restarted pod is a new name.
FORGET_S = 600.0
MAX_NAMES = 256  # per step


@dataclass
class StepReplicas:
    """Per step name: each replica's name -> (when it last answered, on the monotonic clock; tasks it answered)."""

    heard: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)
    # Learnt in the activities' event loop, reported from the console's calls on other threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def learn(self, step: str, replica: str | None, now: float, answered: int = 0) -> None:
        """An answer of ``step`` from ``replica`` (None: it named none) for ``answered`` tasks (0: it refused)."""
        if replica is None:
            return
        with self._lock:
            replicas = self.heard.setdefault(step, {})
            if replica not in replicas:
                for gone in [name for name, (seen, _) in replicas.items() if now - seen > FORGET_S]:
                    del replicas[gone]
                while len(replicas) >= MAX_NAMES:
                    del replicas[min(replicas, key=lambda name: replicas[name][0])]
            _, before = replicas.get(replica, (now, 0))
            replicas[replica] = (now, before + answered)

    def report(self, steps: Iterable[Step], now: float) -> list[StepReplicasNow]:
        """Each declared step, in order, with its replicas heard from in the last ``SEEN_S``, by name."""
        with self._lock:
            heard = {step: dict(replicas) for step, replicas in self.heard.items()}
        return [StepReplicasNow(step=step.name, app_id=step.app_id, replicas=[
                    StepReplica(replica=name, seen_s_ago=round(now - seen, 1), answered=answered)
                    for name, (seen, answered) in sorted(heard.get(step.name, {}).items()) if now - seen <= SEEN_S])
                for step in steps]
