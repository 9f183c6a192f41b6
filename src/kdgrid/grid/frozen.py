"""Read-only values for the `Grid`: its config sections, specs and job lists frozen all the way down, and
the values it derives from them computed once and never replaced.

A frozen dict or list is a dict or list that refuses every change: it reads, compares (equal to the plain
dict or list it was made from) and dumps to JSON as that one does. (A mappingproxy would not dump to
JSON, and a tuple is not equal to a list.) `dict(x)` or `list(x)` gives a plain copy to change.
"""

from __future__ import annotations

from typing import Any


def _refuse(self, *args, **kwargs):
    plain = type(self).__mro__[1].__name__
    raise TypeError(f"a grid is read-only: this {plain} of it cannot be changed (change a copy: {plain}(...))")


class FrozenDict(dict):
    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):  # copy, deepcopy and pickle rebuild it whole (dict's way sets item by item)
        return FrozenDict, (dict(self),)


class FrozenList(list):
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self):
        return FrozenList, (list(self),)


def frozen(value: Any) -> Any:
    """`value` with every dict and list in it (through tuples too) frozen; anything else as it is."""
    if isinstance(value, FrozenDict | FrozenList):
        return value  # frozen all the way down when made
    if isinstance(value, dict):
        return FrozenDict((key, frozen(item)) for key, item in value.items())
    if isinstance(value, list):
        return FrozenList(frozen(item) for item in value)
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(frozen(item) for item in value)
    return value


class derived:
    """A value the grid computes from its fields on first read, frozen and then kept: a data descriptor,
    so that neither assigning, deleting nor writing the instance's __dict__ under its name replaces it."""

    def __init__(self, compute):
        self.compute = compute
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, grid, owner=None):
        if grid is None:
            return self
        values = grid.__dict__.setdefault("_derived", {})  # one per grid (dataclasses.replace makes a new one)
        if self.name not in values:
            values[self.name] = frozen(self.compute(grid))
        return values[self.name]

    def __set__(self, grid, value):
        raise AttributeError(f"Grid.{self.name} is derived from the grid's fields and read-only")

    def __delete__(self, grid):
        raise AttributeError(f"Grid.{self.name} is derived from the grid's fields and read-only")
