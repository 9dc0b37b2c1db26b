# linattn sweep mqar_state: drawn from runs.csv (mqar_vs_state.dat)
set grid
set key outside right top title "model" noenhanced
set title "MQAR recall vs decode state (hidden 64, 4 layers, 800 steps; 2 seeds)" noenhanced
set xlabel "decode state per sequence (bytes, log scale)" noenhanced
set ylabel "recall accuracy" noenhanced
set logscale x 2
set yrange [0:1.02]
set offsets graph 0.03, graph 0.03, 0, 0
set terminal pngcairo size 960,600 font "sans,11"
set output "mqar_vs_state.png.tmp"
plot "mqar_vs_state.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "linear_attn" noenhanced, \
     "mqar_vs_state.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "retnet" noenhanced, \
     "mqar_vs_state.dat" index 2 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gla" noenhanced, \
     "mqar_vs_state.dat" index 3 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "deltanet" noenhanced, \
     "mqar_vs_state.dat" index 4 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gdn" noenhanced, \
     "mqar_vs_state.dat" index 5 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "kda" noenhanced, \
     "mqar_vs_state.dat" index 6 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "attn" noenhanced
unset output
set terminal svg size 960,600 dynamic font "sans,11"
set output "mqar_vs_state.svg.tmp"
plot "mqar_vs_state.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "linear_attn" noenhanced, \
     "mqar_vs_state.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "retnet" noenhanced, \
     "mqar_vs_state.dat" index 2 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gla" noenhanced, \
     "mqar_vs_state.dat" index 3 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "deltanet" noenhanced, \
     "mqar_vs_state.dat" index 4 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gdn" noenhanced, \
     "mqar_vs_state.dat" index 5 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "kda" noenhanced, \
     "mqar_vs_state.dat" index 6 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "attn" noenhanced
unset output
