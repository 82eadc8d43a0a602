"""Another worker process for the breaker tests: `python circuit_peer.py DSN KEY`.

Once its mirror admits KEY in-process it prints `ready`, then runs
`with breaker:` every millisecond and prints each change of outcome as
`refused <monotonic> <state>` or `admitted <monotonic>` (CLOCK_MONOTONIC is
one clock for every process of the host). It stops when stdin closes.
"""

from __future__ import annotations

import sys
import threading
import time

from orchestrator.breaker import CircuitBreaker, CircuitOpenError


def main(dsn: str, key: str) -> None:
    breaker = CircuitBreaker(key, dsn=dsn)
    with breaker:
        pass
    end = time.monotonic() + 20
    while not breaker.mirror.admits(key):
        if time.monotonic() > end:
            sys.exit("the mirror never admitted the key")
        time.sleep(0.01)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    last = "admitted"
    while not stop.is_set():
        try:
            with breaker:
                pass
            now, state = "admitted", ""
        except CircuitOpenError as refused:
            now, state = "refused", refused.state or ""
        if now != last:
            print(f"{now} {time.monotonic()!r} {state}".rstrip(), flush=True)
            last = now
        time.sleep(0.001)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
