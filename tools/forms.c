// linattn forms: each implemented mixer on a long random sequence. The chunk, recurrent and
// reference forms must agree (forward output and a backward gradient); the table shows how
// fast each form is. Exit status 1 if any form disagrees.
#include "cli.h"
#include "opset.h"

#include <math.h>
#include <string.h>

static double rel_diff(const float * a, const float * b, int64_t n) {
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        s = fmax(s, fabs((double)b[i]));
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
    }
    return m / (s > 0 ? s : 1);
}

int cmd_forms(int argc, char ** argv) {
    int64_t T = 16384;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--T")) {
            T = cli_parse_int("--T", i + 1 < argc ? argv[i + 1] : NULL, 1, 1 << 22);
            i++;
        } else {
            cli_die("forms: unknown flag '%s' (takes --T N)", argv[i]);
        }
    }
    const la_shape sh = { 1, T, 4, 64, 64 };
    printf("linattn %s demo: B=1 T=%lld H=%lld K=V=%lld, %d threads, kernels %s\n",
           LA_VERSION_STRING, (long long)sh.T, (long long)sh.H, (long long)sh.K,
           la_get_num_threads(), la_cpu_isa());
    printf("Every mixer in three forms; 'diff' is max|form - ref| / max|ref| for the output o\n"
           "and for a gradient from the backward pass.\n\n");
    printf("%-16s %-12s %-10s %10s %12s %10s %10s %10s\n", "op", "variant", "form", "fwd ms",
           "fwd tok/s", "bwd ms", "diff o", "diff grad");
    bool all_ok = true;
    for (int op = 0; op < la_opset_count; op++) {
        if (la_opset[op].quadratic) continue;  // its ref form is O(T^2) at this length
        op_inst * x[3];
        double tf[3], tb[3];
        for (int f = 2; f >= 0; f--) {  // ref first
            x[f] = op_inst_new(op, sh, 11);
            if (!x[f]) cli_die("out of memory");
            double t0 = cli_now();
            la_status st = op_inst_forward(x[f], (la_form)f, 64);
            tf[f] = cli_now() - t0;
            t0 = cli_now();
            if (st == LA_STATUS_OK) st = op_inst_backward(x[f], (la_form)f, 64);
            tb[f] = cli_now() - t0 - tf[f];  // backward recomputes the forward first
            if (st != LA_STATUS_OK) cli_die("%s: %s", la_opset[op].name, la_status_str(st));
        }
        for (int f = 2; f >= 0; f--) {
            int64_t n1, n2;
            const float * o = op_inst_out(x[f], &n1), * oref = op_inst_out(x[2], &n1);
            const float * g = op_inst_grad(x[f], &n2), * gref = op_inst_grad(x[2], &n2);
            double d1 = rel_diff(o, oref, n1), d2 = rel_diff(g, gref, n2);
            bool ok = d1 < 1e-4 && d2 < 1e-4;
            all_ok &= ok;
            printf("%-16s %-12s %-10s %10.1f %12.0f %10.1f %10.1e %10.1e%s\n", la_opset[op].name,
                   la_opset[op].note[0] ? la_opset[op].note : "-", la_form_str((la_form)f),
                   tf[f] * 1e3, (double)sh.T / tf[f], tb[f] * 1e3, d1, d2,
                   ok ? "" : "  DISAGREE");
        }
        for (int f = 0; f < 3; f++) op_inst_free(x[f]);
    }
    printf("\n%s\n", all_ok ? "All forms agree (relative difference < 1e-4)."
                            : "Some forms disagree: see DISAGREE above.");
    return all_ok ? 0 : 1;
}
