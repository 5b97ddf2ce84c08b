#!/bin/bash
# ZOOS: a folder with the bench zoo (`zooprobe zoo build --preset bench`) as bench/ and the foreign tabular zoo
# (benchmarks/foreign/tabular_mlps.py) as foreign-tabular/; OUT: where runs and symmetry.md files go.
export OMP_NUM_THREADS=1
Z=zooprobe
mkdir -p ${OUT:-runs/symmetry}
for zoo in bench foreign-tabular; do for h in accuracy hyperparameters; do
  [ -f ${OUT:-runs/symmetry}/$zoo-$h/symmetry.json ] && continue
  nice -n 5 $Z bench symmetry --zoo ${ZOOS:-zoos}/$zoo --head foundation-$h --max_models 120 --output ${OUT:-runs/symmetry}/$zoo-$h > ${OUT:-runs/symmetry}/$zoo-$h.log 2>&1
done; done; echo DONE
