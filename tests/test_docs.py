"""The documentation's invariants that need no Sphinx build.

- Nothing in the package, the README, the docs, the gallery or the benchmarks points outside the
  repository (a ``shared/`` folder, a top-level ``CONVENTIONS.md``, a ``../`` path), nor names an
  issue or pull request by number: the repository is read on its own.
- Every public name is in the API reference: the reference is generated from the public modules'
  ``__all__`` (``docs/_ext/ntksolve_api.py``), so these tests check that every public package is one
  of those modules, that every public object a package exposes is in its ``__all__``, and that the
  generated pages list every name of every ``__all__``.
- The gallery uses only public API.

The site itself (``python -m sphinx -W --keep-going docs docs/_build/html``) is built by ``.ci/run``,
where a dangling reference or a broken example fails.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pathlib
import re
import types
import warnings

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ntksolve"
#: What is scanned for references and issue numbers: the package, the README, the docs' sources,
#: the gallery and the benchmarks (the generated parts of ``docs/`` are the build's, not ours).
SCANNED = [PACKAGE, ROOT / "README.md", ROOT / "docs", ROOT / "examples", ROOT / "benchmarks"]
GENERATED = {"_build", "api", "auto_examples", "generated", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".rst", ".txt", ".toml", ".cfg", ".sh", ".yaml", ".yml", ".html", ".css", ".js"}

#: A place outside the repository, spelt as earlier drafts spelt it.
OUTSIDE = [
    (re.compile(r"shared/"), "a shared/ folder outside the repository"),
    (re.compile(r"CONVENTIONS\.md"), "a CONVENTIONS.md outside docs/ (the page is docs/conventions.md)"),
    (re.compile(r"\.\./"), "a ../ path, which leaves the folder it is written in"),
]
#: An issue or pull request named by number ("issue 12", "issues #3, #4", "#12", "PR 7", "GH-7").
ISSUE_NUMBERS = [
    re.compile(r"\b(?:issue|ticket|bug|pull request)s?\s*(?:no\.?\s*)?#?\d+", re.IGNORECASE),
    re.compile(r"(?<![\w&#/])#\d+\b"),
    re.compile(r"\b(?:PR|GH)[- ]?#?\d+\b"),
]


def _api():
    """``docs/_ext/ntksolve_api.py``, imported from its file (it is no package of ours)."""
    path = ROOT / "docs" / "_ext" / "ntksolve_api.py"
    spec = importlib.util.spec_from_file_location("ntksolve_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scanned_files():
    for top in SCANNED:
        paths = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in paths:
            rel = path.relative_to(ROOT)
            if not path.is_file() or path.suffix not in TEXT_SUFFIXES or GENERATED & set(rel.parts[:-1]):
                continue
            if rel.parts[0] == "docs" and path.name == "sg_execution_times.rst":  # the gallery's own
                continue
            yield rel, path.read_text(encoding="utf-8", errors="replace")


def _findings(patterns):
    found = []
    for rel, text in _scanned_files():
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, *why in patterns:
                match = pattern.search(line)
                if match:
                    found.append(f"{rel}:{number}: {match.group(0)!r} ({why[0] if why else 'an issue number'})")
    return found


def test_nothing_points_outside_the_repository():
    found = _findings(OUTSIDE)
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_no_issue_numbers():
    found = _findings([(p,) for p in ISSUE_NUMBERS])
    assert not found, "issue numbers (say what the change does instead):\n" + "\n".join(found)


@pytest.mark.parametrize("text", ["fixed in issue 12", "see #12", "Issues #3", "PR 7", "GH-7", "pull request 4"])
def test_the_issue_patterns_catch_issue_numbers(text):
    assert any(p.search(text) for p in ISSUE_NUMBERS), text


@pytest.mark.parametrize(
    "text",
    [
        "colour #1f77b4",
        "&#123;",
        "[link](torch.md#scikit-learns-mlps)",
        "# 1. Import",
        "step 12 of the issue",
        "shape (N, 1)",
    ],
)
def test_the_issue_patterns_leave_other_text(text):
    assert not any(p.search(text) for p in ISSUE_NUMBERS), text


def _public_packages():
    """Every package of ntksolve whose dotted path has no private part."""
    out = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        parts = init.parent.relative_to(ROOT).parts
        if not any(p.startswith("_") for p in parts):
            out.append(".".join(parts))
    return out


def _import_or_skip_extra(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # an optional extra (torch, dask) is not installed
        pytest.skip(f"{name} needs an extra that is not installed: {exc}")


def test_every_public_package_is_in_the_reference():
    listed = {name for name, _ in _api().API_MODULES}
    missing = [name for name in _public_packages() if name not in listed]
    assert not missing, (
        f"public packages missing from docs/_ext/ntksolve_api.py's API_MODULES: {missing}; "
        "add each with one line saying what it holds"
    )


@pytest.mark.parametrize("module_name", [name for name, _ in _api().API_MODULES])
def test_every_exposed_object_is_in_all(module_name):
    """A class or function a public module exposes under a public name is in its ``__all__``."""
    module = _import_or_skip_extra(module_name)
    exported = set(module.__all__)
    missing = []
    for name, obj in vars(module).items():
        if name.startswith("_") or name in exported or isinstance(obj, types.ModuleType):
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        home = getattr(obj, "__module__", "") or ""
        if home == module_name or (home.startswith(module_name + ".") and module_name != "ntksolve"):
            missing.append(name)
        elif module_name == "ntksolve" and home.startswith("ntksolve."):
            missing.append(name)
    assert not missing, (
        f"{module_name} exposes {missing} but its __all__ does not list them, so the API "
        "reference would leave them out: add them to __all__ (or make them private)"
    )


def test_every_name_of_every_all_is_in_the_generated_reference(tmp_path):
    api = _api()
    for name, _ in api.API_MODULES:
        _import_or_skip_extra(name)
    pages = api.write_api_pages(tmp_path)
    assert (tmp_path / "index.rst").exists()
    for module_name, _ in api.API_MODULES:
        text = pages[module_name]
        assert (tmp_path / f"{module_name}.rst").read_text() == text
        listed = set(re.findall(r"^   (\w+)$", text, flags=re.M))  # autosummary rows
        listed |= set(re.findall(rf"^- ``{re.escape(module_name)}\.(\w+)``: :obj:", text, flags=re.M))
        missing = [n for n in importlib.import_module(module_name).__all__ if n not in listed]
        assert not missing, f"{module_name}: {missing} missing from the generated API page"
    # The page of ``ntksolve`` documents MLP itself; ``ntksolve.nets`` links to it (one page per object).
    assert "   MLP" in pages["ntksolve"]
    assert "- ``ntksolve.nets.MLP``: :obj:`ntksolve.MLP`" in pages["ntksolve.nets"]


def test_the_site_generates_the_reference_from_all():
    conf = (ROOT / "docs" / "conf.py").read_text(encoding="utf-8")
    assert "write_api_pages(" in conf and "autosummary_generate = True" in conf


def _ntksolve_uses(tree):
    """The dotted ``ntksolve...`` paths a script imports or reads as attributes."""
    aliases, uses = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ntksolve"):
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                    uses.append(a.name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ntksolve"):
            uses += [f"{node.module}.{a.name}" for a in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            uses.append(f"{aliases[node.value.id]}.{node.attr}")
    return uses


def test_the_gallery_uses_only_public_api():
    public = {name for name, _ in _api().API_MODULES}
    offending = []
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert examples, "the gallery has no examples"
    for path in examples:
        for use in _ntksolve_uses(ast.parse(path.read_text(encoding="utf-8"))):
            module, _, name = use.rpartition(".")
            if use in public:
                continue
            if module not in public:
                offending.append(f"{path.name}: {use} (not a public module)")
            else:
                try:
                    names = importlib.import_module(module).__all__
                except ImportError:  # an extra that is not installed: its names cannot be read here
                    continue
                if name not in names:
                    offending.append(f"{path.name}: {use} (not in {module}.__all__)")
    assert not offending, "the gallery must use public API only:\n" + "\n".join(offending)


def test_shared_docstring_sections_are_filled_in_place():
    from ntksolve._docstrings import fill

    doc = "Summary.\n\n        {X}\n\n        Returns\n"
    sections = {"X": "\n    Parameters\n    ----------\n    X : array_like\n        Inputs.\n"}
    want = "Summary.\n\n        Parameters\n        ----------\n        X : array_like\n            Inputs.\n\n        Returns\n"
    assert fill(doc, sections) == want
    assert fill("inline {X} is text\n", sections) == "inline {X} is text\n"
    with pytest.raises(KeyError, match=r"\{Y\}"):
        fill("    {Y}\n", sections)


def test_no_public_docstring_keeps_a_section_line():
    """Every ``{name}`` line of the estimators' (and their methods') and the figures' docstrings was filled in."""
    import ntksolve.plots
    import ntksolve.sklearn

    line = re.compile(r"^\s*\{\w+\}\s*$", re.MULTILINE)
    seen = 0
    for name in ntksolve.sklearn.__all__:
        cls = getattr(ntksolve.sklearn, name)
        if not isinstance(cls, type):
            continue
        for attr in ["__doc__"] + [a for a in dir(cls) if not a.startswith("_")]:
            doc = cls.__doc__ if attr == "__doc__" else getattr(getattr(cls, attr, None), "__doc__", None)
            if isinstance(doc, str):
                seen += 1
                assert not line.search(doc), f"{name}.{attr}: {line.search(doc).group(0).strip()}"
    for name in ntksolve.plots.__all__:
        doc = getattr(ntksolve.plots, name).__doc__
        if isinstance(doc, str):
            seen += 1
            assert not line.search(doc), f"plots.{name}: {line.search(doc).group(0).strip()}"
    assert seen > 50
    assert "    X : array_like, shape (M, d)\n" in ntksolve.sklearn.NTKClassifier.predict_proba.__doc__
    assert "    path : str or path-like\n        PNG file to write.\n" in ntksolve.plots.plot_gap_vs_width.__doc__


def _sections(doc):
    """numpydoc sections of a docstring: ``{title: [lines]}``, the lines dedented."""
    lines = inspect.cleandoc(doc).splitlines()
    out, current, i = {}, None, 0
    while i < len(lines):
        if (
            i + 1 < len(lines)
            and lines[i].strip()
            and not lines[i].startswith(" ")
            and re.fullmatch(r"-{3,}", lines[i + 1].strip())
        ):
            current = lines[i].strip()
            out[current] = []
            i += 2
            continue
        if current is not None:
            out[current].append(lines[i])
        i += 1
    return out


def _documented_names(lines):
    """The names a numpydoc parameter list gives: ``a : type``, ``a, b : type``, ``*args``."""
    names = []
    for line in lines:
        if line and not line.startswith(" "):
            head = line.split(" : ")[0] if " : " in line else line
            names += [n.strip().lstrip("*") for n in head.split(",") if n.strip()]
    return names


def _signature_names(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    return [n for n in sig.parameters if n not in ("self", "cls") and not n.startswith("_")]


def _parameter_findings(where, obj, doc, *, required):
    names = _signature_names(obj)
    if names is None or not (names or "Parameters" in _sections(doc)):
        return []
    sections = _sections(doc)
    if "Parameters" in sections:
        listed = _documented_names(sections["Parameters"] + sections.get("Other Parameters", []))
    elif required and inspect.isclass(obj) and "Attributes" in sections:
        listed = _documented_names(sections["Attributes"])  # a result record: its fields
    elif required:
        return [f"{where}: no Parameters section for {names}"]
    else:
        return []
    missing = [n for n in names if n not in listed]
    extra = [n for n in listed if n not in names]
    if missing or extra:
        return [f"{where}: signature names {missing} not documented; documented {extra} not in the signature"]
    return []


def _own_constructor(cls):
    """Whether ``cls`` defines its constructor itself (else its documented base does; a protocol
    has none)."""
    import dataclasses

    if getattr(cls, "_is_protocol", False):
        return False
    return (
        dataclasses.is_dataclass(cls)
        and "__dataclass_fields__" in vars(cls)
        or any(name in vars(cls) for name in ("__init__", "__new__", "_fields"))
    )


def _public_objects():
    """Every public function and class of every ``__all__``, once each: ``(dotted name, object)``."""
    seen = set()
    for module_name, _ in _api().API_MODULES:
        module = _import_or_skip_extra(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and id(obj) not in seen:
                seen.add(id(obj))
                yield f"{module_name}.{name}", obj


def _public_methods(cls):
    """The functions a class defines under public names (class and static methods unwrapped)."""
    for attr, member in vars(cls).items():
        func = getattr(member, "__func__", member)
        if not attr.startswith("_") and inspect.isfunction(func):
            yield attr, func


def test_public_docstrings_document_the_signature():
    """Every public function and class of every ``__all__`` lists its parameters (numpydoc
    ``Parameters``, or ``Attributes`` for a record whose fields are its constructor), exactly the
    signature's names; a public method's ``Parameters``, where it has one, does too."""
    found, count = [], 0
    for where, obj in _public_objects():
        count += 1
        if not obj.__doc__:
            found.append(f"{where}: no docstring")
            continue
        if inspect.isfunction(obj) or _own_constructor(obj):
            found += _parameter_findings(where, obj, obj.__doc__, required=True)
        if inspect.isclass(obj):
            for attr, func in _public_methods(obj):
                if func.__doc__:
                    found += _parameter_findings(f"{where}.{attr}", func, func.__doc__, required=False)
    assert count > 80
    assert not found, "docstrings that do not match their signatures:\n" + "\n".join(found)


def test_the_docstring_check_catches_a_wrong_parameter_list():
    def f(a, b=1, *, c=None):
        """Summary.

        Parameters
        ----------
        a, b : int
        d : str
        """

    assert _parameter_findings("f", f, f.__doc__, required=True) == [
        "f: signature names ['c'] not documented; documented ['d'] not in the signature"
    ]
    assert _documented_names(["x : int", "    x's text", "y, *z", "**kw : dict"]) == ["x", "y", "z", "kw"]


#: The pages whose Python blocks are shown to be run as written.
PAGES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
#: Blocks run here (page, first line of the block): each page's blocks run in order in one
#: namespace. The others are compiled and their ntksolve names resolved only: the README's PyTorch
#: block runs in tests/test_torch_example.py (and is torch.md's first), the front page's is the
#: README's first cut short, and scaling.md's needs a Dask scheduler (tests/test_dask_*.py).
RUN = {("README.md", "import numpy as np"), ("docs/networks.md", None), ("docs/torch.md", "import numpy as np")}


def _python_blocks(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def _resolve(dotted):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_compiles_and_names_what_exists(page):
    blocks = _python_blocks(page)
    for block in blocks:
        for use in _ntksolve_uses(ast.parse(block)):
            try:
                _resolve(use)
            except ImportError as exc:  # an extra that is not installed
                if "ntksolve" in str(exc):
                    raise
            except AttributeError as exc:
                raise AssertionError(f"{page}: {use} does not exist ({exc})") from None


@pytest.mark.parametrize("page", sorted({p for p, _ in RUN}))
def test_the_pages_blocks_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block may write files
    namespace = {"__name__": "__docs__"}
    ran = 0
    for block in _python_blocks(page):
        if (page, None) in RUN or (page, block.splitlines()[0]) in RUN:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning of a short fit
                exec(compile(block, page, "exec"), namespace)
            ran += 1
    assert ran


#: A machine timing: a number with a unit of time or of a rate (code spans are left out first).
TIMING = re.compile(r"\d(?:[\d.,]*\d)? ?(?:s|ms|µs|seconds?|minutes?|GFLOP/s|GFlop/s|GB/s|MB/s)\b(?![-/])")


def _docstring_timings(source, where):
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False) or ""
            for match in TIMING.finditer(re.sub(r"``.*?``", "``…``", doc, flags=re.S)):
                found.append(f"{where}:{getattr(node, 'lineno', 1)}: {match.group(0)!r}")
    return found


def test_no_machine_timings_in_docstrings():
    """Timings belong in the README's performance section and the benchmarks, not in docstrings
    (they age with the machine); comments may say why a choice was measured."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += _docstring_timings(path.read_text(encoding="utf-8"), path.relative_to(ROOT))
    assert not found, "machine timings in docstrings:\n" + "\n".join(found)


def test_the_timing_pattern_catches_timings_only():
    catches = ['"""Takes 0.5 s."""', '"""measured 29 ms"""', '"""at 1.8 GB/s"""', '"""5.8 seconds"""']
    leaves = ['"""``4 s^2`` against ``1 + 4 s``"""', '"""shape (N, k)s"""', '"""2-D inputs"""', '"""N = 1024"""']
    assert all(_docstring_timings(text, "x") for text in catches)
    assert not any(_docstring_timings(text, "x") for text in leaves)


#: The public modules whose docstrings carry examples (``>>>``), run as doctests.
DOCTEST_MODULES = [
    "ntksolve.nets.layers",
    "ntksolve.nets.mlp",
    "ntksolve.nets.conv",
    "ntksolve.nets.network",
    "ntksolve.dynamics.units",
    "ntksolve.dynamics.schedules",
    "ntksolve.sklearn.regressor",
    "ntksolve.sklearn.classifier",
    "ntksolve.sklearn.cv_classifier",
    "ntksolve.sklearn.gp_kernels",
    "ntksolve.torch.convert",
]


def test_every_module_with_examples_is_doctested():
    with_examples = set()
    for path in PACKAGE.rglob("*.py"):
        if ">>> " in path.read_text(encoding="utf-8"):
            with_examples.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    # the dask modules' examples need a cluster and are marked to be skipped
    assert with_examples - {m for m in with_examples if m.startswith("ntksolve.dask.")} == set(DOCTEST_MODULES)


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_the_docstring_examples_print_what_they_say(module_name):
    import doctest

    module = _import_or_skip_extra(module_name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{module_name}: {result.failed} of {result.attempted} examples failed (run doctest)"


def _documented_defaults(func):
    """``{name: default text}`` from ``name : type, default VALUE`` lines (``a, b : float, default 1, 2``)."""
    out = {}
    for line in _sections(func.__doc__ or "").get("Parameters", []):
        if line.startswith(" ") or " : " not in line:
            continue
        names, kind = line.split(" : ", 1)
        match = re.search(r"\bdefault[: =]+(.+)$", kind)
        if not match:
            continue
        names = [n.strip() for n in names.split(",")]
        values = [v.strip().strip("`") for v in match.group(1).split(",")] if len(names) > 1 else [match.group(1)]
        values = [re.split(r"\s+\(|;", v)[0].strip().strip("`") for v in values]
        if len(values) == len(names):
            out.update(zip(names, values))
    return out


def _same_default(text, value, namespace):
    try:
        documented = eval(text, {"np": np, "numpy": np, "inf": np.inf, **namespace})  # noqa: S307 - our docstrings
    except Exception:  # a name of another library or prose (``MSELoss``): nothing to compare
        return True
    if isinstance(value, (int, float)) and isinstance(documented, (int, float)) and not isinstance(value, bool):
        return documented == value or (np.isinf(value) and np.isinf(documented))
    return documented == value


def test_documented_defaults_are_the_signatures():
    found = []
    for where, obj in _public_objects():
        funcs = (
            [(where, obj)] + [(f"{where}.{a}", f) for a, f in _public_methods(obj)]
            if inspect.isclass(obj)
            else [(where, obj)]
        )
        for place, func in funcs:
            if not func.__doc__:
                continue
            try:
                params = inspect.signature(func).parameters
            except (TypeError, ValueError):
                continue
            namespace = vars(importlib.import_module(func.__module__))
            for param, text in _documented_defaults(func).items():
                if param in params and not _same_default(text, params[param].default, namespace):
                    found.append(f"{place}({param}): documented {text}, signature {params[param].default!r}")
    assert not found, "documented defaults that the signatures do not have:\n" + "\n".join(found)


def test_the_default_check_reads_several_names_and_catches_a_wrong_one():
    def f(a=1.0, b=0.1, c="x"):
        """Summary.

        Parameters
        ----------
        a, b : float, default 1.0, 0.1
        c : {"x", "y"}, default "y"
        """

    documented = _documented_defaults(f)
    assert documented == {"a": "1.0", "b": "0.1", "c": '"y"'}
    assert _same_default(documented["a"], 1.0, {}) and not _same_default(documented["c"], "x", {})
