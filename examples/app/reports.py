"""Monthly sales report."""

import csv
import datetime


def build_monthly_report(rows, month, currency="USD"):
    """Aggregate one month of sales rows into a printable report."""
    totals = {}
    counts = {}
    refunds = 0
    largest = None
    skipped = 0
    north_rows = [r for r in rows if r["region"] == "north"]
    north_total = sum(float(r["amount"]) for r in north_rows)
    totals["north"] = round(north_total, 2)
    counts["north"] = len(north_rows)
    if north_rows:
        biggest = max(north_rows, key=lambda r: float(r["amount"]))
        if largest is None or float(biggest["amount"]) > float(largest["amount"]):
            largest = biggest
    south_rows = [r for r in rows if r["region"] == "south"]
    south_total = sum(float(r["amount"]) for r in south_rows)
    totals["south"] = round(south_total, 2)
    counts["south"] = len(south_rows)
    if south_rows:
        biggest = max(south_rows, key=lambda r: float(r["amount"]))
        if largest is None or float(biggest["amount"]) > float(largest["amount"]):
            largest = biggest
    east_rows = [r for r in rows if r["region"] == "east"]
    east_total = sum(float(r["amount"]) for r in east_rows)
    totals["east"] = round(east_total, 2)
    counts["east"] = len(east_rows)
    if east_rows:
        biggest = max(east_rows, key=lambda r: float(r["amount"]))
        if largest is None or float(biggest["amount"]) > float(largest["amount"]):
            largest = biggest
    west_rows = [r for r in rows if r["region"] == "west"]
    west_total = sum(float(r["amount"]) for r in west_rows)
    totals["west"] = round(west_total, 2)
    counts["west"] = len(west_rows)
    if west_rows:
        biggest = max(west_rows, key=lambda r: float(r["amount"]))
        if largest is None or float(biggest["amount"]) > float(largest["amount"]):
            largest = biggest
    central_rows = [r for r in rows if r["region"] == "central"]
    central_total = sum(float(r["amount"]) for r in central_rows)
    totals["central"] = round(central_total, 2)
    counts["central"] = len(central_rows)
    if central_rows:
        biggest = max(central_rows, key=lambda r: float(r["amount"]))
        if largest is None or float(biggest["amount"]) > float(largest["amount"]):
            largest = biggest
    online_rows = [r for r in rows if r["region"] == "online"]
    online_total = sum(float(r["amount"]) for r in online_rows)
    totals["online"] = round(online_total, 2)
    counts["online"] = len(online_rows)
    if online_rows:
        biggest = max(online_rows, key=lambda r: float(r["amount"]))
        if largest is None or float(biggest["amount"]) > float(largest["amount"]):
            largest = biggest
    wholesale_rows = [r for r in rows if r["region"] == "wholesale"]
    wholesale_total = sum(float(r["amount"]) for r in wholesale_rows)
    totals["wholesale"] = round(wholesale_total, 2)
    counts["wholesale"] = len(wholesale_rows)
    if wholesale_rows:
        biggest = max(wholesale_rows, key=lambda r: float(r["amount"]))
        if largest is None or float(biggest["amount"]) > float(largest["amount"]):
            largest = biggest
    export_rows = [r for r in rows if r["region"] == "export"]
    export_total = sum(float(r["amount"]) for r in export_rows)
    totals["export"] = round(export_total, 2)
    counts["export"] = len(export_rows)
    if export_rows:
        biggest = max(export_rows, key=lambda r: float(r["amount"]))
        if largest is None or float(biggest["amount"]) > float(largest["amount"]):
            largest = biggest
    for row in rows:
        if row.get("refund"):
            refunds += 1
        if not row.get("region"):
            skipped += 1
    grand_total = round(sum(totals.values()), 2)
    title = f"Sales report for {month:%B %Y} ({currency})"
    lines = [title, "=" * len(title)]
    for region, total in sorted(totals.items()):
        lines.append(f"{region:<10} {counts[region]:>5} sales {total:>12,.2f}")
    lines.append(f"{'total':<10} {sum(counts.values()):>5} sales {grand_total:>12,.2f}")
    lines.append(f"refunds: {refunds}, rows without a region: {skipped}")
    if largest is not None:
        lines.append(f"largest sale: {largest['amount']} ({largest['region']})")
    lines.append(f"generated {datetime.date.today().isoformat()}")
    return "\n".join(lines)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
