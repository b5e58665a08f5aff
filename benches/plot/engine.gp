# Draws target/bench-engine/engine.csv (written by benches/engine.rs) as
# ns/op against table size; `make bench-plot` runs it.
#
#   gnuplot -e "csv='target/bench-engine/engine.csv'; out='docs/engine-bench.png'" benches/plot/engine.gp
#
# Variables (all optional): csv, out, title.
#
# The series are read from the CSV itself (awk), so a case added to the
# benchmark shows up without touching this script. The benchmark writes the
# rows grouped by series and sorted by size, which is what lets one `plot
# for` draw each series as its own line.

if (!exists("csv")) csv = 'target/bench-engine/engine.csv'
if (!exists("out")) out = 'docs/engine-bench.png'
if (!exists("title")) title = 'rsec engine benchmark'

# Single-process cases against a table size. The size column of the
# whitelist and scanner cases counts prefixes and patterns, not table
# entries, and a whole sweep is not a per-operation cost: all would mislead
# on this axis.
single = system(sprintf("awk -F, 'NR > 1 && $3 == 1 && $1 !~ /^(wl_|mp_|scan_)/ && $1 !~ /_full$/ { print $1 }' '%s' | uniq", csv))
# Multi-process cases, one line per process count.
multi = system(sprintf("awk -F, 'NR > 1 && $1 ~ /^mp_/ { print $1 \":\" $3 }' '%s' | uniq", csv))

case_of(s) = s[1:strstrt(s, ":") - 1]
procs_of(s) = int(s[strstrt(s, ":") + 1:])
# Colour says how many processes, dashes say one hot key. (A function: a
# parenthesised `dt (...)` would be read as a dash pattern.)
dash_of(s) = case_of(s) eq "mp_hot" ? 2 : 1
# Per-entry sweep costs are dashed: they are not per-request costs.
dash_single(s) = strstrt(s, "sweep_") == 1 ? 2 : 1

set terminal pngcairo size 1600,700 font ",10"
# gnuplot's default 8 colours repeat within the ~10 single-process series.
set linetype 9 lc rgb "#8c564b"
set linetype 10 lc rgb "#7f7f7f"
set linetype 11 lc rgb "#bcbd22"
set linetype 12 lc rgb "#17becf"
set linetypes cycle 12
set output out
set datafile separator ","
set key top left box opaque font ",9"
set grid xtics ytics mytics
set logscale x 2
set logscale y 10
set xtics ("16" 16, "256" 256, "1K" 1024, "4K" 4096, "16K" 16384, "64K" 65536, \
           "256K" 262144, "1M" 1048576, "4M" 4194304, "16M" 16777216)
set xlabel "entries in the table under test"
set ylabel "ns per operation (log)"

# Room around the outermost sizes, so their points and tic labels show.
set offsets graph 0.04, graph 0.04, 0, 0

set multiplot layout 1,2 title title font ",13" noenhanced

set title "one process (sweep_*: per entry swept)" noenhanced
plot for [i = 1:words(single)] csv \
     using ((strcol(1) eq word(single, i) && $3 == 1) ? $2 : NaN):4 \
     with linespoints lw 2 pt 7 ps 0.8 lc i dt dash_single(word(single, i)) \
     title word(single, i) noenhanced

set title "pike_check from several processes (aggregate: wall time / all operations)" noenhanced
plot for [m in multi] csv using ((strcol(1) eq case_of(m) && $3 == procs_of(m)) ? $2 : NaN):4 \
     with linespoints lw 2 pt 7 ps 0.8 lc procs_of(m) dt dash_of(m) \
     title sprintf("%s, %d proc", case_of(m), procs_of(m)) noenhanced

unset multiplot
