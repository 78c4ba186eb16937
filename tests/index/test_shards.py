"""The shard codec: where a name lives, a shard object's bytes, which names can be indexed."""
import gzip

from turok_core.index.shards import decode_shard, encode_shard, shard_of, valid_name


def test_shard_is_stable_and_in_range():
    # CRC-32 of the UTF-8 name: fixed forever, whatever the process or platform
    assert shard_of("servers.web1.cpu.user", 64) == 2590879723 % 64 == 43
    assert shard_of("métrique.é", 64) == shard_of("métrique.é", 64)
    spread = {shard_of(f"host{i}.cpu", 16) for i in range(400)}
    assert spread == set(range(16))


def test_shard_encoding_is_sorted_names_one_per_line():
    data = encode_shard(["b.c", "a.b", "b.c", "ü.x"])
    assert gzip.decompress(data) == "a.b\nb.c\nü.x\n".encode()
    assert decode_shard(data) == ["a.b", "b.c", "ü.x"]
    assert encode_shard(["a.b", "b.c"]) == encode_shard(["b.c", "a.b"])  # deterministic bytes
    assert decode_shard(encode_shard([])) == []
    assert decode_shard(b"") == []


def test_valid_names():
    assert valid_name("a.b.c") and valid_name("a.b;k=v.w")
    for bad in ("", "a..b", ".a", "a.", "a\nb", "a\rb", ";k=v"):
        assert not valid_name(bad), bad
