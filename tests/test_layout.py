"""The package's structure, read from its imports: layers that import one way, no cycle, a core
free of the experiment stack, and configs that are data."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "composed_vi"

#: Layers in import order: a module may import its own layer and the ones before it.
LAYERS = ("core", "models", "world", "lab")
#: Third-party libraries of the experiment stack that the core never imports, even lazily.
NOT_IN_CORE = ("absl", "orbax", "matplotlib", "imageio", "PIL", "ml_collections", "torch")


def module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[1] in LAYERS[1:] else "core"


def imports(path: pathlib.Path):
  """``(module, line, inside_function)`` for every import in ``path``, relative ones resolved,
  ``from package import name`` counted as the submodule when ``name`` is one."""
  tree = ast.parse(path.read_text())
  in_function = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      in_function.update(id(n) for n in ast.walk(node) if n is not node)
  for node in ast.walk(tree):
    inside = id(node) in in_function
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, node.lineno, inside
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        package = module_name(path).split(".")
        if path.name != "__init__.py":
          package = package[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
      for alias in node.names:
        full = f"{base}.{alias.name}"
        yield (full if full in MODULES else base), node.lineno, inside


def project_graph() -> dict:
  graph = {m: set() for m in MODULES}
  for m, path in MODULES.items():
    for target, _, _ in imports(path):
      if target in MODULES and target != m:
        graph[m].add(target)
  return graph


def test_every_import_flows_down_the_layers():
  upward = []
  for m, path in MODULES.items():
    for target, line, _ in imports(path):
      if target in MODULES and LAYERS.index(layer(target)) > LAYERS.index(layer(m)):
        upward.append(f"{path.relative_to(ROOT)}:{line} ({layer(m)}) imports {target} "
                      f"({layer(target)})")
  assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
  graph = project_graph()
  # Tarjan's strongly connected components: any component of two or more modules is a cycle.
  index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
  for v in sorted(graph):
    if v not in index:
      visit(v)
  assert not cycles, f"import cycles: {cycles}"


def test_project_imports_are_at_module_level():
  """An import of the project inside a function hides a cycle from readers (and from the
  tests above); only heavy optional third-party libraries may be imported lazily."""
  hidden = [f"{path.relative_to(ROOT)}:{line} imports {target}"
            for m, path in MODULES.items() for target, line, inside in imports(path)
            if inside and target.split(".")[0] == "composed_vi"]
  assert not hidden, "\n".join(hidden)


def test_core_imports_none_of_the_experiment_stack():
  bad = [f"{path.relative_to(ROOT)}:{line} imports {target}"
         for m, path in MODULES.items() if layer(m) == "core"
         for target, line, _ in imports(path) if target.split(".")[0] in NOT_IN_CORE]
  assert not bad, "\n".join(bad)
  # And at run time: importing the public API loads none of them.
  code = ("import sys, composed_vi; "
          f"print(sorted(m for m in {NOT_IN_CORE!r} if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=ROOT)
  assert out.stdout.strip() == "[]", out.stdout


def test_configs_import_nothing_but_ml_collections_and_their_helpers():
  bad = []
  for path in sorted((ROOT / "configs").glob("*.py")):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""])
        for name in names:
          if name.split(".")[0] not in ("ml_collections", "configs"):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
  assert not bad, "\n".join(bad)


def test_experiments_are_thin():
  """``experiments/`` mains parse flags and call the library: they define no experiment
  logic of their own beyond the benchmarks, which are programs in their own right."""
  for path in sorted((ROOT / "experiments").glob("*.py")):
    if path.name.startswith("benchmark") or path.name == "__init__.py":
      continue
    assert len(path.read_text().splitlines()) <= 60, path.name


def test_every_main_imports():
  """Each ``experiments/`` module imports (its flags defined, its library calls resolved), in
  its own process as it runs."""
  names = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__")
  code = ("import importlib, sys\n"
          "for name in sys.argv[1:]:\n"
          "  importlib.import_module(f'experiments.{name}')\n")
  for name in names:
    out = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, f"experiments.{name}: {out.stderr[-2000:]}"


def test_test_modules_have_unique_names():
  """The tests have no ``__init__.py`` (pytest puts each folder on the path), so two test files
  of one name in two folders would not both be collected."""
  names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
  assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
