# linattn sweep mqar_budget: drawn from runs.csv (recall_vs_steps.dat)
set grid
set key outside right top title "model" noenhanced
set title "MQAR recall vs training steps (hidden 64, 4 layers; seed 1)" noenhanced
set xlabel "training steps (batch 32)" noenhanced
set ylabel "recall accuracy" noenhanced
set yrange [0:1.02]
set offsets graph 0.03, graph 0.03, 0, 0
set terminal pngcairo size 960,600 font "sans,11"
set output "recall_vs_steps.png.tmp"
plot "recall_vs_steps.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gdn" noenhanced, \
     "recall_vs_steps.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "attn" noenhanced
unset output
set terminal svg size 960,600 dynamic font "sans,11"
set output "recall_vs_steps.svg.tmp"
plot "recall_vs_steps.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gdn" noenhanced, \
     "recall_vs_steps.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "attn" noenhanced
unset output
