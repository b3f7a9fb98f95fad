"""Random hypercalls with random argument structs and guest memory: the only outcomes allowed
are a defined return value or a Crashed (or other) stop, never a host exception. A larger
seeded run (a million inputs) is bench/fuzz_hypercalls.py."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hexo import abi
from hypercall_fuzz import TARGETS, Target


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = Target(str(tmp_path_factory.mktemp("fuzzmount")))
    yield t
    t.close()


NRS = st.one_of(st.sampled_from(sorted(abi.NR.values())), st.integers(0, 1 << 32))
ADDRS = st.one_of(st.sampled_from(TARGETS),
                  st.builds(lambda base, off: base + off, st.sampled_from(TARGETS),
                            st.integers(-64, 4096)),
                  st.integers(0, (1 << 64) - 1))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nr=NRS, arg=ADDRS, payload=st.binary(max_size=96),
       scribble_at=ADDRS, scribble=st.binary(max_size=64))
def test_random_hypercalls_end_in_a_defined_outcome(target, nr, arg, payload, scribble_at,
                                                     scribble):
    target.poke(arg, payload)
    target.poke(scribble_at, scribble)       # the ring, the boot pages, anything
    target.call(nr, arg)
