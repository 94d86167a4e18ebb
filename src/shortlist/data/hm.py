"""The H&M adapter: the Kaggle files exactly as published, mapped onto the generic model.

This is the only module that knows H&M column names.
"""

from __future__ import annotations

from pathlib import Path

from shortlist import columns as C
from shortlist.config import AttributeKind, SchemaSettings
from shortlist.data.layout import (
    SourceLayout,
    TableSource,
    id_column,
    interaction_columns,
    rule_sources,
)
from shortlist.errors import DataError

ARTICLES, CUSTOMERS, TRANSACTIONS = "articles.csv", "customers.csv", "transactions_train.csv"
SUBMISSION_USER_COLUMN = "customer_id"  # the competition's submission file: customer_id,prediction

_CAT, _NUM, _TEXT = AttributeKind.CATEGORICAL, AttributeKind.NUMERIC, AttributeKind.TEXT
# Every *_no / *_code / *_id column is a label (product_type_no 253 is not a quantity).
ARTICLE_KINDS = {
    "product_code": _CAT,
    "prod_name": _TEXT,
    "product_type_no": _CAT,
    "product_type_name": _CAT,
    "product_group_name": _CAT,
    "graphical_appearance_no": _CAT,
    "graphical_appearance_name": _CAT,
    "colour_group_code": _CAT,
    "colour_group_name": _CAT,
    "perceived_colour_value_id": _CAT,
    "perceived_colour_value_name": _CAT,
    "perceived_colour_master_id": _CAT,
    "perceived_colour_master_name": _CAT,
    "department_no": _CAT,
    "department_name": _CAT,
    "index_code": _CAT,
    "index_name": _CAT,
    "index_group_no": _CAT,
    "index_group_name": _CAT,
    "section_no": _CAT,
    "section_name": _CAT,
    "garment_group_no": _CAT,
    "garment_group_name": _CAT,
    "detail_desc": _TEXT,
}
CUSTOMER_KINDS = {
    "FN": _NUM,
    "Active": _NUM,
    "club_member_status": _CAT,
    "fashion_news_frequency": _CAT,
    "age": _NUM,
    "postal_code": _CAT,
}


def layout(folder: Path) -> SourceLayout:
    """The three Kaggle files in `folder`, plus the optional business-rule files
    (`inventory`, `item_regions`, `user_regions`, `item_restrictions`, keyed by `article_id`
    or `customer_id`).

    Ids stay strings (article ids keep their leading zero); an empty FN or Active means 0;
    identical transaction rows (multi-unit purchases) become one row with a quantity.
    """
    for name in (ARTICLES, CUSTOMERS, TRANSACTIONS):
        if not (folder / name).is_file():
            raise DataError(
                f"missing file {name} in {folder} (the H&M layout needs "
                f"{ARTICLES}, {CUSTOMERS} and {TRANSACTIONS})"
            )
    return SourceLayout(
        adapter="hm",
        items=TableSource(
            "items", folder / ARTICLES, [id_column(C.ITEM_ID, "article_id")], kinds=ARTICLE_KINDS
        ),
        users=TableSource(
            "users",
            folder / CUSTOMERS,
            [id_column(C.USER_ID, "customer_id")],
            kinds=CUSTOMER_KINDS,
            fill_null={"FN": "0", "Active": "0"},
        ),
        interactions=TableSource(
            "interactions",
            folder / TRANSACTIONS,
            interaction_columns(
                "customer_id",
                "article_id",
                "t_dat",
                "DATE",
                "CAST({col} AS TIMESTAMP)",
                "price",
                None,
                "sales_channel_id",
            ),
        ),
        roles=SchemaSettings(user_age="age", user_region="postal_code", item_group="product_code"),
        rules=rule_sources(folder, "article_id", "customer_id"),
    )
