// Shared pieces of the linattn program: error exits, strict number parsing, timing.
#ifndef LA_CLI_H
#define LA_CLI_H

#include "linattn.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

// Every user-facing error is one line on stderr and exit status 2.
#define LA_EXIT_USAGE 2
_Noreturn void cli_die(const char * fmt, ...) __attribute__((format(printf, 1, 2)));

// Strict parsers: the whole string must be a number in [lo, hi]; otherwise cli_die naming flag.
int64_t cli_parse_int(const char * flag, const char * s, int64_t lo, int64_t hi);
double  cli_parse_double(const char * flag, const char * s, double lo, double hi);

double cli_now(void);  // seconds, monotonic
// "42s", "3m07s", "2h05m"; "--" when s is not finite or negative.
void   cli_fmt_duration(char * out, size_t n, double s);

// Every later cli_die message starts with "ctx: " (NULL: none); the text is copied.
void cli_context(const char * ctx);

// A growing text buffer (exits on out of memory).
typedef struct cli_buf {
    char * buf;
    size_t len, cap;
} cli_buf;
void cli_buf_add(cli_buf * b, const char * fmt, ...) __attribute__((format(printf, 2, 3)));

int cmd_op(int argc, char ** argv);
int cmd_bench(int argc, char ** argv);
int cmd_demo(int argc, char ** argv);
int cmd_forms(int argc, char ** argv);
int cmd_bench_model(int argc, char ** argv);

#endif
