"""Typed settings: defaults, then the workspace's shortlist.toml, then SHORTLIST_* env, then flags.

Every key is documented in `default_config.toml` (shipped in the package); unknown keys and
out-of-range values are rejected at load time with the offending key named.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from shortlist.errors import ConfigError

CONFIG_FILE = "shortlist.toml"
ENV_PREFIX = "SHORTLIST_"
API_KEY_ENV = "SHORTLIST_API_KEY"  # the service's write key (wins over [service] api_key)
# SHORTLIST_* variables that are not settings of shortlist.toml
NOT_SETTINGS = (f"{ENV_PREFIX}WORKSPACE", API_KEY_ENV)


class AttributeKind(StrEnum):
    """How an item or user attribute is modelled downstream."""

    CATEGORICAL = "categorical"
    NUMERIC = "numeric"
    TEXT = "text"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestSettings(_Section):
    format: Literal["hm", "generic"] = "generic"
    on_bad_rows: Literal["fail", "skip"] = "fail"
    item_attributes: dict[str, AttributeKind] = Field(default_factory=dict)
    user_attributes: dict[str, AttributeKind] = Field(default_factory=dict)
    memory_limit: str = Field("4GB", pattern=r"^\d+(\.\d+)?\s*(MB|GB|MiB|GiB)$")
    threads: int = Field(0, ge=0, le=256)


class SchemaSettings(_Section):
    """Roles of attributes that later stages use without knowing the data's column names."""

    user_age: str | None = None
    user_region: str | None = None
    item_group: str | None = None


class RetrievalSettings(_Section):
    """The two-tower model (retrieval/two_tower.py explains the loss)."""

    dim: int = Field(64, ge=4, le=1024)
    hidden: int = Field(128, ge=4, le=4096)
    epochs: int = Field(4, ge=1, le=1000)
    batch_size: int = Field(2048, ge=2, le=65536)
    lr: float = Field(0.003, gt=0, le=1)
    temperature: float = Field(0.05, gt=0, le=10)
    history: int = Field(20, ge=1, le=500)
    train_days: int = Field(182, ge=1)
    min_examples: int = Field(100_000, ge=0)
    min_steps: int = Field(400, ge=0)
    max_epochs: int = Field(40, ge=1, le=1000)
    val_days: int = Field(7, ge=1)
    patience: int = Field(1, ge=0)
    random_negatives: int = Field(0, ge=0, le=100000)
    id_dropout: float = Field(0.2, ge=0, le=1)
    tied_history: bool = False
    seed: int = 0


class FeaturesSettings(_Section):
    """`shortlist features`: definitions' knobs and the engine's resources."""

    history_length: int = Field(50, ge=1)
    max_category_values: int = Field(200, ge=1)
    category_attributes: list[str] | None = None
    max_channels: int = Field(16, ge=0)
    memory_limit: str = Field("", pattern=r"^(\d+(\.\d+)?\s*(MB|GB|MiB|GiB))?$")
    threads: int = Field(0, ge=0, le=256)


class OnlineSettings(_Section):
    """The online store `shortlist materialize` writes and serving reads (docs/online.md)."""

    # "lmdb" (files in <workspace>/online) or "redis://HOST:PORT/DB[?prefix=NAME]"
    url: str = Field("lmdb", pattern=r"^(lmdb|rediss?://\S+)$")
    batch_size: int = Field(5000, ge=1, le=1_000_000)  # entities per write batch
    lmdb_map_size_mb: int = Field(1024, ge=1)  # initial map; doubles whenever it fills up
    redis_timeout: float = Field(5.0, gt=0, le=600)  # seconds: connect, and each command
    redis_retries: int = Field(1, ge=0, le=20)  # retries of a failed command, 50 ms apart
    redis_buckets: int = Field(64, ge=1, le=16384)  # hash-tag buckets (Redis Cluster slots)


class ServiceSettings(_Section):
    """`shortlist serve` (docs/service.md): who may write, who may read."""

    # the key write endpoints (POST /v1/events) require as `Authorization: Bearer KEY`; the
    # SHORTLIST_API_KEY environment variable wins over it. Empty: write endpoints are off
    # (they answer 503 saying how to set one). There is no default key.
    api_key: str = Field("", max_length=512)
    # read endpoints (recommendations, similar items, cart) require the key too
    read_key_required: bool = False
    # milliseconds a request may spend on the full pipeline (online store reads included);
    # past it, or when the store fails, the answer comes from memory with "degraded": true
    budget_ms: float = Field(250.0, gt=0, le=60_000)
    # seconds after a store failure during which requests go straight to the fallback before
    # one tries the store again (the service recovers by itself when the store is back)
    retry_after: float = Field(1.0, gt=0, le=3600)
    # seconds: the serving processes' timeout for one online store command (no retries)
    store_timeout: float = Field(1.0, gt=0, le=600)
    # threads each request's numeric work may use (torch, BLAS, FAISS): requests run side by
    # side in threads, and workers in processes, so more per request only oversubscribes
    threads: int = Field(1, ge=1, le=256)
    # full answers computed at once per process; more requests wait their turn (within their
    # budget): CPU-bound work in more threads than cores only fights over the GIL
    concurrency: int = Field(2, ge=1, le=256)
    # seconds between looks at models/pipeline.json (a new build) and models/reload (POST
    # /v1/admin/reload in another worker); a change reloads the workspace. 0: no watch
    watch: float = Field(2.0, ge=0, le=3600)
    # at each load, the files requests read through memory maps (models/, index/, online/) are
    # read into the page cache, unless they exceed this share of the available memory. 0: off
    prefetch: float = Field(0.5, ge=0, le=1)
    # ...and locked there (mlock) while that version serves, so that the kernel never drops
    # a page a later request reads (the pages are shared by the workers). False: on a machine
    # where that much pinned memory would crowd out other programs
    lock: bool = True
    # `serve --workers N`: milliseconds a worker that took the last new connection leaves the
    # next to the other workers (which take it as soon as their loop wakes), so that a burst of
    # keep-alive connections spreads over them instead of landing on the first worker awake.
    # It bounds the wait for a new connection when the others are slow to wake. 0: no turns
    accept_turn_ms: float = Field(10.0, ge=0, le=10_000)


class RankingSettings(_Section):
    """The ranking training set and the LightGBM ranker (`shortlist train ranking`)."""

    weeks: int = Field(4, ge=2, le=520)
    max_weeks: int = Field(26, ge=2, le=520)
    min_positive_users: int = Field(2000, ge=0)
    negatives_per_user: int = Field(100, ge=1, le=10000)
    max_rows: int = Field(300_000, ge=1000)
    users_per_week: int = Field(20000, ge=0)
    objective: Literal["auto", "lambdarank", "binary"] = "auto"
    num_leaves: int = Field(0, ge=0, le=4096)
    min_data_in_leaf: int = Field(0, ge=0)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_rounds: int = Field(500, ge=1, le=100000)
    early_stopping: int = Field(40, ge=1)
    max_category_values: int = Field(256, ge=2)
    guard: bool = True
    guard_switch: float = Field(2.0, ge=0, le=10)
    guard_blends: bool = True
    affinity_attributes: int = Field(5, ge=0, le=100)
    compiled: bool = True
    threads: int = Field(0, ge=0, le=256)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "guard_margin" in data:
            raise PydanticCustomError(
                "renamed",
                "guard_margin was replaced by guard_switch (stop 25): the ranker now serves "
                "unless another order beats it by more than guard_switch standard errors "
                "(default 2; docs/ranking.md)",
            )
        return data


SOURCE_NAMES = ("repurchase", "same_group", "copurchase", "two_tower", "trending")
FILTER_NAMES = ("in_stock", "available_in_region", "age_allowed", "not_bought_before")


class SourceSettings(_Section):
    name: Literal["repurchase", "same_group", "copurchase", "two_tower", "trending"]
    k: int = Field(50, ge=1, le=10000)
    segment: Literal["age", "region"] | None = None  # trending only


class FilterSettings(_Section):
    name: Literal["in_stock", "available_in_region", "age_allowed", "not_bought_before"]
    bloom: bool = False  # not_bought_before: a Bloom filter instead of an exact set
    fp_rate: float = Field(0.01, gt=0, lt=1)


class DiversifySettings(_Section):
    method: Literal["none", "round_robin", "max_per_value", "mmr", "revenue"] = "none"
    by: str = ""  # the item attribute of round_robin and max_per_value
    limit: int = Field(2, ge=1)  # max_per_value
    lambda_: float = Field(0.7, ge=0, le=1, alias="lambda")  # mmr

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def _default_sources() -> list[SourceSettings]:
    return [
        SourceSettings(name="repurchase", k=50),
        SourceSettings(name="same_group", k=50),
        SourceSettings(name="copurchase", k=100),
        SourceSettings(name="two_tower", k=100),
        SourceSettings(name="trending", k=50, segment="age"),
        SourceSettings(name="trending", k=50),
    ]


def _default_filters() -> list[FilterSettings]:
    return [
        FilterSettings(name="in_stock"),
        FilterSettings(name="available_in_region"),
        FilterSettings(name="age_allowed"),
    ]


class PipelineSettings(_Section):
    """The funnel the CLI and the service run: sources, filters, ranker, diversity, k."""

    k: int = Field(12, ge=1, le=1000)
    sources: list[SourceSettings] = Field(default_factory=_default_sources)
    filters: list[FilterSettings] = Field(default_factory=_default_filters)
    ranker: Literal["lightgbm", "none"] = "lightgbm"
    diversify: DiversifySettings = Field(default_factory=DiversifySettings)


class SearchSettings(_Section):
    """Personalized search (docs/search.md): the text index `build` makes, and how a query's
    matches are found, fused, personalized and refined."""

    enabled: bool = True
    fields: list[str] = Field(default_factory=list)  # []: chosen from the item attributes
    semantic: bool = True
    model: str = ""  # a sentence-transformers model folder; "": the bundled all-MiniLM-L6-v2
    max_seq_length: int = Field(128, ge=8, le=512)
    batch_size: int = Field(64, ge=1, le=4096)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    min_match: float = Field(0.75, gt=0, le=1)
    lexical_k: int = Field(200, ge=1, le=10000)
    semantic_k: int = Field(100, ge=1, le=10000)
    semantic_min_score: float = Field(0.5, ge=-1, le=1)
    rrf_k: int = Field(60, ge=1, le=10000)
    personal_k: int = Field(100, ge=0, le=10000)
    personal_weight: float = Field(2.0, ge=0, le=100)
    facets: list[str] = Field(default_factory=list)  # []: chosen from the categorical ones
    max_facets: int = Field(4, ge=0, le=50)
    facet_values: int = Field(10, ge=1, le=1000)


class ResourcesSettings(_Section):
    """Thread pools of every engine (resources.py)."""

    threads: int = Field(0, ge=0, le=256)  # 0: the cores this process may use


class Settings(_Section):
    resources: ResourcesSettings = Field(default_factory=ResourcesSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    features: FeaturesSettings = Field(default_factory=FeaturesSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    ranking: RankingSettings = Field(default_factory=RankingSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    online: OnlineSettings = Field(default_factory=OnlineSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    schema_: SchemaSettings = Field(default_factory=SchemaSettings, alias="schema")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def default_config_text() -> str:
    """The commented default shortlist.toml (what `shortlist init` writes)."""
    return (Path(__file__).parent / "default_config.toml").read_text()


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """SHORTLIST_INGEST_ON_BAD_ROWS=skip -> {"ingest": {"on_bad_rows": "skip"}}."""
    sections = {
        "resources": ResourcesSettings,
        "ingest": IngestSettings,
        "features": FeaturesSettings,
        "schema": SchemaSettings,
        "retrieval": RetrievalSettings,
        "ranking": RankingSettings,
        "online": OnlineSettings,
        "service": ServiceSettings,
        "search": SearchSettings,
    }
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section, model in sections.items():
            key = rest.removeprefix(section + "_")
            if rest.startswith(section + "_") and key in model.model_fields:
                out.setdefault(section, {})[key] = value
                break
        else:
            raise ConfigError("unknown setting in the environment", key=name)
    return out


def _key_of(error: Mapping[str, Any]) -> str:
    return ".".join(str(p) for p in error["loc"]).replace("schema_", "schema")


def load_settings(
    workspace: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings for a workspace: defaults < shortlist.toml < SHORTLIST_* env < `overrides`.

    Raises:
        ConfigError: the TOML does not parse, or a key is unknown or out of range (names it).
    """
    data: dict[str, Any] = {}
    path = workspace / CONFIG_FILE if workspace is not None else None
    if path is not None and path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    data = _merge(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f" (in {path})" if path is not None and path.is_file() else ""
        raise ConfigError(f"{first['msg']}{where}", key=_key_of(first)) from None
