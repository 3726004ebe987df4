"""The package's layers, checked: no import points from a lower layer to a higher one, and no cycles.

The layers, lowest first, are described in CONTRIBUTING.md. An import inside a function
counts too: it is deferred, not absent. Within one layer, modules may import each other,
but the module graph must have no cycles.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "phi4lab"

LAYERS = [
    ["phi4lab.paths"],
    ["phi4lab.model"],
    ["phi4lab.scratch"],
    ["phi4lab.training"],
    ["phi4lab.analysis"],
    ["phi4lab.dictionaries"],
    ["phi4lab.bias", "phi4lab.evaluation"],
    ["phi4lab.viz"],
    ["phi4lab.recipes"],
    ["phi4lab.exercises"],
    ["phi4lab.doctor", "phi4lab.cli"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def imports(path: Path) -> set[str]:
    """The phi4lab modules a file imports (absolute and relative, at any depth)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("phi4lab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("phi4lab"):
                found.add(module)
                # `from phi4lab.model import config` imports the module phi4lab.model.config
                for a in node.names:
                    if (PACKAGE.parent / Path(*f"{module}.{a.name}".split("."))).with_suffix(".py").exists():
                        found.add(f"{module}.{a.name}")
    return found - {me}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in graph() if m != "phi4lab" and layer_of(m) is None)
    assert not unplaced, f"put these in a layer (tests/test_layers.py and CONTRIBUTING.md): {unplaced}"


def test_no_import_points_up_a_layer():
    upward = []
    for module, targets in graph().items():
        if module == "phi4lab":               # the front door re-exports the core only
            upward += [f"phi4lab -> {t}" for t in targets if layer_of(t) not in (0, 1)]
            continue
        for t in targets:
            if t != "phi4lab" and layer_of(t) is not None and layer_of(t) > layer_of(module):
                upward.append(f"{module} (layer {layer_of(module)}) -> {t} (layer {layer_of(t)})")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_the_module_graph_has_no_cycles():
    full = graph()
    g = {m: {t for t in ts if t in full} for m, ts in full.items()}
    state, cycle = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(g[node]):
            if nxt.startswith(node + ".") or node == nxt:
                continue                       # a package importing its own submodules is not a cycle
            if state.get(nxt) == "open":
                cycle.extend(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, path + [nxt]):
                return True
        state[node] = "done"
        return False

    for node in sorted(g):
        if node not in state and visit(node, [node]):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


# TransformerLens' internals, and the workarounds that depend on them: only model/bridge.py may name them.
# (Its public utilities, such as transformer_lens.utils.get_act_name, may be used anywhere.)
TL_INTERNALS = ("_original_component", "original_model", "boot_transformers", "add_bos_token",
                "transformer_lens.model_bridge")


def test_only_the_bridge_module_knows_transformerlens_internals():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "model" / "bridge.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(PACKAGE.parent)}: {name}" for name in TL_INTERNALS if name in text]
    assert not offenders, "use phi4lab.model.bridge (is_bridge, unwrap, hf_config, final_norm, ...):\n" + "\n".join(offenders)
