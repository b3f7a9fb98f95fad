"""Immutable records: tuple subclasses with named fields, as `collections.namedtuple` makes them.

The types that every `uhyve-ctl run` creates (image index, hypercall table, stop reasons,
KVM exits) are made here because `collections` costs ~1.3 ms to import and each namedtuple
~50 µs to define (it compiles its constructor): together more than a VM boot, on a path
whose whole budget is a few ms. Behaviour is namedtuple's where hexo uses it: positional or
keyword construction, defaults for the last fields, attribute access, `_fields`,
`_replace`, `_asdict`, equality and hashing as tuples, pickling, `match` patterns.

A record that needs only a docstring takes it as `doc` and is used as made
(`Exited = record("Exited", "status", doc=...)`); one that adds methods subclasses it. Each
class costs a start-up ~15 µs to create, a subclass as much again.

`Namespace` holds a command line read without argparse (`uhyve-ctl run`, `hexo inspect`,
`hexo status`), as argparse.Namespace would: importing argparse, or even `types`, costs
those commands more than reading their few options.
"""

import sys


def record(typename: str, field_names: str, defaults: tuple = (), doc: str | None = None) -> type:
    """A tuple subclass named `typename` with the space-separated `field_names`; `defaults`
    apply to the last fields."""
    fields = tuple(field_names.split())
    count = len(fields)
    if len(defaults) > count:
        raise TypeError("more defaults than fields")
    field_defaults = dict(zip(fields[count - len(defaults):], defaults))

    def __new__(cls, *args, **kwargs):
        if kwargs or len(args) != count:
            if len(args) > count:
                raise TypeError(f"{typename}() takes {count} arguments, {len(args)} given")
            values = list(args)
            for name in fields[len(args):]:
                if name in kwargs:
                    values.append(kwargs.pop(name))
                elif name in field_defaults:
                    values.append(field_defaults[name])
                else:
                    raise TypeError(f"{typename}() missing argument {name!r}")
            if kwargs:
                raise TypeError(f"{typename}() got unexpected arguments {sorted(kwargs)}")
            args = values
        return tuple.__new__(cls, args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(
            f"{name}={value!r}" for name, value in zip(fields, self)) + ")"

    def _replace(self, **changes):
        new = tuple.__new__(type(self), [changes.pop(name, value)
                                         for name, value in zip(fields, self)])
        if changes:
            raise ValueError(f"{typename} has no fields {sorted(changes)}")
        return new

    def _asdict(self) -> dict:
        return dict(zip(fields, self))

    def __getnewargs__(self):
        return tuple(self)

    namespace = {"__slots__": (), "__new__": __new__, "__repr__": __repr__,
                 "_replace": _replace, "_asdict": _asdict, "__getnewargs__": __getnewargs__,
                 "_fields": fields, "_field_defaults": field_defaults, "__match_args__": fields,
                 "__doc__": doc,
                 "__module__": sys._getframe(1).f_globals.get("__name__", __name__)}
    for index, name in enumerate(fields):
        namespace[name] = property(lambda self, i=index: self[i], doc=f"field {index}")
    return type(typename, (tuple,), namespace)


class Namespace:
    """Options as attributes, as argparse.Namespace holds them."""

    def __init__(self, **values):
        self.__dict__.update(values)
