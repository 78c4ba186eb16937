"""Reading whisper files: every archive as ``whisper.fetch`` shows it, bad files refused with a reason,
carbon's tree mapped to names as carbon stores them."""
import math
import struct

import pytest

from tests.support.whisper_trees import NOW, carbon_path, make_file
from turok_core.importer.layout import name_for, walk
from turok_core.importer.whisper_file import (
    WhisperFileError,
    archive_values,
    parse_header,
    read_header,
    read_whisper,
)
from turok_core.model.metric_names import MetricNameError


@pytest.mark.parametrize("archives, days, kind", [
    ([(10, 360), (60, 120), (3600, 48)], 2.0, "decimal"),  # every ring wrapped, stale points left in it
    ([(10, 8640), (60, 43200)], 3.0, "special"),
    ([(60, 1440)], 0.3, "double"),  # the archive only partly written
])
def test_every_archive_reads_as_whisper_fetch_shows_it(tmp_path, archives, days, kind):
    import whisper

    path = tmp_path / "m.wsp"
    make_file(path, archives, "average", 0.5, seed=len(archives), days=days, kind=kind)
    header, data = read_whisper(str(path))
    assert [(a.step, a.points) for a in header.archives] == archives
    assert read_header(str(path)) == header
    for archive in header.archives:
        first, values = archive_values(data, archive, NOW)
        (start, end, step), expected = whisper.fetch(str(path), NOW - archive.retention, NOW, now=NOW,
                                                     archiveToSelect=archive.step)
        assert (first, first + archive.retention, archive.step) == (start, end, step)
        assert values == [None if v != v else v for v in expected]  # whisper's NaN (inf - inf): a gap
        assert any(v is not None for v in values)


def test_nan_is_a_gap_and_an_empty_file_is_all_gaps(tmp_path):
    import whisper

    path = str(tmp_path / "nan.wsp")
    whisper.create(path, [(10, 60)])
    header, data = read_whisper(path)
    assert archive_values(data, header.archives[0], NOW) == (NOW - NOW % 10 + 10 - 600, [None] * 60)
    whisper.update_many(path, [(NOW - 20, math.nan), (NOW - 10, 1.0)], now=NOW)
    values = archive_values(read_whisper(path)[1], header.archives[0], NOW)[1]
    assert values[-3:] == [None, 1.0, None]


def _header(aggregation=1, retention=600, xff=0.5, archives=((28, 10, 60),)):
    return struct.pack("!2LfL", aggregation, retention, xff, len(archives)) + b"".join(
        struct.pack("!3L", *a) for a in archives)


@pytest.mark.parametrize("content, reason", [
    (b"", "too short"),
    (b"a.b.c 1 1700000000\n" * 3, "not a whisper file"),
    (_header(aggregation=9), "unknown aggregation type 9"),
    (_header(xff=1.5), "xFilesFactor"),
    (_header(archives=()), "0 archives"),
    (_header()[:20], "truncated"),
    (_header() + b"\0" * 100, "truncated: 128 bytes, the header says 748"),
    (_header() + b"\0" * 721, "longer than its header says"),
    (_header(archives=((40, 10, 60),)) + b"\0" * 720, "archive 0 at offset 40, expected 28"),
    (_header(retention=3600, archives=((40, 60, 60), (760, 30, 120))) + b"\0" * 2160, "30s after 60s"),
    (_header(retention=60) + b"\0" * 720, "max retention 60s"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, content, reason):
    path = tmp_path / "bad.wsp"
    path.write_bytes(content)
    with pytest.raises(WhisperFileError, match=reason.replace("(", r"\(")):
        read_whisper(str(path))
    if len(content) >= 28 and "header says" not in reason and "longer" not in reason:
        with pytest.raises(WhisperFileError):
            parse_header(content)


def test_a_valid_header_is_what_whisper_info_says(tmp_path):
    import whisper

    path = str(tmp_path / "x.wsp")
    whisper.create(path, [(10, 360), (60, 1440)], xFilesFactor=0.3, aggregationMethod="max")
    info, header = whisper.info(path), read_header(path)
    assert header.aggregation == info["aggregationMethod"] == "max"
    assert header.x_files_factor == info["xFilesFactor"] and header.max_retention == info["maxRetention"]
    assert [(a.offset, a.step, a.points) for a in header.archives] == [
        (a["offset"], a["secondsPerPoint"], a["points"]) for a in info["archives"]]


@pytest.mark.parametrize("name", ["a.b.c", "servers.web-1.cpu_user", "some.metric;tag1=value2;tag2=value.2",
                                  "disk.used;host=a.b.c;mount=var-lib", "x;k=_DOT_"])
def test_carbon_tree_paths_map_back_to_names(tmp_path, name):
    path = carbon_path(tmp_path, name)
    relative = str(path.relative_to(tmp_path))
    if name == "x;k=_DOT_":  # carbon's encoding cannot tell a literal _DOT_ from a dot, nor can graphite-web
        assert name_for(relative) == "x;k=."
        return
    assert name_for(relative) == name


def test_walk_finds_whisper_files_in_a_stable_order_and_leaves_others(tmp_path):
    for relative in ["b/c.wsp", "a.wsp", "b/a/x.wsp", "b/notes.txt", "_tagged/abc/def/m;k=v.wsp", "b/c.wsp.lock"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    assert [name_for(f.relative) for f in walk(str(tmp_path))] == ["a", "m;k=v", "b.c", "b.a.x"]
    assert [name_for(f.relative) for f in walk(str(tmp_path / "a.wsp"))] == ["a"]


def test_a_tagged_series_stored_under_its_hash_has_no_name(tmp_path):
    from carbon.util import TaggedSeries

    relative = TaggedSeries.encode("m;k=v", sep="/", hash_only=True) + ".wsp"  # carbon's TAG_HASH_FILENAMES
    with pytest.raises(MetricNameError, match="TAG_HASH_FILENAMES"):
        name_for(relative)
