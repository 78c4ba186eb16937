"""Old points over plaintext and pickle are stored like whisper stores them, on the real stack.

Points of every age go to the gateway and, with the same ``now``, into whisper files of the
shipped default schema (``10s:1d,1min:30d,1h:2y``) and aggregation: ten minutes old (the 10 s
archive), two to three days (the minute archive), 40 to 60 days (the hour one) and three years
(dropped by both). graphite-web's ``/render`` of a range in each archive equals ``whisper.fetch``.
One point per slot of the archive it lands in: whisper keeps a slot's last point, Turok
aggregates a slot's points (docs/schemas.md, "Old points").
"""
from __future__ import annotations

import random
import socket
import time

import whisper

from tests.conftest import wait_for
from tests.e2e.conftest import graphite_get
from tests.support.pickle_frames import encode_frame

DAY = 86400
ARCHIVES = [(10, 8640), (60, 43200), (3600, 17520)]  # the shipped default: 10s:1d,1min:30d,1h:2y
METRICS = {  # name → (whisper aggregationMethod, xFilesFactor), as the shipped aggregation file says
    "backfill.e2e.plain.load": ("average", 0.5),
    "backfill.e2e.plain.hits.count": ("sum", 0.0),
    "backfill.e2e.pickled.load": ("average", 0.5),
    "backfill.e2e.pickled.latency.max": ("max", 0.1),
}


def points_of_every_age(rng: random.Random, now: int) -> list[tuple[int, float]]:
    tens = rng.sample(range(now - 3000 - now % 10, now - 600 - now % 10, 10), 40)
    minutes = rng.sample(range(now - 3 * DAY - now % 60, now - 2 * DAY - now % 60, 60), 600)
    hours = rng.sample(range(now - 60 * DAY - now % 3600, now - 40 * DAY - now % 3600, 3600), 100)
    slots = [(t, 10) for t in tens] + [(t, 60) for t in minutes] + [(t, 3600) for t in hours]
    points = [(t + rng.randrange(step), round(rng.uniform(-50, 150), 3)) for t, step in slots]
    return points + [(now - 3 * 365 * DAY + i, 1.0) for i in range(5)]


def test_points_of_every_age_over_plaintext_and_pickle_answer_like_whisper(stack, tmp_path):
    rng = random.Random(15)
    now = int(time.time())
    files, sent = {}, {}
    for name, (method, xff) in METRICS.items():
        files[name] = str(tmp_path / f"{name}.wsp")
        whisper.create(files[name], ARCHIVES, xFilesFactor=xff, aggregationMethod=method)
        sent[name] = points_of_every_age(rng, now)
        whisper.update_many(files[name], sent[name], now=now)
    plain = "".join(f"{name} {v!r} {t}\n" for name in METRICS if ".plain." in name for t, v in sent[name])
    pickled = [(name, (t, v)) for name in METRICS if ".pickled." in name for t, v in sent[name]]
    with socket.create_connection(("127.0.0.1", stack.config.plaintext_port), timeout=10) as sock:
        sock.sendall(plain.encode())
    with socket.create_connection(("127.0.0.1", stack.config.pickle_port), timeout=10) as sock:
        sock.sendall(encode_frame(pickled))

    cases = [(now - 3300, now - 300), (now - 3 * DAY - 3600, now - 2 * DAY + 3600), (now - 61 * DAY, now - 39 * DAY)]

    def answers(name: str, start: int, end: int):
        series = graphite_get(stack, "/render", target=name, format="json", **{"from": start, "until": end})
        return {t: v for v, t in series[0]["datapoints"] if v is not None} if series else {}

    def expected(name: str, start: int, end: int):
        (first, last, step), values = whisper.fetch(files[name], start, end, now=int(time.time()))
        return {t: v for t, v in zip(range(first, last, step), values) if v is not None}

    for name in METRICS:
        for start, end in cases:
            want = expected(name, start, end)
            assert len(want) > 20, (name, start, end)
            wait_for(lambda: answers(name, start, end) == want, 30,  # noqa: B023 - called at once
                     f"{name} over [{start}, {end}] as whisper answers it")
