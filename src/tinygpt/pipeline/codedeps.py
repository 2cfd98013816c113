"""The project code a stage runs: the transitive closure of its script's imports, read from the source.

`dvc.yaml` lists a stage's code deps, and a test compares them with `stage_files(stage)`, so an edit to
any module a stage imports reruns the stage. The pretrain stage hashes the closure of the training code
alone (`code_digest("tinygpt.train.loop")`) into its checkpoint key: an edit to code that decides the
weights never resumes a checkpoint older code wrote, while an edit to code that only reports on them
reruns the stage without retraining. Imports are read with `ast` (nothing is imported), including imports
inside functions, so the closure is a superset of what any one run executes. Modules are found where
Python would import them from; `stages/__init__.py` puts the checkout's own `src/` first on the path, so
that is the code the stages run and the code hashed here.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

PROJECT_PACKAGES = ("tinygpt", "stages")

# Plumbing that cannot change a stage's outputs, so it is no code dep (and its own imports are not
# followed): MLflow logging (`tracking`), MLflow model logging and registration (`registry`: it writes only
# to the MLflow store; the model-loading and serving code its pyfunc models run is therefore no dep of a
# training stage), the command-line wrapper that turns errors into one line, the malloc setting that
# wrapper applies (speed only), and the package marker, which holds only the version string the CLI prints.
EXEMPT = ("tinygpt.pipeline.tracking", "tinygpt.pipeline.registry", "tinygpt.pipeline.cli",
          "tinygpt.core.allocator", "tinygpt")


def package_dir(package: str) -> Path | None:
    """Where a top-level project package lives (running only its __init__, which imports nothing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def module_file(module: str) -> Path | None:
    """The source file of a project module or package, or None when `module` is not one (e.g. a name
    imported from a module: `from tinygpt.core.io import write_json`). Found on disk, without importing it."""
    top, *rest = module.split(".")
    root = package_dir(top)
    if root is None:
        return None
    base = root.joinpath(*rest)
    for candidate in (base / "__init__.py", base.with_suffix(".py") if rest else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def is_project(module: str) -> bool:
    return module.split(".")[0] in PROJECT_PACKAGES


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every dotted name the source imports, absolute or relative; `from a import b` gives both `a` and
    `a.b` (b may be a submodule or just a name; module_file tells which)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(entry: str) -> dict[str, Path]:
    """Project modules `entry` imports, directly or not (with `entry` itself): name -> source file."""
    found: dict[str, Path] = {}
    todo = [entry]
    while todo:
        module = todo.pop()
        if module in found or module in EXEMPT or not is_project(module):
            continue
        path = module_file(module)
        if path is None:
            continue
        found[module] = path
        source = path.read_text(encoding="utf-8")
        todo.extend(parents(module))
        todo.extend(imported_names(source, module, path.name == "__init__.py"))
    return found


def is_inert(path: Path) -> bool:
    """A package marker that holds at most a docstring: importing it runs nothing."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    is_docstring = [isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body]
    return path.name == "__init__.py" and all(is_docstring)


def modules(entry: str) -> dict[str, Path]:
    """The closure of a module, without inert package markers."""
    return {name: path for name, path in closure(entry).items() if not is_inert(path)}


def stage_modules(stage: str) -> dict[str, Path]:
    """The closure of `stages/<stage>.py`."""
    return modules(f"stages.{stage}")


def stage_files(stage: str, root: Path) -> list[str]:
    """The stage's code deps as dvc.yaml spells them: paths relative to the repository `root`."""
    return sorted(path.resolve().relative_to(root.resolve()).as_posix() for path in stage_modules(stage).values())


def code_digest(entry: str) -> str:
    """sha256 over the names and contents of the modules `entry` imports (and its own): changes with any
    edit to that code, and with nothing else."""
    digest = hashlib.sha256()
    for name, path in sorted(modules(entry).items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
