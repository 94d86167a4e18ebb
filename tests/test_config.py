"""Settings: defaults, shortlist.toml, environment and overrides, with named errors."""

from __future__ import annotations

import tomllib

import pytest

from shortlist.config import Settings, default_config_text, load_settings
from shortlist.errors import ConfigError
from shortlist.workspace import open_workspace


def test_default_file_documents_exactly_the_defaults():
    text = default_config_text()
    assert Settings.model_validate(tomllib.loads(text)) == Settings()
    # every key of every section is present (commented out or set) in the shipped file
    for section, model in (("ingest", Settings().ingest), ("schema", Settings().schema_)):
        for key in type(model).model_fields:
            documented = (f"{key} =", f"# {key} =", f"[{section}.{key}]")
            assert any(d in text for d in documented), f"{section}.{key} undocumented"


def test_precedence(tmp_path):
    (tmp_path / "shortlist.toml").write_text('[ingest]\non_bad_rows = "skip"\nthreads = 2\n')
    s = load_settings(tmp_path, environ={})
    assert (s.ingest.on_bad_rows, s.ingest.threads) == ("skip", 2)
    s = load_settings(tmp_path, environ={"SHORTLIST_INGEST_THREADS": "3"})
    assert s.ingest.threads == 3
    s = load_settings(
        tmp_path, {"ingest": {"threads": 4}}, environ={"SHORTLIST_INGEST_THREADS": "3"}
    )
    assert s.ingest.threads == 4


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("[ingest]\nbogus = 1\n", {}, "ingest.bogus"),
        ("[ingest]\nthreads = -1\n", {}, "ingest.threads"),
        ('[ingest]\nmemory_limit = "lots"\n', {}, "ingest.memory_limit"),
        ("[nosuchsection]\n", {}, "nosuchsection"),
        ("", {"SHORTLIST_INGEST_COLOUR": "red"}, "SHORTLIST_INGEST_COLOUR"),
        ("", {"SHORTLIST_INGEST_ON_BAD_ROWS": "maybe"}, "ingest.on_bad_rows"),
    ],
)
def test_bad_settings_name_their_key(tmp_path, toml, env, key):
    (tmp_path / "shortlist.toml").write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, environ=env)
    assert str(err.value).startswith(f"{key}:")


def test_a_renamed_setting_says_what_replaced_it(tmp_path):
    (tmp_path / "shortlist.toml").write_text("[ranking]\nguard_margin = 1.0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, environ={})
    assert str(err.value).startswith("ranking: guard_margin was replaced by guard_switch")
    (tmp_path / "shortlist.toml").write_text("[ranking]\nguard_switch = 1.0\n")
    assert load_settings(tmp_path, environ={}).ranking.guard_switch == 1.0


def test_unparseable_toml_names_file(tmp_path):
    (tmp_path / "shortlist.toml").write_text("[ingest\n")
    with pytest.raises(ConfigError, match="shortlist.toml"):
        load_settings(tmp_path, environ={})


def test_workspace_init_writes_commented_defaults(tmp_path):
    ws = open_workspace(tmp_path / "w")
    path = ws.init()
    assert path.read_text() == default_config_text()
    assert ws.settings() == Settings() or ws.settings().ingest == Settings().ingest
