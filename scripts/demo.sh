#!/usr/bin/env bash
# The main job on the shipped demo cell: the twin rendered, then a work order through the whole
# loop (embedded model, guardrails, rehearsal, approval, live execution over OPC-UA, Modbus TCP
# and ROS 2 against the twin served as a plant). Run by `make demo`; output goes to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-out}
mkdir -p "$OUT"
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-42}
pids=()
# Stopped in the reverse order of starting: the robot runtimes before the twin whose joint states
# they follow. A twin gone first is, to a runtime still running, a driver that fell silent: each
# would log a sensor fault on the way out, after whatever ended the demo, and look like its cause.
running() { case "$(ps -o stat= -p "$1" 2>/dev/null)" in "" | Z*) return 1 ;; esac; }
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do running "$1" || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() { for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== 1. the twin of the demo cell, 10 s, rendered to $OUT/demo_cell.mp4"
"$BIN/atelier" sim --seconds 10 --render "$OUT/demo_cell.mp4" --width 640 --height 360

echo "== 2. the twin served live: machines over OPC-UA / Modbus TCP, robots as ROS 2 drivers"
# The robots' keys and e-stop latches, and the audit log's key and anchored head, live in the
# state folder (outside the repository's tracked files); this run starts from a fresh one.
export ATELIER_STATE_DIR="$OUT/robot_state"
rm -rf "$ATELIER_STATE_DIR" "$OUT/atelier.db"
"$BIN/atelier" robot keys ur5e_1 --state-dir "$ATELIER_STATE_DIR"
"$BIN/atelier" robot keys panda_1 --state-dir "$ATELIER_STATE_DIR"
"$BIN/atelier" twin serve > "$OUT/twin_serve.log" 2>&1 & pids+=($!)
# On a robot's own controller the runtime keeps its 0.1 s joint-state timeout; here the twin, the
# runtime, the embedded model and the rehearsals share one small machine, where a joint state can
# come late by more than that (a sensor fault that the operator would have to reset).
for robot in ur5e_1 panda_1; do
  "$BIN/atelier" robot runtime "$robot" --state-dir "$ATELIER_STATE_DIR" --state-timeout-s 1.0 \
    > "$OUT/runtime_$robot.log" 2>&1 & pids+=($!)
done
for _ in $(seq 1 120); do grep -q "commands executed\|serving" "$OUT/twin_serve.log" 2>/dev/null && break; \
  grep -q "│ cnc_1" "$OUT/twin_serve.log" 2>/dev/null && break; sleep 1; done

# The plant's own model: SmolLM2-135M with the demo cell's shipped LoRA adapter (models/demo_cell,
# made by `atelier model tune`; its card says how). No tuning happens here.
TUNED=models/demo_cell/coordinator.yaml
"$BIN/atelier" model show models/demo_cell > "$OUT/model.txt"
echo "   the plant's model: $(sed -n 1p "$OUT/model.txt")"
DB="sqlite:///$OUT/atelier.db"
# Who approves and who confirms is checked against the site's users (a name on a command line is
# a claim): a line supervisor and a robot operator, each with a password of their own.
ATELIER_CONSOLE_PASSWORD=demo-supervisor-password "$BIN/atelier" console add-user demo_supervisor --role supervisor --db "$DB"
SUPERVISOR=(env ATELIER_PASSWORD=demo-supervisor-password "$BIN/atelier")
export ATELIER_CONSOLE_PASSWORD=demo-operator-password ATELIER_PASSWORD=demo-operator-password
"$BIN/atelier" console add-user demo_operator --role operator --db "$DB"
for order in "Reset the conveyor" "Home ur5e_1"; do
  echo "== 3. work order: $order"
  "${SUPERVISOR[@]}" order "$order" --yes --as demo_supervisor --live --db "$DB" --evidence "$OUT/evidence"
done
echo "== 4. a compound order with a condition: machine a blank, inspect it, sort it by the result, home every robot"
ORDER="Machine one blank and inspect it; if it fails put it in the quarantine bin, otherwise in the output bin; then home every robot"
# The tuned model reads the whole order in the plan language; the coverage rule, the guardrails
# and a rehearsal of both branches check its plan; a supervisor decides.
"$BIN/atelier" plan "$ORDER" --config "$TUNED" --db "$DB" --evidence "$OUT/evidence" --no-frames --json \
  > "$OUT/order_by_model.json" || true
MPLAN=$("$BIN/python" -c 'import json,sys; d=json.load(open(sys.argv[1])); \
  print(d["plan_id"] if d["status"]=="awaiting_approval" else ""); \
  print("   the model (" + str(d.get("model")) + "):", d["status"], (d.get("question") or d.get("reason") or "")[:200], \
  "goals:", d.get("goals"), file=sys.stderr)' "$OUT/order_by_model.json")
# The plant engineer's reading of the same order (plants/examples/machine_inspect_sort.yaml) is the
# one that runs: the supervisor turns the model's plan down with that reason, and the approved
# correction is what the next `atelier model tune --db` learns from (the flywheel).
if [ -n "$MPLAN" ]; then
  "${SUPERVISOR[@]}" reject "$MPLAN" --reason "the engineer's reading of this order runs instead (machine_and_inspect, then sort)" \
    --as demo_supervisor --db "$DB"
fi
# Rehearsed once as the plant file starts, then from 4 perturbed starts on 2 worker processes
# (a person's timing and path, belt speed, part positions): the risk figures go on the approval card.
"$BIN/atelier" plan --reading plants/examples/machine_inspect_sort.yaml --order "$ORDER" --db "$DB" \
  --evidence "$OUT/evidence" --rehearsals 4 --workers 2 --json > "$OUT/compound_order.json"
PLAN=$("$BIN/python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["plan_id"]); \
  print("   plan", d["plan_id"], d["status"], "decisions:", [x["condition"] for x in d["decisions"]], file=sys.stderr)' \
  "$OUT/compound_order.json")
"$BIN/atelier" show "$PLAN" --db "$DB" | grep "risk:" || true
"${SUPERVISOR[@]}" approve "$PLAN" --as demo_supervisor --db "$DB"
for step in $("$BIN/atelier" show "$PLAN" --json --db "$DB" | "$BIN/python" -c \
    'import json,sys; d=json.load(sys.stdin); print(" ".join(s["id"] for s in d["steps"] if s.get("hazardous")))'); do
  "$BIN/atelier" confirm "$PLAN" "$step" --as demo_operator --db "$DB"
done
"$BIN/atelier" run "$PLAN" --db "$DB" --evidence "$OUT/evidence"
"$BIN/atelier" show "$PLAN" --json --db "$DB" > "$OUT/compound_order_done.json"
echo "== 5. the audit log"
"$BIN/atelier" audit verify --db "sqlite:///$OUT/atelier.db"
echo "== 6. the inspection camera's vision model on 200 held-out renders, beside a classical baseline"
# (the rehearsal's inspection images, with the model's heat map, are in the evidence: inspection_*.png)
"$BIN/atelier" vision eval policies/checkpoints/vision_demo_cell_blank_al --images 200 --report "$OUT/vision_eval.json"
ls "$OUT"/evidence/*/inspection_*[a-z].png 2>/dev/null | sed 's/^/   inspection evidence: /' || true
echo "done: video $OUT/demo_cell.mp4, evidence in $OUT/evidence/, plans in $OUT/atelier.db"
