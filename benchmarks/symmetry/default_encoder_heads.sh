#!/bin/bash
# ZOOS: a folder with the bench zoo (`zooprobe zoo build --preset bench`) as bench/ and the foreign tabular zoo
# (benchmarks/foreign/tabular_mlps.py) as foreign-tabular/; OUT: where runs and symmetry.md files go.
# heads trained by a user on the bench / foreign tabular zoo with the default (foundation) encoder, frozen, default settings
export OMP_NUM_THREADS=1
Z=zooprobe
mkdir -p ${OUT:-runs/symmetry}
for zoo in bench foreign-tabular; do for t in accuracy hyperparameters; do
  R=${OUT:-runs/symmetry}/u-$zoo-$t
  [ -f $R/metrics.json ] || nice -n 5 $Z train --task $t --zoo ${ZOOS:-zoos}/$zoo --encoder foundation --output $R --progress false > $R.log 2>&1
  [ -f $R-sym/symmetry.json ] || nice -n 5 $Z bench symmetry --zoo ${ZOOS:-zoos}/$zoo --head $R --max_models 120 --output $R-sym >> $R.log 2>&1
done; done; echo DONE
