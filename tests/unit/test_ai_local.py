from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sluice.ai import (
    RULES,
    AIProvider,
    AnalysisResult,
    Finding,
    LocalProvider,
    Usage,
    detect_language,
    get_provider,
)
from sluice.errors import CodecError, InvalidInput
from sluice.settings import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "app"


@pytest.fixture(scope="module")
def local() -> LocalProvider:
    return LocalProvider()


def hits(
    provider: LocalProvider, code: str, language: str = "python", rules: list[str] | None = None
) -> list[tuple[int, str]]:
    result = provider.analyze(textwrap.dedent(code), language, rules=rules)
    return [(finding.line, finding.rule) for finding in result.findings]


# Every rule: a positive snippet with the line it must flag, and a safe twin it must not flag.
PYTHON_CASES = [
    ("security.eval", "x = 1\nresult = eval(expr)\n", 2, "result = ast.literal_eval(expr)\n"),
    ("security.eval", "exec(source)\n", 1, "model.eval()\nself.exec()\n"),
    (
        "security.command-injection",
        "import subprocess\nsubprocess.run(cmd, shell=True)\n",
        2,
        "import subprocess\nsubprocess.run(['ls', path])\nsubprocess.run(cmd, shell=False)\n",
    ),
    (
        "security.command-injection",
        "import os\n\nos.system('tar czf ' + path)\n",
        3,
        "import os\n\nos.remove(path)\n",
    ),
    ("security.command-injection", "import os\nos.popen(cmd)\n", 2, "import os\nos.getcwd()\n"),
    (
        "security.command-injection",
        "from subprocess import Popen as P\nP(cmd, shell=True)\n",
        2,
        "from subprocess import Popen as P\nP([cmd])\n",
    ),
    (
        "security.deserialization",
        "import pickle\ndata = pickle.loads(blob)\n",
        2,
        "import json\ndata = json.loads(blob)\n",
    ),
    (
        "security.deserialization",
        "import marshal\n\ncode = marshal.load(handle)\n",
        3,
        "import json\n\ncode = json.load(handle)\n",
    ),
    (
        "security.yaml-load",
        "import yaml\ncfg = yaml.load(text)\n",
        2,
        "import yaml\ncfg = yaml.safe_load(text)\ncfg = yaml.load(text, Loader=yaml.SafeLoader)\n",
    ),
    (
        "security.yaml-load",
        "import yaml\ncfg = yaml.load(text, Loader=yaml.Loader)\n",
        2,
        "import yaml\ncfg = yaml.load(text, yaml.CSafeLoader)\n",
    ),
    (
        "security.hardcoded-secret",
        'import os\nDB_PASSWORD = "hunter2"\n',
        2,
        'DB_PASSWORD = os.environ["DB_PASSWORD"]\npassword = ""\ntoken_type = "bearer"\n',
    ),
    (
        "security.hardcoded-secret",
        'connect(\n    host="db",\n    password="hunter2",\n)\n',
        3,
        'connect(\n    host="db",\n    password=os.environ["PW"],\n)\n',
    ),
    (
        "security.hardcoded-secret",
        'settings = {"api_key": "a1b2c3d4"}\n',
        1,
        'settings = {"api_key": "${API_KEY}"}\n',
    ),
    (
        "security.hardcoded-secret",
        'AWS_ID = "AKIAIOSFODNN7EXAMPLE"\n',
        1,
        'AWS_ID = "AKIA-not-a-real-key"\n',
    ),
    (
        "security.hardcoded-secret",
        'client = Client("sk-abcdefghijklmnopqrstuvwxyz123456")\n',
        1,
        'client = Client("sk-short")\n',
    ),
    (
        "security.hardcoded-secret",
        'PEM = """\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n"""\n',
        2,
        'PEM = """\n-----BEGIN PUBLIC KEY-----\nMIIEow\n"""\n',
    ),
    (
        "security.sql-injection",
        'cursor.execute(f"SELECT * FROM users WHERE id = {uid}")\n',
        1,
        'cursor.execute("SELECT * FROM users WHERE id = %s", (uid,))\n',
    ),
    (
        "security.sql-injection",
        """\
        def find(cursor, name):
            query = "SELECT * FROM users WHERE name = '" + name + "'"
            cursor.execute(query)
        """,
        3,
        """\
        def find(cursor, name):
            query = "SELECT * FROM users WHERE name = %s"
            cursor.execute(query, (name,))
        """,
    ),
    (
        "security.sql-injection",
        """\
        def find(cursor, name):
            query = "SELECT * FROM users"
            query += " WHERE name = '" + name + "'"
            cursor.executemany(query, [])
        """,
        4,
        """\
        def find(cursor, name):
            query = "SELECT * FROM users"
            query += " WHERE name = %s"
            cursor.executemany(query, [(name,)])
        """,
    ),
    (
        "security.sql-injection",
        "db.execute(\"DELETE FROM items WHERE id = '%s'\" % item_id)\n",
        1,
        "db.execute('DELETE FROM items WHERE id = %s', (item_id,))\n",
    ),
    (
        "security.sql-injection",
        "db.execute(\"UPDATE items SET name = '{}'\".format(name))\n",
        1,
        'log.execute("updated {}".format(name))\n',
    ),
    (
        "quality.bare-except",
        "try:\n    work()\nexcept:\n    pass\n",
        3,
        "try:\n    work()\nexcept Exception:\n    pass\n",
    ),
    (
        "quality.mutable-default",
        "def add(item, items=[]):\n    return items\n",
        1,
        "def add(item, items=None, pair=()):\n    return items\n",
    ),
    (
        "quality.mutable-default",
        "def add(item, *, seen=dict()):\n    return seen\n",
        1,
        "def add(item, *, seen=frozenset()):\n    return seen\n",
    ),
    (
        "quality.assert-validation",
        "def withdraw(amount):\n    assert amount > 0\n    return amount\n",
        2,
        "def test_pay(amount):\n    assert amount > 0\n\ndef g(x):\n    y = f()\n    assert y\n",
    ),
    ("style.todo", "x = 1  # TODO: remove\n", 1, 'x = "TODO in a string, not a comment"\n'),
    ("style.line-too-long", "x = '" + "a" * 130 + "'\n", 1, "x = '" + "a" * 100 + "'\n"),
]


@pytest.mark.parametrize(("rule", "positive", "line", "safe"), PYTHON_CASES)
def test_python_rule_fires_on_positive_and_not_on_safe_twin(
    local: LocalProvider, rule: str, positive: str, line: int, safe: str
) -> None:
    assert (line, rule) in hits(local, positive)
    assert rule not in {found_rule for _, found_rule in hits(local, safe)}


def test_every_python_rule_has_a_case() -> None:
    covered = {case[0] for case in PYTHON_CASES} | {"quality.long-function", "syntax.error"}
    assert covered >= set(RULES) - {"security.xss"}


def _function(statements: int) -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(statements))
    return f'def big():\n    """Docstrings do not count."""\n{body}'


def test_long_function_limit_is_exclusive_and_configurable(local: LocalProvider) -> None:
    assert (1, "quality.long-function") in hits(local, _function(61))
    assert hits(local, _function(60)) == []
    strict = LocalProvider(max_function_statements=5)
    assert (1, "quality.long-function") in hits(strict, _function(6))


def test_line_length_limit_is_configurable() -> None:
    provider = LocalProvider(max_line_length=20)
    assert hits(provider, "x = 'abcdefghijklmnopqrstuvwxyz'\n") == [(1, "style.line-too-long")]


def test_key_shapes_are_critical_and_one_finding_per_line(local: LocalProvider) -> None:
    result = local.analyze('API_KEY = "AKIAIOSFODNN7EXAMPLE"\n', "python")
    assert [(f.rule, f.severity) for f in result.findings] == [
        ("security.hardcoded-secret", "critical")
    ]


def test_secret_messages_never_repeat_the_secret(local: LocalProvider) -> None:
    code = 'password = "correct-horse-battery"\nKEY = "AKIAIOSFODNN7EXAMPLE"\n'
    messages = " ".join(f.message for f in local.analyze(code, "python").findings)
    assert "correct-horse-battery" not in messages
    assert "AKIAIOSFODNN7EXAMPLE" not in messages


def test_findings_are_sorted_by_line(local: LocalProvider) -> None:
    code = "try:\n    eval(x)\nexcept:\n    pass\n\ndef f(a=[]):\n    return exec(a)\n"
    lines = [line for line, _ in hits(local, code)]
    assert lines == sorted(lines)
    assert lines == [2, 3, 6, 7]


def test_rules_select_a_category_or_a_single_rule(local: LocalProvider) -> None:
    code = "def f(a=[]):\n    try:\n        eval(a)  # FIXME\n    except:\n        pass\n"
    assert {rule for _, rule in hits(local, code)} == {
        "quality.mutable-default",
        "security.eval",
        "quality.bare-except",
        "style.todo",
    }
    assert hits(local, code, rules=["security"]) == [(3, "security.eval")]
    assert hits(local, code, rules=["quality.bare-except"]) == [(4, "quality.bare-except")]
    assert {rule for _, rule in hits(local, code, rules=["style", "security.eval"])} == {
        "security.eval",
        "style.todo",
    }


@pytest.mark.parametrize("rules", [["nonsense"], [], "security"])
def test_bad_rule_selectors_are_rejected(local: LocalProvider, rules: object) -> None:
    with pytest.raises(InvalidInput, match="rule"):
        local.analyze("x = 1\n", "python", rules=rules)  # type: ignore[arg-type]


def test_syntax_error_is_a_finding_not_an_exception(local: LocalProvider) -> None:
    result = local.analyze("x = 1\ndef broken(:\n    pass\n", "python", rules=["security"])
    assert [(f.line, f.rule) for f in result.findings] == [(2, "syntax.error")]
    assert "does not parse" in result.findings[0].message


def test_syntax_error_still_reports_leaked_keys(local: LocalProvider) -> None:
    found = hits(local, 'KEY = "AKIAIOSFODNN7EXAMPLE"\nif x\n')
    assert found == [(1, "security.hardcoded-secret"), (2, "syntax.error")]


def test_nul_bytes_are_a_syntax_finding(local: LocalProvider) -> None:
    assert [rule for _, rule in hits(local, "x = 1\x00\n")] == ["syntax.error"]


OTHER_LANGUAGE_CASES = [
    ("javascript", "const x = 1;\nconst y = eval(input);\n", 2, "security.eval"),
    ("typescript", "el.innerHTML = html;\n", 1, "security.xss"),
    ("javascript", "\n\ndocument.write(data);\n", 3, "security.xss"),
    ("php", "<?php\n$out = exec($cmd);\n", 2, "security.command-injection"),
    ("php", "<?php\nsystem('ls ' . $dir);\n", 2, "security.command-injection"),
    ("c", "int main() {\n  system(cmd);\n}\n", 2, "security.command-injection"),
    ("javascript", 'const API_KEY = "abc123def456";\n', 1, "security.hardcoded-secret"),
    ("go", 'password := "hunter2"\n', 1, "security.hardcoded-secret"),
    ("java", 'String q = "SELECT * FROM users WHERE id = " + id;\n', 1, "security.sql-injection"),
    ("javascript", "db.query(`SELECT * FROM t WHERE id = ${id}`);\n", 1, "security.sql-injection"),
    ("php", "$q = \"SELECT * FROM users WHERE name = '$name'\";\n", 1, "security.sql-injection"),
    ("go", "x := 1 // TODO: handle errors\n", 1, "style.todo"),
    ("ruby", "x = 1\n# FIXME later\n", 2, "style.todo"),
    ("rust", 'let s = "' + "a" * 130 + '";\n', 1, "style.line-too-long"),
]


@pytest.mark.parametrize(("language", "code", "line", "rule"), OTHER_LANGUAGE_CASES)
def test_pattern_rules_report_the_right_line(
    local: LocalProvider, language: str, code: str, line: int, rule: str
) -> None:
    assert (line, rule) in hits(local, code, language)


@pytest.mark.parametrize(
    ("language", "code"),
    [
        (
            "javascript",
            "const m = regex.exec(s);\nel.textContent = html;\nif (a.innerHTML === b) {}\n",
        ),
        ("javascript", 'db.query("SELECT * FROM t WHERE id = $1", [id]);\n'),
        ("php", '<?php\n$stmt = $pdo->prepare("SELECT * FROM users WHERE id = ?");\n'),
        ("go", 'tokenType := "bearer"\nif password == "" {\n}\n'),
        ("c", "int x = my_system(cmd);\n"),
        ("javascript", 'const s = "TODO: this is a string";\n'),
    ],
)
def test_pattern_rules_stay_quiet_on_safe_code(
    local: LocalProvider, language: str, code: str
) -> None:
    assert hits(local, code, language) == []


def test_language_aliases_and_unknown_languages(local: LocalProvider) -> None:
    assert local.analyze("eval(x)\n", "JS").language == "javascript"
    assert hits(local, "eval(x)\n", "py") == [(1, "security.eval")]
    # No rule set for the language: only the language-independent checks run.
    assert hits(local, "key: AKIAIOSFODNN7EXAMPLE\n", "elm") == [(1, "security.hardcoded-secret")]


def test_usage_is_estimated_from_code_size(local: LocalProvider) -> None:
    code = "x = 1\n" * 100
    usage = local.analyze(code, "python").usage
    assert usage.prompt_tokens == math.ceil(len(code) / 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_result_round_trips_through_json(local: LocalProvider) -> None:
    result = local.analyze("eval(x)\ntry:\n    pass\nexcept:\n    pass\n", "python")
    restored = AnalysisResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored == result


@pytest.mark.parametrize(
    "data", [{}, {"findings": [{"line": 1}], "language": "python", "model": "m"}]
)
def test_from_dict_rejects_malformed_data(data: dict[str, object]) -> None:
    with pytest.raises(CodecError):
        AnalysisResult.from_dict(data)


def test_finding_rejects_unknown_severity() -> None:
    with pytest.raises(ValueError, match="severity"):
        Finding(line=1, rule="x.y", severity="urgent", message="m")


@pytest.mark.parametrize(
    ("code", "language", "match"),
    [
        (b"x = 1", "python", "code must be a str"),
        ("x = 1", "", "language"),
        ("x", None, "language"),
    ],
)
def test_analyze_validates_input(
    local: LocalProvider, code: object, language: object, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        local.analyze(code, language)  # type: ignore[arg-type]


def test_local_provider_refuses_other_models(local: LocalProvider) -> None:
    with pytest.raises(InvalidInput, match="SLUICE_AI_PROVIDER=openai"):
        local.analyze("x = 1", "python", model="gpt-4o")


# Embeddings


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_are_normalised_fixed_size_and_batch_ordered(local: LocalProvider) -> None:
    texts = ["def add(a, b): return a + b", "SELECT * FROM users", "x = [1, 2, 3]"]
    result = local.embed(texts)
    assert len(result.vectors) == 3
    assert all(len(vector) == 256 for vector in result.vectors)
    assert all(math.isclose(math.sqrt(_cosine(v, v)), 1.0) for v in result.vectors)
    assert result.vectors[1] == local.embed([texts[1]]).vectors[0]
    assert result.model == "sluice-hash-256"
    assert result.usage.prompt_tokens > 0


def test_embedding_dimension_is_configurable() -> None:
    assert len(LocalProvider(dimensions=64).embed(["a b c"]).vectors[0]) == 64


def test_text_without_tokens_embeds_to_zero(local: LocalProvider) -> None:
    assert local.embed(["", "   \n"]).vectors == [[0.0] * 256, [0.0] * 256]


def test_similar_code_is_closer_than_unrelated_code(local: LocalProvider) -> None:
    a, b, c = local.embed(
        [
            "def total_price(items):\n    return sum(item.price for item in items)\n",
            "def total_cost(items):\n    return sum(item.cost for item in items)\n",
            "SELECT name, email FROM customers WHERE created_at > NOW() - INTERVAL '1 day'",
        ]
    ).vectors
    assert _cosine(a, b) > _cosine(a, c) + 0.3


def test_embeddings_are_identical_across_processes(local: LocalProvider) -> None:
    text = "def handler(request): return render(request, 'index.html')"
    script = (
        "import json, sys; from sluice.ai import LocalProvider; "
        "print(json.dumps(LocalProvider().embed([sys.argv[1]]).vectors[0]))"
    )
    vectors = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script, text], env=env, capture_output=True, check=True
        )
        vectors.append(json.loads(out.stdout))
    assert vectors[0] == vectors[1] == local.embed([text]).vectors[0]


@pytest.mark.parametrize("texts", [[], "just a string", ["ok", 3]])
def test_embed_validates_input(local: LocalProvider, texts: object) -> None:
    with pytest.raises(InvalidInput, match="text"):
        local.embed(texts)  # type: ignore[arg-type]


# Chat


def test_complete_reviews_fenced_code(local: LocalProvider) -> None:
    question = "Can you review this?\n```python\nimport os\nos.system(cmd)\nresult = eval(x)\n```"
    completion = local.complete([{"role": "user", "content": question}])
    assert "Found 2 issue(s)" in completion.text
    assert "line 2 [high] security.command-injection" in completion.text
    assert "line 3 [high] security.eval" in completion.text
    assert completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0


def test_complete_reviews_unfenced_python(local: LocalProvider) -> None:
    completion = local.complete([{"role": "user", "content": "import pickle\npickle.loads(b)\n"}])
    assert "security.deserialization" in completion.text


def test_complete_reports_clean_code(local: LocalProvider) -> None:
    completion = local.complete([{"role": "user", "content": "```go\nx := 1\n```"}])
    assert completion.text == "No issues found in this go code."


def test_complete_without_code_explains_and_echoes(local: LocalProvider) -> None:
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    text = local.complete(messages).text
    assert "fenced block" in text
    assert "What is the capital of France?" in text


def test_complete_honours_max_tokens(local: LocalProvider) -> None:
    completion = local.complete([{"role": "user", "content": "hello there"}], max_tokens=3)
    assert completion.finish_reason == "length"
    assert len(completion.text) <= 12


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "empty"),
        ("hello", "list"),
        ([{"content": "hi"}], "role"),
        ([{"role": "user", "content": 42}], "content"),
        (["hi"], "mapping"),
    ],
)
def test_complete_validates_messages(local: LocalProvider, messages: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        local.complete(messages)  # type: ignore[arg-type]


# Wiring


def test_local_provider_satisfies_the_protocol(local: LocalProvider) -> None:
    assert isinstance(local, AIProvider)
    assert local.name == "local"


def test_get_provider_defaults_to_local(tmp_path: Path) -> None:
    provider = get_provider(load_settings({"SLUICE_DATA_DIR": str(tmp_path)}))
    assert isinstance(provider, LocalProvider)
    assert provider.analyze("x = 1", "python").model == "sluice-local-1"


def test_usage_serialises() -> None:
    assert Usage.from_dict(Usage(1, 2, 3).to_dict()) == Usage(1, 2, 3)


def test_sample_tree_has_the_advertised_problems(local: LocalProvider) -> None:
    found: dict[str, set[str]] = {}
    for path in EXAMPLES.rglob("*"):
        language = detect_language(path)
        if path.is_file() and language:
            result = local.analyze(path.read_text(), language)
            found[path.relative_to(EXAMPLES).as_posix()] = {f.rule for f in result.findings}
    assert found["models.py"] == set()
    assert {"security.sql-injection", "security.hardcoded-secret"} <= found["views.py"]
    assert {
        "security.eval",
        "security.command-injection",
        "security.yaml-load",
        "security.deserialization",
        "quality.bare-except",
        "quality.mutable-default",
    } <= found["utils.py"]
    assert "quality.long-function" in found["reports.py"]
    assert {"security.eval", "security.xss"} <= found["web/app.js"]
    assert found["build/ignored.py"] == {"security.eval"}
