#!/usr/bin/env bash
# test_readme.sh: the README is the user's manual and must match the code: its configuration
# table is exactly `dtrain --help-config=markdown`, it names every option of `dtrain --help`,
# and the two set-up commands, scripts and configs it mentions exist.
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}

table=$(sed -n '/<!-- config-table:begin -->/,/<!-- config-table:end -->/p' README.md | sed '1d;$d')
want=$("$DTRAIN" --help-config=markdown)
if [ "$table" = "$want" ]; then
  ok "README configuration table equals dtrain --help-config=markdown ($(printf '%s\n' "$want" | grep -c '^| `') keys)"
else
  bad "README configuration table differs from the code (regenerate it)" "$(diff <(printf '%s\n' "$table") <(printf '%s\n' "$want"))"
fi
for opt in $("$DTRAIN" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
  grep -q -- "$opt" README.md && ok "README mentions $opt" || bad "README does not mention $opt"
done
for f in scripts/quickstart.sh scripts/test.sh .ci/run configs/quickstart.ini configs/resnext29.ini \
         slurm/single_node.sbatch slurm/multi_node.sbatch slurm/sweep_batch_lr.sh \
         tools/plot_metrics.py tools/h5_to_torch.py bench/compare.sh bench/families.sh; do
  if grep -q -- "$f" README.md; then
    [ -e "$f" ] && ok "$f exists" || bad "README names $f, which does not exist"
  fi
done
grep -q 'scripts/test.sh' .ci/run && ok ".ci/run runs the README's test command" || bad ".ci/run does not run scripts/test.sh"
finish
