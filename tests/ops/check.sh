#!/usr/bin/env bash
# Checks the operator-side files: the alerting rules and their unit tests, the Grafana
# dashboard and the systemd unit. Needs promtool (Debian: prometheus), systemd-analyze
# (systemd) and python3; installs nothing (tests/run.sh does). Every check runs, each one
# says what it looked at, and the exit status is non-zero if any failed.
# Usage, from anywhere: bash tests/ops/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

monitoring=config/monitoring
unit=config/jumpgate.service
# The unit's overall exposure (systemd-analyze security) is 1.4. --threshold counts in
# tenths, so 14 is that score: a change that weakens the sandbox fails here.
max_exposure=14

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=()

# Runs one check in a subshell with errexit on, so its first failing command fails it, and
# goes on to the next check either way.
check() {
  local name=$1
  shift
  printf '\n== %s\n' "$name"
  set +e
  (set -e; "$@")
  local rc=$?
  set -e
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    printf 'ok: %s\n' "$name"
  else
    failed+=("$name")
    printf 'FAILED: %s\n' "$name"
  fi
}

rules_check() {
  promtool check rules "$monitoring/alerts.yml"
}

rules_test() {
  cd "$monitoring"
  promtool test rules alerts.test.yml
}

# Grafana imports what it can parse and draws nothing for a panel without a query, so the
# structure is checked here: every panel queries the ${datasource} variable with a
# non-empty expression, ids are unique, panels fit the 24-column grid without overlapping.
# Each expression is then written out as a recording rule for promtool to parse.
dashboard_structure() {
  python3 - "$monitoring/grafana-dashboard.json" "$tmp/dashboard-rules.yml" <<'PY'
import json
import sys

path, rules_out = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as f:
    d = json.load(f)
problems = []
ds = {"type": "prometheus", "uid": "${datasource}"}

if d.get("schemaVersion") != 39:
    problems.append(f"schemaVersion is {d.get('schemaVersion')!r}, not 39")
for key in ("title", "uid"):
    if not d.get(key):
        problems.append(f"no {key}")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
v = variables.get("datasource", {})
if v.get("type") != "datasource" or v.get("query") != "prometheus":
    problems.append("no datasource variable of type datasource for prometheus")
v = variables.get("site", {})
query = v.get("query")
query = query.get("query") if isinstance(query, dict) else query
if v.get("type") != "query" or query != "label_values(jumpgate_requests_total, site)":
    problems.append("no site variable from label_values(jumpgate_requests_total, site)")
elif v.get("datasource") != ds:
    problems.append("the site variable does not query ${datasource}")

panels = d.get("panels") or []
if not panels:
    problems.append("no panels")
ids, cells, exprs = set(), {}, []
for p in panels:
    title = p.get("title") or f"panel {p.get('id')}"
    if p.get("id") in ids:
        problems.append(f"{title}: id {p.get('id')} used twice")
    ids.add(p.get("id"))
    g = p.get("gridPos") or {}
    x, y, w, h = (g.get(k) for k in ("x", "y", "w", "h"))
    if not all(isinstance(n, int) for n in (x, y, w, h)) or x < 0 or y < 0 or w < 1 or h < 1 or x + w > 24:
        problems.append(f"{title}: gridPos {g} is outside the 24-column grid")
    else:
        for cx in range(x, x + w):
            for cy in range(y, y + h):
                if (cx, cy) in cells:
                    problems.append(f"{title}: overlaps {cells[(cx, cy)]}")
                    break
                cells[(cx, cy)] = title
            else:
                continue
            break
    if p.get("type") == "row":
        if p.get("targets"):
            problems.append(f"{title}: a row with queries")
        continue
    if p.get("datasource") != ds:
        problems.append(f"{title}: datasource is {p.get('datasource')!r}, not the ${{datasource}} variable")
    targets = p.get("targets") or []
    if not targets:
        problems.append(f"{title}: no targets")
    for t in targets:
        if not (t.get("expr") or "").strip():
            problems.append(f"{title}: target {t.get('refId')} has no expr")
            continue
        if t.get("datasource", ds) != ds:
            problems.append(f"{title}: target {t.get('refId')} queries {t.get('datasource')!r}")
        exprs.append((p.get("id"), t.get("refId"), t["expr"]))

# Grafana's own variables, as Grafana would fill them in, so promtool sees plain PromQL.
with open(rules_out, "w", encoding="utf-8") as f:
    rules = [
        {"record": f"dashboard:panel{pid}:{ref}",
         "expr": e.replace("$__rate_interval", "5m").replace("$site", ".*")}
        for pid, ref, e in exprs
    ]
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)

for p in problems:
    print(f"{path}: {p}")
print(f"{path}: {len(panels)} panels, {len(exprs)} queries")
sys.exit(1 if problems else 0)
PY
}

dashboard_queries() {
  promtool check rules "$tmp/dashboard-rules.yml"
}

# systemd-analyze verify insists that every Exec binary exists, so it reads a copy that runs
# /bin/true instead of /usr/local/bin/jumpgate (and instead of /bin/kill where procps is
# missing).
unit_copy() {
  sed 's#/usr/local/bin/jumpgate#/bin/true#g' "$unit" >"$tmp/jumpgate.service"
  if [ ! -x /bin/kill ]; then sed -i 's#/bin/kill#/bin/true#g' "$tmp/jumpgate.service"; fi
}

unit_verify() {
  unit_copy
  local out rc=0
  out=$(systemd-analyze verify "$tmp/jumpgate.service" 2>&1) || rc=$?
  [ -z "$out" ] || printf '%s\n' "$out"
  [ "$rc" = 0 ]
  # A misspelt or unknown key is only a warning, exit status 0: any line about the unit fails.
  if grep -q 'jumpgate\.service' <<<"$out"; then return 1; fi
  echo "$unit: systemd-analyze verify: no complaints"
}

unit_security() {
  unit_copy
  local out rc=0
  out=$(systemd-analyze security --offline=true --threshold="$max_exposure" "$tmp/jumpgate.service" 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then
    # What is left open, then the score.
    grep -E '✗|Overall' <<<"$out" || printf '%s\n' "$out"
    echo "$unit: exposure above $max_exposure tenths"
    return 1
  fi
  grep 'Overall' <<<"$out"
}

check "promtool check rules $monitoring/alerts.yml" rules_check
check "promtool test rules $monitoring/alerts.test.yml" rules_test
check "$monitoring/grafana-dashboard.json parses and has the expected structure" dashboard_structure
check "every dashboard query parses as PromQL (promtool)" dashboard_queries
check "systemd-analyze verify $unit" unit_verify
check "systemd-analyze security $unit: exposure at most $max_exposure tenths" unit_security

echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}"
fi
echo "ops: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} = 0 ]
