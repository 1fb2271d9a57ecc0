""".env.example documents every environment variable the settings read (docker compose's `.env` and
the systemd environment file start from it)."""
import ast
import re

from tests.factories import ROOT


def settings_variables() -> set[str]:
    """Every name butlers/settings.py reads from the environment (env.str("X"), "X" in env,
    the names given to _from_env, loops over names read with env.*, os.environ.get("X"))."""
    tree = ast.parse((ROOT / "butlers" / "settings.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            owner = node.func.value
            reads_env = (isinstance(owner, ast.Name) and owner.id == "env") or (
                isinstance(owner, ast.Attribute) and owner.attr == "environ" and node.func.attr == "get"
            ) or (isinstance(owner, ast.Call) and getattr(owner.func, "attr", "") == "Env")
            if reads_env and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            if any(isinstance(c, ast.Name) and c.id == "env" for c in node.comparators):
                names.add(node.left.value)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_from_env":
            names.update(a.value for a in node.args if isinstance(a, ast.Constant))
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple) and "env." in ast.unparse(node):
            names.update(e.value for e in node.iter.elts if isinstance(e, ast.Constant))
    return {n for n in names if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)}


def test_every_variable_the_settings_read_is_documented_in_env_example():
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    read = settings_variables()
    assert {"SECRET_KEY", "DATABASE_URL", "GOOGLE_OAUTH_TOKEN_URI", "OAUTH_HTTP_TIMEOUT"} <= read  # the parse works
    assert read - documented == set()
