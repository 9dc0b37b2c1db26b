// linattn sweep SPEC.json: a grid of training runs in one command (docs/TASKS.md, "Sweeps").
//
// The spec gives fixed `linattn train` flags and one or more grids of values; every
// combination of a grid is a run. Each run trains and evaluates in a child process, so a run
// that diverges (or runs out of memory) is recorded as failed and the sweep goes on. A run is
// evaluated at its training length and at every length of `eval_seq_len` (generalisation
// beyond the training length). Its row goes to OUT/runs.csv, which is rewritten atomically
// after every run: an interrupted sweep started again skips the runs the CSV already holds.
// The plots are drawn from the CSV alone (gnuplot, PNG and SVG), so --plots-only redraws them.
#include "cli.h"
#include "lm.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cJSON.h>

#define MAX_AXES  32
#define MAX_EVAL  32
#define MAX_PLOTS 16

// Flags a spec may not set: the sweep owns the run's output and its progress display.
static const char * const owned_flags[] = { "out", "resume", "log", "stop-after", "save-every",
                                            "quiet", "help" };

typedef struct {
    char    id[1024];             // "key=value;..." over the spec's axes: the run's identity
    char    label[512];           // "model=gdn heads=4" for the progress display
    char *  val[MAX_AXES];        // this run's value of each axis ("" where its grid lacks it)
    int     argc;
    char ** argv;                 // "train", then the flags
    int64_t steps;                // training steps (for the ETA)
} sweep_run;

typedef struct {
    char   name[64], x[64], y[64], series[64], title[256], xlabel[128], ylabel[128];
    bool   logx, logy;
    double ylo, yhi;              // yrange when ylo < yhi
    char   fkey[8][64], fval[8][256];  // filter: rows whose column fkey[i] equals fval[i]
    int    nfilter;
} sweep_plot;

typedef struct {
    char       name[128], out[4096];
    char *     axis[MAX_AXES];
    int        n_axes;
    int64_t    eval_len[MAX_EVAL];
    int        n_eval;
    sweep_run * runs;
    int        n_runs;
    sweep_plot plots[MAX_PLOTS];
    int        n_plots;
    bool       icr;               // the metric is mse/d (in-context regression), not accuracy
    char **    derived;           // the measured cells a run reports (set_columns)
    int        n_derived;
    // the CSV: a header and rows of cells
    char **    cols;
    int        n_cols;
    char ***   rows;
    int        n_rows;
} sweep;

// ---------------------------------------------------------------------------------------------
// Small helpers

static char * xstrdup(const char * s) {
    char * d = strdup(s ? s : "");
    if (!d) cli_die("out of memory");
    return d;
}

static void * xrealloc(void * p, size_t n) {
    void * q = realloc(p, n ? n : 1);
    if (!q) cli_die("out of memory");
    return q;
}

// A JSON scalar as the text a flag takes ("" for false: the flag is left out).
static void json_value(char * out, size_t n, const cJSON * v, const char * where) {
    if (cJSON_IsString(v)) snprintf(out, n, "%s", v->valuestring);
    else if (cJSON_IsBool(v)) snprintf(out, n, "%s", cJSON_IsTrue(v) ? "true" : "");
    else if (cJSON_IsNumber(v)) {
        const double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 1e15) snprintf(out, n, "%lld", (long long)d);
        else snprintf(out, n, "%.10g", d);
    } else cli_die("%s: values must be strings, numbers or booleans", where);
}

static int col_index(const sweep * sw, const char * name) {
    for (int c = 0; c < sw->n_cols; c++)
        if (!strcmp(sw->cols[c], name)) return c;
    return -1;
}

// CSV cells: quoted when they hold a comma, a quote or a newline.
static void csv_cell(cli_buf * b, const char * s, bool last) {
    if (strpbrk(s, ",\"\n")) {
        cli_buf_add(b, "\"");
        for (const char * p = s; *p; p++) cli_buf_add(b, *p == '"' ? "\"\"" : "%c", *p);
        cli_buf_add(b, "\"");
    } else {
        cli_buf_add(b, "%s", s);
    }
    cli_buf_add(b, last ? "\n" : ",");
}

// Splits one CSV line (quotes as csv_cell writes them) into at most max cells; returns the count.
static int csv_split(char * line, char ** cells, int max) {
    int n = 0;
    char * p = line;
    for (;;) {
        if (n == max) return -1;
        char * w = p;
        cells[n++] = w;
        if (*p == '"') {
            p++;
            for (;;) {
                if (!*p) return -1;  // unterminated quote
                if (*p == '"' && p[1] == '"') *w++ = '"', p += 2;
                else if (*p == '"') { p++; break; }
                else *w++ = *p++;
            }
            if (*p && *p != ',') return -1;
        } else {
            while (*p && *p != ',') *w++ = *p++;
        }
        const bool more = *p == ',';
        if (*p) p++;
        *w = 0;
        if (!more) return n;
    }
}

// ---------------------------------------------------------------------------------------------
// The spec

static bool owned(const char * key) {
    for (size_t i = 0; i < sizeof owned_flags / sizeof owned_flags[0]; i++)
        if (!strcmp(key, owned_flags[i])) return true;
    return false;
}

static void add_flag(sweep_run * r, const char * key, const char * val) {
    if (!val[0]) return;  // a false boolean
    r->argv = xrealloc(r->argv, (size_t)(r->argc + 3) * sizeof *r->argv);
    char f[80];
    snprintf(f, sizeof f, "--%s", key);
    r->argv[r->argc++] = xstrdup(f);
    if (strcmp(val, "true")) r->argv[r->argc++] = xstrdup(val);
}

static void add_axis(sweep * sw, const char * key) {
    for (int a = 0; a < sw->n_axes; a++)
        if (!strcmp(sw->axis[a], key)) return;
    if (sw->n_axes == MAX_AXES) cli_die("spec: more than %d grid keys", MAX_AXES);
    sw->axis[sw->n_axes++] = xstrdup(key);
}

static void check_key(const char * key, const char * where) {
    if (owned(key)) cli_die("%s: '%s' is set by the sweep itself (see linattn sweep --help)", where, key);
    if (strlen(key) > 60 || !key[0] || strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(key))
        cli_die("%s: '%s' is not a train flag name (lowercase, e.g. \"seq-len\")", where, key);
}

// Every combination of one grid object (the last key varies fastest), after the fixed flags.
static void expand_grid(sweep * sw, const cJSON * fixed, const cJSON * grid) {
    const cJSON * ax[MAX_AXES];
    int na = 0, idx[MAX_AXES] = { 0 };
    const cJSON * g;
    cJSON_ArrayForEach(g, grid) {
        check_key(g->string, "spec: grid");
        if (!cJSON_IsArray(g) || cJSON_GetArraySize(g) < 1)
            cli_die("spec: grid: '%s' must be a non-empty list", g->string);
        if (na == MAX_AXES) cli_die("spec: more than %d grid keys", MAX_AXES);
        ax[na++] = g;
    }
    for (;;) {
        sw->runs = xrealloc(sw->runs, (size_t)(sw->n_runs + 1) * sizeof *sw->runs);
        sweep_run * r = &sw->runs[sw->n_runs++];
        memset(r, 0, sizeof *r);
        r->argv = xrealloc(r->argv, sizeof *r->argv);
        r->argv[r->argc++] = xstrdup("train");
        char v[1024];
        const cJSON * f;
        cJSON_ArrayForEach(f, fixed) {
            bool in_grid = false;
            for (int a = 0; a < na; a++) in_grid |= !strcmp(ax[a]->string, f->string);
            if (in_grid) continue;
            json_value(v, sizeof v, f, "spec: flags");
            add_flag(r, f->string, v);
        }
        for (int a = 0; a < na; a++) {
            json_value(v, sizeof v, cJSON_GetArrayItem(ax[a], idx[a]), "spec: grid");
            add_flag(r, ax[a]->string, v);
        }
        // the grid's values by axis (the axes of every grid, in the order first met)
        for (int a = 0; a < na; a++) add_axis(sw, ax[a]->string);
        for (int k = 0; k < sw->n_axes; k++) {
            r->val[k] = xstrdup("");
            for (int a = 0; a < na; a++)
                if (!strcmp(ax[a]->string, sw->axis[k])) {
                    json_value(v, sizeof v, cJSON_GetArrayItem(ax[a], idx[a]), "spec: grid");
                    free(r->val[k]);
                    r->val[k] = xstrdup(v);
                }
        }
        int a = na - 1;
        while (a >= 0 && ++idx[a] == cJSON_GetArraySize(ax[a])) idx[a--] = 0;
        if (a < 0) break;
    }
}

static void parse_plot(sweep_plot * p, const cJSON * o, int i) {
    if (!cJSON_IsObject(o)) cli_die("spec: plots[%d] must be an object", i);
    memset(p, 0, sizeof *p);
    const struct { const char * key; char * dst; size_t n; bool need; } str[] = {
        { "name", p->name, sizeof p->name, true },       { "x", p->x, sizeof p->x, true },
        { "y", p->y, sizeof p->y, true },                { "series", p->series, sizeof p->series, false },
        { "title", p->title, sizeof p->title, false },   { "xlabel", p->xlabel, sizeof p->xlabel, false },
        { "ylabel", p->ylabel, sizeof p->ylabel, false },
    };
    const cJSON * e;
    cJSON_ArrayForEach(e, o) {
        bool known = false;
        for (size_t k = 0; k < sizeof str / sizeof str[0]; k++)
            if (!strcmp(e->string, str[k].key)) {
                if (!cJSON_IsString(e) || strlen(e->valuestring) >= str[k].n || strchr(e->valuestring, '"'))
                    cli_die("spec: plots[%d].%s must be a string of at most %zu characters without "
                            "quotes", i, e->string, str[k].n - 1);
                snprintf(str[k].dst, str[k].n, "%s", e->valuestring);
                known = true;
            }
        if (known) continue;
        if (!strcmp(e->string, "logx") || !strcmp(e->string, "logy")) {
            if (!cJSON_IsBool(e)) cli_die("spec: plots[%d].%s must be true or false", i, e->string);
            *(e->string[3] == 'x' ? &p->logx : &p->logy) = cJSON_IsTrue(e);
        } else if (!strcmp(e->string, "yrange")) {
            if (cJSON_GetArraySize(e) != 2 || !cJSON_IsNumber(cJSON_GetArrayItem(e, 0)) ||
                !cJSON_IsNumber(cJSON_GetArrayItem(e, 1)))
                cli_die("spec: plots[%d].yrange must be [low, high]", i);
            p->ylo = cJSON_GetArrayItem(e, 0)->valuedouble;
            p->yhi = cJSON_GetArrayItem(e, 1)->valuedouble;
        } else if (!strcmp(e->string, "filter")) {
            const cJSON * f;
            if (!cJSON_IsObject(e)) cli_die("spec: plots[%d].filter must be an object", i);
            cJSON_ArrayForEach(f, e) {
                if (p->nfilter == 8) cli_die("spec: plots[%d].filter: at most 8 keys", i);
                snprintf(p->fkey[p->nfilter], sizeof p->fkey[0], "%s", f->string);
                json_value(p->fval[p->nfilter], sizeof p->fval[0], f, "spec: plots.filter");
                p->nfilter++;
            }
        } else {
            cli_die("spec: plots[%d]: unknown key '%s' (name, x, y, series, filter, logx, logy, "
                    "yrange, title, xlabel, ylabel)", i, e->string);
        }
    }
    for (size_t k = 0; k < sizeof str / sizeof str[0]; k++)
        if (str[k].need && !str[k].dst[0]) cli_die("spec: plots[%d] needs '%s'", i, str[k].key);
    if (strspn(p->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(p->name))
        cli_die("spec: plots[%d].name '%s': letters, digits, '_' and '-' only", i, p->name);
}

static void load_spec(sweep * sw, const char * path) {
    char err[512];
    char * txt = la_read_text_file(path, 1 << 20, err, sizeof err);
    if (!txt) cli_die("%s", err);
    cJSON * o = cJSON_Parse(txt);
    free(txt);
    if (!cJSON_IsObject(o)) cli_die("%s: not a JSON object", path);
    char ctx[4200];
    snprintf(ctx, sizeof ctx, "%s", path);
    cli_context(ctx);
    // the name defaults to the file's base name
    const char * base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(sw->name, sizeof sw->name, "%.*s", (int)strcspn(base, "."), base);
    const cJSON * fixed = NULL, *grid = NULL, *e;
    cJSON_ArrayForEach(e, o) {
        if (!strcmp(e->string, "name") && cJSON_IsString(e)) snprintf(sw->name, sizeof sw->name, "%s", e->valuestring);
        else if (!strcmp(e->string, "description") && cJSON_IsString(e)) {
        } else if (!strcmp(e->string, "out") && cJSON_IsString(e)) {
            if (!sw->out[0]) snprintf(sw->out, sizeof sw->out, "%s", e->valuestring);
        } else if (!strcmp(e->string, "flags") && cJSON_IsObject(e)) {
            fixed = e;
            const cJSON * f;
            cJSON_ArrayForEach(f, e) {
                check_key(f->string, "spec: flags");
                char v[1024];
                json_value(v, sizeof v, f, "spec: flags");
            }
        } else if (!strcmp(e->string, "grid") && (cJSON_IsObject(e) || cJSON_IsArray(e))) {
            grid = e;
        } else if (!strcmp(e->string, "eval_seq_len") && cJSON_IsArray(e)) {
            const cJSON * l;
            cJSON_ArrayForEach(l, e) {
                if (sw->n_eval == MAX_EVAL) cli_die("spec: eval_seq_len: at most %d lengths", MAX_EVAL);
                if (!cJSON_IsNumber(l) || l->valuedouble < 2 || l->valuedouble > (1 << 22) ||
                    l->valuedouble != floor(l->valuedouble))
                    cli_die("spec: eval_seq_len: lengths are integers in [2, 2^22]");
                sw->eval_len[sw->n_eval++] = (int64_t)l->valuedouble;
            }
        } else if (!strcmp(e->string, "plots") && cJSON_IsArray(e)) {
            const cJSON * p;
            cJSON_ArrayForEach(p, e) {
                if (sw->n_plots == MAX_PLOTS) cli_die("spec: at most %d plots", MAX_PLOTS);
                parse_plot(&sw->plots[sw->n_plots], p, sw->n_plots);
                sw->n_plots++;
            }
        } else {
            cli_die("spec: unknown or mistyped key '%s' (name, description, out, flags {}, grid {} "
                    "or [{}], eval_seq_len [], plots [])", e->string);
        }
    }
    if (strspn(sw->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(sw->name) ||
        !sw->name[0])
        cli_die("spec: name '%s': letters, digits, '_' and '-' only", sw->name);
    cJSON * empty = cJSON_CreateObject();
    if (!grid) expand_grid(sw, fixed ? fixed : empty, empty);
    else if (cJSON_IsObject(grid)) expand_grid(sw, fixed ? fixed : empty, grid);
    else {
        const cJSON * g;
        cJSON_ArrayForEach(g, grid) {
            if (!cJSON_IsObject(g)) cli_die("spec: grid: a list of objects");
            expand_grid(sw, fixed ? fixed : empty, g);
        }
    }
    cJSON_Delete(empty);
    for (int i = 0; i < sw->n_runs; i++)  // axes that only later grids have
        for (int k = 0; k < sw->n_axes; k++)
            if (!sw->runs[i].val[k]) sw->runs[i].val[k] = xstrdup("");
    // the pieces of fixed flags that the grid may not override are simply overridden; now the
    // identities, labels and a full check of every run's flags and task (before any training)
    for (int i = 0; i < sw->n_runs; i++) {
        sweep_run * r = &sw->runs[i];
        size_t n = 0, m = 0;
        for (int k = 0; k < sw->n_axes; k++) {
            if (!r->val[k][0]) continue;
            n += (size_t)snprintf(r->id + n, n < sizeof r->id ? sizeof r->id - n : 0, "%s%s=%s",
                                  n ? ";" : "", sw->axis[k], r->val[k]);
            m += (size_t)snprintf(r->label + m, m < sizeof r->label ? sizeof r->label - m : 0, "%s%s=%s",
                                  m ? " " : "", sw->axis[k], r->val[k]);
        }
        if (n >= sizeof r->id) cli_die("spec: run %d: its grid values are too long", i + 1);
        if (!n) snprintf(r->id, sizeof r->id, "run");
        for (int j = 0; j < i; j++)
            if (!strcmp(sw->runs[j].id, r->id)) cli_die("spec: run '%s' appears twice in the grid", r->id);
        snprintf(ctx, sizeof ctx, "%s: run %d (%s)", path, i + 1, r->id);
        cli_context(ctx);
        lm_setup S;
        if (!lm_setup_parse(&S, r->argc, r->argv, 1)) cli_die("--help is not a train flag here");
        if (S.resume) cli_die("--resume is not allowed in a sweep");
        r->steps = S.h.steps;
        lm_task t = S.t;
        task_open(&t);
        // the model's config too (mixer names, head counts, ...): the parameters are allocated
        // but never touched, so this costs little even for a large model
        S.t = t;
        la_model_free(lm_setup_build(&S));
        if (i == 0) sw->icr = t.kind == TASK_ICR;
        else if (sw->icr != (t.kind == TASK_ICR))
            cli_die("in-context regression and token tasks cannot share one sweep (their metrics differ)");
        la_text_close(t.text);
        for (int k = 0; k < sw->n_eval; k++) {
            lm_task te = S.t;
            te.seq_len = sw->eval_len[k];
            char c2[4300];
            snprintf(c2, sizeof c2, "%s, eval_seq_len %lld", ctx, (long long)te.seq_len);
            cli_context(c2);
            task_open(&te);
            la_text_close(te.text);
            cli_context(ctx);
        }
    }
    cli_context(NULL);
    cJSON_Delete(o);
}

// ---------------------------------------------------------------------------------------------
// The CSV

static bool is_axis(const sweep * sw, const char * name) {
    for (int a = 0; a < sw->n_axes; a++)
        if (!strcmp(sw->axis[a], name)) return true;
    return false;
}

// The measured cells a run reports, in the order the child writes them (all of them); the CSV
// holds those whose name is not also a grid key (a "steps" axis already is that column).
static void set_columns(sweep * sw) {
    const char * metric = sw->icr ? "mse_d" : "accuracy";
    char ** d = NULL;
    int nd = 0;
#define ADD(s) (d = xrealloc(d, (size_t)(nd + 1) * sizeof *d), d[nd++] = xstrdup(s))
    const char * fixed_cols[] = { "params", "depth", "attn_layers", "attn_fraction", "state_bytes",
                                  "seq_len", "steps", "train_s", "loss", "val_loss" };
    for (size_t i = 0; i < sizeof fixed_cols / sizeof fixed_cols[0]; i++) ADD(fixed_cols[i]);
    ADD(metric);
    if (sw->icr) ADD("ls_mse_d");
    for (int k = 0; k < sw->n_eval; k++) {
        char s[96];
        snprintf(s, sizeof s, "%s@%lld", metric, (long long)sw->eval_len[k]);
        ADD(s);
        if (sw->icr) {
            snprintf(s, sizeof s, "ls_mse_d@%lld", (long long)sw->eval_len[k]);
            ADD(s);
        }
    }
#undef ADD
    sw->derived = d;
    sw->n_derived = nd;
    char ** c = xrealloc(NULL, (size_t)(sw->n_axes + nd + 2) * sizeof *c);
    int n = 0;
    c[n++] = xstrdup("run");
    for (int a = 0; a < sw->n_axes; a++) c[n++] = xstrdup(sw->axis[a]);
    c[n++] = xstrdup("status");
    for (int k = 0; k < nd; k++)
        if (!is_axis(sw, d[k])) c[n++] = xstrdup(d[k]);
    sw->cols = c;
    sw->n_cols = n;
    for (int a = 0; a < n; a++)
        if (!strcmp(c[a], "run") && a > 0)
            cli_die("spec: 'run' cannot be a grid key (it is the CSV's first column)");
    for (int a = 1; a <= sw->n_axes; a++)
        if (!strcmp(c[a], "status")) cli_die("spec: 'status' cannot be a grid key (a CSV column)");
}

static int find_row(const sweep * sw, const char * id) {
    for (int i = 0; i < sw->n_rows; i++)
        if (!strcmp(sw->rows[i][0], id)) return i;
    return -1;
}

static void csv_path(const sweep * sw, char * p, size_t n) { snprintf(p, n, "%s/runs.csv", sw->out); }

// Reads OUT/runs.csv when it exists; its header must be the one this spec writes.
static void load_csv(sweep * sw) {
    char path[4200], err[512];
    csv_path(sw, path, sizeof path);
    if (access(path, F_OK) != 0) return;
    char * txt = la_read_text_file(path, 1 << 28, err, sizeof err);
    if (!txt) cli_die("%s", err);
    char * save = NULL;
    int line_no = 0;
    char ** cells = malloc((size_t)(sw->n_cols + 1) * sizeof *cells);
    if (!cells) cli_die("out of memory");
    for (char * line = strtok_r(txt, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        const int n = csv_split(line, cells, sw->n_cols + 1);
        if (line_no == 1) {
            bool same = n == sw->n_cols;
            for (int c = 0; same && c < n; c++) same = !strcmp(cells[c], sw->cols[c]);
            if (!same)
                cli_die("%s: its columns are not the ones this spec writes (another spec's "
                        "results?); move it away or pass another --out", path);
            continue;
        }
        if (n != sw->n_cols) cli_die("%s: line %d has %d cells, not %d", path, line_no, n, sw->n_cols);
        if (find_row(sw, cells[0]) >= 0) cli_die("%s: line %d repeats run '%s'", path, line_no, cells[0]);
        sw->rows = xrealloc(sw->rows, (size_t)(sw->n_rows + 1) * sizeof *sw->rows);
        char ** row = malloc((size_t)sw->n_cols * sizeof *row);
        if (!row) cli_die("out of memory");
        for (int c = 0; c < n; c++) row[c] = xstrdup(cells[c]);
        sw->rows[sw->n_rows++] = row;
    }
    free(cells);
    free(txt);
}

// Rows in the spec's order, then rows of runs the spec no longer has.
static void save_csv(const sweep * sw) {
    cli_buf b = { 0 };
    for (int c = 0; c < sw->n_cols; c++) csv_cell(&b, sw->cols[c], c == sw->n_cols - 1);
    bool * put = calloc((size_t)sw->n_rows + 1, 1);
    if (!put) cli_die("out of memory");
    for (int i = 0; i <= sw->n_runs; i++)
        for (int k = 0; k < sw->n_rows; k++) {
            if (put[k] || (i < sw->n_runs && strcmp(sw->rows[k][0], sw->runs[i].id))) continue;
            put[k] = true;
            for (int c = 0; c < sw->n_cols; c++) csv_cell(&b, sw->rows[k][c], c == sw->n_cols - 1);
        }
    free(put);
    char path[4200], err[512];
    csv_path(sw, path, sizeof path);
    if (la_write_file_atomic(path, b.buf, b.len, err, sizeof err)) cli_die("%s", err);
    free(b.buf);
}

// ---------------------------------------------------------------------------------------------
// One run, in a child process

typedef struct {
    FILE *       tty;       // the terminal, or NULL: no progress line
    const sweep * sw;
    int          run, done, todo;
    int64_t      steps_before, steps_all;  // steps of the runs of this invocation
    double       t0, last;
    double       loss;      // the last step's training loss
    const char * label;
} progress_ctx;

static void draw(const progress_ctx * p, int64_t step, int64_t total, double loss) {
    const double el = cli_now() - p->t0;
    const double frac = (double)(p->steps_before + step) / (double)LA_MAX(1, p->steps_all);
    char bar[32], eta[32];
    const int w = 20, f = (int)(w * frac);
    for (int i = 0; i < w; i++) bar[i] = i < f ? '#' : '.';
    bar[w] = 0;
    cli_fmt_duration(eta, sizeof eta, frac > 0 ? el / frac * (1 - frac) : (double)NAN);
    fprintf(p->tty, "\r\033[Ksweep [%s] %d/%d runs | %.60s | step %lld/%lld loss %.3f | ETA %s", bar,
            p->done, p->todo, p->label, (long long)step, (long long)total, loss, eta);
    fflush(p->tty);
}

static void on_step(void * ctx, int64_t step, int64_t total, double loss) {
    progress_ctx * p = ctx;
    p->loss = loss;
    if (!p->tty) return;
    const double now = cli_now();
    if (now - p->last < 0.2 && step != total) return;
    p->last = now;
    draw(p, step, total, loss);
}

static void fmt_num(char * out, size_t n, double v) {
    if (isfinite(v)) snprintf(out, n, "%.6g", v);
    else out[0] = 0;
}

// Trains and evaluates run i; writes its metric cells (the CSV columns after "status") to fd.
static _Noreturn void child(const sweep * sw, int i, progress_ctx * prog, int fd) {
    const sweep_run * r = &sw->runs[i];
    lm_setup S;
    lm_setup_parse(&S, r->argc, r->argv, 1);
    S.r.quiet = true;
    if (S.r.eval_every < 0) S.r.eval_every = 0;  // evaluate at the end only
    S.r.on_step = on_step;
    S.r.ctx = prog;
    int64_t start;
    la_model * m = lm_setup_model(&S, &start);
    lm_task * t = &S.t;
    const double t0 = cli_now();
    double vl, va;
    prog->loss = NAN;
    lm_train(m, t, &S.h, &S.r, start, &vl, &va);
    const double train_s = cli_now() - t0, last_loss = prog->loss;
    int64_t fixed, per_tok;
    la_model_state_size(m, &fixed, &per_tok);
    const int64_t L = la_model_layers(m);
    int64_t n_attn = 0;
    for (int64_t l = 0; l < L; l++) n_attn += !strcmp(la_model_layer_kind(m, l), "attn");
    cli_buf b = { 0 };
    char v[64];
    cli_buf_add(&b, "%lld,%lld,%lld,%.6g,%lld,%lld,%lld,%.2f,", (long long)la_model_num_params(m),
                (long long)L, (long long)n_attn, (double)n_attn / (double)L,
                (long long)((fixed + per_tok * t->seq_len) * (int64_t)sizeof(float)),
                (long long)t->seq_len, (long long)S.h.steps, train_s);
    const double d = sw->icr ? (double)t->icr.dim : 1.0;
    fmt_num(v, sizeof v, last_loss);
    cli_buf_add(&b, "%s,", v);
    fmt_num(v, sizeof v, vl);
    cli_buf_add(&b, "%s,", v);
    fmt_num(v, sizeof v, sw->icr ? vl / d : va);
    cli_buf_add(&b, "%s", v);
    if (sw->icr) {
        fmt_num(v, sizeof v, lm_icr_baseline(t, S.h.batch) / d);
        cli_buf_add(&b, ",%s", v);
    }
    for (int k = 0; k < sw->n_eval; k++) {
        lm_task te = *t;
        te.seq_len = sw->eval_len[k];
        task_open(&te);
        // the same number of examples at every length, in batches of at most 64K tokens
        const int64_t B = LA_MAX(1, LA_MIN(S.h.batch, 65536 / te.seq_len));
        double l, a;
        lm_evaluate(m, &te, B, &l, &a);
        fmt_num(v, sizeof v, sw->icr ? l / d : a);
        cli_buf_add(&b, ",%s", v);
        if (sw->icr) {
            fmt_num(v, sizeof v, lm_icr_baseline(&te, B) / d);
            cli_buf_add(&b, ",%s", v);
        }
    }
    cli_buf_add(&b, "\n");
    for (size_t off = 0; off < b.len;) {
        const ssize_t w = write(fd, b.buf + off, b.len - off);
        if (w <= 0) _exit(3);
        off += (size_t)w;
    }
    // _exit: the parent owns stdio buffers and the process's exit handlers
    _exit(0);
}

// Runs run i in a child; returns its row.
static char ** run_one(const sweep * sw, int i, progress_ctx * prog) {
    int pfd[2];
    if (pipe(pfd)) cli_die("pipe: %s", strerror(errno));
    FILE * errf = tmpfile();
    if (!errf) cli_die("tmpfile: %s", strerror(errno));
    fflush(NULL);
    const pid_t pid = fork();
    if (pid < 0) cli_die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(pfd[0]);
        // the progress line keeps the terminal; stderr (the error message) goes to errf
        if (prog->tty) {
            const int tty = dup(2);
            prog->tty = tty >= 0 ? fdopen(tty, "w") : NULL;
        }
        dup2(fileno(errf), 2);
        child(sw, i, prog, pfd[1]);
    }
    close(pfd[1]);
    cli_buf out = { 0 };
    char buf[4096];
    for (;;) {
        const ssize_t n = read(pfd[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        cli_buf_add(&out, "%.*s", (int)n, buf);
    }
    close(pfd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    char ** row = malloc((size_t)sw->n_cols * sizeof *row);
    if (!row) cli_die("out of memory");
    row[0] = xstrdup(sw->runs[i].id);
    for (int a = 0; a < sw->n_axes; a++) row[1 + a] = xstrdup(sw->runs[i].val[a]);
    const int s0 = 1 + sw->n_axes;  // the status column
    const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && out.len && out.buf[out.len - 1] == '\n';
    int n = 0;
    char ** cells = malloc((size_t)(sw->n_cols + 1) * sizeof *cells);
    if (!cells) cli_die("out of memory");
    if (ok) {
        out.buf[out.len - 1] = 0;
        n = csv_split(out.buf, cells, sw->n_cols + 1);
    }
    if (ok && n == sw->n_derived) {
        row[s0] = xstrdup("ok");
        for (int k = 0; k < n; k++)
            if (!is_axis(sw, sw->derived[k])) row[col_index(sw, sw->derived[k])] = xstrdup(cells[k]);
    } else {
        // the first line the run wrote to stderr says why
        char msg[512] = "";
        rewind(errf);
        if (!fgets(msg, sizeof msg, errf)) msg[0] = 0;
        msg[strcspn(msg, "\n")] = 0;
        const char * m = strncmp(msg, "linattn: error: ", 16) ? msg : msg + 16;
        char status[600];
        if (WIFSIGNALED(st)) snprintf(status, sizeof status, "failed: signal %d %s", WTERMSIG(st), m);
        else snprintf(status, sizeof status, "failed: %s", m[0] ? m : "no result");
        row[s0] = xstrdup(status);
        for (int c = s0 + 1; c < sw->n_cols; c++) row[c] = xstrdup("");
    }
    free(cells);
    free(out.buf);
    fclose(errf);
    return row;
}

// ---------------------------------------------------------------------------------------------
// Plots

typedef struct {
    double x, y;
    int    s;  // series
} point;

static int cmp_point(const void * a, const void * b) {
    const point * p = a, *q = b;
    if (p->s != q->s) return p->s - q->s;
    return (p->x > q->x) - (p->x < q->x);
}

static bool num_cell(const char * s, double * v) {
    char * end;
    if (!s[0]) return false;
    *v = strtod(s, &end);
    return !*end && isfinite(*v);
}

static void gp_escape(cli_buf * b, const char * s) {
    for (const char * p = s; *p; p++) cli_buf_add(b, "%s", *p == '"' ? "\\\"" : *p == '\\' ? "\\\\" : (char[]){ *p, 0 });
}

// Writes NAME.dat (x, mean, min, max, n per series block) and NAME.gp; false when no point.
static bool plot_files(const sweep * sw, const sweep_plot * p) {
    const bool by_len = !strcmp(p->x, "eval_len");
    const int xc = by_len ? -1 : col_index(sw, p->x), sc = p->series[0] ? col_index(sw, p->series) : -1;
    if (!by_len && xc < 0) cli_die("plot %s: no column '%s' (columns: see runs.csv)", p->name, p->x);
    if (p->series[0] && sc < 0) cli_die("plot %s: no column '%s'", p->name, p->series);
    if (!by_len && col_index(sw, p->y) < 0) cli_die("plot %s: no column '%s'", p->name, p->y);
    int fc[8];
    for (int f = 0; f < p->nfilter; f++)
        if ((fc[f] = col_index(sw, p->fkey[f])) < 0) cli_die("plot %s: filter: no column '%s'", p->name, p->fkey[f]);
    const int status = col_index(sw, "status");
    point * pts = NULL;
    int np = 0;
    char ** names = NULL;
    int ns = 0;
    for (int r = 0; r < sw->n_rows; r++) {
        char ** row = sw->rows[r];
        bool keep = !strcmp(row[status], "ok");
        for (int f = 0; f < p->nfilter && keep; f++) keep = !strcmp(row[fc[f]], p->fval[f]);
        if (!keep) continue;
        const char * sname = sc >= 0 ? (row[sc][0] ? row[sc] : "-") : p->y;
        int s = 0;
        while (s < ns && strcmp(names[s], sname)) s++;
        for (int k = 0; k < (by_len ? sw->n_eval : 1); k++) {
            double x, y;
            int yc = col_index(sw, p->y);
            if (by_len) {
                char cn[128];
                snprintf(cn, sizeof cn, "%s@%lld", p->y, (long long)sw->eval_len[k]);
                if ((yc = col_index(sw, cn)) < 0) cli_die("plot %s: no column '%s'", p->name, cn);
                x = (double)sw->eval_len[k];
            } else if (!num_cell(row[xc], &x)) {
                if (!row[xc][0]) continue;
                cli_die("plot %s: column '%s' holds '%s', not a number", p->name, p->x, row[xc]);
            }
            if (!num_cell(row[yc], &y)) continue;
            if (s == ns) {
                names = xrealloc(names, (size_t)(ns + 1) * sizeof *names);
                names[ns++] = xstrdup(sname);
            }
            pts = xrealloc(pts, (size_t)(np + 1) * sizeof *pts);
            pts[np++] = (point){ x, y, s };
        }
    }
    if (!np) {
        free(names);
        return false;
    }
    qsort(pts, (size_t)np, sizeof *pts, cmp_point);
    cli_buf dat = { 0 }, gp = { 0 };
    cli_buf_add(&dat, "# %s: %s vs %s; per series: x, mean, min, max, runs (over the other grid keys, "
                "e.g. seeds)\n", p->name, p->y, p->x);
    for (int s = 0, i = 0; s < ns; s++) {
        cli_buf_add(&dat, "%s# %s\n", s ? "\n\n" : "", names[s]);
        while (i < np && pts[i].s == s) {
            const double x = pts[i].x;
            double sum = 0, lo = INFINITY, hi = -INFINITY;
            int n = 0;
            for (; i < np && pts[i].s == s && pts[i].x == x; i++, n++) {
                sum += pts[i].y;
                lo = fmin(lo, pts[i].y);
                hi = fmax(hi, pts[i].y);
            }
            cli_buf_add(&dat, "%.10g %.6g %.6g %.6g %d\n", x, sum / n, lo, hi, n);
        }
    }
    cli_buf_add(&gp, "# linattn sweep %s: drawn from runs.csv (%s.dat)\n", sw->name, p->name);
    cli_buf_add(&gp, "set grid\nset key outside right top");
    if (p->series[0]) cli_buf_add(&gp, " title \"%s\" noenhanced", p->series);
    cli_buf_add(&gp, "\nset title \"");
    gp_escape(&gp, p->title[0] ? p->title : p->name);
    cli_buf_add(&gp, "\" noenhanced\nset xlabel \"");
    gp_escape(&gp, p->xlabel[0] ? p->xlabel : p->x);
    cli_buf_add(&gp, "\" noenhanced\nset ylabel \"");
    gp_escape(&gp, p->ylabel[0] ? p->ylabel : p->y);
    cli_buf_add(&gp, "\" noenhanced\n");
    if (p->logx) cli_buf_add(&gp, "set logscale x 2\n");
    if (p->logy) cli_buf_add(&gp, "set logscale y\n");
    if (p->ylo < p->yhi) cli_buf_add(&gp, "set yrange [%g:%g]\n", p->ylo, p->yhi);
    else if (!strcmp(p->y, "accuracy")) cli_buf_add(&gp, "set yrange [0:1.02]\n");
    cli_buf_add(&gp, "set offsets graph 0.03, graph 0.03, 0, 0\n");
    for (int term = 0; term < 2; term++) {
        cli_buf_add(&gp, term == 0 ? "set terminal pngcairo size 960,600 font \"sans,11\"\n"
                                   : "set terminal svg size 960,600 dynamic font \"sans,11\"\n");
        cli_buf_add(&gp, "set output \"%s.%s.tmp\"\nplot ", p->name, term == 0 ? "png" : "svg");
        for (int s = 0; s < ns; s++) {
            cli_buf_add(&gp, "%s\"%s.dat\" index %d using 1:2:3:4 with yerrorlines lw 2 pt 7 title \"",
                        s ? ", \\\n     " : "", p->name, s);
            gp_escape(&gp, names[s]);
            cli_buf_add(&gp, "\" noenhanced");
        }
        cli_buf_add(&gp, "\nunset output\n");
    }
    char path[4300], err[512];
    snprintf(path, sizeof path, "%s/%s.dat", sw->out, p->name);
    if (la_write_file_atomic(path, dat.buf, dat.len, err, sizeof err)) cli_die("%s", err);
    snprintf(path, sizeof path, "%s/%s.gp", sw->out, p->name);
    if (la_write_file_atomic(path, gp.buf, gp.len, err, sizeof err)) cli_die("%s", err);
    free(dat.buf);
    free(gp.buf);
    for (int s = 0; s < ns; s++) free(names[s]);
    free(names);
    free(pts);
    return true;
}

// gnuplot NAME.gp in OUT; the images are written as .tmp and renamed when gnuplot succeeds.
// Returns false when gnuplot is not installed.
static bool draw_plot(const sweep * sw, const sweep_plot * p) {
    // gnuplot's messages (warnings such as a one-point x range) are shown only when it fails
    FILE * log = tmpfile();
    if (!log) cli_die("tmpfile: %s", strerror(errno));
    fflush(NULL);
    const pid_t pid = fork();
    if (pid < 0) cli_die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fileno(log), 1);
        dup2(fileno(log), 2);
        if (chdir(sw->out)) _exit(126);
        char gpf[128];
        snprintf(gpf, sizeof gpf, "%s.gp", p->name);
        execlp("gnuplot", "gnuplot", gpf, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    char msg[512] = "";
    rewind(log);
    for (char line[512]; fgets(line, sizeof line, log);)
        if (strstr(line, "rror") || !msg[0]) snprintf(msg, sizeof msg, "%.*s", (int)strcspn(line, "\n"), line);
    fclose(log);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127) return false;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        cli_die("plot %s: gnuplot failed (exit %d: %s); see %s/%s.gp", p->name,
                WIFEXITED(st) ? WEXITSTATUS(st) : -1, msg, sw->out, p->name);
    for (int k = 0; k < 2; k++) {
        char a[4320], b[4300];
        snprintf(b, sizeof b, "%s/%s.%s", sw->out, p->name, k ? "svg" : "png");
        snprintf(a, sizeof a, "%s.tmp", b);
        if (rename(a, b)) cli_die("%s: cannot rename to %s: %s", a, b, strerror(errno));
    }
    return true;
}

static void draw_plots(const sweep * sw, bool quiet) {
    for (int i = 0; i < sw->n_plots; i++) {
        const sweep_plot * p = &sw->plots[i];
        if (!plot_files(sw, p)) {
            fprintf(stderr, "sweep: plot %s: no finished run has a value to draw yet\n", p->name);
            continue;
        }
        if (!draw_plot(sw, p)) {
            fprintf(stderr, "sweep: gnuplot is not installed: wrote %s/%s.dat and .gp, no images "
                    "(apt-get install gnuplot-nox)\n", sw->out, p->name);
            continue;
        }
        if (!quiet) printf("plot: %s/%s.png and .svg\n", sw->out, p->name);
    }
}

// ---------------------------------------------------------------------------------------------

static void sweep_free(sweep * sw) {
    for (int k = 0; k < sw->n_rows; k++) {
        for (int c = 0; c < sw->n_cols; c++) free(sw->rows[k][c]);
        free(sw->rows[k]);
    }
    free(sw->rows);
    for (int c = 0; c < sw->n_cols; c++) free(sw->cols[c]);
    free(sw->cols);
    for (int k = 0; k < sw->n_derived; k++) free(sw->derived[k]);
    free(sw->derived);
    for (int i = 0; i < sw->n_runs; i++) {
        for (int k = 0; k < sw->runs[i].argc; k++) free(sw->runs[i].argv[k]);
        for (int a = 0; a < sw->n_axes; a++) free(sw->runs[i].val[a]);
        free(sw->runs[i].argv);
    }
    free(sw->runs);
    for (int a = 0; a < sw->n_axes; a++) free(sw->axis[a]);
}

static void usage_sweep(void) {
    printf("usage: linattn sweep SPEC.json [--out DIR] [--threads N] [--list] [--plots-only]\n"
           "                    [--retry-failed] [--quiet]\n"
           "\n"
           "Trains every run of the spec's grid, one after another, and writes DIR/runs.csv (one\n"
           "row per run, rewritten after each) and the spec's plots as DIR/NAME.png and .svg\n"
           "(gnuplot). Started again, it skips the runs runs.csv already holds.\n"
           "\n"
           "spec (JSON; docs/TASKS.md has examples):\n"
           "  \"name\": \"...\"                 default: the file's base name\n"
           "  \"out\": \"DIR\"                  default: sweep-NAME (--out overrides)\n"
           "  \"flags\": {\"task\": \"mqar\", \"seq-len\": 64, \"steps\": 800, ...}\n"
           "                                 fixed `linattn train` flags, without the dashes\n"
           "  \"grid\": {\"model\": [\"gdn\", \"kda\"], \"heads\": [1, 2, 4], \"seed\": [1, 2]}\n"
           "                                 or a list of such objects (a union of grids)\n"
           "  \"eval_seq_len\": [256, 1024]     also evaluate every run at these lengths\n"
           "  \"plots\": [{\"name\": \"acc_vs_state\", \"x\": \"state_bytes\", \"y\": \"accuracy\",\n"
           "             \"series\": \"model\", \"logx\": true, \"filter\": {\"seed\": 1}, \"title\": ...}]\n"
           "                                 x \"eval_len\" plots y at every eval_seq_len; points\n"
           "                                 are means over the other grid keys, with min-max bars\n"
           "columns: run, the grid keys, status, params, depth, attn_layers, attn_fraction,\n"
           "  state_bytes (decode state per sequence at the training length), seq_len, steps,\n"
           "  train_s, loss, val_loss, accuracy (icr: mse_d and ls_mse_d), METRIC@LEN\n"
           "\n"
           "  --list          print the runs and exit       --plots-only   redraw from runs.csv\n"
           "  --retry-failed  run again the runs recorded as failed\n");
}

int cmd_sweep(int argc, char ** argv) {
    const char * spec = NULL, *out = NULL;
    bool list = false, plots_only = false, retry = false, quiet = false;
    for (int i = 1; i < argc; i++) {
        const char * a = argv[i];
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_sweep();
            return 0;
        } else if (!strcmp(a, "--out")) {
            if (!v) cli_die("--out needs a directory");
            out = v, i++;
        } else if (!strcmp(a, "--threads")) {
            la_set_num_threads((int32_t)cli_parse_int(a, v, 1, 1024)), i++;
        } else if (!strcmp(a, "--list")) list = true;
        else if (!strcmp(a, "--plots-only")) plots_only = true;
        else if (!strcmp(a, "--retry-failed")) retry = true;
        else if (!strcmp(a, "--quiet")) quiet = true;
        else if (a[0] == '-' || spec) cli_die("sweep: unknown flag or extra argument '%s' (see --help)", a);
        else spec = a;
    }
    if (!spec) cli_die("usage: linattn sweep SPEC.json [--out DIR] [options] (see --help)");
    sweep sw;
    memset(&sw, 0, sizeof sw);
    if (out) snprintf(sw.out, sizeof sw.out, "%s", out);
    load_spec(&sw, spec);
    if (!sw.out[0]) snprintf(sw.out, sizeof sw.out, "sweep-%s", sw.name);
    set_columns(&sw);
    if (list) {
        for (int i = 0; i < sw.n_runs; i++) {
            printf("%3d  %s  :", i + 1, sw.runs[i].id);
            for (int k = 1; k < sw.runs[i].argc; k++) printf(" %s", sw.runs[i].argv[k]);
            printf("\n");
        }
        sweep_free(&sw);
        return 0;
    }
    struct stat st;
    if (stat(sw.out, &st) == 0 && !S_ISDIR(st.st_mode)) cli_die("--out %s: not a directory", sw.out);
    if (stat(sw.out, &st) != 0) {  // mkdir -p
        char d[4096];
        snprintf(d, sizeof d, "%s", sw.out);
        for (char * p = d + 1; *p; p++) {
            if (*p != '/') continue;
            *p = 0;
            if (mkdir(d, 0777) && errno != EEXIST) cli_die("%s: cannot create: %s", d, strerror(errno));
            *p = '/';
        }
        if (mkdir(d, 0777) && errno != EEXIST) cli_die("%s: cannot create: %s", d, strerror(errno));
    }
    load_csv(&sw);
    if (!plots_only) {
        progress_ctx prog = { .tty = NULL, .sw = &sw, .t0 = cli_now() };
        if (!quiet && isatty(2)) prog.tty = stderr;
        int * todo = calloc((size_t)sw.n_runs + 1, sizeof *todo);
        if (!todo) cli_die("out of memory");
        for (int i = 0; i < sw.n_runs; i++) {
            const int k = find_row(&sw, sw.runs[i].id);
            todo[i] = k < 0 || (retry && strcmp(sw.rows[k][1 + sw.n_axes], "ok"));
            prog.todo += todo[i];
            prog.steps_all += todo[i] ? sw.runs[i].steps : 0;
        }
        if (!quiet)
            printf("sweep %s: %d runs, %d to do, results in %s/runs.csv\n", sw.name, sw.n_runs,
                   prog.todo, sw.out);
        fflush(stdout);
        for (int i = 0; i < sw.n_runs; i++) {
            if (!todo[i]) continue;
            prog.label = sw.runs[i].label;
            prog.run = i;
            const double t0 = cli_now();
            char ** row = run_one(&sw, i, &prog);
            const int k = find_row(&sw, row[0]);
            if (k >= 0) {
                for (int c = 0; c < sw.n_cols; c++) free(sw.rows[k][c]);
                free(sw.rows[k]);
                sw.rows[k] = row;
            } else {
                sw.rows = xrealloc(sw.rows, (size_t)(sw.n_rows + 1) * sizeof *sw.rows);
                sw.rows[sw.n_rows++] = row;
            }
            save_csv(&sw);
            prog.done++;
            prog.steps_before += sw.runs[i].steps;
            if (prog.tty) fprintf(prog.tty, "\r\033[K");
            if (!quiet) {
                const char * status = row[1 + sw.n_axes];
                const int mc = col_index(&sw, sw.icr ? "mse_d" : "accuracy");
                printf("[%d/%d] %s: %s %s (%.0f s)\n", prog.done, prog.todo, sw.runs[i].label,
                       strcmp(status, "ok") ? status : sw.icr ? "mse/d" : "accuracy",
                       strcmp(status, "ok") ? "" : row[mc], cli_now() - t0);
                fflush(stdout);
            }
        }
        free(todo);
    }
    draw_plots(&sw, quiet);
    int failed = 0;
    for (int k = 0; k < sw.n_rows; k++) failed += strcmp(sw.rows[k][1 + sw.n_axes], "ok") != 0;
    if (failed && !quiet) printf("sweep %s: %d run(s) failed (see the status column)\n", sw.name, failed);
    sweep_free(&sw);
    return failed ? 1 : 0;
}
