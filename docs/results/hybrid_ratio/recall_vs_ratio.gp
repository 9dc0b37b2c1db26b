# linattn sweep hybrid_ratio: drawn from runs.csv (recall_vs_ratio.dat)
set grid
set key outside right top title "depth" noenhanced
set title "MQAR recall vs the share of softmax layers (GDN 2 x 16x16 heads; 2 seeds)" noenhanced
set xlabel "softmax-attention layers / all layers (0 = pure GDN)" noenhanced
set ylabel "recall accuracy" noenhanced
set yrange [0:1.02]
set offsets graph 0.03, graph 0.03, 0, 0
set terminal pngcairo size 960,600 font "sans,11"
set output "recall_vs_ratio.png.tmp"
plot "recall_vs_ratio.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "2" noenhanced, \
     "recall_vs_ratio.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "4" noenhanced, \
     "recall_vs_ratio.dat" index 2 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "7" noenhanced
unset output
set terminal svg size 960,600 dynamic font "sans,11"
set output "recall_vs_ratio.svg.tmp"
plot "recall_vs_ratio.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "2" noenhanced, \
     "recall_vs_ratio.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "4" noenhanced, \
     "recall_vs_ratio.dat" index 2 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "7" noenhanced
unset output
