#!/usr/bin/env bash
# End-to-end test of CSV through the `cnf` command: convert of ',', ';' and
# tab files with quoted cells and a header (kept as the attribute columns);
# missing values named by line, column and name; the round trip convert ->
# train -> sample to CSV (the header's names carried back) -> eval of that
# CSV; train --data x.csv training on the rows convert would split; eval
# --out ll.csv; splits left empty refused or warned about; a wide file under
# a 4 GB address-space limit; and `--flow toy2d` by name from the build tree.
# Usage: bash tests/e2e_csv.sh BUILD_DIR (holding `cnf`).
source "$(dirname "$0")/e2e_lib.bash"
h5attr() { # h5attr FILE NAME -> the string attribute's value
    h5dump -a "/$2" "$1" | sed -n 's/^ *(0): "\(.*\)"$/\1/p'
}

# The same 300 rows written three ways: ',' with a quoted header name that
# holds the delimiter, ';' with quoted numbers, tab; then converted alike.
awk 'BEGIN { srand(11); for (i = 0; i < 300; i++) printf "%.6f %.6f\n", rand() * 2 - 1, rand() + i / 300 }' \
    >rows.txt
{ echo '"width, cm",height'; tr ' ' ',' <rows.txt; } >comma.csv
{ echo 'width;height'; sed 's/\([^ ]*\) \(.*\)/"\1";\2/' <rows.txt; } >semi.csv
{ printf 'w\th\n'; tr ' ' '\t' <rows.txt; } >tab.tsv
for f in comma.csv semi.csv tab.tsv; do
    "$cnf" convert "$f" --out "$f.h5" --quiet
done
dump() { h5dump -m '%.17g' -d "$2" "$1" | tail -n +2; }
for f in semi.csv tab.tsv; do
    cmp -s <(dump comma.csv.h5 /train) <(dump "$f.h5" /train) \
        || fail "convert of $f gives other numbers than the comma-separated file"
done
[ "$(h5attr comma.csv.h5 columns)" = '"width, cm",height' ] \
    || fail "columns attribute of comma.csv.h5: $(h5attr comma.csv.h5 columns)"
[ "$(h5attr tab.tsv.h5 columns)" = 'w,h' ] || fail "columns attribute of tab.tsv.h5"
# --delimiter given: ';' read as ',' fails (one column of text), as ';' works.
expect_fail "not a number" X.h5 -- "$cnf" convert semi.csv --delimiter , --header no --out X.h5
"$cnf" convert semi.csv --delimiter ';' --out semi2.h5 --quiet
cmp -s <(dump semi.csv.h5 /train) <(dump semi2.h5 /train) || fail "--delimiter ';'"

# Missing values, by line, column and name; quotes that do not close.
printf 'a,b\n1,2\n3,NA\n' >na.csv
expect_fail 'na.csv: line 3, column 2 \("b"\): missing value \(.NA.' X.h5 -- "$cnf" convert na.csv --out X.h5
printf 'a;b\n1;2\n\n4;\n' >empty.csv
expect_fail 'line 4, column 2 \("b"\): missing value \(an empty cell, data row 2\)' X.h5 -- \
    "$cnf" convert empty.csv --out X.h5
printf '1,2\n"3,4\n' >open.csv
expect_fail 'line 2: a quote opened there is never closed' X.h5 -- "$cnf" convert open.csv --out X.h5
# Splits: too few rows for a requested fraction is refused, an empty split
# asked for is warned about.
printf '1,2\n3,4\n5,6\n' >three.csv
expect_fail '3 rows split 0.8,0.1,0.1 leave /val empty' X.h5 -- "$cnf" convert three.csv --out X.h5
"$cnf" convert three.csv --split 1,0,0 --out three.h5 2>err.txt
has "warning: /val and /test are empty" err.txt || fail "no warning for --split 1,0,0: $(cat err.txt)"

# A wide file: 3 rows of 1,000,000 columns convert within a 4 GB address
# space (reserving 1024 rows x D up front needed 8 GB). Not in a sanitizer
# build: AddressSanitizer's shadow alone reserves more than the limit, and
# without the limit the check measures nothing (and runs for many minutes).
if ! { [ -e "$build/libcnf.so" ] && readelf -d "$build/libcnf.so" | grep -qE 'lib(a|ub|t)san'; }
then
    { yes 1 || true; } | head -n 1000000 | paste -s -d , - >row.txt   # yes ends by SIGPIPE
    cat row.txt row.txt row.txt >wide.csv
    (ulimit -v 4000000 && "$cnf" convert wide.csv --split 0.4,0.3,0.3 --out wide.h5 --quiet) \
        || fail "convert of a 3 x 1,000,000 CSV under a 4 GB limit"
    h5ls wide.h5/train | has "{1, 1000000}" || fail "wide.h5/train is not 1 x 1000000"
fi

# The round trip, with the preset by its name (the build tree's flows/).
tiny=(--flow toy2d-fm --hidden 8-8 --batch 50 --iters 30 --val-every 10 --quiet)
env -u CNF_FLOWS_PATH "$cnf" train --data comma.csv.h5 "${tiny[@]}" --out m.h5
"$cnf" info m.h5 | has "preset .*$root/flows/toy2d-fm.cfg" || fail "--flow toy2d-fm: $("$cnf" info m.h5 | grep preset)"
"$cnf" sample --model m.h5 --n 200 --seed 5 --out s.csv --quiet
[ "$(head -n 1 s.csv)" = '"width, cm",height' ] || fail "sample CSV header: $(head -n 1 s.csv)"
[ "$(wc -l <s.csv)" = 201 ] || fail "sample CSV has $(wc -l <s.csv) lines, not 201"
"$cnf" sample --model m.h5 --n 200 --seed 5 --out s.h5 --quiet
cmp -s <(tail -n +2 s.csv | tr ',' '\n') <(h5dump -m '%.17g' -d /samples -y -w 1 s.h5 | sed -n 's/^ *\([-0-9].*\)/\1/p' | tr -d ', ' | grep .) \
    || fail "sample's CSV and HDF5 outputs differ"
[ "$(h5attr s.h5 columns)" = '"width, cm",height' ] || fail "sample HDF5 lacks the columns attribute"
a=$("$cnf" eval --model m.h5 --data s.csv --json)
b=$("$cnf" eval --model m.h5 --data s.h5:/samples --json)
[ "${a%\"seconds\"*}" = "${b%\"seconds\"*}" ] || fail "eval of s.csv and of s.h5 differ: $a / $b"
"$cnf" eval --model m.h5 --data s.csv --out ll.csv --quiet >/dev/null
[ "$(head -n 1 ll.csv)" = loglik ] && [ "$(wc -l <ll.csv)" = 201 ] || fail "eval --out ll.csv"
expect_fail "a CSV file holds one table" X.h5 -- "$cnf" eval --model m.h5 --data s.csv:/test --out X.h5

# train --data x.csv: the rows convert gives, so the same model bit for bit.
env -u CNF_FLOWS_PATH "$cnf" train --data comma.csv "${tiny[@]}" --out mc.h5
for d in /blocks/0/layers/0/W /preprocess/mean; do
    cmp -s <(dump m.h5 $d) <(dump mc.h5 $d) || fail "train --data comma.csv differs from convert + train at $d"
done
"$cnf" info mc.h5 | has 'columns .*"width, cm",height' || fail "train --data x.csv: no columns in the record"
"$cnf" train --train tab.tsv --val semi.csv "${tiny[@]}" --iters 5 --out mt.h5
"$cnf" info mt.h5 | has 'columns .*w,h' || fail "train --train x.tsv: no columns in the record"
# A preset that is nowhere: the places searched are named.
expect_fail "no preset nosuch.cfg \(searched /nonexistent" M.h5 -- \
    env CNF_FLOWS_PATH=/nonexistent "$cnf" train --data comma.csv --flow nosuch --out M.h5
echo "e2e_csv: all passed"
