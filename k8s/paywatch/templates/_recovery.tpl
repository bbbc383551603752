{{/*
Init container script: create the recovery partitions once, on the shared
volume. Pod 0 creates them in a scratch directory and renames them into
place (atomic on one filesystem), then writes a marker; the other pods
(started in parallel) wait for the marker. Existing partitions are never
touched: a second install, a restart or a restored backup keeps its state.
Reads its inputs from the environment so tests can run it on a laptop.
*/}}
{{- define "paywatch.recoveryInitScript" -}}
set -eu
dir="$BYTEWAX_RECOVERY_DIRECTORY"
want="$PAYWATCH_RECOVERY_PARTITIONS"
marker="$dir/.paywatch-initialized"
ordinal="${BYTEWAX_POD_NAME##*-}"
count() { find "$dir" -maxdepth 1 -name 'part-*.sqlite3' | wc -l; }
if [ ! -e "$marker" ]; then
  if [ "$ordinal" = "0" ]; then
    if [ "$(count)" -eq 0 ]; then
      scratch="$dir/.init-$BYTEWAX_POD_NAME"
      rm -rf "$scratch"
      mkdir -p "$scratch"
      python -m bytewax.recovery "$scratch" "$want"
      for part in "$scratch"/part-*.sqlite3; do mv "$part" "$dir/"; done
      rmdir "$scratch"
    fi
    touch "$marker"
  else
    waited=0
    until [ -e "$marker" ]; do
      if [ "$waited" -ge "$PAYWATCH_RECOVERY_INIT_TIMEOUT" ]; then
        echo "recovery: no partitions from pod 0 in $dir after ${waited}s" >&2
        exit 1
      fi
      sleep 2
      waited=$((waited + 2))
    done
  fi
fi
have="$(count)"
echo "recovery: $have partitions in $dir"
if [ "$have" -ne "$want" ]; then
  echo "recovery: values say $want partitions; the $have created at first install are kept (the count is fixed)" >&2
fi
{{- end }}
