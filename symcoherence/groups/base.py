"""The group-action interface shared by every symmetry group in symcoherence.

A group here is a finite, named set of elements ``g_1 = e, g_2, …, g_K`` (identity first) together
with an action on gridded fields, ``field (..., C, H, W) -> (..., C, H, W)``. Actions are pure,
differentiable torch operations that accept any leading batch dimensions and work under
``torch.func.vmap`` and on any device.

Composition order: ``compose(a, b)`` is ``a ∘ b`` — *apply b first, then a* — so that the action is
a homomorphism, ``act(a, act(b, f)) == act(compose(a, b), f)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from symcoherence.groups.field_types import FieldType


class Group(ABC):
    """A finite set of named symmetry elements acting on typed fields.

    Subclasses define ``name``, ``elements`` and implement :meth:`act`, :meth:`compose`,
    :meth:`inverse`, :meth:`is_exact` and :meth:`spec`.
    """

    name: str
    elements: tuple[str, ...]

    # ------------------------------------------------------------------ actions
    @abstractmethod
    def act(self, element: str, field: torch.Tensor, field_type: FieldType) -> torch.Tensor:
        """Apply ``element`` to ``field`` of layout ``(..., C, H, W)``; same shape out."""

    def act_pair(
        self,
        element: str,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        field_type: FieldType,
        target_field_type: FieldType | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Act on a training pair ``(x, y)``; by default the same action on input and target.

        Symmetries that act differently on the two (a Galilean boost moves the target by ``c·Δt``
        more than the input) override this method; every consumer goes through it.
        """
        target_field_type = field_type if target_field_type is None else target_field_type
        return self.act(element, inputs, field_type), self.act(element, targets, target_field_type)

    def orbit(
        self,
        field: torch.Tensor,
        field_type: FieldType,
        elements: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Stack ``g·field`` over ``elements`` (default: all, identity first) -> ``(K, ...)``."""
        names = self.elements if elements is None else tuple(elements)
        if not names:
            raise ValueError(
                f"orbit needs at least one element of {self.name}: {list(self.elements)}"
            )
        return torch.stack([self.act(name, field, field_type) for name in names])

    # ------------------------------------------------------------------ group structure
    @abstractmethod
    def compose(self, a: str, b: str) -> str:
        """Name of ``a ∘ b`` (apply ``b`` first). Raises ``ValueError`` if the set is not closed."""

    @abstractmethod
    def inverse(self, a: str) -> str:
        """Name of ``a⁻¹``."""

    @abstractmethod
    def is_exact(self, a: str) -> bool:
        """Whether ``a`` acts exactly on every grid field (a permutation with signs)."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """A JSON-serializable description that :func:`symcoherence.groups.from_spec` inverts."""

    def _record_arguments(self, **arguments: Any) -> None:
        """Remember the constructor's arguments, so that :meth:`spec` rebuilds this exact class.

        Group-valued arguments are stored as their own specs.
        """
        self._arguments = {
            key: value.spec() if isinstance(value, Group) else value
            for key, value in arguments.items()
        }

    def _constructor_spec(self) -> dict[str, Any] | None:
        """``{"type": class name, "arguments": ...}`` for classes that recorded their arguments."""
        arguments = self.__dict__.get("_arguments")
        if arguments is None:
            return None
        return {"type": type(self).__name__, "arguments": arguments}

    @property
    def identity(self) -> str:
        """Name of the identity element (always the first element)."""
        return self.elements[0]

    def check_element(self, element: str) -> None:
        """Raise a ``ValueError`` listing the valid names unless ``element`` belongs to the group."""
        if element not in self._element_set:
            raise ValueError(
                f"unknown element {element!r} of group {self.name}; valid elements are "
                f"{list(self.elements)}"
            )

    @property
    def _element_set(self) -> frozenset[str]:
        cached = self.__dict__.get("_elements_frozen")
        if cached is None:
            cached = frozenset(self.elements)
            self.__dict__["_elements_frozen"] = cached
        return cached

    def subgroup(self, names: Sequence[str], name: str | None = None) -> Group:
        """Restrict to ``names`` (identity included, put first). ``compose`` then stays inside.

        Args:
            names: element names of this group.
            name: the short name used in logged keys (default ``"{parent}_sub"``).
        """
        return Subgroup(self, names, name)

    def sample(self, num: int, generator: torch.Generator) -> list[str]:
        """Draw ``num`` element names uniformly (with replacement) from a caller's generator.

        The global RNG is never touched: reproducibility is the caller's ``generator``.
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                "sample needs a torch.Generator (e.g. torch.Generator().manual_seed(0)) so that "
                f"the global RNG is left alone; got {type(generator).__name__}"
            )
        index = torch.randint(len(self.elements), (num,), generator=generator)
        return [self.elements[i] for i in index.tolist()]

    def __len__(self) -> int:
        return len(self.elements)

    def __iter__(self) -> Iterator[str]:
        return iter(self.elements)

    def __contains__(self, element: object) -> bool:
        return element in self._element_set

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, elements={list(self.elements)})"


class TransformGroup(Group):
    """A group whose elements are stored as transforms in ``table`` (name -> transform).

    Transforms compose with ``@`` (``(a @ b)`` is ``a ∘ b``) and invert with ``.inverse()``;
    subclasses map a transform back to its element name in :meth:`_lookup`, which raises
    ``ValueError`` when the set is not closed.
    """

    table: dict[str, Any]

    @abstractmethod
    def _lookup(self, transform: Any, what: str) -> str:
        """The name of ``transform``; ``what`` describes it for the not-closed error."""

    def compose(self, a: str, b: str) -> str:
        """Name of ``a ∘ b`` (apply ``b`` first, then ``a``)."""
        self.check_element(a)
        self.check_element(b)
        return self._lookup(self.table[a] @ self.table[b], f"{a} ∘ {b}")

    def inverse(self, a: str) -> str:
        """Name of ``a⁻¹``."""
        self.check_element(a)
        return self._lookup(self.table[a].inverse(), f"the inverse of {a}")


class Subgroup(Group):
    """A named subset of a parent group's elements (identity first), acting like the parent.

    ``compose`` raises if the product of two members falls outside the subset, so a declared
    subgroup that is not closed is caught the first time its structure is used.
    """

    def __init__(self, parent: Group, names: Sequence[str], name: str | None = None):
        names = list(dict.fromkeys(names))
        for element in names:
            parent.check_element(element)
        if parent.identity not in names:
            names.insert(0, parent.identity)
        else:
            names.remove(parent.identity)
            names.insert(0, parent.identity)
        self.parent = parent
        self.elements = tuple(names)
        self.name = name or f"{parent.name}_sub"

    def act(self, element: str, field: torch.Tensor, field_type: FieldType) -> torch.Tensor:
        """Act as the parent does (only on members)."""
        self.check_element(element)
        return self.parent.act(element, field, field_type)

    def act_pair(self, element, inputs, targets, field_type, target_field_type=None):
        """Act on a pair as the parent does (only on members)."""
        self.check_element(element)
        return self.parent.act_pair(element, inputs, targets, field_type, target_field_type)

    def compose(self, a: str, b: str) -> str:
        """Parent composition, checked to stay inside the subset."""
        self.check_element(a)
        self.check_element(b)
        product = self.parent.compose(a, b)
        if product not in self:
            raise ValueError(
                f"{self.name} is not closed: {a} ∘ {b} = {product} is not among {list(self.elements)}"
            )
        return product

    def inverse(self, a: str) -> str:
        """Parent inverse, checked to stay inside the subset."""
        self.check_element(a)
        result = self.parent.inverse(a)
        if result not in self:
            raise ValueError(f"{self.name} is not closed: the inverse of {a} is {result}")
        return result

    def is_exact(self, a: str) -> bool:
        """Exactness as in the parent."""
        self.check_element(a)
        return self.parent.is_exact(a)

    def spec(self) -> dict[str, Any]:
        """Parent spec plus the element list and name."""
        return {
            "type": "Subgroup",
            "parent": self.parent.spec(),
            "elements": list(self.elements),
            "name": self.name,
        }
