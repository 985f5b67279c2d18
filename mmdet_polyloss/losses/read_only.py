"""Read-only attributes of the loss modules.

A module validates its arguments once, in ``__init__``, into frozen records
(``PolyParams``, ``CrossEntropySettings``, its options dataclass). Its public
attributes read those records: ``gamma = ReadOnly('_params.gamma')``. Assigning
one raises, since a new value would skip the validation.
"""
from operator import attrgetter
from typing import Any, Optional


class ReadOnly:
    """A read-only attribute whose value is at ``path`` (dotted) on the instance."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = path
        self._get = attrgetter(path)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.__doc__ = f'``{name}``, as validated in ``__init__`` (read-only).'

    def __get__(self, instance: Optional[object], owner: Optional[type] = None) -> Any:
        if instance is None:
            return self
        return self._get(instance)

    def __set__(self, instance: object, value: object) -> None:
        raise AttributeError(f'{type(instance).__name__}.{self.name} is read-only: it was '
                             'validated in __init__; build a new loss to change it')
