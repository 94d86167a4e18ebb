"""Synthetic article catalogue: style clusters, products in colour variants, texts, life cycles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from shortlist.data.generator import vocab as V

DIM = 8  # latent style dimensions shared by customers and clusters
# H&M-like list prices in SEK; the generator rounds every drawn price to the nearest one.
PRICE_POINTS = np.array(
    "1.99 2.99 3.99 4.99 5.99 6.99 7.99 9.99 12.99 14.99 17.99 19.99 24.99 29.99 34.99 39.99 "
    "44.99 49.99 59.99 69.99 79.99 99.99 119.99 149.99 199.99".split(),
    dtype=float,
)
PRICE_SCALE = 1.4  # list prices in the vocabulary times this match H&M's price quantiles
FAMILIES = sorted(V.MATERIALS)
TYPE_NAMES = [t[1] for t in V.PRODUCT_TYPES]
GROUP_NOS = sorted(V.INDEX_GROUPS)


@dataclass
class Clusters:
    """Style clusters: what each sells, how it looks, and the latent taste it appeals to."""

    index: list[str]  # index code per cluster
    group: np.ndarray  # position of the index group in GROUP_NOS
    vec: np.ndarray  # (C, DIM) float32 latent style
    price_dev: np.ndarray  # log price level minus the catalogue mean
    age_slope: np.ndarray  # taste shift per 15 years of customer age
    partner: np.ndarray  # the cluster whose items complete a basket (tops <-> bottoms)
    basic: np.ndarray  # bool: basics sell for a long time


@dataclass
class GeneratedCatalog:
    """The article table plus the hidden per-article parameters the simulation draws from."""

    table: pl.DataFrame
    clusters: Clusters
    cluster: np.ndarray  # int32 per article
    product: np.ndarray  # int32 product position per article
    product_first: np.ndarray  # int32 first article of each product
    product_nvar: np.ndarray  # int32 variants per product
    type_idx: np.ndarray  # int16 position in PRODUCT_TYPES
    launch: np.ndarray  # float32 launch week (negative: older catalogue)
    rise: np.ndarray  # float32 weeks to peak
    tau: np.ndarray  # float32 decay time in weeks
    base_pop: np.ndarray  # float64 base popularity
    list_cents: np.ndarray  # int32 list price in hundredths of SEK
    multi: np.ndarray  # float32 propensity to buy several units


def n_clusters_for(items: int) -> int:
    """A few dozen clusters for small catalogues, up to 160 for the full one."""
    return int(np.clip(round(0.5 * np.sqrt(items)), 10, 160))


def _clusters(rng: np.random.Generator, n: int) -> tuple[Clusters, dict[str, np.ndarray]]:
    codes = sorted(V.INDEXES)
    share = np.array([V.INDEXES[c][2] for c in codes])
    idx = rng.choice(len(codes), size=n, p=share / share.sum())
    idx[: min(n, len(codes))] = np.arange(min(n, len(codes)))  # every index is represented
    index = [codes[i] for i in idx]
    group = np.array([GROUP_NOS.index(V.INDEXES[c][1]) for c in index], dtype=np.int16)
    sec_of = {c: [i for i, s in enumerate(V.SECTIONS) if s[0] == c] for c in codes}
    n_types, n_sec = len(V.PRODUCT_TYPES), len(V.SECTIONS)
    type_p = np.zeros((n, n_types))
    sec_for_type = np.full((n, n_types), -1, dtype=np.int32)
    price_kind = np.ones(n)
    basic = np.zeros(n, dtype=bool)
    for c in range(n):
        options = sec_of[index[c]]
        k = 1 if len(options) == 1 or rng.random() < 0.5 else 2
        chosen = [options[i] for i in rng.choice(len(options), size=k, replace=False)]
        for s in reversed(chosen):  # the primary section wins for types both carry
            for t in V.SECTIONS[s][4].split(";"):
                sec_for_type[c, TYPE_NAMES.index(t)] = s
        carried = sec_for_type[c] >= 0
        type_p[c, carried] = rng.dirichlet(np.full(carried.sum(), 0.7))
        kind = V.SECTIONS[chosen[0]][3]
        price_kind[c], basic[c] = V.SECTION_PRICE[kind], kind in ("basic", "baby")
    group_emb = rng.normal(0.0, 1.0, size=(len(GROUP_NOS), DIM))
    vec = (group_emb[group] + rng.normal(0.0, 0.8, size=(n, DIM))).astype(np.float32)
    tier = np.log(price_kind) + rng.normal(0.0, 0.2, size=n)
    partner = np.empty(n, dtype=np.int32)
    for c in range(n):
        same = np.flatnonzero((group == group[c]) & (np.arange(n) != c))
        pool = same if len(same) else np.flatnonzero(np.arange(n) != c)
        partner[c] = rng.choice(pool) if len(pool) else c
    looks = {
        "type_p": type_p,
        "sec_for_type": sec_for_type,
        "tier": tier,
        "fit": rng.integers(0, 8, size=n),
        "material": rng.integers(0, 1 << 30, size=(n, len(FAMILIES))),
        "colour_p": _noisy_weights(rng, n, np.array([c[4] for c in V.COLOURS]), 0.5),
        "look_p": _noisy_weights(rng, n, np.array([a[2] for a in V.APPEARANCES]), 0.6),
        "sections": np.array([V.SECTIONS[s][1] for s in range(n_sec)]),
    }
    clusters = Clusters(
        index=index,
        group=group,
        vec=vec,
        price_dev=(tier - tier.mean()),
        age_slope=rng.normal(0.0, 0.6, size=n).astype(np.float32),
        partner=partner,
        basic=basic,
    )
    return clusters, looks


def _noisy_weights(rng: np.random.Generator, n: int, base: np.ndarray, shape: float) -> np.ndarray:
    """Per-cluster palettes: the global mix times gamma noise, so each cluster has favourites."""
    w = base[None, :] * rng.gamma(shape, 1.0, size=(n, len(base)))
    return w / w.sum(axis=1, keepdims=True)


def _draw_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a probability matrix (vectorized inverse CDF)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _garment_group(type_row: tuple, kind: str, denim: bool) -> int:
    gg = type_row[5]
    if gg in (1005, 1002) and kind == "basic":
        return 1002
    if denim and type_row[1] in ("Trousers", "Shorts", "Skirt", "Dungarees"):
        return 1016
    if kind == "baby" and type_row[2].startswith("Garment"):
        return 1006
    if kind == "girls" and type_row[1] in ("Dress", "Skirt"):
        return 1014
    return gg


def _family(base: str, denim: bool, sport: bool) -> str:
    """Material family: woven goes denim in denim sections; sport sections use sport fabrics."""
    if denim and base == "woven":
        return "denim"
    if sport and base in ("woven", "jersey"):
        return "sport"
    return base


def _variant_numbers(rng: np.random.Generator, nvar: np.ndarray) -> np.ndarray:
    """Increasing 3-digit variant numbers per product, mostly consecutive like 001, 002, 015."""
    n = int(nvar.sum())
    steps = np.where(rng.random(n) < 0.6, 1, rng.integers(1, 11, size=n))
    starts = np.cumsum(nvar) - nvar
    steps[starts] = 1
    csum = np.cumsum(steps)
    return (csum - np.repeat(csum[starts], nvar) + 1).astype(np.int32)


def _lookup(values: list, idx: np.ndarray) -> np.ndarray:
    """Gather from a small table without a Python loop over articles."""
    return np.asarray(values)[idx]


def generate_catalog(rng: np.random.Generator, items: int, weeks: int) -> GeneratedCatalog:
    """Products in style clusters, expanded into colour variants, in article_id order."""
    nvar_all = np.minimum(rng.geometric(0.45, size=items), 60)
    n_prod = int(np.searchsorted(np.cumsum(nvar_all), items) + 1)
    nvar = nvar_all[:n_prod].copy()
    nvar[-1] -= nvar.sum() - items
    n_cl = min(n_clusters_for(items), n_prod)
    clusters, looks = _clusters(rng, n_cl)
    size_w = rng.lognormal(0.0, 0.5, size=n_cl)
    pcl = rng.choice(n_cl, size=n_prod, p=size_w / size_w.sum())
    pcl[:n_cl] = np.arange(n_cl)
    # The first product of each cluster predates the period, so no cluster is ever empty.
    launch = np.where(
        rng.random(n_prod) < 0.25, rng.uniform(-60, 0, n_prod), rng.uniform(0, weeks, n_prod)
    )
    launch[:n_cl] = rng.uniform(-30, -1, n_cl)
    # Product codes rise with launch time, as in H&M; products are then in article_id order.
    order = np.argsort(launch + rng.normal(0, 4, n_prod), kind="stable")
    pcl, launch, nvar = pcl[order], launch[order], nvar[order]
    codes = np.sort(rng.choice(np.arange(108000, 960000), size=n_prod, replace=False))
    ptype = _draw_rows(rng, looks["type_p"][pcl])
    psec = looks["sec_for_type"][pcl, ptype]
    rows = [V.PRODUCT_TYPES[t] for t in ptype]
    denim = np.array([V.SECTIONS[s][3] == "denim" for s in psec]) | (
        np.array([r[3] == "denim" for r in rows])
    )
    sport = np.array([V.SECTIONS[s][0] == "S" for s in psec])
    family = [_family(r[3], d, sp) for d, sp, r in zip(denim, sport, rows, strict=True)]
    price = (
        PRICE_SCALE
        * np.array([r[6] for r in rows])
        * np.exp(looks["tier"][pcl] + rng.normal(0, 0.15, n_prod))
    )
    price = PRICE_POINTS[np.abs(np.log(PRICE_POINTS)[None, :] - np.log(price)[:, None]).argmin(1)]
    n_feat = rng.integers(1, 3, size=n_prod)
    pick = rng.integers(0, 1 << 30, size=(n_prod, 3))
    no_desc = rng.random(n_prod) < 0.004
    p_names, p_descs, p_gg, p_dept_no, p_dept = [], [], [], [], []
    for p in range(n_prod):
        r, sec = rows[p], V.SECTIONS[psec[p]]
        mats = V.MATERIALS[family[p]]
        mat_short, mat_long = mats[looks["material"][pcl[p], FAMILIES.index(family[p])] % len(mats)]
        fit = V.FITS[r[4]][looks["fit"][pcl[p]]]
        nouns = r[10].split(";")
        noun = nouns[pick[p, 0] % len(nouns)]
        words = [fit, mat_short, noun] if pick[p, 1] % 10 < 7 else [fit, noun]
        name = " ".join(words)
        p_names.append(name[0].upper() + name[1:])
        feats = V.FEATURES[r[1]]
        f0 = pick[p, 2] % len(feats)
        chosen = [feats[f0]] + ([feats[(f0 + 1) % len(feats)]] if n_feat[p] == 2 else [])
        fit_phrase = V.FIT_PHRASES.get(fit, fit.lower())
        p_descs.append(
            None
            if no_desc[p]
            else f"{fit_phrase.capitalize()} {noun} in {mat_long} with {' and '.join(chosen)}."
        )
        gg = 1023 if pick[p, 0] % 97 == 0 else _garment_group(r, sec[3], bool(denim[p]))
        p_gg.append(gg)
        p_dept_no.append(sec[1] * 100 + gg - 1000)
        base = V.GARMENT_GROUPS[gg]
        p_dept.append(f"{sec[2]} {base}" if sec[3] in ("baby", "kids", "girls") else base)
    # Articles: one row per colour variant.
    product = np.repeat(np.arange(n_prod, dtype=np.int32), nvar)
    acl = pcl[product]
    colour = _draw_rows(rng, looks["colour_p"][acl])
    again = _draw_rows(rng, looks["colour_p"][acl])
    clash = np.r_[False, (colour[1:] == colour[:-1]) & (product[1:] == product[:-1])]
    colour = np.where(clash, again, colour)  # fewer same-colour variants of one product
    look = _draw_rows(rng, looks["look_p"][acl])
    look = np.where(rng.random(items) < 0.8, look[np.cumsum(nvar)[product] - nvar[product]], look)
    is_denim_look = denim[product] & (rng.random(items) < 0.7)
    looks_tab = V.APPEARANCES + [V.DENIM_APPEARANCE]
    look = np.where(is_denim_look, len(V.APPEARANCES), look)
    variant = _variant_numbers(rng, nvar)
    article_desc = []
    for p, c, k in zip(product.tolist(), colour.tolist(), look.tolist(), strict=True):
        base = p_descs[p]
        cname = V.COLOURS[c][1].lower()
        tmpl = looks_tab[k][3]
        article_desc.append(
            None if base is None else f"{base} {tmpl.format(c=cname, C=cname.capitalize())}"
        )
    tp, sp = ptype[product], psec[product]
    sec_index = [V.SECTIONS[k][0] for k in range(len(V.SECTIONS))]
    index_group = [V.INDEXES[c][1] for c in sec_index]
    gg = np.asarray(p_gg)[product]
    table = pl.DataFrame(
        {
            "article_id": np.char.add(
                np.char.zfill(codes[product].astype(str), 7), np.char.zfill(variant.astype(str), 3)
            ),
            "product_code": codes[product].astype(np.int64),
            "prod_name": _lookup(p_names, product),
            "product_type_no": _lookup([t[0] for t in V.PRODUCT_TYPES], tp),
            "product_type_name": _lookup(TYPE_NAMES, tp),
            "product_group_name": _lookup([t[2] for t in V.PRODUCT_TYPES], tp),
            "graphical_appearance_no": _lookup([x[0] for x in looks_tab], look),
            "graphical_appearance_name": _lookup([x[1] for x in looks_tab], look),
            "colour_group_code": _lookup([c[0] for c in V.COLOURS], colour),
            "colour_group_name": _lookup([c[1] for c in V.COLOURS], colour),
            "perceived_colour_value_id": _lookup([c[2] for c in V.COLOURS], colour),
            "perceived_colour_value_name": _lookup(
                [V.COLOUR_VALUES[c[2]] for c in V.COLOURS], colour
            ),
            "perceived_colour_master_id": _lookup([c[3] for c in V.COLOURS], colour),
            "perceived_colour_master_name": _lookup(
                [V.COLOUR_MASTERS[c[3]] for c in V.COLOURS], colour
            ),
            "department_no": _lookup(p_dept_no, product),
            "department_name": _lookup(p_dept, product),
            "index_code": _lookup(sec_index, sp),
            "index_name": _lookup([V.INDEXES[c][0] for c in sec_index], sp),
            "index_group_no": _lookup(index_group, sp),
            "index_group_name": _lookup([V.INDEX_GROUPS[g][0] for g in index_group], sp),
            "section_no": _lookup([x[1] for x in V.SECTIONS], sp),
            "section_name": _lookup([x[2] for x in V.SECTIONS], sp),
            "garment_group_no": gg,
            "garment_group_name": _lookup(
                [V.GARMENT_GROUPS.get(g, "") for g in range(1000, 1030)], gg - 1000
            ),
            "detail_desc": pl.Series(article_desc, dtype=pl.String),
        }
    )
    # Life cycle: a few weeks' rise, then decay; basics decay slowly. Popularity is lognormal per
    # product and again per colour, so a few articles dominate.
    rise = (1 + rng.poisson(1.5, n_prod)).astype(np.float32)
    tau = rng.lognormal(np.log(8.0), 0.6, n_prod) * np.where(clusters.basic[pcl], 4.0, 1.0)
    pop = rng.lognormal(0.0, 1.3, n_prod)[product] * rng.lognormal(0.0, 0.7, items)
    first = (np.cumsum(nvar) - nvar).astype(np.int32)
    return GeneratedCatalog(
        table=table,
        clusters=clusters,
        cluster=acl.astype(np.int32),
        product=product,
        product_first=first,
        product_nvar=nvar.astype(np.int32),
        type_idx=ptype[product].astype(np.int16),
        launch=launch[product].astype(np.float32),
        rise=rise[product],
        tau=tau[product].astype(np.float32),
        base_pop=pop,
        list_cents=np.round(price[product] * 100).astype(np.int32),
        multi=np.array([V.PRODUCT_TYPES[t][9] for t in ptype[product]], dtype=np.float32),
    )
