// linattn: the command-line program.
//
//   linattn op NAME --in IN.safetensors --out OUT.safetensors [...]   run one op (the op runner)
//   linattn bench [...]                                               time ops against sgemm
//   linattn demo                                      train GDN and a GDN+attention hybrid on MQAR
//   linattn train / eval / generate / info            language models (tools/train.c, lm.c)
//   linattn forms                                     each op's forms agree, and their speed
//   linattn sweep SPEC.json                           a grid of training runs, CSV and plots
#include "cli.h"
#include "lm.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char cli_ctx[512];

void cli_context(const char * ctx) { snprintf(cli_ctx, sizeof cli_ctx, "%s", ctx ? ctx : ""); }

_Noreturn void cli_die(const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("linattn: error: ", stderr);
    if (cli_ctx[0]) fprintf(stderr, "%s: ", cli_ctx);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(LA_EXIT_USAGE);
}

int64_t cli_parse_int(const char * flag, const char * s, int64_t lo, int64_t hi) {
    if (!s) cli_die("%s needs a value", flag);
    errno = 0;
    char * end;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        cli_die("%s: '%s' is not an integer in [%lld, %lld]", flag, s, (long long)lo,
                (long long)hi);
    return v;
}

double cli_parse_double(const char * flag, const char * s, double lo, double hi) {
    if (!s) cli_die("%s needs a value", flag);
    errno = 0;
    char * end;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        cli_die("%s: '%s' is not a finite number in [%g, %g]", flag, s, lo, hi);
    return v;
}

void cli_buf_add(cli_buf * b, const char * fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(b->buf ? b->buf + b->len : NULL, b->buf ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n >= 0 && b->buf && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        b->cap = 2 * (b->cap + (size_t)(n > 0 ? n : 0) + 64);
        char * nb = realloc(b->buf, b->cap);
        if (!nb) cli_die("out of memory");
        b->buf = nb;
    }
}

void cli_fmt_duration(char * out, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(out, n, "--");
    else if (s < 60) snprintf(out, n, "%.0fs", s);
    else if (s < 3600) snprintf(out, n, "%.0fm%02.0fs", floor(s / 60), fmod(s, 60));
    else snprintf(out, n, "%.0fh%02.0fm", floor(s / 3600), fmod(s / 60, 60));
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE * f) {
    fprintf(f,
            "linattn %s: linear-attention sequence models in C\n"
            "\n"
            "usage:\n"
            "  linattn op NAME --in IN.safetensors --out OUT.safetensors [options]\n"
            "                                  run one op; 'linattn op --help' lists ops and flags\n"
            "  linattn bench [options]         time every op and form next to sgemm\n"
            "                                  ('linattn bench --help')\n"
            "  linattn demo                    train a pure Gated DeltaNet and a 3:1 GDN+attention\n"
            "                                  hybrid on MQAR and compare their recall\n"
            "  linattn train [options]         train a model ('linattn train --help')\n"
            "  linattn eval CKPT [options]     loss / accuracy / perplexity / MSE of a checkpoint\n"
            "  linattn generate CKPT --prompt TEXT   sample from a checkpoint (chunked prefill,\n"
            "                                  then decoding on the recurrent state)\n"
            "  linattn info CKPT               config, parameters, state and activation memory\n"
            "  linattn sweep SPEC.json         a grid of training runs (mixer x size x length x\n"
            "                                  ratio x seed): CSV, resume, plots ('--help')\n"
            "  linattn bench-model             training, decode and prefill speed of small models\n"
            "  linattn forms                   run each mixer on a long random sequence: forms\n"
            "                                  agree, and how fast each is\n"
            "  linattn version                 print the version, ISA and BLAS backend\n",
            LA_VERSION_STRING);
}

int main(int argc, char ** argv) {
    if (argc < 2) {
        usage(stderr);
        return LA_EXIT_USAGE;
    }
    const char * cmd = argv[1];
    if (!strcmp(cmd, "op")) return cmd_op(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "demo")) return cmd_demo(argc - 1, argv + 1);
    if (!strcmp(cmd, "forms")) return cmd_forms(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench-model")) return cmd_bench_model(argc - 1, argv + 1);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "sweep")) return cmd_sweep(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("linattn %s (kernels: %s, blas: %s, threads: %d)\n", LA_VERSION_STRING,
               la_cpu_isa(), la_blas_backend(), la_get_num_threads());
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    cli_die("unknown command '%s' (try 'linattn --help')", cmd);
}
