"""``play: process``: a second process plays the game and samples the replay while the
learner updates.

Played inline, each update waits for the cycles of play and the sampling before it (two cycles
per update in the default recipe: about a third of the learner's time on a 2-core machine).
Here a forked process, the actor, runs a replay learner's rollout stream as it runs inline (the
game, the opponent and its league, exploration, the replay buffer and its sampling) and writes
each batch into one of a few shared-memory slots, while the learner updates on the batch before.
The learner's process only swaps weights and batches with it.

Deterministic: the learner hands the actor its current weights with each request, at a fixed
point of its own program (while it fetches a batch), so a seed gives the same run however the
two processes are scheduled. The actor plays with weights one update older than inline play.
Between two batches the actor also answers what only it knows: the stream's state for a
checkpoint, the replay buffer's file, a new self-play snapshot.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback

import torch

SLOTS = 4  # batches in shared memory: the one updated on, the one Lightning fetched ahead,
#          the one being written, and one spare

# the stream's counters the actor sends with every batch (the learner logs them)
COUNTERS = ("cycles", "episodes", "agent_steps", "batches", "last_episode", "side")


def available() -> bool:
    """Whether this system can run an actor: it forks and has shared memory (a container
    without ``/dev/shm``, for one, has not: there the game is played inline)."""
    if "fork" not in mp.get_all_start_methods():
        return False
    try:
        torch.zeros(1).share_memory_()
    except (OSError, RuntimeError):
        return False
    return True


def _answer(stream, command: str, arg):
    """What the learner asks between two batches."""
    if command == "state":
        return stream.state_dict()
    if command == "buffer_size":  # for the logs: the learner's copy of the buffer stays empty
        return len(stream.buffer)
    if command == "save_replay":  # here the stream has no actor: it writes its own buffer
        return stream.save_replay(*arg)
    if command == "snapshot":  # the learner's weights (just copied in) join the pool
        from battle_rl.league.opponents import find_pool

        pool = find_pool(stream.opponent)
        pool.snapshot(arg)
        return [(s.score, s.games) for s in pool.snapshots]
    raise ValueError(f"unknown request {command!r}")


def _serve(stream, conn, learner_end, weights: list[torch.Tensor],
           own: list[torch.Tensor]) -> None:
    """The actor's loop (in the forked process): answer the learner's requests in order."""
    learner_end.close()  # the fork's copy: with it closed, the learner's death reads as EOF
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the learner's handlers: stop at once
    torch.set_num_threads(1)
    stream.play_in_process = False  # here, the stream plays inline
    batches = iter(stream)
    slots, written = None, 0
    while True:
        try:
            command, arg = conn.recv()
        except (EOFError, OSError):  # the learner is gone
            return
        if command == "stop":
            return
        try:
            with torch.no_grad():  # the weights the learner handed over
                torch._foreach_copy_(own, weights)
            if command == "batch":
                batch = next(batches, None)
                if batch is None:  # the episode budget is spent
                    reply = None
                else:
                    new = slots is None  # shared slots shaped as the first batch, sent once
                    if new:
                        slots = [{k: torch.empty_like(v).share_memory_()
                                  for k, v in batch.items()} for _ in range(SLOTS)]
                    slot = slots[written % SLOTS]
                    for key, value in batch.items():
                        slot[key].copy_(value)
                    reply = (written % SLOTS, {k: getattr(stream, k) for k in COUNTERS},
                             slots if new else None)
                    written += 1
            else:
                reply = _answer(stream, command, arg)
        except BaseException:  # noqa: BLE001 - reported to the learner, which raises it
            conn.send(("error", traceback.format_exc()))
            return
        conn.send(("ok", reply))


class ActorProcess:
    """The actor, seen from the learner: requests batches, reads them from shared memory."""

    def __init__(self, stream):
        net = stream.learner.policy_net()
        self.own = [t.detach() for t in (*net.parameters(), *net.buffers())]
        self.weights = [t.clone().share_memory_() for t in self.own]
        self.slots = None  # the actor's shared batches, sent with the first
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, name="battle-rl-actor", daemon=True,
                                   args=(stream, child, self.conn, self.weights, self.own))
        self.process.start()
        child.close()
        self.in_flight = False
        self.early = None  # a batch received to answer another request first

    def _send(self, command: str, arg=None) -> None:
        with torch.no_grad():  # today's weights go with every request
            torch._foreach_copy_(self.weights, self.own)
        self.conn.send((command, arg))

    def _recv(self):
        try:
            status, reply = self.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError("the actor process (play: process) ended unexpectedly; "
                               "play=inline plays in the learner's process") from None
        if status == "error":
            raise RuntimeError(f"the actor process (play: process) failed:\n{reply}")
        return reply

    def request(self) -> None:
        """The next batch: its cycles played and its rows sampled with today's weights."""
        self._send("batch")
        self.in_flight = True

    def receive(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The batch last requested (tensors in a shared slot, valid until ``SLOTS - 2``
        more are requested) and the stream's counters; None when the stream has ended."""
        if self.early is not None:
            reply, self.early = self.early, None
        else:
            reply = self._recv()
            self.in_flight = False
        if reply is None:
            return None
        slot, counters, slots = reply
        if slots is not None:
            self.slots = slots
        return dict(self.slots[slot]), counters

    def call(self, command: str, arg=None):
        """Ask the actor between two batches (the one in flight is kept for ``receive``)."""
        if self.in_flight:
            self.early = self._recv()
            self.in_flight = False
        self._send(command, arg)
        return self._recv()

    def close(self) -> dict | None:
        """Stop the actor; returns the stream's last state (None if the actor is gone)."""
        state = None
        if self.process.is_alive():
            try:
                state = self.call("state")
                self.conn.send(("stop", None))
            except (RuntimeError, OSError):
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        return state


def actor_batches(stream):
    """The rollout stream's batches, played and sampled by an actor process (started here,
    stopped by ``stream.close()``)."""
    actor = stream.actor = ActorProcess(stream)
    actor.request()
    while True:
        received = actor.receive()
        if received is None:
            return
        batch, counters = received
        for key, value in counters.items():
            setattr(stream, key, value)
        actor.request()  # the next batch, played and sampled during this update
        yield batch
