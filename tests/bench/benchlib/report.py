"""Formats result tables as markdown (printed and written to docs/PERFORMANCE.md)."""
import statistics

from .workloads import LIMIT, LOCAL


def pct(vals, q):
    s = sorted(vals)
    if not s:
        return None
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(key, vals):
    return pct(vals, 0.99) if key == "p99" else statistics.median(vals)


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "ms":
        return f"{v:.2f}" if v < 100 else f"{v:.0f}"
    if kind in ("mib", "int"):
        return f"{v:.0f}"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def render(table, order):
    cols, rows = table["columns"], table["rows"]
    labels = [l for l in order if l in rows] + [l for l in rows if l not in order]
    summ = {}
    for l in labels:
        r = rows[l]
        summ[l] = None if r["na"] else {k: summary(k, v) for k, v in r["values"].items() if v}
    base = summ.get("assetfs")
    lim = summ.get(LIMIT)
    head = ["", "runs"] + [c[1] for c in cols]
    if table["bytes"]:
        head.append("MiB/s")
    rk = table["ratio_keys"]
    tag = (lambda k: "" if len(rk) == 1 else f" ({k})")
    head += [f"× assetfs{tag(k)}" for k in rk]
    if LIMIT in rows:
        head += [f"× limit{tag(k)}" for k in rk]
    head.append("notes")
    out = [f"### {table['id']}. {table['title']}", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for l in labels:
        r, s = rows[l], summ[l]
        n = max((len(v) for v in r["values"].values()), default=0)
        runs = str(n) if table["id"] != "5" else f"{n // 200 if n else 0}"
        cells = [f"**{l}**" if l == "assetfs" else l, runs if s else "-"]
        for key, _, kind in cols:
            cells.append(fmt(s.get(key), kind) if s else "n/a")
        if table["bytes"]:
            v = s.get(cols[0][0]) if s else None
            cells.append(f"{table['bytes'] / 2**20 / v:.0f}" if v else "n/a")
        for k in rk:
            cells.append(ratio(s.get(k) if s else None, base.get(k) if base else None))
        if LIMIT in rows:
            for k in rk:
                cells.append("—" if l in (LIMIT, LOCAL) else
                             ratio(s.get(k) if s else None, lim.get(k) if lim else None))
        notes = list(r["extra"])
        if r["na"]:
            notes.insert(0, "n/a: " + r["na"].replace("|", "/").replace("\n", " "))
        cells.append("; ".join(notes))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for n in table["notes"]:
        out.append(f"- {n}")
    out.append("")
    return "\n".join(out)
