# Draws benches/in_opensips's attack scenario: OpenSIPS CPU and the
# legitimate sources' success rate per 100 ms, pike against rsec.
# Run by the benchmark as
#   gnuplot -e "pike='…/under_attack_pike.csv'; rsec='…/under_attack_rsec.csv'; out='docs/under-attack.png'; a0=2; a1=12; what='…'" benches/plot/under_attack.gp
# (a0, a1: when the flood starts and stops, in seconds; what: the
# legitimate traffic, for the title). Every variable has a default.
if (!exists("pike")) pike = 'target/bench-opensips/under_attack_pike.csv'
if (!exists("rsec")) rsec = 'target/bench-opensips/under_attack_rsec.csv'
if (!exists("out")) out = 'docs/under-attack.png'
if (!exists("a0")) a0 = 2
if (!exists("a1")) a1 = 12
if (!exists("what")) what = '50 legitimate sources at 5 req/s'

set terminal pngcairo size 1000,700 noenhanced font "sans,10"
set output out
set datafile separator ","
set key autotitle columnhead
set multiplot layout 2,1 title "One source flooding, ".what." (shaded: the flood)"
set grid
set object 1 rect from a0, graph 0 to a1, graph 1 behind fc rgb "#eeeeee" fs solid noborder

set ylabel "OpenSIPS CPU (% of one core)"
set yrange [0:*]
plot pike using 1:2 with lines lw 2 title "pike", \
     rsec using 1:2 with lines lw 2 title "rsec"

set xlabel "time (s)"
set ylabel "legitimate requests answered 200 (%)"
set yrange [0:105]
plot pike using 1:5 with linespoints pt 7 ps 0.4 title "pike", \
     rsec using 1:5 with linespoints pt 7 ps 0.4 title "rsec"
unset multiplot
