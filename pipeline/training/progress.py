"""The live progress line of a run (one per trial in a sweep): epoch, step, images/s, ETA and
the last losses, on the console of the command that started it.

Rank 0 keeps a `Ticker`: every step it only compares the clock with its next due time; at most
every `EVERY` seconds (and after every report) it reads the losses the meter holds (one small
host sync per post, none per step) and posts a small state. Under Ray the state goes to the
cluster's GCS key-value store (`ray_poster`): no actor, no extra process, reachable from
every node. The command's `ProgressView` reads those keys once a second and draws them: a live
block on a terminal; in a log or a pipe, a plain line per run at each epoch, at least every
`QUIET` seconds, and where it ended.

    with ProgressView(prefix="dcgan-celeba-64-20261203-101500"):
        cluster.fit(trainer)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable

EVERY = 2.0  # seconds between two posts of a run's state
QUIET = 60.0  # off a terminal: a run's line at each epoch, and at most this often between
NAMESPACE = "pipeline-progress"
LOSSES = ("loss_d", "loss_g", "loss_c", "loss_adv")  # what the line shows, when the step has it


class Ticker:
    """Rank 0's side: when to post, and what (the position, the pace, the losses)."""

    def __init__(
        self,
        post: Callable[[dict], None],
        epochs: int,
        steps_per_epoch: int,
        step: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.post, self.epochs, self.steps_per_epoch = post, epochs, steps_per_epoch
        self.clock = clock
        self.started = self.last = clock()
        self.start_step = self.last_step = step
        self.last_images = None
        self.due = self.started + EVERY

    def tick(self, position, losses: Callable[[], dict] | dict, force: bool = False) -> None:
        """Called after every step; `losses` (a dict, or a function called only when a post
        is due) holds at least the LOSSES the step has."""
        now = self.clock()
        if now < self.due and not force:
            return
        done = position.step - self.start_step
        steps = self.epochs * self.steps_per_epoch
        rate = (position.images_seen - self.last_images) / (now - self.last) if (
            self.last_images is not None and now > self.last
        ) else None  # fmt: skip
        pace = (now - self.started) / done if done else None  # seconds per step, reports included
        state = {
            # The epoch under way (the one just ended, at an epoch's end).
            "epoch": max(1, position.epoch + (position.batch_in_epoch > 0)),
            "epochs": self.epochs,
            "step": position.step,
            "steps": steps,
            "images_per_s": rate,
            "eta_s": pace * max(steps - position.step, 0) if pace else None,
            "losses": {
                k: v for k, v in (losses() if callable(losses) else losses).items() if k in LOSSES
            },  # fmt: skip
        }
        self.last, self.last_images, self.due = now, position.images_seen, now + EVERY
        try:
            self.post(state)
        except Exception:  # noqa: BLE001 (the console line must never stop training)
            pass


def worker_poster(progress: dict | None) -> Callable[[dict], None]:
    """A Ray worker's `progress` ({"key", "epochs"}, from its loop config) as the function its
    context posts states with: to Ray's key-value store, or nowhere without one."""
    return ray_poster(progress["key"]) if progress else (lambda state: None)


def ray_poster(key: str) -> Callable[[dict], None]:
    """Post a state under `key` in the Ray cluster's key-value store (inside a Ray worker)."""
    from ray.experimental import internal_kv

    def post(state: dict) -> None:
        internal_kv._internal_kv_put(key, json.dumps(state), namespace=NAMESPACE)

    return post


def forget(prefix: str) -> None:
    """Remove the posted states under `prefix` (a finished run, a stopped trial)."""
    from ray.experimental import internal_kv

    try:
        for key in internal_kv._internal_kv_list(prefix, namespace=NAMESPACE):
            internal_kv._internal_kv_del(key, namespace=NAMESPACE)
    except Exception:  # noqa: BLE001 (Ray already gone: nothing left to forget)
        pass


def describe(state: dict) -> str:
    """One line: epoch 3/20 · step 120/800 · 412 img/s · ETA 4m10s · loss_d 0.612 loss_g 2.31"""
    parts = [
        f"epoch {state['epoch']}/{state['epochs']}",
        f"step {state['step']}/{state['steps']}",
    ]
    if state.get("images_per_s"):
        parts.append(f"{state['images_per_s']:,.0f} img/s")
    if state.get("eta_s") is not None:
        parts.append(f"ETA {duration(state['eta_s'])}")
    if state.get("losses"):
        parts.append(" ".join(f"{k} {v:.4g}" for k, v in state["losses"].items()))
    return " · ".join(parts)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressView:
    """The command's side: a thread that reads the states posted under `prefix` and draws
    them, labelled by what follows the prefix (a trial id; nothing for a single run).
    `each_epoch=False`: off a terminal, only every QUIET seconds (a sweep's console already
    has a line per trial and epoch)."""

    def __init__(self, prefix: str, poll: float = 1.0, stream=None, each_epoch: bool = True):
        self.prefix, self.poll, self.each_epoch = prefix, poll, each_epoch
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline-progress", daemon=True)
        self._printed: dict[str, tuple[int, int, float]] = {}  # off a terminal: epoch, step, when

    def __enter__(self) -> ProgressView:
        self._live = None
        if self.terminal:
            from rich.console import Console
            from rich.live import Live

            # Prints of the command and of Ray's workers go above the live block.
            self._live = Live(
                "", console=Console(file=self.stream), transient=True, auto_refresh=False
            )
            self._live.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._live is not None:
            self._live.stop()
        else:  # a log keeps where each run ended
            self._draw(final=True)
        forget(self.prefix)

    def states(self) -> dict[str, dict]:
        from ray.experimental import internal_kv

        out = {}
        for key in sorted(internal_kv._internal_kv_list(self.prefix, namespace=NAMESPACE)):
            raw = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
            if raw is not None:
                out[key.decode()[len(self.prefix) :].strip("/")] = json.loads(raw)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self._draw()

    def _draw(self, final: bool = False) -> None:
        try:
            states = self.states()
        except Exception:  # noqa: BLE001 (Ray shutting down: the run's end says the rest)
            return
        lines = {n: (f"{n}  " if n else "") + describe(s) for n, s in states.items()}
        if self._live is not None:
            self._live.update("\n".join(lines.values()), refresh=True)
        else:
            self._print_changed(states, lines, final)

    def _print_changed(self, states: dict[str, dict], lines: dict[str, str], final=False) -> None:
        """Off a terminal: a run's line when its epoch changed (`each_epoch`), or QUIET seconds
        after its last one; at the end (`final`), its last state if not printed yet."""
        now = time.monotonic()
        for name, state in states.items():
            epoch, step, when = self._printed.get(name, (-1, -1, 0.0))
            if final:
                due = state["step"] != step
            else:
                due = (self.each_epoch and state["epoch"] != epoch) or now - when >= QUIET
            if due:
                print(lines[name], file=self.stream, flush=True)
                self._printed[name] = (state["epoch"], state["step"], now)
