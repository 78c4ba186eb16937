"""The schema history: a metric's policies newest first, the policy of an old step, the keeper's retention."""
import math

from turok_core.model.schema_history import SchemaHistory, files_digest
from turok_core.model.schemas import SchemaSet

OLD = "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n"
NEW = "[all]\npattern = .*\nretentions = 30s:7d,5min:1y\n"
SUMS = "[sum]\npattern = count$\naggregationMethod = sum\n"
DAY = 86400
T = 1_700_006_400 - 1_700_006_400 % DAY


def record(text: str, since: float, aggregation: str = "") -> dict:
    return {"since": since, "digest": files_digest(text, aggregation), "schemas": text, "aggregation": aggregation}


def test_policies_newest_first_with_the_time_each_ended():
    history = SchemaHistory.from_records([record(NEW, T + DAY), record(OLD, T)], SchemaSet.from_texts(NEW, ""))
    new, old = history.policies_for("a.b")
    assert [a.step for a in new.policy.archives] == [30, 300] and new.until == math.inf
    assert [a.step for a in old.policy.archives] == [10, 60] and old.until == T + DAY
    assert history.policy_with_step("a.b", 60) == old.policy
    assert history.policy_with_step("a.b", 300) == new.policy
    assert history.policy_with_step("a.b", 3600) is None


def test_nothing_recorded_is_the_current_files_since_forever():
    current = SchemaSet.from_texts(OLD, SUMS)
    history = SchemaHistory.from_records([], current)
    assert len(history.versions) == 1 and history.versions[0].since == -math.inf
    assert history.current is current
    (only,) = history.policies_for("x.count")
    assert only.policy.aggregation_type == "sum"
    assert history.policies_for("x.count") == SchemaHistory.current_only(current).policies_for("x.count")


def test_current_files_not_recorded_yet_keep_every_older_version_in_force():
    history = SchemaHistory.from_records([record(OLD, T)], SchemaSet.from_texts(NEW, ""))
    assert [v.since for v in history.versions] == [-math.inf, math.inf]
    assert history.policies_for("a")[1].until == math.inf


def test_an_aggregation_edit_alone_is_a_version_but_not_a_new_place_to_read():
    history = SchemaHistory.from_records([record(OLD, T), record(OLD, T + DAY, SUMS), record(OLD, T + 2 * DAY, SUMS)],
                                         SchemaSet.from_texts(OLD, SUMS))
    assert len(history.versions) == 2  # the same files recorded twice in a row count once
    assert len(history.policies_for("a.count")) == 1  # same archives: one place to read


def test_a_table_lives_out_the_longest_retention_of_the_versions_that_may_have_written_its_day():
    history = SchemaHistory.from_records([record(OLD, T), record(NEW, T + 10 * DAY)], SchemaSet.from_texts(NEW, ""))
    assert history.retention(60, T) == 30 * DAY  # written under the old files
    assert history.retention(60, T + 20 * DAY) == 30 * DAY  # only the old files had 1 min (late data)
    assert history.retention(30, T) == 7 * DAY
    shorter = SchemaHistory.from_records(
        [record(OLD, T), record("[all]\npattern = .*\nretentions = 10s:2d,1min:3d\n", T + 10 * DAY)],
        SchemaSet.from_texts("[all]\npattern = .*\nretentions = 10s:2d,1min:3d\n", ""))
    assert shorter.retention(60, T + 5 * DAY) == 30 * DAY  # the day began under the old files
    assert shorter.retention(60, T + 11 * DAY) == 3 * DAY  # begun after the edit: the new retention
    assert shorter.retention(10, T + 11 * DAY) == 2 * DAY
    assert shorter.retention(3600, T) is None
    assert shorter.steps() == {10, 60}
