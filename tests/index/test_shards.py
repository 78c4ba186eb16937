"""The shard codec: where a name lives, a shard object's bytes, which names can be indexed."""
import gzip

from turok_core.index.shards import decode_shard_object, encode_shard, shard_of, valid_name


def test_shard_is_stable_and_in_range():
    # CRC-32 of the UTF-8 name: fixed forever, whatever the process or platform
    assert shard_of("servers.web1.cpu.user", 64) == 2590879723 % 64 == 43
    assert shard_of("métrique.é", 64) == shard_of("métrique.é", 64)
    spread = {shard_of(f"host{i}.cpu", 16) for i in range(400)}
    assert spread == set(range(16))


def test_shard_encoding_is_sorted_names_one_per_line():
    data = encode_shard(["b.c", "a.b", "b.c", "ü.x"])
    assert gzip.decompress(data) == "a.b\nb.c\nü.x\n".encode()
    assert decode_shard_object(data) == (["a.b", "b.c", "ü.x"], None)
    assert encode_shard(["a.b", "b.c"]) == encode_shard(["b.c", "a.b"])  # deterministic bytes
    assert decode_shard_object(encode_shard([])) == ([], None)
    assert decode_shard_object(b"") == ([], None)


def test_a_sealed_shard_has_one_more_line_and_other_bytes():
    data = encode_shard(["b.c", "a.b"], sealed_to=256)
    assert gzip.decompress(data) == b"a.b\nb.c\n.sealed 256\n"
    assert decode_shard_object(data) == (["a.b", "b.c"], 256)
    assert data != encode_shard(["a.b", "b.c"])  # so the ETag (MD5 of the bytes) changes too
    assert decode_shard_object(encode_shard([], sealed_to=8)) == ([], 8)
    assert not valid_name(".sealed 256")  # no name can be taken for the seal


def test_valid_names():
    assert valid_name("a.b.c") and valid_name("a.b;k=v.w")
    for bad in ("", "a..b", ".a", "a.", "a\nb", "a\rb", ";k=v"):
        assert not valid_name(bad), bad
