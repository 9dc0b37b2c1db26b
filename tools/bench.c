// linattn bench: time every op and form next to the sgemm rate measured in the same run.
//
// Machines are shared and noisy, so absolute numbers mean little; every GFLOP/s figure is printed
// next to the sgemm GFLOP/s measured moments before on the same thread count (1 thread: one
// sgemm; n threads: n independent sgemms at once). FLOPs follow ALGORITHMS.md 11 (dense counts,
// forward+backward = 3x forward: "model FLOPs"). Before timing, each fast form is checked against
// the reference form on a small problem; a mismatch stops the benchmark.
#include "cli.h"
#include "internal.h"
#include "opset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_LIST 32

typedef struct bench_cfg {
    bool    ops[16];
    bool    forms[3];
    int64_t T[MAX_LIST];
    int     nT;
    int     threads[MAX_LIST];
    int     nthreads;
    int64_t H, K, V;
    int32_t C;
    bool    backward;
    double  min_time;
    bool    decode;
    bool    scan;
    const char * csv;
} bench_cfg;

static int cmp_double(const void * a, const void * b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// sgemm GFLOP/s on `nt` threads: each runs its own M = N = K = n product at the same time.
static double sgemm_rate(int nt, int64_t n) {
    float * buf = malloc((size_t)nt * 3 * (size_t)(n * n) * sizeof(float));
    if (!buf) cli_die("out of memory");
    for (int64_t i = 0; i < (int64_t)nt * 3 * n * n; i++) buf[i] = (float)((i * 7919) % 13) * 0.01f;
    double times[7];
    for (int r = 0; r < 7; r++) {
        double t0 = cli_now();
#pragma omp parallel num_threads(nt)
        {
            const int id = la_thread_index();
            float * A = buf + (size_t)id * 3 * (size_t)(n * n);
            la_sgemm(false, false, n, n, n, 1.0f, A, n, A + n * n, n, 0.0f, A + 2 * n * n, n);
        }
        times[r] = cli_now() - t0;
    }
    qsort(times, 7, sizeof(double), cmp_double);
    free(buf);
    return 2.0 * (double)(n * n) * (double)n * nt / times[3] * 1e-9;
}

// Memory bandwidth of `nt` threads reading and writing their own 64 MiB array (x = a x + b,
// the access pattern of a decode step on a state that does not fit in cache), GB/s.
static double stream_rate(int nt) {
    const int64_t n = (int64_t)16 << 20;  // floats per thread (64 MiB)
    float * buf = malloc((size_t)(n * nt) * sizeof(float));
    if (!buf) cli_die("out of memory");
    double times[5];
#pragma omp parallel num_threads(nt)
    {
        const int id = la_thread_index();
        float * x = buf + (size_t)id * (size_t)n;
        for (int64_t i = 0; i < n; i++) x[i] = 1.0f;
    }
    for (int r = 0; r < 5; r++) {
        double t0 = cli_now();
#pragma omp parallel num_threads(nt)
        {
            const int id = la_thread_index();
            float * restrict x = buf + (size_t)id * (size_t)n;
            for (int64_t i = 0; i < n; i++) x[i] = 0.999f * x[i] + 0.001f;
        }
        times[r] = cli_now() - t0;
    }
    qsort(times, 5, sizeof(double), cmp_double);
    free(buf);
    return 2.0 * (double)n * nt * sizeof(float) / times[2] * 1e-9;
}

// Median seconds of `fn` over repeats lasting at least min_time (at least 3 runs, 1 warm-up).
static double time_it(op_inst * x, la_form form, int32_t C, bool bwd, double min_time, int * reps) {
    double ts[64];
    int n = 0;
    double start = cli_now();
    la_status st = bwd ? op_inst_backward(x, form, C) : op_inst_forward(x, form, C);
    if (st != LA_STATUS_OK) cli_die("bench: op failed: %s", la_status_str(st));
    double one = cli_now() - start;
    int want = one > 2 * min_time ? 1 : 3;
    start = cli_now();
    while (n < 64 && (n < want || cli_now() - start < min_time)) {
        double t0 = cli_now();
        if (bwd) op_inst_backward(x, form, C);
        else op_inst_forward(x, form, C);
        ts[n++] = cli_now() - t0;
    }
    qsort(ts, (size_t)n, sizeof(double), cmp_double);
    *reps = n;
    return ts[n / 2];
}

static double max_rel_diff(const float * a, const float * b, int64_t n) {
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; i++) s = fmax(s, fabs((double)b[i]));
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;  // NaN propagates
    }
    return m / (s > 0 ? s : 1);
}

// Check every fast form against the reference form at a small shape.
static bool check_forms(const bench_cfg * cfg) {
    la_shape sh = { 1, 300, 2, 32, 24 };
    bool ok = true;
    for (int op = 0; op < la_opset_count; op++) {
        if (!cfg->ops[op]) continue;
        op_inst * r = op_inst_new(op, sh, 1), * x = op_inst_new(op, sh, 1);
        if (!r || !x) cli_die("out of memory");
        la_status st = op_inst_backward(r, LA_FORM_REF, 0);
        if (st != LA_STATUS_OK) cli_die("bench: %s ref failed: %s", la_opset[op].name, la_status_str(st));
        for (int f = 0; f < 2; f++) {
            st = op_inst_backward(x, (la_form)f, cfg->C);
            if (st != LA_STATUS_OK)
                cli_die("bench: %s %s failed: %s", la_opset[op].name, la_form_str((la_form)f),
                        la_status_str(st));
            int64_t n1, n2;
            const float * a = op_inst_out(x, &n1), * b = op_inst_out(r, &n1);
            double d1 = max_rel_diff(a, b, n1);
            a = op_inst_grad(x, &n2);
            b = op_inst_grad(r, &n2);
            double d2 = max_rel_diff(a, b, n2);
            if (!(d1 < 1e-4 && d2 < 1e-4)) {
                fprintf(stderr, "bench: %s %s disagrees with ref (out %.3g, grad %.3g); not timing\n",
                        la_opset[op].name, la_form_str((la_form)f), d1, d2);
                ok = false;
            }
        }
        op_inst_free(r);
        op_inst_free(x);
    }
    return ok;
}

// Decode: one token per step (recurrent form, state updated in place) for N = 1 sequence (the
// state of H heads sits in cache) and N = 64 sequences (it does not), as state GB/s next to
// the memory bandwidth measured in the same run.
static void bench_decode(const bench_cfg * cfg, FILE * csv) {
    for (int ti = 0; ti < cfg->nthreads; ti++) {
        const int nt = cfg->threads[ti];
        la_set_num_threads(nt);
        const double bw = stream_rate(nt);
        printf("\n== decode, %d thread%s: memory bandwidth %.1f GB/s (read+write, %d x 64 MiB)\n",
               nt, nt > 1 ? "s" : "", bw, nt);
        printf("%-16s %-12s %5s %10s %12s %10s %8s %10s\n", "op", "variant", "N", "state KiB",
               "us/step", "tokens/s", "GB/s", "%bandwidth");
        const int64_t Ns[2] = { 1, 64 };
        for (int op = 0; op < la_opset_count; op++) {
            if (!cfg->ops[op] || !strcmp(la_opset[op].note, "normalize") ||
                la_opset[op].quadratic)
                continue;
            for (int b = 0; b < 2; b++) {
                la_shape sh = { Ns[b], 1, cfg->H, cfg->K, cfg->V };
                op_inst * x = op_inst_new(op, sh, 3);
                if (!x) cli_die("out of memory");
                double bytes = 0, ts[64];
                int n = 0;
                op_inst_decode(x, &bytes);  // warm-up, allocates the state
                double start = cli_now();
                while (n < 64 && (n < 5 || cli_now() - start < cfg->min_time)) {
                    double t0 = cli_now();
                    la_status st = op_inst_decode(x, &bytes);
                    if (st != LA_STATUS_OK) cli_die("decode: %s", la_status_str(st));
                    ts[n++] = cli_now() - t0;
                }
                qsort(ts, (size_t)n, sizeof(double), cmp_double);
                const double s = ts[n / 2], gbs = bytes / s * 1e-9;
                printf("%-16s %-12s %5lld %10.0f %12.1f %10.0f %8.1f %9.1f%%\n", la_opset[op].name,
                       la_opset[op].note[0] ? la_opset[op].note : "-", (long long)Ns[b],
                       bytes / 2 / 1024, s * 1e6, (double)Ns[b] / s, gbs, 100.0 * gbs / bw);
                if (csv)
                    fprintf(csv, "%s,\"%s\",decode,N=%lld,1,%d,%.4f,%.1f,%.3f,%.3f,%.2f\n",
                            la_opset[op].name, la_opset[op].note, (long long)Ns[b], nt, s * 1e3,
                            (double)Ns[b] / s, gbs, bw, 100.0 * gbs / bw);
                op_inst_free(x);
            }
        }
    }
}

// selective_scan (Mamba S6) at Mamba's sizes, in tokens/s, next to a plain scalar scan (one
// libm expf per state element and token, the textbook loop) timed in the same run.
static void scalar_scan(float * y, const float * u, const float * delta, const float * A,
                        const float * Bm, const float * Cm, float * h, int64_t T, int64_t D,
                        int64_t N) {
    memset(h, 0, (size_t)(D * N) * sizeof(float));
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) {
            const float dt = delta[t * D + d], x = u[t * D + d];
            float acc = 0.0f;
            for (int64_t n = 0; n < N; n++) {
                float * hn = h + d * N + n;
                *hn = expf(dt * A[d * N + n]) * *hn + dt * Bm[t * N + n] * x;
                acc += Cm[t * N + n] * *hn;
            }
            y[t * D + d] = acc;
        }
}

static void bench_selective_scan(const bench_cfg * cfg, FILE * csv) {
    const int64_t T = 8192, D = 1536, N = 16;
    float * u = malloc((size_t)(T * D) * 4), * dl = malloc((size_t)(T * D) * 4);
    float * A = malloc((size_t)(D * N) * 4), * Bm = malloc((size_t)(T * N) * 4);
    float * Cm = malloc((size_t)(T * N) * 4), * y = malloc((size_t)(T * D) * 4);
    float * dy = malloc((size_t)(T * D) * 4), * h = malloc((size_t)(D * N) * 4);
    float * du = malloc((size_t)(T * D) * 4), * ddl = malloc((size_t)(T * D) * 4);
    float * dA = malloc((size_t)(D * N) * 4), * dB = malloc((size_t)(T * N) * 4);
    float * dC = malloc((size_t)(T * N) * 4);
    if (!u || !dl || !A || !Bm || !Cm || !y || !dy || !h || !du || !ddl || !dA || !dB || !dC)
        cli_die("out of memory");
    uint64_t s = 99;
    for (int64_t i = 0; i < T * D; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        u[i] = (float)((double)(s >> 40) / 16777216.0 - 0.5);
        dl[i] = 0.001f + 0.1f * (float)((double)((s >> 20) & 0xfffff) / 1048576.0);
        dy[i] = u[i];
    }
    for (int64_t i = 0; i < D * N; i++) A[i] = -(float)(1 + i % N);  // S4D-real init
    for (int64_t i = 0; i < T * N; i++) {
        Bm[i] = (float)((i * 37) % 11) * 0.1f - 0.5f;
        Cm[i] = (float)((i * 53) % 13) * 0.1f - 0.6f;
    }
    double t0 = cli_now();
    scalar_scan(y, u, dl, A, Bm, Cm, h, T, D, N);
    const double t_scalar = cli_now() - t0;
    printf("\n== selective_scan B=1 T=%lld D=%lld N=%lld: plain scalar scan %.0f tokens/s (1 thread)\n",
           (long long)T, (long long)D, (long long)N, (double)T / t_scalar);
    printf("%-9s %-7s %7s %10s %12s %12s\n", "form", "pass", "threads", "ms", "tokens/s",
           "x scalar");
    for (int ti = 0; ti < cfg->nthreads; ti++) {
        la_set_num_threads(cfg->threads[ti]);
        for (int f = 0; f < 2; f++) {
            la_opts o = la_opts_default();
            o.form = (la_form)f;
            for (int p = 0; p < (cfg->backward ? 2 : 1); p++) {
                double best = 1e30;
                for (int rep = 0; rep < 3; rep++) {
                    double a = cli_now();
                    la_status st = la_selective_scan_forward(y, NULL, u, dl, A, Bm, Cm, NULL, NULL,
                                                             false, NULL, 1, T, D, N, &o);
                    if (st == LA_STATUS_OK && p)
                        st = la_selective_scan_backward(du, ddl, dA, dB, dC, NULL, NULL, NULL, dy,
                                                        NULL, u, dl, A, Bm, Cm, NULL, NULL, false,
                                                        NULL, 1, T, D, N, &o);
                    if (st != LA_STATUS_OK) cli_die("selective_scan: %s", la_status_str(st));
                    best = fmin(best, cli_now() - a);
                }
                printf("%-9s %-7s %7d %10.1f %12.0f %11.1fx\n", la_form_str((la_form)f),
                       p ? "fwd+bwd" : "fwd", cfg->threads[ti], best * 1e3, (double)T / best,
                       t_scalar / best);
                if (csv)
                    fprintf(csv, "selective_scan,\"D=%lld N=%lld\",%s,%s,%lld,%d,%.4f,%.1f,,,\n",
                            (long long)D, (long long)N, la_form_str((la_form)f),
                            p ? "fwd+bwd" : "fwd", (long long)T, cfg->threads[ti], best * 1e3,
                            (double)T / best);
            }
        }
    }
    free(u); free(dl); free(A); free(Bm); free(Cm); free(y); free(dy); free(h);
    free(du); free(ddl); free(dA); free(dB); free(dC);
}

static int parse_list(const char * flag, const char * s, int64_t * out, int64_t lo, int64_t hi) {
    if (!s) cli_die("%s needs a comma-separated list", flag);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char * tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n >= MAX_LIST) cli_die("%s: at most %d values", flag, MAX_LIST);
        out[n++] = cli_parse_int(flag, tok, lo, hi);
    }
    if (!n) cli_die("%s: empty list", flag);
    return n;
}

static void bench_usage(FILE * f) {
    fprintf(f,
            "usage: linattn bench [--ops LIST] [--forms LIST] [--T LIST] [--threads LIST]\n"
            "                     [--H N] [--K N] [--V N] [--chunk-size N] [--no-backward]\n"
            "                     [--min-time S] [--csv FILE] [--quick]\n"
            "                     [--no-decode] [--decode-only] [--no-scan] [--scan-only]\n"
            "  --ops      linear_attn,linear_attn_norm,simple_gla,retention,mamba2,gla,rwkv6,hgrn,\n"
            "             selective_scan,delta_rule,gated_delta_rule,kda,dplr_delta_rule,rwkv7,\n"
            "             attn (causal softmax attention, quadratic in T: not in the default set)\n"
            "             (default: all but attn)\n"
            "  --forms    chunk,recurrent,ref (default chunk,recurrent)\n"
            "  --T        sequence lengths (default 1024,2048,4096,8192,16384,32768,65536)\n"
            "  --threads  thread counts (default 1,2)\n"
            "  --quick    T=1024,8192 and simple_gla only\n"
            "defaults: B=1, H=8, K=V=128, C=64, forward and forward+backward\n");
}

int cmd_bench(int argc, char ** argv) {
    bench_cfg cfg = { .H = 8, .K = 128, .V = 128, .C = 0, .backward = true, .min_time = 0.3,
                      .decode = true, .scan = true };
    for (int i = 0; i < la_opset_count; i++) cfg.ops[i] = !la_opset[i].quadratic;
    cfg.forms[LA_FORM_CHUNK] = cfg.forms[LA_FORM_RECURRENT] = true;
    const int64_t defT[] = { 1024, 2048, 4096, 8192, 16384, 32768, 65536 };
    cfg.nT = 7;
    memcpy(cfg.T, defT, sizeof defT);
    cfg.threads[0] = 1;
    cfg.threads[1] = 2;
    cfg.nthreads = 2;
    for (int i = 1; i < argc; i++) {
        const char * a = argv[i], * val = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t tmp[MAX_LIST];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            bench_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--ops")) {
            if (!val) cli_die("--ops needs a list");
            memset(cfg.ops, 0, sizeof cfg.ops);
            char buf[256];
            snprintf(buf, sizeof buf, "%s", val);
            for (char * t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
                int found = -1;
                for (int o = 0; o < la_opset_count; o++) {
                    char nm[64];
                    snprintf(nm, sizeof nm, "%s%s", la_opset[o].name,
                             !strcmp(la_opset[o].note, "normalize") ? "_norm" : "");
                    if (!strcmp(nm, t)) found = o;
                }
                if (found < 0) cli_die("--ops: unknown op '%s'", t);
                cfg.ops[found] = true;
            }
            bool any = false;
            for (int o = 0; o < la_opset_count; o++) any |= cfg.ops[o];
            if (!any) cli_die("--ops: empty list");
            i++;
        } else if (!strcmp(a, "--forms")) {
            if (!val) cli_die("--forms needs a list");
            memset(cfg.forms, 0, sizeof cfg.forms);
            char buf[128];
            snprintf(buf, sizeof buf, "%s", val);
            for (char * t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
                if (!strcmp(t, "chunk")) cfg.forms[LA_FORM_CHUNK] = true;
                else if (!strcmp(t, "recurrent")) cfg.forms[LA_FORM_RECURRENT] = true;
                else if (!strcmp(t, "ref")) cfg.forms[LA_FORM_REF] = true;
                else cli_die("--forms: unknown form '%s'", t);
            }
            if (!cfg.forms[0] && !cfg.forms[1] && !cfg.forms[2]) cli_die("--forms: empty list");
            i++;
        } else if (!strcmp(a, "--T")) {
            cfg.nT = parse_list("--T", val, cfg.T, 1, 1 << 24);
            i++;
        } else if (!strcmp(a, "--threads")) {
            cfg.nthreads = parse_list("--threads", val, tmp, 1, 256);
            for (int j = 0; j < cfg.nthreads; j++) cfg.threads[j] = (int)tmp[j];
            i++;
        } else if (!strcmp(a, "--H")) {
            cfg.H = cli_parse_int("--H", val, 1, 4096);
            i++;
        } else if (!strcmp(a, "--K")) {
            cfg.K = cli_parse_int("--K", val, 1, 4096);
            i++;
        } else if (!strcmp(a, "--V")) {
            cfg.V = cli_parse_int("--V", val, 1, 4096);
            i++;
        } else if (!strcmp(a, "--chunk-size")) {
            cfg.C = (int32_t)cli_parse_int("--chunk-size", val, 1, 256);
            i++;
        } else if (!strcmp(a, "--no-backward")) {
            cfg.backward = false;
        } else if (!strcmp(a, "--no-decode")) {
            cfg.decode = false;
        } else if (!strcmp(a, "--no-scan")) {
            cfg.scan = false;
        } else if (!strcmp(a, "--scan-only")) {
            cfg.nT = 0;
            cfg.decode = false;
        } else if (!strcmp(a, "--decode-only")) {
            cfg.nT = 0;
            cfg.scan = false;
        } else if (!strcmp(a, "--min-time")) {
            cfg.min_time = cli_parse_double("--min-time", val, 0, 100);
            i++;
        } else if (!strcmp(a, "--csv")) {
            if (!val) cli_die("--csv needs a file");
            cfg.csv = val;
            i++;
        } else if (!strcmp(a, "--quick")) {
            memset(cfg.ops, 0, sizeof cfg.ops);
            cfg.ops[2] = true;
            cfg.T[0] = 1024;
            cfg.T[1] = 8192;
            cfg.nT = 2;
            cfg.decode = cfg.scan = false;
        } else {
            cli_die("bench: unknown flag '%s' (try --help)", a);
        }
    }

    char cpu[256] = "unknown";
    FILE * f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char * p = strchr(line, ':');
                if (p) snprintf(cpu, sizeof cpu, "%s", p + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(f);
    }
#ifndef LA_GIT_COMMIT
#define LA_GIT_COMMIT "unknown"
#endif
    printf("linattn %s (commit %s), %s, kernels %s, blas %s\n", LA_VERSION_STRING, LA_GIT_COMMIT,
           cpu, la_cpu_isa(), la_blas_backend());
    if (cfg.C > 0)
        printf("compiler %s; B=1 H=%lld K=%lld V=%lld C=%d\n", __VERSION__, (long long)cfg.H,
               (long long)cfg.K, (long long)cfg.V, cfg.C);
    else
        printf("compiler %s; B=1 H=%lld K=%lld V=%lld C=each op's default (64; dplr family 32)\n",
               __VERSION__, (long long)cfg.H, (long long)cfg.K, (long long)cfg.V);
    if (!check_forms(&cfg)) return 1;
    printf("check: every timed form agrees with the reference form (rel diff < 1e-4)\n");

    // The CSV goes to FILE.tmp and is renamed over FILE when the run completes, so an earlier
    // result survives an interrupted or failed run.
    FILE * csv = NULL;
    char csv_tmp[4096];
    if (cfg.csv) {
        snprintf(csv_tmp, sizeof csv_tmp, "%s.tmp", cfg.csv);
        csv = fopen(csv_tmp, "w");
        if (!csv) cli_die("cannot write %s", csv_tmp);
        fprintf(csv, "op,variant,form,pass,T,threads,ms,tokens_per_s,gflops,sgemm_gflops,pct_sgemm\n");
    }
    for (int ti = 0; ti < cfg.nthreads && cfg.nT > 0; ti++) {
        const int nt = cfg.threads[ti];
        la_set_num_threads(nt);
        const double sg = sgemm_rate(nt, 1024);
        printf("\n== %d thread%s: sgemm %.1f GFLOP/s (%s, 1024^3%s)\n", nt, nt > 1 ? "s" : "", sg,
               la_blas_backend(), nt > 1 ? " per thread, run concurrently" : "");
        printf("%-16s %-12s %-9s %-7s %7s %10s %12s %9s %8s\n", "op", "variant", "form", "pass",
               "T", "ms", "tokens/s", "GFLOP/s", "%sgemm");
        for (int op = 0; op < la_opset_count; op++) {
            if (!cfg.ops[op]) continue;
            for (int fi = 0; fi < 3; fi++) {
                const la_form form = (la_form)fi;
                if (!cfg.forms[fi]) continue;
                double t8k[2] = { 0, 0 }, t64k[2] = { 0, 0 };
                for (int k = 0; k < cfg.nT; k++) {
                    la_shape sh = { 1, cfg.T[k], cfg.H, cfg.K, cfg.V };
                    op_inst * x = op_inst_new(op, sh, 7);
                    if (!x) cli_die("out of memory at T=%lld", (long long)cfg.T[k]);
                    for (int p = 0; p < (cfg.backward ? 2 : 1); p++) {
                        int reps;
                        double s = time_it(x, form, cfg.C, p == 1, cfg.min_time, &reps);
                        double flops = op_flops_per_token(op, form, sh, cfg.C) * (double)sh.T *
                                       (double)sh.H * (p ? op_fwdbwd_factor(op) : 1.0);
                        double gf = flops / s * 1e-9;
                        printf("%-16s %-12s %-9s %-7s %7lld %10.2f %12.0f %9.1f %7.1f%%\n",
                               la_opset[op].name, la_opset[op].note[0] ? la_opset[op].note : "-",
                               la_form_str(form), p ? "fwd+bwd" : "fwd", (long long)sh.T,
                               s * 1e3, (double)sh.T / s, gf, 100.0 * gf / sg);
                        fflush(stdout);
                        if (csv)
                            fprintf(csv, "%s,\"%s\",%s,%s,%lld,%d,%.4f,%.1f,%.3f,%.3f,%.2f\n",
                                    la_opset[op].name, la_opset[op].note, la_form_str(form),
                                    p ? "fwd+bwd" : "fwd", (long long)sh.T, nt, s * 1e3,
                                    (double)sh.T / s, gf, sg, 100.0 * gf / sg);
                        if (sh.T == 8192) t8k[p] = s;
                        if (sh.T == 65536) t64k[p] = s;
                    }
                    op_inst_free(x);
                }
                for (int p = 0; p < 2; p++)
                    if (t8k[p] > 0 && t64k[p] > 0)
                        printf("%-16s %-12s %-9s %-7s T=65536 / T=8192 time ratio %.2f (linear: 8)\n",
                               la_opset[op].name, la_opset[op].note[0] ? la_opset[op].note : "-",
                               la_form_str(form), p ? "fwd+bwd" : "fwd", t64k[p] / t8k[p]);
            }
        }
    }
    if (cfg.decode) bench_decode(&cfg, csv);
    if (cfg.scan) bench_selective_scan(&cfg, csv);
    if (csv) {
        const bool bad = ferror(csv) != 0;
        if (fclose(csv) != 0 || bad) {
            remove(csv_tmp);
            cli_die("writing %s failed", csv_tmp);
        }
        if (rename(csv_tmp, cfg.csv) != 0) {
            remove(csv_tmp);
            cli_die("cannot rename %s to %s", csv_tmp, cfg.csv);
        }
    }
    la_set_num_threads(0);
    return 0;
}
