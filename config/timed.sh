# Sourced by the reproduce scripts: one stage of a long run, done once.
# timed NAME COMMAND...: run COMMAND unless $OUT/NAME.done exists, its output into $OUT/NAME.log and its
# wall clock into $OUT/times.jsonl; a rerun into the same $OUT skips the stages already done.
timed() {
  local name=$1; shift
  [ -f "$OUT/$name.done" ] && return 0
  local start=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1 || { echo "$name failed: see $OUT/$name.log"; return 1; }
  echo "{\"run\": \"$name\", \"seconds\": $((SECONDS - start))}" >> "$OUT/times.jsonl"
  touch "$OUT/$name.done"
}
