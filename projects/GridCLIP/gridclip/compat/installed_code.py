"""Reading the source of installed packages (what the fixes' probes use where running the code is not cheap)."""
import importlib.util
import os

__all__ = ["package_dir", "python_files", "files_matching", "short_list"]


def package_dir(name):
    """The folder of the installed package ``name``, or None when it is not installed (or not a package)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def python_files(package):
    """Yield ``(path relative to the package's parent, absolute path)`` of every .py file of ``package``."""
    root = package_dir(package)
    if root is None:
        return
    for folder, _, files in os.walk(root):
        for file in sorted(files):
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                yield os.path.join(package, os.path.relpath(path, root)), path


def files_matching(packages, pattern):
    """Relative paths of the installed .py files of ``packages`` whose source matches ``pattern`` (bytes regex)."""
    found = []
    for package in packages:
        for relpath, path in python_files(package):
            with open(path, "rb") as f:
                if pattern.search(f.read()):
                    found.append(relpath)
    return found


def short_list(items, limit=3):
    """``"a, b, c (+2 more)"``: the first ``limit`` items, for a one-line probe reason."""
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
