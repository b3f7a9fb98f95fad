"""Immutable records: tuple subclasses with named fields, as `collections.namedtuple` makes them.

The types that every `uhyve-ctl run` creates (image index, hypercall table, stop reasons,
KVM exits) are made here because `collections` costs ~1.3 ms to import and each namedtuple
~50 µs to define (it compiles its constructor): together more than a VM boot, on a path
whose whole budget is a few ms. Behaviour is namedtuple's where hexo uses it: positional or
keyword construction, defaults for the last fields, attribute access, `_fields`,
`_replace`, `_asdict`, equality and hashing as tuples, pickling, `match` patterns.

A record that needs only a docstring takes it as `doc` and is used as made
(`Exited = record("Exited", "status", doc=...)`); one that adds methods subclasses it. The
methods live once in a shared base class, so that a record class holds only its fields:
making its methods anew for each class cost `uhyve-ctl run`'s ~20 records ~1.5 M
instructions, ~7% of its imports.

`Namespace` holds a command line read without argparse (`uhyve-ctl run`, `hexo inspect`,
`hexo status`), as argparse.Namespace would: importing argparse, or even `types`, costs
those commands more than reading their few options.
"""

import sys
from _operator import itemgetter       # the C module: operator.py costs a load of its own


class _Record(tuple):
    """What every record shares; a record class adds its fields and their defaults."""

    __slots__ = ()
    _fields: tuple = ()
    _field_defaults: dict = {}

    def __new__(cls, *args, **kwargs):
        fields = cls._fields
        if kwargs or len(args) != len(fields):
            if len(args) > len(fields):
                raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, "
                                f"{len(args)} given")
            values = list(args)
            for name in fields[len(args):]:
                if name in kwargs:
                    values.append(kwargs.pop(name))
                elif name in cls._field_defaults:
                    values.append(cls._field_defaults[name])
                else:
                    raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            if kwargs:
                raise TypeError(f"{cls.__name__}() got unexpected arguments {sorted(kwargs)}")
            args = values
        return tuple.__new__(cls, args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self)) + ")"

    def _replace(self, **changes):
        new = tuple.__new__(type(self), [changes.pop(name, value)
                                         for name, value in zip(self._fields, self)])
        if changes:
            raise ValueError(f"{type(self).__name__} has no fields {sorted(changes)}")
        return new

    def _asdict(self) -> dict:
        return dict(zip(self._fields, self))

    def __getnewargs__(self):
        return tuple(self)


def record(typename: str, field_names: str, defaults: tuple = (), doc: str | None = None) -> type:
    """A tuple subclass named `typename` with the space-separated `field_names`; `defaults`
    apply to the last fields. Its methods are _Record's: a class of its own costs only its
    fields (each an itemgetter property, as namedtuple's are C getters)."""
    fields = tuple(field_names.split())
    if len(defaults) > len(fields):
        raise TypeError("more defaults than fields")
    namespace = {"__slots__": (), "_fields": fields, "__match_args__": fields, "__doc__": doc,
                 "_field_defaults": dict(zip(fields[len(fields) - len(defaults):], defaults)),
                 "__module__": sys._getframe(1).f_globals.get("__name__", __name__)}
    for index, name in enumerate(fields):
        namespace[name] = property(itemgetter(index), doc=f"field {index}")
    return type(typename, (_Record,), namespace)


class Namespace:
    """Options as attributes, as argparse.Namespace holds them."""

    def __init__(self, **values):
        self.__dict__.update(values)
