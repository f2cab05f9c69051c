#!/usr/bin/env bash
# test_readme.sh: the README is the user's manual and must match the code: its configuration
# table is exactly `dtrain --help-config=markdown`, it names every option of `dtrain --help`,
# and the two set-up commands, scripts and configs it mentions exist. The repository stands
# alone: no tracked source, script, config or help text cites a document it does not contain
# (SPEC, DESIGN, or a docs/ file that is missing).
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
         tools/dtrain-tool bench/compare.sh bench/families.sh bench/precision.sh; do
  if grep -q -- "$f" README.md; then
    [ -e "$f" ] && ok "$f exists" || bad "README names $f, which does not exist"
  fi
done
# Every Python task the README names is a module of tools/dtrain_tools/ with a main(argv).
for task in $(grep -oE 'dtrain-tool [a-z][a-z0-9-]*|`(make|torch|plot|h5)-[a-z0-9-]*`' README.md |
              sed 's/^dtrain-tool //; s/`//g' | grep -v '^TASK$' | sort -u); do
  m=tools/dtrain_tools/${task//-/_}.py
  if [ -e "$m" ] && grep -q '^def main(argv)' "$m"; then ok "README task $task is $m"
  else bad "README names the task $task, but $m (with a main(argv)) does not exist"; fi
done
# Citations: the documents a comment or help text may cite are the ones in docs/.
files=$( (git ls-files src comm kernels tests tools scripts bench slurm configs docs CMakeLists.txt README.md 2>/dev/null ||
        find src comm kernels tests tools scripts bench slurm configs docs CMakeLists.txt README.md -type f) | grep -v "^tests/test_readme.sh$")
foreign=$( { grep -nE '\bSPEC\b|DESIGN "|HEAD semantics|(SPEC|DESIGN)\.md' $files /dev/null;
             { "$DTRAIN" --help; "$DTRAIN" --help-config; } | grep -nE '\bSPEC\b|DESIGN|HEAD semantics' | sed 's/^/--help:/'; } )
[ -z "$foreign" ] && ok "no file or help text cites SPEC or DESIGN, which the repository does not contain" \
  || bad "citations of documents the repository does not contain" "$foreign"
missing=""
for d in $( { grep -ohE 'docs/[A-Za-z0-9_./-]+\.md' $files /dev/null; { "$DTRAIN" --help; "$DTRAIN" --help-config; } | grep -oE 'docs/[A-Za-z0-9_./-]+\.md'; } | sort -u); do
  [ -e "$d" ] || missing="$missing $d"
done
[ -z "$missing" ] && ok "every docs/ file cited exists" || bad "cited docs/ files that do not exist:$missing"
grep -q 'scripts/test.sh' .ci/run && ok ".ci/run runs the README's test command" || bad ".ci/run does not run scripts/test.sh"
finish
