"""The API reference, generated from the public modules' ``__all__`` at every build.

The reference is never written by hand: :data:`API_MODULES` names the public modules, and
:func:`write_api_pages` writes one page per module listing every name of its ``__all__``, so a
name added to an ``__all__`` appears in the next build without touching ``docs/``. An object
exported by several modules (``ntksolve.MLP`` is ``ntksolve.nets.MLP``) is documented once, under
the first module below that exports it, and the later pages link to that entry.

``tests/test_docs.py`` imports this module (no Sphinx needed) to check that every public name is
in the reference and that every public package is in :data:`API_MODULES`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

#: The public modules, in reading order, with one line saying what each holds. The sub-packages
#: (``ntksolve.nets``, ...) must all be here; ``tests/test_docs.py`` checks it.
API_MODULES = [
    (
        "ntksolve",
        "The library's front door: networks, kernels, training rules and dynamics, "
        "estimators, and real training beside the prediction.",
    ),
    ("ntksolve.nets", "The network specification: layers, initialisation, forward and backward passes."),
    ("ntksolve.kernels", "Empirical NTK / NNGP and the Jacobian at finite width; analytic kernels at infinite width."),
    (
        "ntksolve.dynamics",
        "Training rules, learning-rate schedules, closed-form MSE dynamics, function-space "
        "twins of minibatch and cross-entropy training, solvers, the trained ensemble.",
    ),
    ("ntksolve.sklearn", "scikit-learn estimators and Gaussian-process kernels, and their persistence."),
    ("ntksolve.sklearn.mlp_import", "scikit-learn's ``MLPRegressor`` / ``MLPClassifier`` as ntksolve networks."),
    ("ntksolve.sklearn.trainer", "Training by scikit-learn itself, recorded like :func:`ntksolve.train_network`."),
    ("ntksolve.torch", "PyTorch interop (the ``torch`` extra): import, export, training in PyTorch."),
    ("ntksolve.dask", "Kernels as Dask tiles, Zarr stores and tiled solvers (the ``dask`` extra)."),
    ("ntksolve.datasets", "The embedded regression data and readers for your own files."),
]


def public_names(module_name):
    """The names of ``module_name.__all__``, in their given order."""
    return list(importlib.import_module(module_name).__all__)


def reference_plan():
    """Where each public name is documented.

    Returns
    -------
    plan : dict
        ``{module: [(name, home), ...]}``: ``home`` is the dotted name whose page documents the
        object (``module.name`` itself, or the first earlier module exporting the same object).
    """
    homes = {}
    plan = {}
    for module_name, _ in API_MODULES:
        module = importlib.import_module(module_name)
        entries = []
        for name in public_names(module_name):
            obj = getattr(module, name)
            key = id(obj)
            # Plain values (numbers, strings, tuples, dicts) are documented where they are listed:
            # their identity says nothing about being the same public name.
            documented_once = callable(obj) or isinstance(obj, type)
            if documented_once and key in homes:
                entries.append((name, homes[key]))
            else:
                home = f"{module_name}.{name}"
                if documented_once:
                    homes[key] = home
                entries.append((name, home))
        plan[module_name] = entries
    return plan


def _page(module_name, summary, entries):
    title = f"``{module_name}``"
    own = [name for name, home in entries if home == f"{module_name}.{name}"]
    elsewhere = [(name, home) for name, home in entries if home != f"{module_name}.{name}"]
    lines = [
        f".. _api-{module_name}:",
        "",
        title,
        "=" * len(title),
        "",
        f".. automodule:: {module_name}",
        "   :no-members:",
        "",
        summary,
        "",
        f".. currentmodule:: {module_name}",
        "",
    ]
    if own:
        lines += [".. autosummary::", "   :toctree: generated", "", *[f"   {name}" for name in own], ""]
    if elsewhere:
        lines += [
            "Also exported here (the same objects, documented where they are first exported):",
            "",
            *[f"- ``{module_name}.{name}``: :obj:`{home}`" for name, home in elsewhere],
            "",
        ]
    return "\n".join(lines)


def write_api_pages(outdir):
    """Write ``api/<module>.rst`` for every module of :data:`API_MODULES` and ``api/index.rst``.

    Parameters
    ----------
    outdir : path-like
        The folder to write (``docs/api`` during a build).

    Returns
    -------
    pages : dict
        ``{module: rst text}``, as written.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plan = reference_plan()
    pages = {}
    for module_name, summary in API_MODULES:
        text = _page(module_name, summary, plan[module_name])
        pages[module_name] = text
        path = outdir / f"{module_name}.rst"
        if not path.exists() or path.read_text() != text:  # unchanged pages keep Sphinx's cache
            path.write_text(text)
    index = [
        "API reference",
        "=============",
        "",
        "Every public name, module by module, generated from each module's ``__all__``.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
        *[f"   {module_name}" for module_name, _ in API_MODULES],
        "",
    ]
    text = "\n".join(index)
    path = outdir / "index.rst"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return pages


# -- Resolving references to aliases ---------------------------------------------------------------
# A docstring may name an object by any path it is importable from (``ntksolve.dynamics.Schedule``,
# ``ntksolve.dynamics.schedules.Schedule``, or ``Schedule`` inside its own module): the reference
# goes to the one page that documents it. A name that is importable but documented nowhere (an
# internal helper, another library's object) is set as code without a link. A name that imports
# from nowhere is a dangling reference, and stays a warning (an error under ``-W``).


def _import_path(path):
    """The object at dotted ``path``, or ``None``."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # noqa: BLE001 - any failure means "not a module path"
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


_SENTINEL = object()


def _lookup(target, context_modules, context_class):
    candidates = [target]
    for module_name in context_modules:
        if module_name:
            if context_class:
                candidates.append(f"{module_name}.{context_class}.{target}")
            candidates.append(f"{module_name}.{target}")
    for path in candidates:
        obj = _import_path(path)
        if obj is not None:
            return obj
    return _SENTINEL


def _unique_short_name(name):
    """The one object called ``name`` in the loaded ``ntksolve`` modules, or the sentinel."""
    import sys

    found = {
        id(vars(m)[name]): vars(m)[name]
        for key, m in list(sys.modules.items())
        if key.startswith("ntksolve") and m is not None and name in vars(m)
    }
    return next(iter(found.values())) if len(found) == 1 else _SENTINEL


def _homes():
    homes = {}
    for module_name, entries in reference_plan().items():
        module = importlib.import_module(module_name)
        for name, home in entries:
            obj = getattr(module, name)
            if callable(obj) or isinstance(obj, type):
                homes.setdefault(id(obj), home)
    return homes


def _on_missing_reference(app, env, node, contnode):
    from docutils import nodes

    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    if not target:
        return None
    if not hasattr(app, "_ntksolve_homes"):
        app._ntksolve_homes = _homes()
    source = node.source or ""
    own_module = None
    if "docstring of " in source:  # "…/file.py:docstring of ntksolve.x.y.name"
        dotted = source.split("docstring of ", 1)[1]
        own_module = dotted.rsplit(".", 1)[0]
    context_modules = [node.get("py:module")]
    if own_module:  # the documented object's own module and its parents, then its class
        documented = _import_path(own_module)
        defined_in = getattr(documented, "__module__", None)
        parts = own_module.split(".")
        context_modules += [".".join(parts[:cut]) for cut in range(len(parts), 0, -1)]
        if isinstance(defined_in, str):
            context_modules.append(defined_in)
    context_modules += [name for name, _ in API_MODULES]
    obj = _lookup(target, context_modules, node.get("py:class"))
    if obj is _SENTINEL and "." not in target:  # a short name used in an autosummary row
        obj = _unique_short_name(target)
    domain = env.get_domain("py")

    def resolve(home):
        for role in ("obj", node.get("reftype")):
            resolved = domain.resolve_xref(env, node.get("refdoc"), app.builder, role, home, node, contnode)
            if resolved is not None:
                return resolved
        return None

    as_code = contnode if isinstance(contnode, nodes.Node) else nodes.literal(target, target)
    if obj is _SENTINEL and "." in target:
        # An instance attribute (set in ``__init__``, listed in the class's docstring) of a class.
        parent, attr = target.rsplit(".", 1)
        owner = _lookup(parent, context_modules, node.get("py:class"))
        if isinstance(owner, type) and attr in (owner.__doc__ or "") + str(getattr(owner, "__annotations__", {})):
            home = app._ntksolve_homes.get(id(owner))
            return (resolve(f"{home}.{attr}") if home else None) or as_code
    if obj is _SENTINEL:
        return None  # dangling: Sphinx warns
    home = app._ntksolve_homes.get(id(obj))
    if home is not None and home != target:
        resolved = resolve(home)
        if resolved is not None:
            return resolved
    return as_code


def _skip_foreign_member(app, what, name, obj, skip, options):
    """Leave out members a class inherits from another library (PyTorch's ``Module``, scikit-learn's
    mixins): their docstrings are that library's, written for its own site."""
    func = getattr(obj, "fget", obj)
    module = getattr(func, "__module__", None)
    if isinstance(module, str) and not module.startswith("ntksolve") and what == "class":
        return True
    return None


def setup(app):
    app.connect("missing-reference", _on_missing_reference)
    app.connect("autodoc-skip-member", _skip_foreign_member)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
