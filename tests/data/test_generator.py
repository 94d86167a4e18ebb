"""The synthetic H&M generator: exact Kaggle layout, determinism, measurable planted structure."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from shortlist.data.generator import SCALES, generate, price_strings, resolve
from shortlist.data.generator import transactions as T
from shortlist.data.generator import vocab as V
from shortlist.errors import ConfigError

FILES = ("articles.csv", "customers.csv", "transactions_train.csv")
ARTICLE_COLUMNS = (
    "article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,"
    "graphical_appearance_no,graphical_appearance_name,colour_group_code,colour_group_name,"
    "perceived_colour_value_id,perceived_colour_value_name,perceived_colour_master_id,"
    "perceived_colour_master_name,department_no,department_name,index_code,index_name,"
    "index_group_no,index_group_name,section_no,section_name,garment_group_no,"
    "garment_group_name,detail_desc"
)
CUSTOMER_COLUMNS = "customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code"
TRANSACTION_COLUMNS = "t_dat,customer_id,article_id,price,sales_channel_id"
HEX64 = r"^[0-9a-f]{64}$"
N_ROWS = 120_000


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory):
    """Two years of a small shop: enough rows for every planted effect to show."""
    out = tmp_path_factory.mktemp("gen")
    summary = generate(out, scale="small", users=6000, items=3000, interactions=N_ROWS, seed=3)
    return summary


@pytest.fixture(scope="module")
def con(gen) -> duckdb.DuckDBPyConnection:
    """Articles (a), customers (c) and transactions joined to both (t), all read as text first."""
    db = duckdb.connect()
    d = gen.out_dir
    db.execute(f"CREATE TABLE a AS SELECT * FROM read_csv('{d}/articles.csv', all_varchar=true)")
    db.execute(f"CREATE TABLE c AS SELECT * FROM read_csv('{d}/customers.csv', all_varchar=true)")
    tx = d / "transactions_train.csv"
    db.execute(f"CREATE TABLE raw AS SELECT * FROM read_csv('{tx}', all_varchar=true)")
    db.execute(
        "CREATE TABLE t AS SELECT r.t_dat::DATE AS t_dat, r.customer_id, r.article_id, "
        "r.price::DOUBLE AS price, r.sales_channel_id::INT AS ch, a.product_code, a.section_no, "
        "a.index_group_name, a.product_group_name, a.product_type_name, "
        "TRY_CAST(c.age AS DOUBLE) AS age "
        "FROM raw r JOIN a USING (article_id) JOIN c USING (customer_id)"
    )
    return db


def _digest(folder: Path) -> list[bytes]:
    return [(folder / f).read_bytes() for f in FILES]


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    kw = {"scale": "tiny", "users": 300, "items": 250, "interactions": 5000, "weeks": 20}
    generate(tmp_path / "a", seed=7, **kw)
    generate(tmp_path / "b", seed=7, **kw)
    generate(tmp_path / "c", seed=8, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert all(
        x != y for x, y in zip(_digest(tmp_path / "a"), _digest(tmp_path / "c"), strict=True)
    )
    assert not list((tmp_path / "a").glob("*.partial"))


def test_summary_and_exact_row_count(gen) -> None:
    assert gen.interactions == N_ROWS
    assert (gen.users, gen.items) == (6000, 3000)
    assert gen.start == dt.date(2018, 9, 20) and gen.end == dt.date(2020, 9, 22)
    lines = (gen.out_dir / "transactions_train.csv").read_bytes().count(b"\n")
    assert lines == N_ROWS + 1


def test_headers_match_kaggle(gen) -> None:
    heads = [(gen.out_dir / f).open().readline().rstrip("\n") for f in FILES]
    assert heads == [ARTICLE_COLUMNS, CUSTOMER_COLUMNS, TRANSACTION_COLUMNS]


def test_articles_ids_codes_and_names_are_consistent(gen) -> None:
    a = pl.read_csv(gen.out_dir / "articles.csv", infer_schema=False)
    assert a.height == 3000 and a["article_id"].n_unique() == 3000
    assert a["article_id"].str.contains(r"^0\d{9}$").all()
    assert (a["article_id"].str.slice(0, 7) == a["product_code"].str.zfill(7)).all()
    assert a["article_id"].to_list() == sorted(a["article_id"].to_list())
    variants = a.group_by("product_code").len()
    assert variants["len"].max() > 1 and 1.5 < a.height / variants.height < 3.5
    for no, name in [
        ("product_type_no", "product_type_name"),
        ("graphical_appearance_no", "graphical_appearance_name"),
        ("colour_group_code", "colour_group_name"),
        ("perceived_colour_value_id", "perceived_colour_value_name"),
        ("perceived_colour_master_id", "perceived_colour_master_name"),
        ("department_no", "department_name"),
        ("index_code", "index_name"),
        ("index_group_no", "index_group_name"),
        ("section_no", "section_name"),
        ("garment_group_no", "garment_group_name"),
    ]:
        assert a.group_by(no).agg(pl.col(name).n_unique())[name].max() == 1, no
    per_product = a.group_by("product_code").agg(pl.col("prod_name", "section_no").n_unique())
    assert per_product["prod_name"].max() == 1 and per_product["section_no"].max() == 1
    assert a["detail_desc"].null_count() < 0.02 * a.height


def test_texts_reflect_type_colour_and_style(gen) -> None:
    a = pl.read_csv(gen.out_dir / "articles.csv", infer_schema=False)
    words = a["prod_name"].str.split(" ").list.len()
    assert words.is_between(2, 4).all()
    has = a.filter(pl.col("detail_desc").is_not_null())
    lower = has["detail_desc"].str.to_lowercase()
    colour = has["colour_group_name"].str.to_lowercase()
    assert all(c in d for c, d in zip(colour, lower, strict=True))
    noun = has["prod_name"].str.split(" ").list.last().str.to_lowercase()
    assert all(n in d for n, d in zip(noun, lower, strict=True))
    # Materials are a style-cluster trait: within a section, text is far from uniform.
    swim = a.filter(pl.col("product_group_name") == "Swimwear")["detail_desc"].drop_nulls()
    assert swim.str.contains("swim|shimmering|polyamide").mean() > 0.9


def test_customers_formats(gen) -> None:
    c = pl.read_csv(gen.out_dir / "customers.csv", infer_schema=False)
    assert c.height == 6000 and c["customer_id"].n_unique() == 6000
    assert c["customer_id"].str.contains(HEX64).all()
    assert c["postal_code"].str.contains(HEX64).all()
    for col in ("FN", "Active"):
        assert set(c[col].drop_nulls().unique()) == {"1.0"}
        assert 0.1 < c[col].null_count() / c.height < 0.9
    assert set(c["club_member_status"].drop_nulls()) <= {"ACTIVE", "PRE-CREATE", "LEFT CLUB"}
    assert set(c["fashion_news_frequency"].drop_nulls()) <= {"NONE", "Regularly", "Monthly"}
    ages = c["age"].drop_nulls()
    assert ages.str.contains(r"^\d+\.0$").all() and 0 < c["age"].null_count() < 0.05 * c.height
    age = ages.cast(pl.Float64).to_numpy()
    assert age.min() >= 16 and age.max() <= 99
    young, mid, old = (
        ((age >= 20) & (age < 27)).mean(),
        ((age >= 34) & (age < 41)).mean(),
        ((age >= 46) & (age < 53)).mean(),
    )
    assert young > mid and old > mid  # bimodal, as in H&M
    sizes = c["postal_code"].value_counts()["count"]
    assert sizes.max() > 0.04 * c.height and sizes.median() <= 3  # heavy-tailed postal codes


def test_transactions_formats_and_references(gen, con) -> None:
    raw = pl.read_csv(gen.out_dir / "transactions_train.csv", infer_schema=False)
    assert raw["t_dat"].str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    assert raw["t_dat"].to_list() == sorted(raw["t_dat"].to_list())
    assert raw["t_dat"].min() == "2018-09-20" and raw["t_dat"].max() == "2020-09-22"
    assert raw["price"].str.contains(r"^0\.\d{1,16}$").all()
    assert set(raw["sales_channel_id"].unique()) == {"1", "2"}
    assert raw["article_id"].str.contains(r"^0\d{9}$").all()
    assert con.execute("SELECT count(*) FROM t").fetchall()[0][0] == N_ROWS  # every id resolves
    assert con.execute("SELECT min(price) > 0 AND max(price) < 1 FROM t").fetchall()[0][0]


def test_price_text_is_hm_style() -> None:
    text = price_strings(3000)
    assert text[1999] == "0.0338813559322033"  # 19.99 SEK, truncated like H&M
    assert text[2950] == "0.05"


def _one(con, sql: str) -> float:
    return con.execute(sql).fetchall()[0][0]


def test_popularity_activity_and_baskets_are_heavy_tailed(con) -> None:
    top = _one(
        con,
        "SELECT sum(n) / (SELECT count(*) FROM t) FROM (SELECT count(*) n FROM t "
        "GROUP BY article_id ORDER BY n DESC LIMIT 30)",
    )
    assert top > 0.08  # top 1% of 3,000 articles: far above the uniform 1%
    mean, median = con.execute(
        "SELECT avg(n), median(n) FROM (SELECT count(*) n FROM t GROUP BY customer_id)"
    ).fetchall()[0]
    assert median < 0.7 * mean
    b_mean = _one(con, "SELECT avg(n) FROM (SELECT count(*) n FROM t GROUP BY customer_id, t_dat)")
    assert 2.0 < b_mean < 6.0
    assert 0.55 < _one(con, "SELECT avg((ch = 2)::DOUBLE) FROM t") < 0.85


def test_repeats_and_multi_unit_duplicates(con, gen) -> None:
    incl, later = con.execute(
        "WITH g AS (SELECT customer_id, article_id, t_dat, count(*) n FROM t GROUP BY ALL), "
        "p AS (SELECT sum(n) s, arg_min(n, t_dat) f FROM g GROUP BY customer_id, article_id) "
        "SELECT sum(s - 1) / sum(s), sum(s - f) / sum(s) FROM p"
    ).fetchall()[0]
    assert 0.05 < incl < 0.35 and 0.01 < later < 0.2
    dups = _one(
        con, "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT * FROM raw)) FROM raw"
    )
    assert 0.02 < dups / gen.interactions < 0.2


def test_recency_recent_launches_dominate_last_week(con) -> None:
    # Launch shows as the first sale; last week's bestsellers are mostly young articles.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE first_sale AS "
        "SELECT article_id, min(t_dat) AS first FROM t GROUP BY ALL"
    )
    recent_share_top = _one(
        con,
        "SELECT avg((f.first >= DATE '2020-09-22' - 70)::DOUBLE) FROM (SELECT article_id, "
        "count(*) n FROM t WHERE t_dat > DATE '2020-09-15' GROUP BY ALL ORDER BY n DESC, "
        "article_id LIMIT 20) JOIN first_sale f USING (article_id)",
    )
    recent_share_all = _one(
        con, "SELECT avg((first >= DATE '2020-09-22' - 70)::DOUBLE) FROM first_sale"
    )
    assert recent_share_top > 2 * recent_share_all


def test_customers_concentrate_on_few_sections(con) -> None:
    def concentration(rows: pl.DataFrame) -> float:
        per = rows.group_by("customer_id", "section_no").len()
        top = per.group_by("customer_id").agg(
            (pl.col("len").max() / pl.col("len").sum()).alias("top"), pl.col("len").sum()
        )
        return top.filter(pl.col("len") >= 10)["top"].mean()

    rows = con.sql("SELECT customer_id, section_no FROM t").pl()
    # Baseline: the same rows with articles shuffled across customers (keeps popularity).
    shuffled = rows.with_columns(pl.col("section_no").shuffle(seed=0))
    assert concentration(rows) > concentration(shuffled) + 0.1


def test_seasonality_by_product_type(con) -> None:
    summer = [t[1] for t in V.PRODUCT_TYPES if 150 <= t[7] <= 200 and t[8] >= 1.0]
    winter = [t[1] for t in V.PRODUCT_TYPES if 300 <= t[7] <= 365 and t[8] >= 1.0]
    assert "Swimsuit" in summer and "Coat" in winter

    def share(types: list[str], months: str) -> float:
        names = ", ".join(f"'{t}'" for t in types)
        return _one(
            con,
            f"SELECT avg((product_type_name IN ({names}))::DOUBLE) FROM t "
            f"WHERE month(t_dat) IN ({months})",
        )

    assert share(summer, "5, 6, 7") > 2.5 * share(summer, "11, 12, 1")
    assert share(winter, "11, 12, 1") > 2.0 * share(winter, "5, 6, 7")


def test_age_shifts_taste(con) -> None:
    def divided(where: str) -> float:
        return _one(con, f"SELECT avg((index_group_name = 'Divided')::DOUBLE) FROM t WHERE {where}")

    assert divided("age < 25") > 1.5 * divided("age >= 45")


def test_baskets_mix_related_items(con) -> None:
    same_basket = _one(
        con,
        "WITH b AS (SELECT customer_id, t_dat, index_group_name g, count(*) n FROM t GROUP BY ALL)"
        ", tot AS (SELECT customer_id, t_dat, sum(n) s, sum(n * n) sq FROM b GROUP BY ALL) "
        "SELECT sum(sq - s) / sum(s * s - s) FROM tot WHERE s >= 2",
    )
    overall = _one(
        con,
        "WITH g AS (SELECT count(*) n FROM t GROUP BY index_group_name) "
        "SELECT sum(n * n) / (SELECT count(*) FROM t) ^ 2 FROM g",
    )
    assert same_basket > overall + 0.1  # basket pairs share an index group far more than chance


def _variant_jumps(folder: Path) -> int:
    """(customer, product) pairs bought in more than one colour on more than one day."""
    return duckdb.sql(
        f"SELECT count(*) FROM (SELECT r.customer_id, a.product_code FROM "
        f"read_csv('{folder}/transactions_train.csv', all_varchar=true) r JOIN "
        f"read_csv('{folder}/articles.csv', all_varchar=true) a USING (article_id) GROUP BY ALL "
        "HAVING count(DISTINCT article_id) > 1 AND count(DISTINCT t_dat) > 1)"
    ).fetchall()[0][0]


def test_colour_variant_jumps_beat_the_same_data_without_them(
    gen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same seed, same random draws: only the jump mechanism differs (chance alone is sizeable
    # because colours of one product share style cluster and popularity).
    monkeypatch.setattr(T, "P_VARIANT", 0.0)
    generate(tmp_path, scale="small", users=6000, items=3000, interactions=N_ROWS, seed=3)
    assert _variant_jumps(gen.out_dir) > 1.05 * _variant_jumps(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"scale": "huge"}, "scale"),
        ({"users": 0}, "users"),
        ({"items": -5}, "items"),
        ({"interactions": 2.5}, "interactions"),
        ({"weeks": 0}, "weeks"),
        ({"weeks": True}, "weeks"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        generate(tmp_path / "x", **kwargs)
    assert err.value.key == key and key in str(err.value)
    assert not (tmp_path / "x").exists()


def test_presets_and_overrides() -> None:
    assert set(SCALES) == {"tiny", "small", "medium", "full"}
    assert SCALES["full"] == {
        "users": 1_371_980,
        "items": 105_542,
        "interactions": 31_788_324,
        "weeks": 105,
    }
    assert resolve("tiny", items=77)["items"] == 77 and resolve("tiny")["weeks"] == 26
    with pytest.raises(ConfigError, match="must be one of tiny, small, medium, full"):
        resolve("x")


def test_tiny_preset_runs(tmp_path: Path) -> None:
    s = generate(tmp_path, scale="tiny", seed=1)
    assert (s.users, s.items, s.interactions) == (1000, 600, 20_000)
    assert s.start == s.end - dt.timedelta(days=7 * 26 - 2)
    assert np.isfinite(s.seconds)


def test_a_short_span_keeps_returning_customers(tmp_path: Path) -> None:
    """One week for more customers than its baskets: guaranteed baskets alone would fill the
    week and every customer would buy on exactly one day (none seen again in a later day's
    held-out window). Capped, some customers come back, as in real weeks (hm-sample: about a
    fifth of the last three days' buyers bought in the four days before)."""
    generate(tmp_path, scale="tiny", users=20_000, items=600, interactions=20_000, weeks=1, seed=0)
    t = pl.read_csv(tmp_path / "transactions_train.csv", columns=["t_dat", "customer_id"])
    days = t.group_by("customer_id").agg(pl.col("t_dat").n_unique())["t_dat"]
    assert (days > 1).mean() > 0.1
    late = t.filter(pl.col("t_dat") >= "2020-09-20")["customer_id"].unique()
    early = t.filter(pl.col("t_dat") < "2020-09-20")["customer_id"].unique()
    assert late.is_in(early.implode()).mean() > 0.1
