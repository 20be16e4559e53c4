"""
Safety audit of the shipped code (package, tools, dev scripts, dataset scripts): nothing unsafe is
unpickled and no shell command line is built from strings.

- every ``torch.load`` passes ``weights_only=True``; ``np.load`` passes ``allow_pickle=False``;
- ``pickle.load(s)`` / ``torch.jit.load`` / open_clip's ``load_openai_model`` appear only where audited:
  gridclip/checkpoint.py (numpy-only unpickler), gridclip/modeling/clip_loading.py (OpenAI
  TorchScript archives through open_clip's loader) and gridclip/export/checks.py (reloads only the
  TorchScript file it has just written into its own fresh output folder, to check it);
- no ``shell=True``, ``os.system``, ``os.popen``, and no subprocess call whose command is a string;
- ``yaml.load`` only with a safe loader.
The checker is tested on code with each violation, so it cannot pass vacuously.
"""
import ast
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ["projects/GridCLIP/gridclip", "tools", "dev", "datasets", "demo"]

#: (call name, file allowed to make it): audited exceptions
ALLOWED = {
    ("pickle.Unpickler", "projects/GridCLIP/gridclip/checkpoint.py"),
    ("torch.jit.load", "projects/GridCLIP/gridclip/modeling/clip_loading.py"),
    ("load_openai_model", "projects/GridCLIP/gridclip/modeling/clip_loading.py"),
    ("torch.jit.load", "projects/GridCLIP/gridclip/export/checks.py"),
}
SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}


def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_true(node):
    return isinstance(node, ast.Constant) and node.value is True


def _is_false(node):
    return isinstance(node, ast.Constant) and node.value is False


def find_unsafe_calls(source, filename):
    """[(filename, line, problem)] for every unsafe call in ``source``."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        short = name.rsplit(".", 1)[-1]

        def flag(problem):
            if (name, filename) not in ALLOWED and (short, filename) not in ALLOWED:
                problems.append((filename, node.lineno, problem))

        if name.endswith("torch.load"):
            if not _is_true(_keyword(node, "weights_only")):
                flag("torch.load without weights_only=True")
        elif name in ("np.load", "numpy.load"):
            if not _is_false(_keyword(node, "allow_pickle")):
                flag("np.load without allow_pickle=False")
        elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "dill.load", "joblib.load"):
            flag(f"{name}: unpickles arbitrary objects")
        elif name in ("torch.jit.load",) or short == "load_openai_model":
            flag(f"{name}: TorchScript archives load only in clip_loading.py")
        elif name in ("os.system", "os.popen", "commands.getoutput"):
            flag(f"{name}: runs a shell command line")
        elif name.startswith("subprocess.") and short in SUBPROCESS_CALLS:
            if _is_true(_keyword(node, "shell")):
                flag(f"{name}(shell=True)")
            command = node.args[0] if node.args else _keyword(node, "args")
            if isinstance(command, (ast.JoinedStr, ast.BinOp)) or (
                isinstance(command, ast.Constant) and isinstance(command.value, str)
            ):
                flag(f"{name} with a command string (use an argument list)")
        elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            safe_loader = loader is not None and "Safe" in _dotted(loader)
            if name == "yaml.unsafe_load" or not safe_loader:
                flag(f"{name} without a safe loader")
    return problems


def _shipped_python_files():
    for top in SCANNED:
        folder = os.path.join(REPO_ROOT, top)
        for dirpath, _, filenames in os.walk(folder):
            for filename in sorted(filenames):
                if filename.endswith(".py"):
                    path = os.path.join(dirpath, filename)
                    yield os.path.relpath(path, REPO_ROOT)


def test_shipped_code_has_no_unsafe_loads_or_shell_strings():
    files = list(_shipped_python_files())
    assert "projects/GridCLIP/gridclip/checkpoint.py" in files and "tools/train_net.py" in files
    problems = []
    for relpath in files:
        with open(os.path.join(REPO_ROOT, relpath), encoding="utf-8") as f:
            problems += find_unsafe_calls(f.read(), relpath)
    assert not problems, "\n".join(f"{f}:{line}: {problem}" for f, line, problem in problems)


VIOLATIONS = {
    "torch.load(path)": "torch.load without weights_only=True",
    "torch.load(path, weights_only=False)": "torch.load without weights_only=True",
    "np.load(path)": "np.load without allow_pickle=False",
    "pickle.load(f)": "pickle.load: unpickles arbitrary objects",
    "torch.jit.load(path)": "torch.jit.load: TorchScript",
    "os.system('rm ' + user_path)": "os.system: runs a shell command line",
    "subprocess.run(cmd, shell=True)": "subprocess.run(shell=True)",
    "subprocess.check_output(f'ls {user_path}')": "with a command string",
    "yaml.load(text)": "yaml.load without a safe loader",
}


@pytest.mark.parametrize("snippet", sorted(VIOLATIONS))
def test_checker_finds_each_kind_of_violation(snippet):
    problems = find_unsafe_calls(snippet, "tools/example.py")
    assert len(problems) == 1 and VIOLATIONS[snippet] in problems[0][2], problems


def test_checker_accepts_the_safe_forms():
    safe = "\n".join([
        "torch.load(path, map_location='cpu', weights_only=True)",
        "np.load(path, allow_pickle=False)",
        "subprocess.run([sys.executable, script, user_path], check=True)",
        "yaml.load(text, Loader=yaml.SafeLoader)",
        "yaml.safe_load(text)",
    ])
    assert find_unsafe_calls(safe, "tools/example.py") == []
    # The audited exception is allowed only in its own file.
    assert find_unsafe_calls("torch.jit.load(p)", "projects/GridCLIP/gridclip/modeling/clip_loading.py") == []
