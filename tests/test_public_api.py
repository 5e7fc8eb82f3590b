"""The command line is parsing and printing over the public API: it imports only the public
modules (README, "Python API") and takes from each only what its ``__all__`` names."""
import ast
import importlib
from pathlib import Path

import segcodec

PUBLIC = {"segcodec", "segcodec.backend", "segcodec.batch", "segcodec.cluster",
          "segcodec.datasets", "segcodec.errors", "segcodec.evaluate", "segcodec.remote",
          "segcodec.service", "segcodec.zoo", "segcodec.train.run", "segcodec.train.export"}
CLI = Path(segcodec.__file__).parent / "cli"


def _uses(tree: ast.AST):
    """(module, name) for each name the code takes from a segcodec module: imported from it,
    or read as an attribute of a name bound to the module."""
    modules = {}  # local name -> module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and \
                node.module.split(".")[0] == "segcodec":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in PUBLIC:  # a module imported by name
                    modules[alias.asname or alias.name] = full
                else:
                    yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "segcodec":
                    yield alias.name, None
                    modules[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id in modules:
            yield modules[node.value.id], node.attr


def test_the_cli_takes_only_public_names_from_public_modules():
    outside = []
    for path in sorted(CLI.glob("*.py")):
        for module, name in _uses(ast.parse(path.read_text())):
            if module.startswith("segcodec.cli"):
                continue
            if module not in PUBLIC:
                outside.append(f"{path.name}: module {module}")
            elif name is not None and name not in importlib.import_module(module).__all__:
                outside.append(f"{path.name}: {module}.{name}")
    assert not outside, outside


def test_every_public_name_exists():
    for module in PUBLIC:
        m = importlib.import_module(module)
        assert [n for n in m.__all__ if not hasattr(m, n)] == [], module


def test_the_check_sees_an_internal_use():
    tree = ast.parse("from segcodec import destinations\nimport segcodec\n"
                     "destinations.expand(p)\nsegcodec.api.prepare(x)\n")
    assert ("segcodec", "destinations") in set(_uses(tree))
    assert ("segcodec", "api") in set(_uses(tree))
