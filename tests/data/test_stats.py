"""Dataset statistics: known values on the real H&M sample, consistency on generated data."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortlist.data.generator import generate
from shortlist.data.stats import METRICS, hm_statistics, main, statistics_table

HM_SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hm-sample"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stats_gen")
    generate(out, scale="tiny", users=500, items=400, interactions=9000, weeks=30, seed=2)
    return out


def test_hm_sample_known_values() -> None:
    if not (HM_SAMPLE / "transactions_train.csv").is_file():
        pytest.skip("../shared/data/hm-sample not present")
    s = hm_statistics(HM_SAMPLE)
    assert (s["customers"], s["articles"], s["transactions"]) == (687, 105_542, 16_087)
    assert s["weeks"] == 105
    assert s["purchases_per_customer_median"] == 9
    assert s["purchases_per_customer_mean"] == pytest.approx(16_087 / 687, rel=0.01)
    assert s["repeat_share"] == pytest.approx(0.134, abs=0.005)
    assert s["repeat_share_later_day"] == pytest.approx(0.041, abs=0.005)
    assert s["basket_size_mean"] == pytest.approx(3.62, abs=0.01)
    assert s["basket_size_median"] == 2
    assert s["channel2_share"] == pytest.approx(0.721, abs=0.002)
    assert s["price_p50"] == pytest.approx(0.0254, abs=0.0002)
    assert s["never_bought_share"] > 0.8  # a 687-customer sample against the full catalogue


def test_generated_statistics_are_consistent(generated: Path) -> None:
    s = hm_statistics(generated)
    assert (s["customers"], s["articles"], s["transactions"]) == (500, 400, 9000)
    assert s["weeks"] == 30
    assert 0 <= s["repeat_share_later_day"] <= s["repeat_share"] < 1
    assert s["price_p1"] < s["price_p50"] < s["price_p99"] < 1
    assert 0 < s["top1pct_article_share"] < 1 and 0 <= s["never_bought_share"] < 1
    assert set(s) == {key for key, _, _ in METRICS}


def test_table_and_cli(generated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = hm_statistics(generated)
    table = statistics_table({"one": s, "two": s})
    lines = table.splitlines()
    assert lines[0] == "| statistic | one | two |" and len(lines) == 2 + len(METRICS)
    assert "| transactions (rows) | 9,000 | 9,000 |" in lines
    main([str(generated)])
    printed = capsys.readouterr().out
    assert generated.name in printed.splitlines()[0] and "9,000" in printed
