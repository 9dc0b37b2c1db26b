# linattn sweep passkey_length: drawn from runs.csv (passkey_vs_length_seed2.dat)
set grid
set key outside right top title "layers" noenhanced
set title "Passkey accuracy beyond the training length (trained at 64 tokens; seed 2)" noenhanced
set xlabel "context length (tokens)" noenhanced
set ylabel "passkey accuracy" noenhanced
set logscale x 2
set yrange [0:1.02]
set offsets graph 0.03, graph 0.03, 0, 0
set terminal pngcairo size 960,600 font "sans,11"
set output "passkey_vs_length_seed2.png.tmp"
plot "passkey_vs_length_seed2.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gdn*4" noenhanced, \
     "passkey_vs_length_seed2.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "kda*4" noenhanced, \
     "passkey_vs_length_seed2.dat" index 2 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gdn*3,attn" noenhanced
unset output
set terminal svg size 960,600 dynamic font "sans,11"
set output "passkey_vs_length_seed2.svg.tmp"
plot "passkey_vs_length_seed2.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gdn*4" noenhanced, \
     "passkey_vs_length_seed2.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "kda*4" noenhanced, \
     "passkey_vs_length_seed2.dat" index 2 using 1:2:3:4 with yerrorlines lw 2 pt 7 title "gdn*3,attn" noenhanced
unset output
