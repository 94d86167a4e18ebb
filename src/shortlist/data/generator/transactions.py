"""Week-by-week purchase simulation: baskets, repurchases, style-driven choice, exact row count."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shortlist.data.generator import vocab as V
from shortlist.data.generator.catalog import GROUP_NOS, GeneratedCatalog
from shortlist.data.generator.customers import REGIONS, Customers, segment_profile
from shortlist.progress import track

RING = 32  # remembered recent purchases per customer: repurchases, variant jumps, "owned"
P_VARIANT = 0.03  # a pick switches to another colour of a product bought before
P_SAME, P_PARTNER = 0.40, 0.15  # later picks in a basket stay in the first pick's cluster / partner
P_MULTI = 0.076  # per unit of a product type's multi-unit propensity: buy several units
REGION_SD = 0.5  # spread of regional taste per cluster (logit scale)
CHUNK = 32768  # customers per block when scoring all clusters (bounds a temporary matrix)
WEEKDAY = np.array([0.95, 0.9, 0.95, 1.0, 1.1, 1.25, 0.85])  # Monday..Sunday basket weights
FLAT = 0.3  # popularity exponent for retries (see _week)
SLACK = 1.06  # baskets drawn beyond a week's target; the surplus is dropped for an exact count
FORCED_SHARE = 0.5  # at most this share of a week's baskets are guaranteed ones (see _week)

Sink = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class Calendar:
    """Days 0..n_days-1 from `start`; weeks end on the last day, the first may be shorter."""

    start: dt.date
    n_days: int
    n_weeks: int

    def days_of(self, w: int) -> tuple[int, int]:
        """First and one-past-last day of week w."""
        hi = self.n_days - 7 * (self.n_weeks - 1 - w)
        return max(0, hi - 7), hi

    def doy(self, day: float) -> float:
        return (self.start + dt.timedelta(days=int(day))).timetuple().tm_yday


def week_targets(total: int, cal: Calendar) -> np.ndarray:
    """Rows per week: a yearly curve (summer high, winter low) and sale weeks; sums to total."""
    vol = np.empty(cal.n_weeks)
    for w in range(cal.n_weeks):
        lo, hi = cal.days_of(w)
        doy = cal.doy((lo + hi - 1) / 2)
        dates = [cal.start + dt.timedelta(days=d) for d in range(lo, hi)]
        boost = 1.0
        if any(d.month == 11 and 23 <= d.day <= 29 and d.weekday() == 4 for d in dates):
            boost = 1.5  # Black Friday
        elif any(d.month == 6 and 24 <= d.day <= 30 for d in dates):
            boost = 1.3  # summer sale
        elif any(d.month == 12 and d.day == 27 for d in dates):
            boost = 1.2
        vol[w] = (hi - lo) / 7 * boost * np.exp(0.25 * np.cos(2 * np.pi * (doy - 175) / 365.25))
    exact = total * vol / vol.sum()
    out = np.floor(exact).astype(np.int64)
    rest = int(total - out.sum())
    out[np.argsort(-(exact - out), kind="stable")[:rest]] += 1
    return out


def season_matrix(cal: Calendar) -> np.ndarray:
    """Seasonal multiplier per product type and week, mean one over a year."""
    peak = np.array([t[7] for t in V.PRODUCT_TYPES], dtype=float)[:, None]
    amp = np.array([t[8] for t in V.PRODUCT_TYPES], dtype=float)[:, None]
    doy = np.array([cal.doy(sum(cal.days_of(w)) / 2) for w in range(cal.n_weeks)])[None, :]
    year = np.arange(365)[None, :]
    norm = np.exp(amp * np.cos(2 * np.pi * (year - peak) / 365.25)).mean(axis=1, keepdims=True)
    return np.exp(amp * np.cos(2 * np.pi * (doy - peak) / 365.25)) / norm


def taste_matrix(cat: GeneratedCatalog, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per (segment, cluster) and (region, cluster) logits: age, gender, kids and place."""
    cl = cat.clusters
    age, male, kids = segment_profile()
    g = np.array(GROUP_NOS)[cl.group][None, :]
    bias = np.array([V.INDEX_GROUPS[n][1] for n in GROUP_NOS])[cl.group][None, :]
    a, m, k = age[:, None], male[:, None].astype(bool), kids[:, None].astype(bool)
    seg = bias + cl.age_slope[None, :] * (a - 35) / 15
    seg = seg + (g == 2) * np.clip(1.2 - 0.06 * (a - 20), -1.0, 1.2)  # Divided is for the young
    seg = seg + (g == 1) * 0.02 * (a - 30) + (g == 26) * np.where(a < 45, 0.4, -0.3)
    seg = seg + np.where(m, 3.0 * (g == 3) - 2.5 * (g == 1) - 1.5 * (g == 2), -0.8 * (g == 3))
    seg = seg + np.where(k, 2.5, -0.5) * (g == 4)
    region = rng.normal(0.0, REGION_SD, size=(REGIONS, len(cl.group)))
    return seg.astype(np.float32), region.astype(np.float32)


class Simulation:
    """Holds the state carried across weeks: recent purchases per customer and running means.

    With `sold_to` (a bit mask per article) and `market` (a bit position per customer), a
    customer buys only articles whose mask has their market's bit: regional assortments and age
    limits (see generator/rules.py). Without them every article is sold to everyone.
    """

    def __init__(
        self,
        cat: GeneratedCatalog,
        cus: Customers,
        cal: Calendar,
        rng: np.random.Generator,
        sold_to: np.ndarray | None = None,
        market: np.ndarray | None = None,
    ):
        self.cat, self.cus, self.cal, self.rng = cat, cus, cal, rng
        self.sold_to, self.market = sold_to, market
        self.n_users = len(cus.rate)
        self.ring = np.full((self.n_users, RING), -1, dtype=np.int32)
        self.ptr = np.zeros(self.n_users, dtype=np.int64)
        self.filled = np.zeros(self.n_users, dtype=np.int64)
        self.seg_taste, self.region_taste = taste_matrix(cat, rng)
        self.cluster_vec_t = np.ascontiguousarray(cat.clusters.vec.T)
        self.price_dev = cat.clusters.price_dev.astype(np.float32)
        self.season = season_matrix(cal)
        self.by_cluster = np.argsort(cat.cluster, kind="stable")
        counts = np.bincount(cat.cluster, minlength=len(cat.clusters.group))
        self.cl_end = np.cumsum(counts)
        self.cl_start = self.cl_end - counts
        # Markdowns: a first and a deeper second price cut once an article is past its peak.
        n = len(cat.cluster)
        md1 = cat.launch + cat.rise + cat.tau * rng.lognormal(0.3, 0.4, n)
        self.md1, self.md2 = md1, md1 + rng.lognormal(np.log(8), 0.4, n)
        f1 = rng.choice([0.6, 0.7, 0.8], n)
        self.md1_cents = _snap(cat.list_cents * f1)
        self.md2_cents = _snap(cat.list_cents * f1 * rng.choice([0.6, 0.7, 0.8], n))
        # Rows per basket, first guessed from the parameters, then tracked week by week; it
        # turns a week's row target into a basket rate.
        self.rows_per_basket = float(
            np.mean(1 / cus.basket_p) * (1 + P_MULTI * 1.5 * cat.multi.mean())
        )

    def item_weights(self, w: int) -> np.ndarray:
        """Time-varying popularity: base x life cycle (ramp up, decay, small floor) x season."""
        cat = self.cat
        age = w - cat.launch
        ramp = np.minimum(1.0, (age + 1) / (cat.rise + 1))
        decay = np.exp(-np.maximum(0.0, age - cat.rise) / cat.tau)
        life = np.where(age >= 0, ramp * decay + 0.03, 0.0)
        return cat.base_pop * life * self.season[cat.type_idx, w]

    def run(self, targets: np.ndarray, sink: Sink) -> None:
        """Simulate every week and hand its rows, sorted by day, to `sink`."""
        cus = self.cus
        forced_order = np.argsort(cus.forced_week, kind="stable")
        forced_sorted = cus.forced_week[forced_order]
        with track("Generating transactions", total=self.cal.n_weeks) as advance:
            for w in range(self.cal.n_weeks):
                lo, hi = np.searchsorted(forced_sorted, [w, w + 1])
                self._week(w, int(targets[w]), forced_order[lo:hi], sink)
                advance(1)

    def _week(self, w: int, target: int, forced: np.ndarray, sink: Sink) -> None:
        """Draw baskets until the week's row target is covered, cut to it exactly, emit."""
        cus, rng = self.cus, self.rng
        if target <= 0:
            return
        # Guaranteed baskets come first and the week is cut at its target, so on a short span
        # (few weeks for many customers) they alone would fill it: every customer would buy
        # exactly once and none come back. Capped, the rest of the week follows the rates.
        # Never binds at the presets (at most 37 % there; their files are unchanged).
        forced = forced[: max(0, int(FORCED_SHARE * target / self.rows_per_basket))]
        weights = self.item_weights(w)[self.by_cluster]
        hot = self._cdf(weights)
        # Retries after drawing something the customer owns use a flatter popularity, so heavy
        # buyers move into a cluster's long tail instead of re-buying its few bestsellers.
        flat = self._cdf(weights**FLAT)
        logmass = np.log(np.maximum(hot[2], 1e-300)).astype(np.float32)
        active = (cus.first_week <= w) & (cus.last_week >= w)
        act_rate = cus.rate * active
        if act_rate.sum() <= 0:
            act_rate = cus.rate
        parts, rows, first = [], 0, True
        while rows < target:
            need = (target - rows) * (SLACK if first else 1.3) / self.rows_per_basket + 3
            extra = need - (len(forced) if first else 0)
            lam = act_rate * (max(extra, 0.0) / act_rate.sum())
            users = np.repeat(np.arange(self.n_users), rng.poisson(lam))
            users = rng.permutation(users)
            if first:  # guaranteed baskets go first so that truncation keeps them
                users = np.concatenate([forced, users])
            first = False
            part = self._baskets(w, users, hot, flat, logmass)
            parts.append(part)
            rows += int(part["q"].sum())
        b = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "pick_basket"}
        offsets = np.cumsum([0] + [len(p["user"]) for p in parts[:-1]])
        b["pick_basket"] = np.concatenate(
            [p["pick_basket"] + o for p, o in zip(parts, offsets, strict=True)]
        )
        # Rows in priority order; cutting at the target keeps whole baskets except the last one.
        pick_rows = np.repeat(np.arange(len(b["q"])), b["q"])[:target]
        n_baskets = int(b["pick_basket"][pick_rows[-1]]) + 1
        self.rows_per_basket = 0.7 * self.rows_per_basket + 0.3 * target / n_baskets
        basket = b["pick_basket"][pick_rows]
        user = b["user"][basket]
        day = b["day"][basket]
        order = np.argsort(day.astype(np.int64) * self.n_users + cus.order_key[user], kind="stable")
        pick_rows, user, day = pick_rows[order], user[order], day[order]
        sink(day, user, b["item"][pick_rows], b["cents"][pick_rows], b["channel"][basket[order]])
        kept = np.unique(pick_rows, return_index=True)[1]
        self._remember(user[np.sort(kept)], b["item"][pick_rows[np.sort(kept)]])

    def _baskets(
        self, w: int, users: np.ndarray, hot: tuple, flat: tuple, logmass: np.ndarray
    ) -> dict[str, np.ndarray]:
        """One basket per entry of `users`: day, channel, picks with item, price and units."""
        cat, cus, rng = self.cat, self.cus, self.rng
        lo, hi = self.cal.days_of(w)
        dow = np.array(
            [(self.cal.start + dt.timedelta(days=d)).weekday() for d in range(lo, hi)], dtype=int
        )
        day_cdf = np.cumsum(WEEKDAY[dow])
        day = lo + np.searchsorted(day_cdf, rng.random(len(users)) * day_cdf[-1], side="right")
        channel = np.where(rng.random(len(users)) < cus.p_online[users], 2, 1).astype(np.int8)
        n_picks = rng.geometric(cus.basket_p[users])
        pick_basket = np.repeat(np.arange(len(users)), n_picks)
        starts = np.cumsum(n_picks) - n_picks
        slot = np.arange(len(pick_basket)) - starts[pick_basket]
        pu = users[pick_basket]
        n = len(pu)
        item = np.full(n, -1, dtype=np.int64)
        cluster = np.full(n, -1, dtype=np.int64)
        # Repurchases and colour-variant jumps come from the customer's recent purchases.
        u = rng.random(n)
        hist = self.filled[pu] > 0
        rep = hist & (u < cus.p_rep[pu])
        var = hist & ~rep & (u < cus.p_rep[pu] + P_VARIANT)
        back = np.floor(self.filled[pu] * rng.random(n) ** 2).astype(np.int64)
        past = np.maximum(self.ring[pu, (self.ptr[pu] - 1 - back) % RING], 0)
        prod = cat.product[past]
        nvar = cat.product_nvar[prod]
        var &= nvar > 1
        shift = 1 + np.floor(rng.random(n) * (nvar - 1)).astype(np.int64)
        jump = cat.product_first[prod] + (past - cat.product_first[prod] + shift) % np.maximum(
            nvar, 1
        )
        item[rep], item[var] = past[rep], jump[var]
        rest = ~(rep | var)
        u2 = rng.random(n)
        same = rest & (slot > 0) & (u2 < P_SAME)
        partner = rest & (slot > 0) & (u2 >= P_SAME) & (u2 < P_SAME + P_PARTNER)
        fresh = rest & ~same & ~partner
        cluster[fresh] = self._clusters(pu[fresh], logmass)
        cluster[~rest] = cat.cluster[item[~rest]]
        anchor = cluster[starts][pick_basket]
        cluster[same] = anchor[same]
        cluster[partner] = self.cat.clusters.partner[anchor[partner]]
        # Within a cluster, the item follows this week's popularity. People rarely buy what they
        # already own or twice in one basket by chance, so such draws get up to three more tries;
        # repeats then come mostly from the explicit repurchase and multi-unit mechanisms. An
        # article not sold to the customer is redrawn in the cluster, from the same popularity
        # three times (the demand moves to what the shop offers them), then from the flatter
        # one, then from a newly chosen cluster; the very few picks still not allowed are
        # dropped. Repurchases and colour variants are always allowed: restrictions are per
        # product and fixed.
        need = np.flatnonzero(item < 0)
        redo, banned = need, need[:0]
        for attempt in range(4):
            item[redo] = self._in_cluster(cluster[redo], hot if attempt == 0 else flat)
            item[banned] = self._in_cluster(cluster[banned], hot)
            owned = (self.ring[pu[need]] == item[need, None]).any(axis=1)
            key = pick_basket.astype(np.int64) * len(cat.cluster) + item
            order = np.argsort(key, kind="stable")
            dup = np.zeros(n, dtype=bool)
            dup[order[1:]] = key[order[1:]] == key[order[:-1]]
            retry = owned | dup[need]
            redo = need[retry]
            banned = need[~retry & self._banned(pu[need], item[need])]
        if self.sold_to is not None:
            for attempt in range(4):
                banned = need[self._banned(pu[need], item[need])]
                if not len(banned):
                    break
                if attempt >= 2:  # the cluster may hold little they can buy: choose again
                    cluster[banned] = self._clusters(pu[banned], logmass)
                item[banned] = self._in_cluster(cluster[banned], flat)
            keep = ~self._banned(pu, item)
            if not keep.all():
                item, pick_basket, n = item[keep], pick_basket[keep], int(keep.sum())
        cents = np.where(
            w >= self.md2[item],
            self.md2_cents[item],
            np.where(w >= self.md1[item], self.md1_cents[item], cat.list_cents[item]),
        )
        member = rng.random(n) < 0.06  # member offers: 10% off, not rounded to .99
        cents = np.where(member, np.round(cents * 0.9), cents).astype(np.int32)
        multi = rng.random(n) < P_MULTI * cat.multi[item]
        q = 1 + multi * rng.geometric(0.65, n)
        return {
            "user": users, "day": day.astype(np.int32), "channel": channel,
            "pick_basket": pick_basket, "item": item.astype(np.int32),
            "cents": np.clip(cents, 1, 58999).astype(np.int32), "q": q,
        }  # fmt: skip

    def _banned(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True where the article is not sold to the customer (never without rules)."""
        if self.sold_to is None or self.market is None:
            return np.zeros(len(items), dtype=bool)
        return ((self.sold_to[items] >> self.market[users]) & 1) == 0

    def _cdf(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cumulative weights in cluster order, and each cluster's offset and total mass."""
        cum = np.cumsum(weights)
        mass = np.add.reduceat(weights, self.cl_start)
        return cum, cum[self.cl_end - 1] - mass, mass

    def _in_cluster(self, c: np.ndarray, cdf: tuple) -> np.ndarray:
        """Inverse-CDF draw of an item inside each given cluster."""
        cum, before, mass = cdf
        t = before[c] + self.rng.random(len(c)) * mass[c]
        pos = np.clip(np.searchsorted(cum, t, side="right"), self.cl_start[c], self.cl_end[c] - 1)
        return self.by_cluster[pos]

    def _clusters(self, users: np.ndarray, logmass: np.ndarray) -> np.ndarray:
        """Style cluster per pick: softmax of taste (latent, age, region, price) + log mass."""
        cus, rng = self.cus, self.rng
        out = np.empty(len(users), dtype=np.int64)
        n_cl = len(logmass)
        for s in range(0, len(users), CHUNK):
            uu = users[s : s + CHUNK]
            z = cus.vec[uu] @ self.cluster_vec_t
            z += self.seg_taste[cus.segment[uu]]
            z += self.region_taste[cus.region[uu]]
            z -= cus.price_sens[uu, None] * self.price_dev[None, :]
            z += logmass[None, :]
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            np.cumsum(z, axis=1, out=z)
            r = rng.random(len(uu), dtype=np.float32) * z[:, -1]
            out[s : s + CHUNK] = (z < r[:, None]).sum(axis=1)
        return np.minimum(out, n_cl - 1)

    def _remember(self, user: np.ndarray, item: np.ndarray) -> None:
        """Push this week's picks (in time order) into each customer's ring of recent items."""
        if len(user) == 0:
            return
        order = np.argsort(user, kind="stable")
        user, item = user[order], item[order]
        first = np.r_[True, user[1:] != user[:-1]]
        grp_start = np.flatnonzero(first)
        counts = np.diff(np.r_[grp_start, len(user)])
        rank = np.arange(len(user)) - np.repeat(grp_start, counts)
        cnt = np.repeat(counts, counts)
        keep = rank >= cnt - RING  # only the last RING picks survive; avoids duplicate writes
        uk = user[keep]
        self.ring[uk, (self.ptr[uk] + rank[keep]) % RING] = item[keep]
        uniq = user[grp_start]
        self.ptr[uniq] = (self.ptr[uniq] + counts) % RING
        self.filled[uniq] = np.minimum(self.filled[uniq] + counts, RING)


def _snap(cents: np.ndarray) -> np.ndarray:
    """Round a marked-down price down to an x.99 SEK price point (at least 1.99)."""
    return np.maximum((np.floor((cents + 1) / 100) * 100 - 1), 199).astype(np.int32)
