"""One reading of memory sizes for every command (uhyve-ctl --mem, hexo submit --mem,
cluster.toml): a bare number is MiB."""

import pytest

from hexo.sizes import parse_size
from hexo_sched.config import ConfigError, parse_mb


@pytest.mark.parametrize("text,size", [("256", 256 << 20), ("256M", 256 << 20),
                                       ("256MiB", 256 << 20), ("2G", 2 << 30), ("64k", 64 << 10),
                                       ("1.5G", 3 << 29), ("1T", 1 << 40)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0", "-1", "0M", "lots", "", "nanM", "infG", "1X"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_the_scheduler_reads_sizes_the_same_way():
    assert parse_mb("256") == 256 and parse_mb("2G") == 2048
    with pytest.raises(ConfigError):
        parse_mb("0")
