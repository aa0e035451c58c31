"""Docstring sections written once and shared: a line ``{name}`` is filled in when the module loads.

numpydoc wants each public function to spell out its parameters, and some families take the same
ones (the estimators' ``X`` and ``times``, the figures' ``report`` and ``path``). Their sections are
written once, in a table of the module that owns the family, and each docstring names the one it
uses on a line of its own; :func:`fill_sections` puts it there, indented as that line, so that
``help``, ``inspect`` and the API reference read the whole text.
"""

from __future__ import annotations

import re
import textwrap

__all__ = ["fill", "fill_sections"]

#: A line holding nothing but ``{name}`` (and its indentation).
_SECTION_LINE = re.compile(r"^([ \t]*)\{(\w+)\}[ \t]*$", re.MULTILINE)


def fill(doc, sections):
    """``doc`` with every line ``{name}`` replaced by ``sections[name]``, indented as that line.

    Parameters
    ----------
    doc : str or None
    sections : dict of str to str
        Each section's text, at any common indentation (it is dedented, then stripped of blank
        lines at either end).

    Returns
    -------
    doc : str or None
        ``None`` for ``None``; a ``{name}`` that ``sections`` lacks raises ``KeyError`` naming it.
    """
    if doc is None:
        return None

    def section(match):
        indent, name = match.groups()
        if name not in sections:
            raise KeyError(f"the docstring names a section {{{name}}} that is not among {sorted(sections)}")
        return textwrap.indent(textwrap.dedent(sections[name]).strip("\n"), indent)

    return _SECTION_LINE.sub(section, doc)


def fill_sections(sections):
    """Decorator of a function or a class: :func:`fill` its docstring and, for a class, those of the
    methods it defines (scikit-learn's ``available_if`` methods included).

    Parameters
    ----------
    sections : dict of str to str

    Returns
    -------
    decorate : callable
        Returns the object it is given, its docstrings filled in place.
    """

    def decorate(obj):
        obj.__doc__ = fill(obj.__doc__, sections)
        if isinstance(obj, type):
            for member in vars(obj).values():
                # a conditional method (available_if) reads its docstring from the function it wraps
                function = getattr(member, "fn", member)
                doc = getattr(function, "__doc__", None) if callable(function) else None
                if doc and _SECTION_LINE.search(doc):
                    function.__doc__ = fill(doc, sections)
                    if function is not member:
                        member.__doc__ = function.__doc__
        return obj

    return decorate
