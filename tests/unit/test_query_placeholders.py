import pytest

from sluice.query import QueryParameterError
from sluice.query.placeholders import bind


def test_dollar_placeholders_take_a_mappings_values_in_order() -> None:
    clause, params = bind("SELECT * FROM projects WHERE owner_id = $1", {"owner_id": 7})
    assert str(clause) == "SELECT * FROM projects WHERE owner_id = :p1"
    assert params == {"p1": 7}
    clause, params = bind("SELECT $2, $1, $2", [10, 20])
    assert params == {"p1": 10, "p2": 20}


def test_colons_inside_literals_stay_literal_with_dollar_placeholders() -> None:
    clause, params = bind("SELECT 'a:b', x::text FROM t WHERE y = $1", (1,))
    assert ":b" not in clause._bindparams and set(clause._bindparams) == {"p1"}
    assert params == {"p1": 1}


def test_missing_and_extra_parameters_are_named() -> None:
    with pytest.raises(QueryParameterError, match=r"missing parameters: \$2"):
        bind("SELECT $1, $2", [1])
    with pytest.raises(QueryParameterError, match="unexpected parameters: extra"):
        bind("SELECT $1", {"a": 1, "extra": 2})
    with pytest.raises(QueryParameterError, match="missing parameters: owner"):
        bind("SELECT * FROM t WHERE a = :owner", {})
    with pytest.raises(QueryParameterError, match="unexpected parameters: zzz"):
        bind("SELECT * FROM t WHERE a = :owner", {"owner": 1, "zzz": 2})
    with pytest.raises(QueryParameterError, match=r"without gaps; missing: \$2"):
        bind("SELECT $1, $3", [1, 2, 3])
    with pytest.raises(QueryParameterError, match="non-empty"):
        bind("   ", None)
