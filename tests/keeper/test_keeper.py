"""The keeper: its plan on pure inputs, its apply on moto, the CLI, index hygiene and the templates."""
from __future__ import annotations

import calendar
import dataclasses
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import keeper
from keeper.apply import Applier, list_tables, survey_table
from keeper.cli import build_parser, main
from keeper.plan import make_plan, plan_for, render_text, retention_by_step, to_json
from tests.support.index_shards import read_shard
from turok_core.index.s3_store import IndexStore
from turok_core.model.schemas import SchemaSet
from turok_core.runtime.aws import make_client
from turok_core.storage.table_names import table_name
from turok_core.storage.tables import BlockStore
from turok_core.turokd.announcer import Announcer

DAY = 86400
T = calendar.timegm((2026, 6, 15, 0, 0, 0))  # a UTC midnight
NOW = T + 12 * 3600
RETENTIONS = {10: DAY, 60: 7 * DAY, 3600: 30 * DAY}
SCHEMAS = """\
[short]
pattern = ^short\\.
retentions = 10s:1d,1min:3d

[default]
pattern = .*
retentions = 1min:7d,1h:30d
"""
VENV_BIN = Path(sys.executable).parent
TEMPLATES = Path(keeper.__file__).resolve().parent / "templates"


def name(prefix: str, day: int, step: int) -> str:
    return table_name(prefix, "_", day, step)


# ------------------------------------------------------------------------------------ the plan

def test_plan_over_many_dates_and_resolutions():
    days = [T + offset * DAY for offset in range(-45, 4)]
    tables = [name("turok", d, step) for d in days for step in (10, 60, 3600)]
    tables.remove(name("turok", T + DAY, 60))  # tomorrow's 1min table is missing
    plan = make_plan(RETENTIONS, tables, "turok", "_", NOW, days_ahead=2)
    expected = {name("turok", d, s) for d in days for s in (10, 60, 3600) if d + DAY <= NOW - RETENTIONS[s]}
    assert {a.table for a in plan.deletes} == expected
    assert len(expected) == 44 + 38 + 15  # 10s: T-45..T-2; 1min: T-45..T-8; 1h: T-45..T-31
    assert [a.table for a in plan.creates] == [name("turok", T + DAY, 60)]
    assert plan.kept == len(tables) - len(expected)
    assert not plan.unknown and not plan.ignored
    # the oldest retained day of each resolution is kept, the one before it deleted
    assert name("turok", T - DAY, 10) not in expected and name("turok", T - 2 * DAY, 10) in expected
    assert name("turok", T - 7 * DAY, 60) not in expected and name("turok", T - 8 * DAY, 60) in expected


def test_plan_retention_boundary_is_exact():
    day = T - 10 * DAY
    tables = [name("turok", day, 60)]
    boundary = day + DAY + RETENTIONS[60]  # the day's last second leaves retention exactly now
    assert [a.table for a in make_plan(RETENTIONS, tables, "turok", "_", boundary).deletes] == tables
    assert make_plan(RETENTIONS, tables, "turok", "_", boundary - 1).deletes == ()


def test_plan_keeps_unknown_resolutions_and_ignores_foreign_names():
    tables = [name("turok", T - 400 * DAY, 7),  # Turok-named, but no schema stores 7 s
              "other_01-01-2020_1min", "turok_garbage", "turok_1-1-2020_1min", "turok_01-01-2020_1min_x",
              "turokx_01-01-2020_1min", "turok_01-01-2020_1fortnight", "TUROK_01-01-2020_1min",
              name("turok", T - 400 * DAY, 60)]
    plan = make_plan(RETENTIONS, tables, "turok", "_", NOW, days_ahead=0)
    assert [a.table for a in plan.deletes] == [name("turok", T - 400 * DAY, 60)]
    assert [a.table for a in plan.unknown] == [name("turok", T - 400 * DAY, 7)]
    assert "unknown resolution 7sec" in plan.unknown[0].reason
    assert set(plan.ignored) == {"turok_garbage", "turok_1-1-2020_1min", "turok_01-01-2020_1min_x",
                                 "turok_01-01-2020_1fortnight"}
    touched = {a.table for a in plan.deletes + plan.creates}
    assert not touched & {"other_01-01-2020_1min", "turokx_01-01-2020_1min", "TUROK_01-01-2020_1min"}
    assert {a.table for a in plan.creates} == {name("turok", T, s) for s in RETENTIONS}


def test_plan_days_ahead():
    assert len(make_plan(RETENTIONS, [], "turok", "_", NOW, days_ahead=0).creates) == 3
    plan = make_plan(RETENTIONS, [], "turok", "_", NOW, days_ahead=3)
    assert {a.table for a in plan.creates} == {name("turok", T + k * DAY, s) for k in range(4) for s in RETENTIONS}
    with pytest.raises(ValueError):
        make_plan(RETENTIONS, [], "turok", "_", NOW, days_ahead=-1)


def test_retention_per_step_is_the_longest_of_all_schemas(tmp_path):
    path = tmp_path / "schemas.conf"
    path.write_text(SCHEMAS)
    schemas = SchemaSet(path)
    assert retention_by_step(schemas) == {10: DAY, 60: 7 * DAY, 3600: 30 * DAY}
    # 1min tables hold short.* (3 d) and everything else (7 d): a 5-day-old one stays
    plan = plan_for(schemas, [name("turok", T - 5 * DAY, 60)], "turok", "_", NOW)
    assert plan.deletes == () and plan.kept == 1


def test_plan_renderings():
    tables = [name("turok", T - 3 * DAY, 10), name("turok", T, 10), name("turok", T - DAY, 7), "turok_garbage"]
    plan = make_plan(RETENTIONS, tables, "turok", "_", NOW)
    text = render_text(plan)
    lines = text.splitlines()
    assert any(line.startswith("delete") and name("turok", T - 3 * DAY, 10) in line and "retention" in line
               for line in lines)
    assert any(line.startswith("create") and name("turok", T + DAY, 10) in line for line in lines)
    assert any(line.startswith("keep") and "unknown resolution" in line for line in lines)
    assert any(line.startswith("ignore") and "turok_garbage" in line for line in lines)
    assert "dry run" in lines[0]
    document = json.loads(to_json(plan))
    assert [d["table"] for d in document["delete"]] == [name("turok", T - 3 * DAY, 10)]
    assert document["delete"][0]["status"] == "planned" and document["applied"] is False
    assert document["retentions"] == {"10sec": DAY, "1min": 7 * DAY, "1h": 30 * DAY}
    assert document["ignored"] == ["turok_garbage"]


# ------------------------------------------------------------------------------------ on moto

def _config_file(tmp_path, config) -> Path:
    schemas = tmp_path / "schemas.conf"
    schemas.write_text(SCHEMAS)
    path = tmp_path / "turok.conf"
    path.write_text("[turok]\n"
                    f"aws_endpoint_url = {config.aws_endpoint_url}\n"
                    f"aws_region = {config.aws_region}\n"
                    f"table_prefix = {config.table_prefix}\n"
                    f"index_bucket = {config.index_bucket}\n"
                    f"schemas_file = {schemas}\n")
    return path


def _build_tables(config, client):
    """Tables of many dates and resolutions, foreign tables, and one old table holding a recent block."""
    store = BlockStore(client, config)
    p = config.table_prefix
    slots = []
    for offset in range(0, 4):  # short.live at 10 s: T-3 .. T
        slots.append(("short.live", 10, T - offset * DAY + 3600, 1.0))
    for offset in range(0, 11):  # default.dead at 1 min: T-10 .. T
        if offset >= 9:
            slots.append(("default.dead", 60, T - offset * DAY + 120, 2.0))
        slots.append(("short.live", 60, T - offset * DAY + 60, 3.0))
    slots += [("default.dead", 3600, T - 40 * DAY, 4.0), ("default.dead", 3600, T - 20 * DAY, 5.0),
              ("gone.metric", 60, T - 10 * DAY + 600, 6.0), ("misplaced.metric", 60, T - 12 * DAY, 7.0)]
    store.write_slots(slots)
    foreign = [f"other{p}_01-01-2020_1min", f"{p}_garbage", f"{p}_1-1-2020_1min", f"{p}x_01-01-2020_1min"]
    unknown = name(p, T - 100 * DAY, 7)
    for table in foreign + [unknown]:
        store.ensure_table(table)
    guarded = name(p, T - 12 * DAY, 60)
    # a block inside retention in a table of an expired day: the guard must refuse to delete it
    client.put_item(TableName=guarded, Item={"metric": {"S": "misplaced.metric"},
                                             "start_time": {"N": str(NOW - 3600)}, "datapoints": {"B": b"\x90"}})
    expected_deletes = {name(p, T - 3 * DAY, 10), name(p, T - 2 * DAY, 10), name(p, T - 8 * DAY, 60),
                        name(p, T - 9 * DAY, 60), name(p, T - 10 * DAY, 60), name(p, T - 40 * DAY, 3600)}
    expected_creates = {name(p, T + DAY, 10), name(p, T + DAY, 60), name(p, T, 3600), name(p, T + DAY, 3600)}
    return foreign, unknown, guarded, expected_deletes, expected_creates


def _mine(client, config) -> set[str]:
    p = config.table_prefix
    return {t for t in list_tables(client) if p in t}


def test_keeper_plans_and_applies_on_moto(turok_config, tmp_path, capsys):
    config = turok_config
    client = make_client("dynamodb", config)
    s3 = make_client("s3", config)
    foreign, unknown, guarded, expected_deletes, expected_creates = _build_tables(config, client)
    IndexStore(s3, config).add_names(["short.live", "default.dead", "gone.metric", "misplaced.metric"])
    conf = _config_file(tmp_path, config)
    argv = ["--config", str(conf), "--now", str(NOW)]
    before = _mine(client, config)

    # the plan alone changes nothing
    assert main(argv) == 0
    text = capsys.readouterr().out
    for table in expected_deletes | {guarded}:
        assert re.search(rf"^delete\s+{re.escape(table)}\s", text, re.M), table
    for table in expected_creates:
        assert re.search(rf"^create\s+{re.escape(table)}\s", text, re.M), table
    assert re.search(rf"^keep\s+{re.escape(unknown)}\s+unknown resolution", text, re.M)
    assert main(argv + ["--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert {d["table"] for d in planned["delete"]} == expected_deletes | {guarded}
    assert {d["table"] for d in planned["create"]} == expected_creates
    assert _mine(client, config) == before

    # apply: expired tables go, the guarded one is refused (exit 1), upcoming ones appear
    assert main(argv + ["--apply", "--json"]) == 1
    applied = json.loads(capsys.readouterr().out)
    status = {d["table"]: d["status"] for d in applied["delete"] + applied["create"]}
    assert status.pop(guarded) == "refused"
    assert set(status.values()) == {"done"}
    after = _mine(client, config)
    assert not after & expected_deletes
    assert expected_creates <= after
    assert set(foreign) | {unknown, guarded} <= after
    assert after == (before - expected_deletes) | expected_creates
    # nothing inside retention was deleted: every slot still readable
    store = BlockStore(client, config)
    assert store.fetch_series(["short.live"], 10, T - DAY, T - DAY + 3610)["short.live"][-1] == 1.0
    assert store.fetch_series(["default.dead"], 3600, T - 20 * DAY, T - 20 * DAY + 3600)["default.dead"] == [5.0]
    # index hygiene: only the metric with no data left anywhere leaves the index
    hygiene = applied["index_hygiene"]
    assert hygiene["removed"] == ["gone.metric"] and hygiene["error"] == "" and hygiene["complete"]
    index = IndexStore(s3, config)
    names = set().union(*(read_shard(index, s)[0] for s in range(index.shard_count())))
    assert names == {"short.live", "default.dead", "misplaced.metric"}

    # once the misplaced block is gone the guard lets the table go; a further run has nothing to do
    client.delete_item(TableName=guarded, Key={"metric": {"S": "misplaced.metric"},
                                               "start_time": {"N": str(NOW - 3600)}})
    assert main(argv + ["--apply"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^delete\s+{re.escape(guarded)}\s.*-> DONE", text, re.M)
    assert guarded not in _mine(client, config)
    assert main(argv + ["--apply", "--json"]) == 0
    idle = json.loads(capsys.readouterr().out)
    assert idle["delete"] == [] and idle["create"] == []
    assert set(foreign) | {unknown} <= _mine(client, config)


def test_guard_scan_is_paginated_and_bounded(turok_config):
    client = make_client("dynamodb", turok_config)
    store = BlockStore(client, turok_config)
    table = name(turok_config.table_prefix, T - 30 * DAY, 60)
    store.write_slots([(f"m.{i}", 60, T - 30 * DAY + 3600 * (i % 20), 1.0) for i in range(30)])
    cutoff = NOW - 7 * DAY
    partial = survey_table(client, table, cutoff, max_pages=2, page_limit=5)
    assert (partial.complete, partial.found, partial.pages) == (False, 0, 2)
    whole = survey_table(client, table, cutoff, max_pages=20, page_limit=5)
    assert whole.complete and whole.found == 0 and len(whole.metrics) == 30 and whole.safe
    client.put_item(TableName=table, Item={"metric": {"S": "late"}, "start_time": {"N": str(cutoff + 60)}})
    found = survey_table(client, table, cutoff, max_pages=20, page_limit=5)
    assert found.found == 1 and not found.safe
    # a plan applied with a too-small page budget refuses instead of deleting unread data
    plan = make_plan(RETENTIONS, [table], turok_config.table_prefix, "_", NOW, days_ahead=0)
    client.delete_item(TableName=table, Key={"metric": {"S": "late"}, "start_time": {"N": str(cutoff + 60)}})
    plan = dataclasses.replace(plan, creates=())
    outcomes = Applier(client, turok_config, guard_max_pages=2, guard_page_items=5).apply(plan)
    assert [(o.action.table, o.status) for o in outcomes] == [(table, "refused")]
    assert "without reading the whole table" in outcomes[0].detail and table in list_tables(client)
    outcomes = Applier(client, turok_config, guard_max_pages=20, guard_page_items=5).apply(plan)
    assert [(o.action.table, o.status) for o in outcomes] == [(table, "done")]
    assert table not in list_tables(client)


def test_index_hygiene_adds_back_a_metric_that_returns_during_removal(turok_config, monkeypatch):
    import keeper.apply as apply_module

    client = make_client("dynamodb", turok_config)
    s3 = make_client("s3", turok_config)
    store = BlockStore(client, turok_config)
    today = store.table_for(NOW, 60)
    store.ensure_table(today)
    IndexStore(s3, turok_config).add_names(["back.again", "really.gone"])

    class ComesBack(IndexStore):
        def remove_names(self, names):
            stats = super().remove_names(names)
            store.write_slots([("back.again", 60, NOW - NOW % 60, 1.0)])  # a point arrives meanwhile
            return stats

    monkeypatch.setattr(apply_module, "IndexStore", ComesBack)
    report = Applier(client, turok_config, s3_client=s3).index_hygiene(
        ["back.again", "really.gone"], [today], NOW, turok_config.table_prefix, "_")
    assert sorted(report.removed) == ["back.again", "really.gone"] and report.readded == ["back.again"]
    index = IndexStore(s3, turok_config)
    names = set().union(*(read_shard(index, s)[0] for s in range(index.shard_count())))
    assert names == {"back.again"}


def test_index_hygiene_removes_a_dropped_tagged_series_from_the_tag_index(turok_config):
    from turok_core.index.tag_cache import TagCache, make_tag_store

    client = make_client("dynamodb", turok_config)
    s3 = make_client("s3", turok_config)
    store = BlockStore(client, turok_config)
    today = store.table_for(NOW, 60)
    store.ensure_table(today)
    live, gone = "disk.used;dc=eu;host=a", "disk.used;dc=eu;host=gone"
    store.write_slots([(live, 60, NOW - NOW % 60, 1.0)])
    IndexStore(s3, turok_config).add_names([live, gone])
    make_tag_store(s3, turok_config).add_names([live, gone])

    report = Applier(client, turok_config, s3_client=s3).index_hygiene(
        [live, gone], [today], NOW, turok_config.table_prefix, "_")
    assert report.removed == [gone] and report.error == ""
    tags = TagCache(s3, turok_config.replace(index_refresh_seconds=0)).tag_index
    assert tags.series() == [live]
    for expression in ("name=disk.used", "dc=eu", "host=~.+", "host!="):  # every posting list it was in
        assert gone not in tags.find_series([expression])
    assert tags.list_values("host") == [{"value": "a", "count": 1}]


def test_index_hygiene_during_a_move_of_both_indexes_removes_for_good(turok_config):
    """Both indexes half way through a move (one old shard of two sealed and copied): the names
    hygiene removes leave both, in the sealed and the open range, and stay out once the move ends."""
    from tests.support.index_moves import Stop, stopping_after, visible
    from turok_core.index.reshard import move_shards
    from turok_core.index.tag_cache import TagCache, make_tag_store

    config = turok_config.replace(index_shards=2, tag_index_shards=2)
    client = make_client("dynamodb", config)
    s3 = make_client("s3", config)
    store = BlockStore(client, config)
    today = store.table_for(NOW, 60)
    store.ensure_table(today)
    live = [f"disk.used;dc=eu;host=live{i}" for i in range(10)]
    gone = [f"disk.used;dc=eu;host=gone{i}" for i in range(10)]
    store.write_slots([(name, 60, NOW - NOW % 60, 1.0) for name in live])
    makers = [lambda: IndexStore(s3, config), lambda: make_tag_store(s3, config)]
    indexes = [make() for make in makers]
    for index, make in zip(indexes, makers):
        index.add_names(live + gone)
        with pytest.raises(Stop):  # a mover killed after sealing shard 0 and making its 4 new shards
            move_shards(stopping_after(make(), 1 + 4), to=8)
        assert index.manifest(fresh=True).moving_to == 8

    report = Applier(client, config, s3_client=s3).index_hygiene(live + gone, [today], NOW, config.table_prefix, "_")
    assert sorted(report.removed) == sorted(gone) and report.error == ""
    for index in indexes:
        assert visible(index) == set(live)
        move_shards(index)
        assert index.manifest(fresh=True).shards == 8 and visible(index) == set(live)
    tags = TagCache(s3, config.replace(index_refresh_seconds=0)).tag_index
    assert tags.series() == sorted(live) and tags.find_series(["host=~gone.*"]) == []


def test_announcer_forgets_at_each_utc_day_so_removed_names_come_back():
    clock = [NOW]
    announcer = Announcer(clock=lambda: clock[0])
    announcer.mark_announced(announcer.new_names(["x.y"]))
    assert announcer.new_names(["x.y"]) == []
    clock[0] = T + DAY  # next UTC day: the keeper may have dropped x.y from the index since
    assert announcer.new_names(["x.y"]) == ["x.y"]


# ------------------------------------------------------------------------------------ console script

@pytest.mark.processes
def test_console_script_prints_json(turok_config, tmp_path):
    script = VENV_BIN / "turok-keeper"
    assert script.exists(), "run `make install`: setup.py declares the turok-keeper console script"
    conf = _config_file(tmp_path, turok_config)
    done = subprocess.run([str(script), "--config", str(conf), "--json", "--now", str(NOW)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["prefix"] == turok_config.table_prefix and document["applied"] is False
    assert len(document["create"]) == 6  # three resolutions, today and tomorrow
    bad = tmp_path / "bad.conf"
    bad.write_text("[default]\npattern = .*\nretentions = 7s:1d\n")
    conf.write_text(conf.read_text().replace(str(tmp_path / "schemas.conf"), str(bad)))
    done = subprocess.run([str(script), "--config", str(conf)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "bad.conf" in done.stderr


# ------------------------------------------------------------------------------------ templates

def _keeper_argv(command: str) -> list[str]:
    """The turok-keeper invocation inside a shell command line, as argv after the program."""
    for part in re.split(r"&&|\|\||;|\|", command):
        words = shlex.split(part)
        for i, word in enumerate(words):
            if Path(word).name == "turok-keeper":
                args = words[i + 1:]
                return [a for a in args if not re.match(r"^\d*>>?|^2>&1$", a)]
    raise AssertionError(f"no turok-keeper in {command!r}")


def _check_invocation(command: str) -> None:
    args = build_parser().parse_args(_keeper_argv(command))
    assert args.apply and args.config, command


def test_datapipeline_template():
    definition = json.loads((TEMPLATES / "datapipeline.json").read_text())
    objects = {o["id"]: o for o in definition["objects"]}
    activity = next(o for o in objects.values() if o.get("type") == "ShellCommandActivity")
    assert objects[activity["runsOn"]["ref"]]["type"] == "Ec2Resource"
    schedule = objects[objects["Default"]["schedule"]["ref"]]
    assert schedule["type"] == "Schedule" and schedule["period"] == "1 day"
    _check_invocation(activity["command"])
    declared = {p["id"] for p in definition["parameters"]}
    used = set(re.findall(r"#\{(my\w+)\}", json.dumps(definition)))
    assert used <= declared
    assert "closed to new customers" in (TEMPLATES / "README.md").read_text()


def test_eventbridge_scheduler_template():
    schedule = json.loads((TEMPLATES / "eventbridge-scheduler.json").read_text())
    assert schedule["ScheduleExpression"].startswith("cron(") and schedule["FlexibleTimeWindow"]["Mode"]
    target = schedule["Target"]
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:ssm:sendCommand" and target["RoleArn"]
    command = json.loads(target["Input"])  # SendCommand's request, as a JSON string
    assert command["DocumentName"] == "AWS-RunShellScript"
    (line,) = command["Parameters"]["commands"]
    _check_invocation(line)


def test_crontab_and_systemd_templates():
    lines = [line for line in (TEMPLATES / "crontab.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert all(re.match(r"^[\d*/,-]+$", f) for f in fields[:5])
    assert "turok-keeper --apply" in fields[5]
    _check_invocation(fields[5])
    service = (TEMPLATES / "turok-keeper.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", service, re.M)
    assert "turok-keeper --apply" in exec_start and "Type=oneshot" in service
    _check_invocation(exec_start)
    timer = (TEMPLATES / "turok-keeper.timer").read_text()
    assert re.search(r"^OnCalendar=\S", timer, re.M) and "Unit=turok-keeper.service" in timer
    assert "WantedBy=timers.target" in timer


@pytest.mark.processes
def test_templates_are_installed_with_the_package(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import keeper, pathlib; "
                           "print(pathlib.Path(keeper.__file__).parent / 'templates')"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    installed = Path(done.stdout.strip())
    assert done.returncode == 0 and installed != TEMPLATES, "run `make install`"
    assert {p.name for p in TEMPLATES.iterdir()} <= {p.name for p in installed.iterdir()}
    done = subprocess.run([str(VENV_BIN / "turok-keeper"), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--apply" in done.stdout


def test_with_the_schema_history_old_tables_live_out_their_old_retention():
    """``10s:1d,1min:30d`` edited into ``30s:7d,5min:1y`` ten days ago: the 1 min tables written
    before stay until their 30 days end, then go; the 10 s ones went after their day."""
    from turok_core.model.schema_history import SchemaHistory, files_digest

    old = "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n"
    new = "[all]\npattern = .*\nretentions = 30s:7d,5min:1y\n"
    edited = T - 10 * DAY
    history = SchemaHistory.from_records(
        [{"since": T - 100 * DAY, "digest": files_digest(old, ""), "schemas": old, "aggregation": ""},
         {"since": edited, "digest": files_digest(new, ""), "schemas": new, "aggregation": ""}],
        SchemaSet.from_texts(new, ""))
    tables = [name("turok", T - back * DAY, step) for back in (2, 11, 29, 31, 40) for step in (10, 60)]
    without = plan_for(history.current, tables, "turok", "_", NOW)
    assert without.deletes == () and len(without.unknown) == len(tables)  # kept for ever, unexplained
    plan = plan_for(history.current, tables, "turok", "_", NOW, history=history)
    assert plan.unknown == ()
    assert {a.table for a in plan.deletes} == {name("turok", T - back * DAY, 10) for back in (2, 11, 29, 31, 40)} | {
        name("turok", T - back * DAY, 60) for back in (31, 40)}
    assert all(a.retention == (DAY if a.step == 10 else 30 * DAY) for a in plan.deletes)
    assert plan.cutoff_of(plan.deletes[-1]) == NOW - 30 * DAY
    assert {a.step for a in plan.creates} == {30, 300}  # the current files' resolutions only
