"""Turok gives the answers whisper gives: same points in, same ``(start, end, step)`` and values out.

A live stream is simulated for four hours across a UTC midnight: every five minutes ("a round")
the points that have arrived by then go into a whisper file (``update_many(..., now=round)``) and,
as Turok messages, through turokd's ``process_batch`` into DynamoDB on the moto server (base slots
plus rollups). Points of this stream are younger than the first archive's retention when written
(a stream, as carbon sees it), but arrive late and out of order by up to 15 minutes; the backfill
test below sends points of every age, which whisper writes straight into the first archive
covering their age and Turok too (through the gateway's windows, and through turokd for a
producer that sends old slots at the base step). Five metrics cover the
five aggregation methods, gaps, and xFilesFactor edges: exactly at the fraction, just under it,
and 1/3, which whisper compares as a 32-bit float (so 2 of 6 known does *not* reach it). Then the
Turok finder and ``whisper.fetch`` are asked the same ranges at the same ``now``.
"""
import calendar
import random

import pytest
import whisper

from tests.conftest import with_schema_files
from tests.support.turokd_batch import process_batch
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.runtime.aws import make_client
from turok_core.storage.tables import BlockStore
from turok_core.wire.codec import encode_messages
from turok_core.wire.queues import ReceivedMessage

MIDNIGHT = calendar.timegm((2024, 3, 2, 0, 0, 0))
NOW = MIDNIGHT + 40 * 60 + 7  # mid-slot; the 10 s archive (1 h) spans the midnight
START = NOW - 4 * 3600
ROUND = 300
ARCHIVES = [(10, 360), (60, 1440), (3600, 168)]  # 10s:1h, 1min:1d, 1h:7d
SCHEMAS = "[all]\npattern = .*\nretentions = 10s:1h,1min:1d,1h:7d\n"
METHODS = {  # metric → (carbon aggregationMethod, xFilesFactor)
    "parity.avg": ("average", 0.5),
    "parity.sum": ("sum", 0.0),
    "parity.max": ("max", 0.3333333333333333),
    "parity.min": ("min", 1.0),
    "parity.last": ("last", 0.5),
    "parity.hours": ("average", 0.5),
}
# the backfill test's metrics: through the gateway (gw.*) and as JSON messages (json.*)
BACKFILL_METHODS = {f"{path}.{name.split('.')[1]}": kind for path in ("gw", "json")
                    for name, kind in METHODS.items() if name != "parity.hours"}
AGGREGATION = "".join(f"[{name.replace('.', '_')}]\npattern = ^{name.replace('.', '[.]')}$\n"
                      f"aggregationMethod = {method}\nxFilesFactor = {xff!r}\n\n"
                      for name, (method, xff) in {**METHODS, **BACKFILL_METHODS}.items())
# parity.hours: whole minutes present or absent; full minutes in the hours before the midnight:
# exactly half (30/60 = xFilesFactor), just under (29/60), all
HOUR_MINUTES = {MIDNIGHT - 3 * 3600: 30, MIDNIGHT - 2 * 3600: 29, MIDNIGHT - 3600: 60}


def known_slots(name: str, rng: random.Random) -> list[int]:
    """The 10 s slots that get a point, per metric: patterns hitting every xFilesFactor edge."""
    slots = range(START - START % 10, NOW - NOW % 10 + 10, 10)
    if name == "parity.hours":
        chosen = []
        for hour, full in HOUR_MINUTES.items():
            minutes = rng.sample(range(60), full)
            chosen += [hour + m * 60 + s for m in minutes for s in range(0, 60, 10)]
        return chosen + [t for t in slots if t >= MIDNIGHT]
    chosen = []
    for minute in range(START - START % 60, NOW, 60):
        # 0…6 known of the minute's six slots, cycling: 3/6 (at 0.5), 2/6 (under; and 1/3 in
        # float32), 6/6 (min's xFilesFactor 1.0), none (a gap)
        count = (minute // 60) % 7
        chosen += rng.sample(range(minute, minute + 60, 10), count)
    return [t for t in chosen if START <= t <= NOW]


pytestmark = pytest.mark.usefixtures("graphite_django")


@pytest.fixture
def schema_config(turok_config, tmp_path):
    return with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION)


def stream(rng: random.Random) -> dict[int, list[tuple[str, int, float]]]:
    """Round time → the (metric, timestamp, value) points arriving by then, shuffled."""
    rounds: dict[int, list] = {}
    for name in METHODS:
        for slot in known_slots(name, rng):
            timestamp = slot + rng.randint(0, 9)
            if timestamp > NOW:
                continue
            delay = rng.choice([0, 0, 0, 30, 200, 900])  # late and out of order, within the hour
            arrival = min(NOW, timestamp + delay)
            due = arrival if arrival == NOW else START + -(-(arrival - START) // ROUND) * ROUND
            rounds.setdefault(min(due, NOW), []).append((name, timestamp, round(rng.uniform(-50, 150), 3)))
    for points in rounds.values():
        rng.shuffle(points)
    return dict(sorted(rounds.items()))



def compare_with_whisper(reader_of, files, names, cases) -> tuple[list, int]:
    """Each name's Turok fetch against ``whisper.fetch`` over every ``(start, end)`` of ``cases``:
    the time info must be equal; returns the ranges whose values differ (with examples) and how
    many known values whisper answered."""
    differing, checked = [], 0
    for name in names:
        reader = reader_of(name)
        for start, end in cases:
            expected = whisper.fetch(files[name], start, end, now=NOW)
            got = reader.fetch(start, end, now=NOW)
            assert got[0] == expected[0], (name, start, end)
            if got[1] != expected[1]:
                differing.append((name, start, end, [(a, b) for a, b in zip(got[1], expected[1]) if a != b][:5]))
            checked += sum(v is not None for v in expected[1])
    return differing, checked

def test_turok_answers_like_whisper(schema_config, tmp_path):
    from finder.finder import TurokFinder

    rng = random.Random(20240302)
    schemas = load_schemas(schema_config)
    store = BlockStore(make_client("dynamodb", schema_config), schema_config)
    files = {}
    for name, (method, xff) in METHODS.items():
        files[name] = str(tmp_path / f"{name}.wsp")
        whisper.create(files[name], ARCHIVES, xFilesFactor=xff, aggregationMethod=method)
    rounds = stream(rng)
    assert len(rounds) > 40
    for count, (now, points) in enumerate(rounds.items()):
        for name in METHODS:
            mine = [(t, v) for n, t, v in points if n == name]
            if mine:
                whisper.update_many(files[name], mine, now=now)
        messages = [TurokMessage(n, t - t % 10, [v], 10, schemas.policy_for(n).aggregation_type)
                    for n, t, v in points]
        bodies = encode_messages(messages, max_body_bytes=4096)
        received = [ReceivedMessage(body, f"r{count}.{i}", f"m{count}.{i}", 1) for i, body in enumerate(bodies)]
        result = process_batch(received, store, schemas)
        assert not result.rejected and len(result.deletable) == len(bodies)

    finder = TurokFinder(config=schema_config, schemas=schemas, index=object(), blocks=store, clock=lambda: NOW)
    cases = [
        (NOW - 1800, NOW),  # inside the 10 s archive
        (NOW - 3599, NOW - 60),
        (NOW - 600, NOW + 600),  # until after now
        (NOW - 25, NOW - 25),  # empty range: whisper's one next slot
        (NOW - 3601, NOW),  # just past the 10 s retention: the 1 min archive
        (NOW - 4 * 3600, NOW - 3600),  # the 1 min archive, across the midnight
        (MIDNIGHT - 7200 + 13, MIDNIGHT + 1800),
        (NOW - 2 * 86400, NOW),  # the hour archive
        (NOW - 6 * 3600, MIDNIGHT),
        (NOW - 8 * 86400, NOW - 6 * 86400),  # partly beyond the longest retention
    ]
    differing, checked_values = compare_with_whisper(finder.reader, files, METHODS, cases)
    for name in METHODS:
        reader = finder.reader(name)
        assert whisper.fetch(files[name], NOW - 10 * 86400, NOW - 9 * 86400, now=NOW) is None
        assert reader.fetch(NOW - 10 * 86400, NOW - 9 * 86400, now=NOW) is None
        assert whisper.fetch(files[name], NOW + 10, NOW + 20, now=NOW) is None
        assert reader.fetch(NOW + 10, NOW + 20, now=NOW) is None
    assert not differing, differing
    assert checked_values > 1000

    # the edges really happened: hour at 30/60 kept, 29/60 dropped; 2 of 6 under max's 1/3
    hours = whisper.fetch(files["parity.hours"], NOW - 2 * 86400, NOW, now=NOW)
    by_hour = dict(zip(range(*hours[0]), hours[1]))
    assert by_hour[MIDNIGHT - 3 * 3600] is not None and by_hour[MIDNIGHT - 2 * 3600] is None
    assert by_hour[MIDNIGHT - 3600] is not None
    minutes = whisper.fetch(files["parity.max"], NOW - 4 * 3600, NOW - 3600, now=NOW)
    two_known = [t for t in range(*minutes[0]) if (t // 60) % 7 == 2]
    assert two_known and all(minutes[1][(t - minutes[0][0]) // 60] is None for t in two_known)
    three_known = [t for t in range(*minutes[0]) if (t // 60) % 7 == 3]
    assert any(minutes[1][(t - minutes[0][0]) // 60] is not None for t in three_known)


# --- backfill: points of every age ---------------------------------------------------------

BACKFILL_ROUNDS = (NOW - 5400, NOW - 1800, NOW)


def backfill_points(name: str, rng: random.Random, now: int) -> list[tuple[int, float]]:
    """Points of every age at ``now``, one per slot of the archive each lands in (whisper keeps
    the last point of a slot, Turok aggregates a slot's points: alike for one point): the 10 s
    archive (under an hour), the minute archive (2 h 10 min to a day: past the retention plus
    turokd's slack), the hour archive (a day and 2 h to 7 days, the fraction of known minutes
    around the xFilesFactor) and beyond every retention (dropped by both)."""
    points = [(t + rng.randint(0, 9), t) for t in rng.sample(range(now - 3500 - now % 10, now - 30, 10), 60)]
    # never in a minute the 10 s points of any round reach, nor in an hour reaching past the
    # minute archive's retention: see test_backfill_of_every_age_answers_like_whisper
    first_hour = now - 86400 + 3600 - (now - 86400) % 3600 + 3600
    minutes = range(first_hour, min(now - 7800, NOW - 9000) - now % 60, 60)
    points += [(t + rng.randint(0, 59), t) for t in rng.sample(minutes, 400)]
    hours = range(now - 7 * 86400 + 3600 - now % 3600, now - 86400 - 7200 - now % 3600, 3600)
    points += [(t + rng.randint(0, 3599), t) for t in rng.sample(hours, 60)]
    points += [(now - 8 * 86400 + rng.randint(0, 3600), 0) for _ in range(5)]
    return [(t, round(rng.uniform(-50, 150), 3)) for t, _slot in points if t <= now]


def test_backfill_of_every_age_answers_like_whisper(schema_config, tmp_path):
    """Each round sends points of every age: ``gw.*`` through the gateway's windows (routed by
    age there), ``json.*`` as 10 s JSON messages that turokd routes by age.

    Two places where whisper's rings differ from Turok's day tables are left out: a backfilled
    minute never shares a minute with 10 s points (whisper, whose 10 s ring no longer holds them,
    keeps the backfilled value, while Turok's rollup of the 10 s data still stored wins), and no
    hour gets backfilled minutes while it reaches past the minute archive's retention (whisper
    recomputes it without the minutes its ring has overwritten, Turok with them): see
    docs/schemas.md, "Old points"."""
    from finder.finder import TurokFinder
    from turok_core.turokd.block_writer import BlockWriter
    from turok_core.windows.buffer import WindowBuffer
    from turok_core.wire.codec import encode_json

    rng = random.Random(20240303)
    schemas = load_schemas(schema_config)
    store = BlockStore(make_client("dynamodb", schema_config), schema_config)
    names = list(BACKFILL_METHODS)
    files = {}
    for name, (method, xff) in BACKFILL_METHODS.items():
        files[name] = str(tmp_path / f"{name}.wsp")
        whisper.create(files[name], ARCHIVES, xFilesFactor=xff, aggregationMethod=method)
    policies = {n: schemas.policy_for(n) for n in names}
    assert {n: (p.aggregation_type[:3], p.x_files_factor) for n, p in policies.items()} == \
        {n: (method[:3], xff) for n, (method, xff) in BACKFILL_METHODS.items()}
    routed_by_gateway = moved_by_turokd = 0
    for count, now in enumerate(BACKFILL_ROUNDS):
        clock = (lambda now: lambda: float(now))(now)
        buffer = WindowBuffer(lambda n: (policies[n].step, policies[n].aggregation_type, policies[n].archives),
                              0, clock=clock)
        bodies = []
        for name in names:
            points = backfill_points(name, rng, now)
            whisper.update_many(files[name], points, now=now)
            if name.startswith("gw."):
                buffer.add_points([name] * len(points), [v for _t, v in points], [t for t, _v in points])
            else:
                bodies += [encode_json(TurokMessage(name, t - t % 10, [v], 10, policies[name].aggregation_type))
                           for t, v in points]
        messages = list(buffer.release_all())
        routed_by_gateway += sum(m.resolution != 10 for m in messages)
        bodies += encode_messages(messages, max_body_bytes=4096)
        received = [ReceivedMessage(body, f"b{count}.{i}", f"m{count}.{i}", 1) for i, body in enumerate(bodies)]
        writer = BlockWriter(store, schema_config.replace(), schemas, clock=clock, route_old=True)
        batch = writer.hold(received)
        moved_by_turokd += batch.moved
        assert not batch.rejected
        assert len(writer.close_all().deletable) == len(received)
    assert routed_by_gateway > 1000 and moved_by_turokd > 100

    finder = TurokFinder(config=schema_config, schemas=schemas, index=object(), blocks=store, clock=lambda: NOW)
    # from-times land in each archive: the 10 s one, the minute one, the hour one
    cases = [(NOW - 3000, NOW), (NOW - 3 * 3600, NOW - 3600), (NOW - 20 * 3600, NOW - 5 * 3600),
             (NOW - 86400, NOW), (NOW - 3 * 86400, NOW - 86400), (NOW - 7 * 86400, NOW), (NOW - 9 * 86400, NOW)]
    differing, checked = compare_with_whisper(lambda name: TurokFinder.reader(finder, name), files, names, cases)
    assert not differing, differing
    assert checked > 5000
