"""The Redis trigger: messages published on a channel run the components of its
`[[trigger.redis]]`s, one fresh instance per message, as Spin's trigger-redis does.

One `Subscriber` per Redis address (host/app.py `Subscription`: Spin's grouping),
each a thread of its own with one connection in subscribe mode. It reads a
message, takes a slot for each component of the channel and hands the call to
its handler threads (`InboundRedisExecutor.handle_message`: the same pool,
limits, grants and deadline as an HTTP request). A trap, a deadline or the
handler's `error` is logged with the component and the channel, and the next
message is read as if nothing happened.

Choices, and why:

- Threads, not the event loop: a blocking redis-py connection on a thread of its
  own, handing calls to a small thread pool, handled 9-10k messages/s of a
  trivial component here; redis.asyncio on uvloop with the same hand-off 4-7k,
  at more CPU per message (its parser and a task per message run on the loop
  that also serves HTTP).
- Backpressure: at `max_in_flight` handler calls the subscriber stops reading.
  Pub/sub has no acknowledgement, so a message read is a message the host
  must hold: instead the unread ones wait in the socket and in Redis's output
  buffer for this client, which Redis bounds (`client-output-buffer-limit
  pubsub`) by disconnecting a subscriber that falls too far behind. That shows
  up here as a lost connection (logged), and the buffered messages are lost,
  as they would be in any pub/sub consumer that cannot keep up.
- Lost connections (a restarted server, a network failure, a PING unanswered
  for `connect_timeout_seconds`) are logged once, then retried with doubling
  delays up to a cap; once connected, every channel is subscribed again and
  that is logged. Messages published in between are not received: Redis keeps
  none for absent subscribers. (Spin instead ends `spin up` when a
  subscription drops.)
- Shutdown (`stop_reading`, from the signal handler): the connection is shut,
  so no further message is read; messages already read are handled;
  `drain` waits for the handlers, up to the drain deadline.
- The first connection is made at start-up (`connect`): a wrong address or an
  unreachable server stops the host there, with the address, as Spin does.
- `host watch` (`use`): a subscriber reads its route (channel -> executors, and
  the version of the app they belong to) once per message, so a rebuilt
  component gets the messages read after the swap while those already read
  finish on the old executor; each message holds its version (`Holds`: the
  watch's Reloadable) until handled, and the old executor is closed after the
  last one. An app reload keeps a subscriber (and its connection) whose address
  and channels are unchanged; one whose channels changed is replaced: the new
  one subscribes first, then the old one stops reading (a message still unread
  in its socket then is lost, as at a reconnection) and drains on a thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import RedisError
from redis.retry import Retry

from host import logs, tracing
from host.app import App, Subscription
from host.errors import ConfigError, GuestError, GuestTimeout, HandlerError
from host.executors.redis import InboundRedisExecutor
from host.limits import RedisTriggerLimits

log = logging.getLogger("host.redis_trigger")


class Holds(Protocol):
    """Counts the messages running on each version of an app (`host watch`), so that
    a replaced version is closed only once nothing runs on it. Any thread."""

    def hold(self, app: App, count: int = 1) -> None: ...

    def release(self, app: App) -> None: ...


class _NoHolds:
    def hold(self, app: App, count: int = 1) -> None:
        pass

    def release(self, app: App) -> None:
        pass


class RedisTriggers:
    """Every subscriber of an app, started and stopped together."""

    def __init__(self, app: App, limits: RedisTriggerLimits | None = None) -> None:
        self.limits = limits or RedisTriggerLimits()
        self.holds: Holds = _NoHolds()
        self.subscribers = [Subscriber(s, app, self.limits, n, self)
                            for n, s in enumerate(app.subscriptions)]
        self._numbered = len(self.subscribers)
        self._lock = threading.Lock()  # `use` against `close`
        self._closed = False
        self._retired_counts: dict[tuple[str, str], int] = {}

    def connect(self, report: Callable[[str], None] = lambda line: None) -> None:
        """Connect and subscribe every subscriber (nothing is read yet) and report their
        channels, as `spin up` prints them; a ConfigError names the first address that
        fails."""
        try:
            for subscriber in self.subscribers:
                subscriber.connect()
                report(subscriber.describe())
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Start reading and handling messages."""
        for subscriber in self.subscribers:
            subscriber.start()

    def stop_reading(self) -> None:
        """Read no further message (safe from a signal handler: never blocks)."""
        for subscriber in self.subscribers:
            subscriber.stop_reading()

    def drain(self, deadline: float) -> int:
        """Wait until every message read has been handled, or until `deadline`
        (monotonic); the number of handler calls still running."""
        self.stop_reading()
        return sum(subscriber.drain(deadline) for subscriber in self.subscribers)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for subscriber in self.subscribers:
            subscriber.close()

    # -- host watch -------------------------------------------------------------

    def connect_new(self, app: App,
                    report: Callable[[str], None] = lambda line: None) -> list[Subscriber]:
        """The subscribers `app` needs that are not running (another address or other
        channels), connected and subscribed but not reading; a ConfigError names the
        first address that fails (and the others are closed)."""
        running = {subscriber.key for subscriber in self.subscribers}
        fresh: list[Subscriber] = []
        try:
            for subscription in app.subscriptions:
                if _key(subscription) in running:
                    continue
                self._numbered += 1
                subscriber = Subscriber(subscription, app, self.limits, self._numbered, self)
                fresh.append(subscriber)
                subscriber.connect()
                report(subscriber.describe())
        except BaseException:
            for subscriber in fresh:
                subscriber.close()
            raise
        return fresh

    def use(self, app: App, fresh: list[Subscriber]) -> bool:
        """Hand the messages read from now on to `app`'s executors: subscribers with an
        unchanged address and channels are kept, `fresh` ones (`connect_new`) start
        reading, the others stop reading and drain on a thread. False (and `fresh`
        closed) once the triggers are closed."""
        with self._lock:
            if self._closed:
                for subscriber in fresh:
                    subscriber.close()
                return False
            kept = {subscriber.key: subscriber for subscriber in self.subscribers}
            by_key = {subscriber.key: subscriber for subscriber in fresh}
            serving = []
            for subscription in app.subscriptions:
                key = _key(subscription)
                subscriber = kept.pop(key) if key in kept else by_key[key]
                subscriber.route(app, subscription)
                serving.append(subscriber)
            for subscriber in fresh:
                subscriber.start()
            self.subscribers = serving
            retired = list(kept.values())
            for subscriber in retired:
                subscriber.stop_reading()
        if retired:
            threading.Thread(target=self._retire, args=(retired,), name="redis-retire",
                             daemon=True).start()
        return True

    def _retire(self, subscribers: list[Subscriber]) -> None:
        for subscriber in subscribers:
            # Each handler call ends by its deadline (--request-timeout).
            subscriber.drain(None)
            subscriber.close()
            logs.info(f"Stopped the subscriber of {subscriber.shown}: its channels changed")
            with self._lock:
                for key, count in subscriber.snapshot().items():
                    self._retired_counts[key] = self._retired_counts.get(key, 0) + count

    @property
    def in_flight(self) -> int:
        return sum(subscriber.in_flight for subscriber in self.subscribers)

    def counts(self) -> dict[tuple[str, str], int]:
        """Messages handled by (component, outcome), over every subscriber (metrics)."""
        with self._lock:
            total = dict(self._retired_counts)
        for subscriber in self.subscribers:
            for key, count in subscriber.snapshot().items():
                total[key] = total.get(key, 0) + count
        return total


class Subscriber:
    """One Redis address: a connection in subscribe mode, read on a thread of its own."""

    def __init__(self, subscription: Subscription, app: App, limits: RedisTriggerLimits,
                 number: int, triggers: RedisTriggers) -> None:
        self.subscription = subscription
        self.shown = subscription.shown
        self.key = _key(subscription)
        self.channels = tuple(subscription.channels)
        self._triggers = triggers  # its `holds`, read per message
        self.route(app, subscription)
        self.limits = limits
        self.number = number
        self.connected = False
        self._counts: dict[tuple[str, str], int] = {}
        self.in_flight = 0
        self._conn: redis.Connection | None = None
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(limits.max_in_flight)
        self._idle = threading.Condition()
        self._handlers = ThreadPoolExecutor(max_workers=limits.max_in_flight,
                                            thread_name_prefix=f"redis-handler-{number}")
        self._reader: threading.Thread | None = None

    # -- the connection -----------------------------------------------------

    def route(self, app: App, subscription: Subscription) -> None:
        """Hand the messages read from now on to `app`'s executors (one assignment: the
        reader reads it once per message)."""
        executors: Mapping[str, InboundRedisExecutor] = app.message_executors
        self._route = (app, {channel.encode(): [executors[cid] for cid in ids]
                             for channel, ids in subscription.channels.items()})

    def connect(self) -> None:
        try:
            self._conn = self._subscribe()
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"Redis trigger: cannot subscribe to {self.shown} (channels "
                f"{', '.join(self.channels)}): {_one_line(exc, self.subscription.address)}"
            ) from None
        self.connected = True

    def snapshot(self) -> dict[tuple[str, str], int]:
        """Messages handled by (component, outcome): ok, error (the handler's), trap,
        deadline, dropped (too large)."""
        with self._idle:
            return dict(self._counts)

    def describe(self) -> str:
        lines = [f"Active Channels on {self.shown}:"]
        lines += [f"\t{self.shown}/{channel.decode()}: [{','.join(h.id for h in handlers)}]"
                  for channel, handlers in self._route[1].items()]
        return "\n".join(lines)

    def _subscribe(self) -> redis.Connection:
        """A new connection, subscribed to every channel (their confirmations read)."""
        conn = _connection(self.subscription.address, self.limits)
        try:
            conn.connect()  # type: ignore[no-untyped-call]
            conn.send_command("SUBSCRIBE", *self.channels)  # type: ignore[no-untyped-call]
            for _ in self.channels:
                reply = conn.read_response(timeout=self.limits.connect_timeout_seconds)
                if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                    raise redis.ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r:.80}")
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        return conn

    def start(self) -> None:
        self._reader = threading.Thread(target=self._run, name=f"redis-subscriber-{self.number}",
                                        daemon=True)
        self._reader.start()

    def stop_reading(self) -> None:
        self._stopping.set()
        conn = self._conn
        sock = getattr(conn, "_sock", None)  # redis-py's socket: shut to wake the reader
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def drain(self, deadline: float | None) -> int:
        """Wait for the reader and the handler calls, until `deadline` (monotonic; None:
        as long as they take, each call being bounded by its own deadline)."""
        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if self._reader is not None:
            self._reader.join(left())
        with self._idle:
            self._idle.wait_for(lambda: self.in_flight == 0, left())
            return self.in_flight

    def close(self) -> None:
        self.stop_reading()
        self._handlers.shutdown(wait=False)
        if self._reader is None and self._conn is not None:  # never started
            self._conn.disconnect()  # type: ignore[no-untyped-call]

    # -- the reader thread ----------------------------------------------------

    def _run(self) -> None:
        conn = self._conn
        while conn is not None:
            error = self._listen(conn)
            conn.disconnect()  # type: ignore[no-untyped-call]
            self.connected = False
            if self._stopping.is_set():
                return
            log.warning("lost the subscription to %s (%s); reconnecting "
                        "(every %g s at first, then up to every %g s)", self.shown,
                        _one_line(error, self.subscription.address),
                        *self.limits.reconnect_delays)
            conn = self._reconnect()

    def _listen(self, conn: redis.Connection) -> BaseException | None:
        """Read and dispatch messages until the connection fails (its error) or the
        subscriber stops (None)."""
        limits = self.limits
        pinged = False
        try:
            while not self._stopping.is_set():
                wait = limits.connect_timeout_seconds if pinged else \
                    limits.health_check_interval_seconds
                if not conn.can_read(timeout=wait):
                    if pinged:
                        raise redis.TimeoutError(f"no answer to PING within {wait:g} s")
                    conn.send_command("PING")  # type: ignore[no-untyped-call]
                    pinged = True
                    continue
                reply = conn.read_response()
                pinged = False
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    self._dispatch(reply[1], reply[2])
        except (RedisError, OSError) as exc:
            return None if self._stopping.is_set() else exc
        except Exception as exc:  # a bug of ours: say so, and go on with a new connection
            log.exception("Host error in the subscriber of %s", self.shown)
            return exc
        return None

    def _reconnect(self) -> redis.Connection | None:
        """Connect and subscribe again, with doubling delays, until it works (the
        connection) or the subscriber stops (None)."""
        delay, cap = self.limits.reconnect_delays
        lost = time.monotonic()
        attempts = 0
        while not self._stopping.wait(delay):
            attempts += 1
            try:
                conn = self._subscribe()
            except (RedisError, OSError):
                delay = min(cap, delay * 2)
                continue
            # Published before the check: a stop_reading from now on shuts this one.
            self._conn = conn
            if self._stopping.is_set():  # stop_reading came while connecting
                conn.disconnect()  # type: ignore[no-untyped-call]
                return None
            self.connected = True
            log.warning("subscribed again to %s after %.1f s (%d attempt%s); "
                        "messages published meanwhile were not received", self.shown,
                        time.monotonic() - lost, attempts, "" if attempts == 1 else "s")
            return conn
        return None

    def _dispatch(self, channel: bytes, payload: Any) -> None:
        app, handlers, holds = self._hold(channel)
        if not handlers or not isinstance(payload, bytes):
            holds.release(app)
            return
        if len(payload) > self.limits.max_message_bytes:
            name = channel.decode("utf-8", "replace")
            log.error("a message of %d bytes on %s/%s is larger than "
                      "--max-message-bytes (%d); not handled", len(payload), self.shown, name,
                      self.limits.max_message_bytes)
            for handler in handlers:
                self._count(handler.id, "dropped")
            holds.release(app)
            return
        if len(handlers) > 1:
            holds.hold(app, len(handlers) - 1)  # one per handler call, released by each
        for handler in handlers:
            self._slots.acquire()  # at the cap, reading pauses here
            with self._idle:
                self.in_flight += 1
            try:
                self._handlers.submit(self._handle, handler, channel, payload, app, holds)
            except RuntimeError:  # shut down (close): the message is not handled
                self._done(app, holds)

    def _hold(self, channel: bytes) -> tuple[App, list[InboundRedisExecutor] | None, Holds]:
        """The version of the app this message runs on, held (`host watch` swaps the
        route, then closes the old version once nothing holds it: a route read before
        the swap but held after it is read again)."""
        while True:
            holds = self._triggers.holds
            app, by_name = self._route
            holds.hold(app)
            if self._route[0] is app:
                return app, by_name.get(channel), holds
            holds.release(app)

    # -- handler threads ------------------------------------------------------

    def _handle(self, handler: InboundRedisExecutor, channel: bytes, payload: bytes,
                app: App, holds: Holds) -> None:
        outcome = "ok"
        shown = channel.decode("utf-8", "replace")
        with tracing.message(handler.id, shown) as span:
            try:
                handler.handle_message(payload)
            except GuestError as exc:
                outcome = ("deadline" if isinstance(exc, GuestTimeout) else
                           "error" if isinstance(exc, HandlerError) else "trap")
                log.error("Error handling a Redis message on %s/%s: component %s: %s",
                          self.shown, shown, handler.id, exc)
            except Exception:
                outcome = "trap"
                log.exception("Host error handling a Redis message on %s/%s: component %s",
                              self.shown, shown, handler.id)
            finally:
                if outcome != "ok":
                    tracing.message_failed(span, outcome)
                self._count(handler.id, outcome)
                self._done(app, holds)

    def _count(self, component_id: str, outcome: str) -> None:
        key = (component_id, outcome)
        with self._idle:
            self._counts[key] = self._counts.get(key, 0) + 1

    def _done(self, app: App, holds: Holds) -> None:
        holds.release(app)
        with self._idle:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.notify_all()
        self._slots.release()


def _key(subscription: Subscription) -> tuple[str, frozenset[str]]:
    """What a subscriber's connection is subscribed to: kept across an app reload."""
    return subscription.address, frozenset(subscription.channels)


def _connection(address: str, limits: RedisTriggerLimits) -> redis.Connection:
    """A redis-py connection to `address` (host, port, credentials and database only:
    query options such as `protocol` would change what the reader parses)."""
    parsed = parse_url(address)  # type: ignore[no-untyped-call]  # untyped in redis-py
    options = {key: parsed[key] for key in ("host", "port", "db", "username", "password",
                                            "path") if key in parsed}
    kind = parsed.get("connection_class", redis.Connection)
    return kind(**options, socket_connect_timeout=limits.connect_timeout_seconds,  # type: ignore[no-any-return]
                socket_timeout=limits.connect_timeout_seconds, socket_keepalive=True,
                retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2)


def _one_line(exc: BaseException | None, address: str) -> str:
    """An error on one line, without the address's password."""
    text = " ".join(str(exc).split()) if exc is not None else "closed"
    password = urlsplit(address).password
    return text.replace(password, "***") if password else text or type(exc).__name__


