"""Table names, resolutions and the design's time format."""
import pytest

from turok_core.model.resolution import format_resolution, parse_duration, parse_resolution
from turok_core.model.timefmt import day_start, from_wire_time, to_wire_time
from turok_core.storage.table_names import TableName, parse_table_name, table_name


def test_table_name_is_prefix_day_first_date_resolution():
    assert table_name("turok", "_", 1396362900, 20) == "turok_01-04-2014_20sec"
    assert table_name("prod", "-", 1396310400 - 1, 60) == "prod-31-03-2014-1min"


def test_table_names_parse_back_and_foreign_names_are_refused():
    assert parse_table_name("turok_01-04-2014_20sec", "turok", "_") == TableName(1396310400, 20)
    assert parse_table_name("turok_01-04-2014_1h", "turok", "_") == TableName(1396310400, 3600)
    assert parse_table_name("prod-31-03-2014-1min", "prod", "-") == TableName(1396310400 - 86400, 60)
    assert parse_table_name("prod-31-03-2014-1min", "prod", "_") is None
    for foreign in ["other_01-04-2014_20sec", "turok_2014-04-01_20sec", "turok_01-04-2014_20parsec",
                    "turok_01-04-2014", "turok_01-04-2014_20sec_x", "turok_32-01-2014_20sec",
                    "turok_01-04-2014_20s"]:  # non-canonical spelling of a resolution
        assert parse_table_name(foreign, "turok", "_") is None, foreign


@pytest.mark.parametrize("text, seconds", [("20sec", 20), ("1min", 60), ("5min", 300), ("1h", 3600),
                                           ("1d", 86400), ("10s", 10), ("60", 60), ("1w", 604800)])
def test_resolutions_parse(text, seconds):
    assert parse_resolution(text) == seconds


@pytest.mark.parametrize("seconds, text", [(20, "20sec"), (60, "1min"), (300, "5min"), (3600, "1h"),
                                           (86400, "1d"), (90, "90sec"), (7200, "2h")])
def test_resolutions_format_and_round_trip(seconds, text):
    assert format_resolution(seconds) == text
    assert parse_resolution(text) == seconds


@pytest.mark.parametrize("bad", ["", "min", "0sec", "-5min", "5 parsecs", "1.5h"])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_wire_time_is_utc_day_first():
    assert to_wire_time(1396362900) == "01-04-2014 14:35:00"
    assert from_wire_time("01-04-2014 14:35:00") == 1396362900
    assert day_start(1396362900.7) == 1396310400
