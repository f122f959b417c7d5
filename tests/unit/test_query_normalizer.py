from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.query import QueryNormalizer
from sluice.query.placeholders import positional_placeholders

PG = QueryNormalizer("postgresql")
LITE = QueryNormalizer("sqlite")


def test_same_shape_same_fingerprint_across_literals_lists_case_comments_and_placeholders() -> None:
    variants = [
        "SELECT * FROM projects WHERE owner_id = 1 AND id IN (1, 2, 3)",
        "select *\n  from PROJECTS where OWNER_ID = 42 and id in (7) -- trailing",
        "SELECT * FROM projects /* c */ WHERE owner_id = $1 AND id IN ($2,$3,$4,$5)",
        "SELECT * FROM projects WHERE owner_id = :owner AND id IN (:a, :b)",
        "SELECT * FROM projects WHERE owner_id = %(owner_id)s AND id IN (%(x)s)",
    ]
    assert len({PG.fingerprint(v) for v in variants}) == 1


def test_different_shapes_differ() -> None:
    a = PG.fingerprint("SELECT id FROM projects WHERE owner_id = 1")
    assert a != PG.fingerprint("SELECT id FROM projects WHERE name = 'x'")
    assert a != PG.fingerprint("SELECT id FROM users WHERE owner_id = 1")
    assert a != PG.fingerprint("SELECT id FROM projects WHERE owner_id = 1 FOR UPDATE")


def test_tables_read_and_written() -> None:
    shape = PG.analyze(
        "SELECT r.id FROM code_review_results r JOIN analysis_sessions s ON s.id = r.session_id"
    )
    assert shape.tables_read == {"code_review_results", "analysis_sessions"}
    assert not shape.is_write and shape.cacheable
    cte = PG.analyze("WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d")
    assert cte.tables_written == {"a", "b"} and "d" not in cte.tables_read
    assert PG.analyze("UPDATE projects SET name = 'x' WHERE id = 1").tables_written == {"projects"}
    assert PG.analyze("TRUNCATE a, b").tables_written == {"a", "b"}
    assert PG.analyze("DROP TABLE s.t").tables_written == {"s.t"}
    assert PG.analyze("ALTER TABLE users ADD COLUMN x int").tables_written == {"users"}
    assert PG.analyze("SELECT * INTO copy FROM users").tables_written == {"copy"}
    assert LITE.analyze("INSERT INTO t (a) VALUES (?), (?)").tables_written == {"t"}


def test_multi_row_values_collapse() -> None:
    one = PG.fingerprint("INSERT INTO t (a, b) VALUES (1, 2)")
    assert one == PG.fingerprint("INSERT INTO t (a, b) VALUES (1, 2), (3, 4), (5, 6)")


def test_locking_and_volatile_queries_are_not_cacheable() -> None:
    for sql in (
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t WHERE created_at > NOW()",
        "SELECT random() FROM t",
        "SELECT CURRENT_TIMESTAMP",
        "SELECT nextval('seq')",
        "SELECT * FROM t WHERE d < datetime('now')",
        "SELECT my_function(1) FROM t",
        "SELECT * FROM pg_stat_activity",
    ):
        assert not PG.analyze(sql).cacheable, sql
    assert PG.analyze("SELECT lower(name), similarity(name, 'x') FROM projects").cacheable


def test_unparseable_sql_gets_a_marked_fallback_fingerprint() -> None:
    shape = PG.analyze("SELEC broken ((( FROM")
    assert not shape.parsed and not shape.cacheable
    assert shape.fingerprint == PG.analyze("selec   BROKEN ((( from").fingerprint
    assert shape.is_write  # unknown SQL may write anything
    assert not PG.analyze("select from from where").cacheable


def test_dollar_placeholders_inside_literals_and_comments_are_not_parameters() -> None:
    sql = "SELECT '$1', $$ $2 $$, \"$3\" -- $4\n /* $5 /* $6 */ */ FROM t WHERE a = $1 AND b=$2"
    assert [n for _, _, n in positional_placeholders(sql)] == [1, 2]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_normalizer_never_raises_on_any_text(sql: str) -> None:
    for normalizer in (PG, LITE):
        shape = normalizer.analyze(sql)
        assert len(shape.fingerprint) == 16
        assert shape.fingerprint == normalizer.analyze(sql).fingerprint


SQL_PIECES = st.sampled_from(
    ["SELECT", "*", "FROM", "t", "WHERE", "a", "=", "1", "'x'", "$1", ":p", "?", "(", ")", ",",
     "IN", "JOIN", "ON", "AND", "OR", "--", "/*", "*/", "$$", "'", '"', ";", "UPDATE", "SET",
     "DELETE", "INSERT", "INTO", "VALUES", "FOR", "UPDATE", "NOW()", "::", "%(x)s", "%s", "\n"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(SQL_PIECES, max_size=30))
def test_normalizer_and_table_extraction_survive_sql_like_noise(pieces: list[str]) -> None:
    sql = " ".join(pieces)
    for normalizer in (PG, LITE):
        shape = normalizer.analyze(sql)
        assert all(isinstance(t, str) for t in shape.tables_read | shape.tables_written)
        if shape.cacheable:
            assert not shape.is_write and not shape.locking
    positional_placeholders(sql)
