#!/bin/bash
# Whole-process A/B between source trees (e.g. a worktree of an older commit and this one),
# alternated round by round so that both see the same machine, then an orjson.loads loop over
# the same lines: the ratio issue 14 measures (docs/performance.md, session 6).
#
# usage: bash bench/alternate_trees.sh ROUNDS INPUT.jsonl TREE [TREE...]
#   make an input:  .venv/bin/python -c "import random,orjson; from bench.traffic import payment; \
#     r=random.Random(7); open('/tmp/in500.jsonl','wb').writelines(orjson.dumps(payment(i,r))+b'\n' for i in range(500000))"
#   older tree:     git worktree add --detach /tmp/start-tree <commit>
set -euo pipefail
ROUNDS=$1; INPUT=$(realpath "$2"); shift 2
PYTHON=${PYTHON:-$(realpath "$(dirname "$0")/../.venv/bin/python")}
WORK=$(mktemp -d /tmp/paywatch-ab.XXXX)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/flow.yaml" <<YAML
source: {type: file, path: '$INPUT', batch_size: 1000}
sinks: {jsonl: {dir: '$WORK/out', files: 2}, stdout: {alerts: false, metrics: false, dead_letters: false}}
YAML
for round in $(seq "$ROUNDS"); do
  for tree in "$@"; do
    rm -rf "$WORK/out"
    (cd "$tree" && /usr/bin/time -f "$tree round $round: wall %e s, cpu %U+%S" \
      env PAYWATCH_CONFIG="$WORK/flow.yaml" "$PYTHON" -m bytewax.run dataflow >/dev/null 2>"$WORK/err") \
      || { tail -3 "$WORK/err"; exit 1; }
    tail -1 "$WORK/err"
  done
done
"$PYTHON" -c "
import orjson, sys, time
lines = open(sys.argv[1], 'rb').readlines()
start = time.perf_counter()
for line in lines:
    orjson.loads(line)
print('orjson.loads loop:', round(time.perf_counter() - start, 3), 's for', len(lines), 'lines')" "$INPUT"
