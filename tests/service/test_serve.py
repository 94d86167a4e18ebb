"""`shortlist serve` as a user runs it: a real process (two uvicorn workers) on a loopback
port, requested over HTTP with httpx, stopped with SIGTERM."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families


def test_shortlist_serve_answers_over_http(served, client, ids):
    served.wait_ready()
    with httpx.Client(base_url=served.url, timeout=30) as http:
        user = ids.buyers[0]
        r = http.get(f"/v1/users/{user}/recommendations", params={"k": 6})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        # the same answer as the app in-process: one workspace, one pipeline
        in_process = client.get(f"/v1/users/{user}/recommendations", params={"k": 6}).json()
        assert r.json() == in_process
        cart = http.post("/v1/cart/recommendations", json={"cart": ids.popular[:2], "k": 5})
        assert cart.status_code == 200 and len(cart.json()["items"]) == 5
        similar = http.get(f"/v1/items/{ids.popular[0]}/similar", params={"k": 3})
        assert similar.status_code == 200 and len(similar.json()["items"]) == 3
        bad = http.get(f"/v1/users/{user}/recommendations", params={"k": 10**9})
        assert bad.status_code == 422 and bad.json()["field"] == "k"
        assert http.get("/openapi.json").json()["info"]["title"] == "shortlist"

        def get(u: str) -> int:
            return http.get(f"/v1/users/{u}/recommendations").status_code

        with ThreadPoolExecutor(8) as pool:  # both workers busy at once
            statuses = list(pool.map(get, (ids.buyers * 4)[:24] + ["new-1", "new-2"]))
        assert statuses == [200] * 26

        # /metrics adds up both workers' counts (prometheus multiprocess files)
        metrics = http.get("/metrics").text
    counts = {
        s.labels["status"]: s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "shortlist_http_requests_total"
        and s.labels["endpoint"] == "/v1/users/{user_id}/recommendations"
    }
    assert counts == {"200": 27.0, "422": 1.0}
    assert served.stop() == 0
    log = served.logs()
    assert log.count("Application startup complete") == 2  # two workers
    assert "loaded in" in log and "Traceback" not in log
    # each worker read the files it maps into the page cache before serving, and locked them
    # there (or said why not: a process without CAP_IPC_LOCK and a small `ulimit -l`)
    assert log.count("read into the page cache") == 2
    assert log.count("and locked there") == 2 or log.count("not locked there: mlock failed") == 2
