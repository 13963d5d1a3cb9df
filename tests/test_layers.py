"""Import layers (docs/design.md, "Layers"): imports point down only.

Reads every .py file of wscrl_jax/ and scripts/ with `ast` (nothing is imported), collects every
`import wscrl_jax...` / `from wscrl_jax... import ...` (also inside functions, and relative
imports), and checks each against ALLOWED. A module's layer is its first name under the package
(`wscrl_jax.lcm.ilcm` -> `lcm`, `wscrl_jax.cli` -> `cli`); files in scripts/ are layer `scripts`.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "wscrl_jax"

_MODEL_DEPS = {"train", "data", "causal", "flows", "nn", "eval", "config_checks", "plots"}


def method_layers():
    """The layers of the method packages, read from `methods.METHODS` ("wscrl_jax.lcm.method:
    LCMMethod" -> "lcm") with `ast` (nothing is imported): a new method needs no line here."""
    with open(os.path.join(ROOT, PACKAGE, "methods.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        targets = [getattr(t, "id", None) for t in getattr(node, "targets", [])]
        target = getattr(getattr(node, "target", None), "id", None)
        if "METHODS" in targets + [target] and isinstance(node.value, ast.Dict):
            return {v.value.split(".")[1] for v in node.value.values}
    raise AssertionError("methods.py has no METHODS table")


METHOD_LAYERS = method_layers()

# layer -> the other layers it may import (a layer may always import itself).
ALLOWED = {
    # + data: the dataset scripts (build_causalcircuit.py, make_toy_causalcircuit.py)
    "scripts": {"cli", "experiment", "run", "methods", "tracking", "plots", "train",
                "config_checks", "data", "run_guard"},
    "cli": {"experiment", "run", "methods", "config_checks", "tracking", "train", "run_guard"},
    # the CLI's workdir lock, workdir state, storage errors and stop signals (train/)
    "run_guard": {"train"},
    "experiment": {"run", "tracking", "train"},
    "run": {"methods", "tracking", "plots", "train", "config_checks"},
    "methods": {"train", "config_checks"},  # method packages: imported by name, on first use
    # the Python API over trained runs (wscrl_jax.load / train / get_config)
    "api": {"cli", "experiment", "run", "methods", "train", "data", "eval", "causal", "nn",
            "config_checks", "tracking", "run_guard"} | METHOD_LAYERS,
    "config_checks": set(),
    "tracking": {"train"},  # the flattened config (train/workdir_state.py)
    "plots": set(),
    "causal": {"flows", "nn"},
    "flows": {"nn"},
    "data": {"causal", "flows"},
    "train": set(),
    "eval": set(),
    "nn": set(),
    # each method package: the model layers, never another method package
    **{layer: set(_MODEL_DEPS) for layer in METHOD_LAYERS},
}
ROOT_LAYER = "__init__"  # wscrl_jax/__init__.py: anyone may import it; it imports only
# the API (lazily, module __getattr__) and the train package (made callable as the API's train)
ROOT_IMPORTS = {"api", "train"}


def module_name(relpath):
    """'wscrl_jax/lcm/ilcm.py' -> 'wscrl_jax.lcm.ilcm'; 'wscrl_jax/lcm/__init__.py' -> '...lcm'."""
    parts = relpath[:-len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module):
    """Layer of a dotted module name under the package, or None if not in the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else ROOT_LAYER


def imported_modules(source, module, is_package=False):
    """(line, dotted name) for every import of the package in `source`.

    `module` is the importing file's dotted name (used to resolve relative imports).
    `from wscrl_jax import x` and `from . import x` count as importing the submodule x.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            if base == PACKAGE or node.module is None:  # names may be submodules
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return sorted((line, name) for line, name in found if layer_of(name) is not None)


def violations_in_source(source, relpath, layer):
    """Forbidden arrows of one file, as readable lines."""
    module = module_name(relpath) if relpath.startswith(PACKAGE + "/") else "scripts"
    is_package = relpath.endswith("__init__.py")
    lines = []
    for lineno, target in imported_modules(source, module, is_package):
        target_layer = layer_of(target)
        if target_layer == ROOT_LAYER:
            allowed = True
        elif layer == ROOT_LAYER:
            allowed = target_layer in ROOT_IMPORTS
        elif layer not in ALLOWED:
            lines.append(f"{relpath}:{lineno} -> {target} "
                         f"(layer {layer} is not in ALLOWED of tests/test_layers.py)")
            continue
        elif target_layer not in ALLOWED:
            lines.append(f"{relpath}:{lineno} -> {target} "
                         f"(layer {target_layer} is not in ALLOWED of tests/test_layers.py)")
            continue
        else:
            allowed = target_layer == layer or target_layer in ALLOWED[layer]
        if not allowed:
            lines.append(f"{relpath}:{lineno} -> {target} "
                         f"(layer {layer} may not import layer {target_layer})")
    return lines


def source_files():
    """(relative path, layer) of every .py file of the package and scripts/."""
    out = []
    for top in (PACKAGE, "scripts"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, name), ROOT).replace(os.sep, "/")
                    layer = "scripts" if top == "scripts" else layer_of(module_name(rel))
                    out.append((rel, layer))
    return out


def all_violations():
    lines = []
    for rel, layer in source_files():
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            source = f.read()
        if layer not in ALLOWED and layer != ROOT_LAYER:
            lines.append(f"{rel} (layer {layer} is not in ALLOWED of tests/test_layers.py)")
        lines += violations_in_source(source, rel, layer)
    return lines


def report(lines):
    return f"{len(lines)} forbidden import(s):\n" + "\n".join("  " + line for line in lines)


def test_imports_point_down_only():
    assert len(source_files()) > 10  # the walk found the package
    lines = all_violations()
    assert not lines, report(lines)


SYNTHETIC = """\
import numpy as np
import wscrl_jax.nn.mlp
from wscrl_jax.causal.graphs import create_graph
from . import phases
from .pair_vae import PairAutoencoder
from wscrl_jax import experiment


def late():
    from wscrl_jax.mdcrl.method import MDCRLMethod
    import wscrl_jax.data.scaling, wscrl_jax.models.old
    return MDCRLMethod
"""


def test_checker_reports_every_forbidden_import():
    lines = violations_in_source(SYNTHETIC, "wscrl_jax/lcm/fake.py", "lcm")
    assert lines == [
        "wscrl_jax/lcm/fake.py:6 -> wscrl_jax.experiment (layer lcm may not import layer "
        "experiment)",
        "wscrl_jax/lcm/fake.py:10 -> wscrl_jax.mdcrl.method (layer lcm may not import layer "
        "mdcrl)",
        "wscrl_jax/lcm/fake.py:11 -> wscrl_jax.models.old (layer models is not in ALLOWED of "
        "tests/test_layers.py)",
    ]
    text = report(lines)
    assert text.startswith("3 forbidden import(s):") and all(line in text for line in lines)


def test_checker_resolves_relative_imports():
    found = imported_modules(SYNTHETIC, "wscrl_jax.lcm.fake")
    assert (4, "wscrl_jax.lcm.phases") in found
    assert (5, "wscrl_jax.lcm.pair_vae") in found
    assert imported_modules("from . import x", "wscrl_jax.lcm", is_package=True) == [
        (1, "wscrl_jax.lcm.x")]
    assert imported_modules("from .. import nn", "wscrl_jax.lcm.fake") == [(1, "wscrl_jax.nn")]


def test_scripts_may_not_reach_internals():
    src = "from wscrl_jax.cli import main\nfrom wscrl_jax.nn.mlp import MLP\n"
    assert violations_in_source(src, "scripts/x.py", "scripts") == [
        "scripts/x.py:2 -> wscrl_jax.nn.mlp (layer scripts may not import layer nn)"]
