"""hexo.records must behave as collections.namedtuple does wherever hexo relies on it."""

import pickle
from collections import namedtuple

import pytest

from hexo.records import record
from uhyve_ctl.backends import Crashed, Exited

Point = record("Point", "x y z", defaults=(0,))
Reference = namedtuple("Reference", "x y z", defaults=(0,))


@pytest.mark.parametrize("args, kwargs", [((1, 2, 3), {}), ((1, 2), {}), ((1,), {"y": 5}),
                                          ((), {"z": 1, "x": 2, "y": 3})])
def test_construction_matches_namedtuple(args, kwargs):
    p, r = Point(*args, **kwargs), Reference(*args, **kwargs)
    assert tuple(p) == tuple(r) and (p.x, p.y, p.z) == (r.x, r.y, r.z)
    assert repr(p) == repr(r).replace("Reference", "Point")
    assert p._asdict() == r._asdict() and p._fields == r._fields


@pytest.mark.parametrize("args, kwargs", [((), {}), ((1, 2, 3, 4), {}), ((1,), {"x": 1}),
                                          ((1, 2), {"w": 1})])
def test_bad_arguments_are_refused_as_namedtuple_refuses_them(args, kwargs):
    with pytest.raises(TypeError):
        Reference(*args, **kwargs)
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


def test_replace_equality_hashing_pickling_and_match():
    stop = Crashed("page fault")
    assert stop.pc is None and stop._replace(pc=16) == Crashed("page fault", 16)
    with pytest.raises(ValueError):
        stop._replace(nope=1)
    assert Exited(3) == (3,) and hash(Exited(3)) == hash((3,))
    assert pickle.loads(pickle.dumps(Exited(7))) == Exited(7)
    assert type(pickle.loads(pickle.dumps(Exited(7)))) is Exited
    match Crashed("x", 5):
        case Crashed(reason, pc):
            assert (reason, pc) == ("x", 5)
