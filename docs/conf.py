"""Sphinx configuration: ``python -m sphinx -W --keep-going docs docs/_build/html``."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))  # the checkout's ntksolve, also without an install

os.environ.setdefault("MPLBACKEND", "Agg")

import ntksolve  # noqa: E402
from ntksolve_api import write_api_pages  # noqa: E402

# The API pages, from the public modules' ``__all__``, before Sphinx looks for source files.
write_api_pages(DOCS / "api")

project = "ntksolve"
author = "the ntksolve developers"
copyright = "2026, the ntksolve developers"
release = version = ntksolve.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "ntksolve_api",  # docs/_ext: the API pages, and references to aliases
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# Every cross-reference must resolve: a dangling one fails the build (-W).
nitpicky = True
nitpick_ignore_regex = [
    # numpydoc renders ``Parameters`` types as text; these come from signatures of third-party bases.
    (r"py:class", r"(numpy|np|sklearn|scipy|torch|dask|zarr|distributed)\..*"),
]

# -- API reference: autosummary + numpydoc ------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # the docstrings give the types, with shapes
autodoc_default_options = {"member-order": "bysource"}
autodoc_inherit_docstrings = True
numpydoc_show_class_members = False  # members come from the class template (autodoc :members:)
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- Markdown pages (docs/*.md) -----------------------------------------------------------------
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath", "colon_fence"]

# -- Gallery --------------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r".*\.py$",  # run every example: a broken one fails the build
    "ignore_pattern": r"__init__\.py",
    "abort_on_example_error": False,  # report every broken example, then fail (-W --keep-going)
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
    "show_memory": False,
}

# -- HTML -----------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"ntksolve {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []

warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")
