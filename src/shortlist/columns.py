"""Canonical column names of the generic data model; nothing downstream spells them inline."""

USER_ID = "user_id"  # external user id (string)
ITEM_ID = "item_id"  # external item id (string)
USER_IDX = "user_idx"  # dense int32 user id, 0..n_users-1
ITEM_IDX = "item_idx"  # dense int32 item id, 0..n_items-1
TIMESTAMP = "timestamp"  # interaction time, UTC, microseconds
PRICE = "price"
QUANTITY = "quantity"  # units; identical source rows are merged into one row with quantity n
CHANNEL = "channel"
MONTH = "month"  # partition key of the interactions table, "YYYY-MM"
# Optional business-rule tables (inventory, regions, age restrictions)
UNITS = "units"  # units in stock; 0 or negative (oversold) = out of stock
REGION = "region"  # region name in the source files, its int code in the offline store
MIN_AGE = "min_age"  # minimum buyer age in years
