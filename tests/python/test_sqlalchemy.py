"""The `trino` package's SQLAlchemy dialect, unmodified, inspecting Flotilla's catalogs."""
import sqlalchemy
from sqlalchemy import inspect, text


def engine_for(host_port, catalog="tpch", schema="tiny"):
    host, port = host_port
    return sqlalchemy.create_engine(f"trino://test@{host}:{port}/{catalog}/{schema}")


def test_inspection_lists_schemas_tables_and_columns(host_port):
    engine = engine_for(host_port)
    try:
        inspector = inspect(engine)
        schemas = inspector.get_schema_names()
        assert "tiny" in schemas and "information_schema" in schemas
        tables = inspector.get_table_names(schema="tiny")
        assert sorted(tables) == ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
        columns = inspector.get_columns("nation", schema="tiny")
        assert [c["name"] for c in columns] == ["n_nationkey", "n_name", "n_regionkey", "n_comment"]
        assert isinstance(columns[0]["type"], sqlalchemy.types.BigInteger)
        assert isinstance(columns[1]["type"], sqlalchemy.types.String)
        lineitem = {c["name"]: c["type"] for c in inspector.get_columns("lineitem", schema="tiny")}
        assert isinstance(lineitem["l_extendedprice"], sqlalchemy.types.DECIMAL)
        assert (lineitem["l_extendedprice"].precision, lineitem["l_extendedprice"].scale) == (15, 2)
        assert isinstance(lineitem["l_shipdate"], sqlalchemy.types.Date)
        assert inspector.has_table("orders", schema="tiny")
        assert not inspector.has_table("nope", schema="tiny")
    finally:
        engine.dispose()


def test_queries_with_bound_parameters(host_port):
    engine = engine_for(host_port)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT r_name FROM region WHERE r_regionkey = :key"), {"key": 2}).fetchall()
            assert rows == [("ASIA",)]
            catalogs = [row[0] for row in connection.execute(text('SELECT "table_cat" FROM "system"."jdbc"."catalogs"'))]
            assert "tpch" in catalogs and "system" in catalogs
    finally:
        engine.dispose()
