// linattn sweep end to end: a small grid (two mixers x two seeds plus a hybrid, and an
// in-context-regression grid) writes its CSV and PNG + SVG plots; started again it runs nothing
// and leaves the CSV as it was; with a row removed it runs exactly that run again and gets the
// same numbers (runs are deterministic); a diverging run is recorded as failed while the sweep
// goes on; bad specs are one-line errors that touch nothing.
#include "testlib.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char * g_bin;

// The tiny model and task every run shares: fast enough for the sanitizer build.
#define TINY "\"hidden\": 16, \"num-layers\": 2, \"heads\": 2, \"attn-heads\": 2, \"steps\": 12, " \
             "\"batch\": 4, \"eval-examples\": 16, \"lr\": 0.003, \"threads\": 1"

static void write_text(const char * path, const char * text) {
    FILE * f = fopen(path, "w");
    la_expect(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static int count_lines(const char * txt) {
    int n = 0;
    for (const char * p = txt; p && *p; p++) n += *p == '\n';
    return n;
}

// The CSV without the train_s column (wall time is the only nondeterministic cell).
static char * csv_without_time(const char * path) {
    size_t n;
    char * txt = la_read_file(path, &n);
    if (!txt) return NULL;
    // find train_s's index in the header
    int tcol = -1, col = 0;
    for (const char * p = txt, *c = txt; *p && *p != '\n'; p++) {
        if (p[1] == ',' || p[1] == '\n') {
            if (!strncmp(c, "train_s", 7) && p + 1 - c == 7) tcol = col;
            col++;
            c = p + 2;
        }
    }
    char * out = la_test_alloc(n + 1);
    size_t k = 0;
    col = 0;
    bool quoted = false;
    for (size_t i = 0; i < n; i++) {
        const char ch = txt[i];
        if (ch == '"') quoted = !quoted;
        if (!quoted && ch == '\n') col = -1;
        if (col != tcol) out[k++] = ch;
        if (!quoted && ch == ',') col++;
        if (col == -1) col = 0;
    }
    out[k] = 0;
    free(txt);
    return out;
}

static bool looks_like(const char * path, const char * magic, size_t off) {
    size_t n;
    char * b = la_read_file(path, &n);
    const bool ok = b && n > off + strlen(magic) && !memcmp(b + off, magic, strlen(magic));
    free(b);
    return ok;
}

static bool exists(const char * p) {
    struct stat st;
    return stat(p, &st) == 0;
}

int main(void) {
    g_bin = getenv("LA_BIN");
    if (!g_bin || !la_runner_init("sweep")) return 1;
    char spec[600], out[600], csv[700], e[512], path[800];
    snprintf(spec, sizeof spec, "%s", la_tmp("small.json"));
    snprintf(out, sizeof out, "%s", la_tmp("small_out"));
    snprintf(csv, sizeof csv, "%s/runs.csv", out);
    write_text(spec,
               "{\"name\": \"small\",\n"
               " \"flags\": {\"task\": \"mqar\", \"seq-len\": 32, \"mqar-vocab\": 64, \"mqar-pairs\": 4, " TINY "},\n"
               " \"grid\": [{\"model\": [\"gdn\", \"deltanet\"], \"seed\": [1, 2]}, {\"layers\": [\"gdn,attn\"]}],\n"
               " \"eval_seq_len\": [32, 48],\n"
               " \"plots\": [{\"name\": \"acc_state\", \"x\": \"state_bytes\", \"y\": \"accuracy\", "
               "\"series\": \"model\", \"logx\": true},\n"
               "           {\"name\": \"acc_len\", \"x\": \"eval_len\", \"y\": \"accuracy\", \"series\": \"layers\"}]}\n");
    char * so = NULL;
    int st = la_run_cli(&so, e, sizeof e, NULL, g_bin, "sweep %s --out %s", spec, out);
    la_expect(st == 0, "small sweep: exit %d: %s", st, e);
    la_expect(so && strstr(so, "5 runs, 5 to do"), "small sweep: stdout %s", so ? so : "");
    free(so);
    size_t n;
    char * first = la_read_file(csv, &n);
    la_expect(first != NULL, "no %s", csv);
    // header + 5 rows, every run ok, accuracy columns at both lengths
    la_expect(first && count_lines(first) == 6, "runs.csv has %d lines, want 6", count_lines(first));
    la_expect(first && strstr(first, "run,model,seed,layers,status,params,depth,attn_layers,attn_fraction,"
                                     "state_bytes,seq_len,steps,train_s,loss,val_loss,accuracy,"
                                     "accuracy@32,accuracy@48\n"), "runs.csv header: %.200s", first ? first : "");
    la_expect(first && strstr(first, "\"layers=gdn,attn\",,,\"gdn,attn\",ok,"), "the hybrid's row is quoted");
    int ok_rows = 0;
    for (const char * p = first; p && (p = strstr(p, ",ok,")); p++) ok_rows++;
    la_expect(ok_rows == 5, "%d runs ok, want 5", ok_rows);
    // the pure attention-free GDN of 2 layers: 2 heads of 8 x 8 per layer plus conv caches;
    // the hybrid adds 2 x 16 K/V floats per token at 32 tokens
    la_expect(first && strstr(first, "model=gdn;seed=1,gdn,1,,ok,"), "gdn row");
    for (int k = 0; k < 2; k++) {
        const char * name = k ? "acc_len" : "acc_state";
        snprintf(path, sizeof path, "%s/%s.png", out, name);
        la_expect(looks_like(path, "PNG", 1), "%s is not a PNG", path);
        snprintf(path, sizeof path, "%s/%s.svg", out, name);
        la_expect(looks_like(path, "<?xml", 0) || looks_like(path, "<svg", 0), "%s is not an SVG", path);
        snprintf(path, sizeof path, "%s/%s.dat", out, name);
        la_expect(exists(path), "no %s", path);
        snprintf(path, sizeof path, "%s/%s.png.tmp", out, name);
        la_expect(!exists(path), "%s left behind", path);
    }
    // acc_len: one block per layers value with both lengths; acc_state: gdn and deltanet
    // points are means over 2 seeds
    snprintf(path, sizeof path, "%s/acc_state.dat", out);
    char * dat = la_read_file(path, &n);
    la_expect(dat && strstr(dat, "# gdn\n") && strstr(dat, "# deltanet\n") && strstr(dat, " 2\n"),
              "acc_state.dat: %s", dat ? dat : "");
    free(dat);

    // Started again: nothing to do, the CSV is unchanged byte for byte.
    st = la_run_cli(&so, e, sizeof e, NULL, g_bin, "sweep %s --out %s", spec, out);
    la_expect(st == 0 && so && strstr(so, "5 runs, 0 to do"), "resume: exit %d: %s", st, so ? so : e);
    free(so);
    char * again = la_read_file(csv, &n);
    la_expect(first && again && !strcmp(first, again), "the CSV changed on a resume with nothing to do");
    free(again);

    // Interrupted after 3 runs (the last two rows gone): exactly those run again, with the same
    // results (all but the wall time).
    char * ref = csv_without_time(csv);
    {
        char * txt = la_read_file(csv, &n);
        char * cut = txt;
        for (int l = 0; l < 4 && cut; l++) cut = strchr(cut, '\n') + 1;  // header + 3 rows
        if (cut) *cut = 0;
        write_text(csv, txt ? txt : "");
        free(txt);
    }
    st = la_run_cli(&so, e, sizeof e, NULL, g_bin, "sweep %s --out %s --quiet", spec, out);
    la_expect(st == 0, "resume after interruption: exit %d: %s", st, e);
    free(so);
    char * redo = csv_without_time(csv);
    la_expect(ref && redo && !strcmp(ref, redo), "re-run rows differ:\n%s\nvs\n%s", ref ? ref : "", redo ? redo : "");
    free(ref);
    free(redo);

    // --plots-only redraws from the CSV alone; --list prints the runs.
    snprintf(path, sizeof path, "%s/acc_len.png", out);
    remove(path);
    st = la_run_cli(&so, e, sizeof e, NULL, g_bin, "sweep %s --out %s --plots-only", spec, out);
    la_expect(st == 0 && looks_like(path, "PNG", 1), "--plots-only: exit %d: %s", st, e);
    free(so);
    st = la_run_cli(&so, e, sizeof e, NULL, g_bin, "sweep %s --list", spec);
    la_expect(st == 0 && so && count_lines(so) == 5 && strstr(so, "--layers gdn,attn"), "--list: %s", so ? so : e);
    free(so);

    // In-context regression: the metric is mse/d with the least-squares baseline; a diverging
    // run is recorded as failed and the other run still finishes. (Divergence on purpose: lr 10
    // with decoupled weight decay 10 multiplies every matrix by 1 - lr wd = -99 per step, so
    // the weights overflow float32 within the 12 steps.)
    char spec2[600], out2[600], csv2[700];
    snprintf(spec2, sizeof spec2, "%s", la_tmp("icr.json"));
    snprintf(out2, sizeof out2, "%s", la_tmp("icr_out"));
    snprintf(csv2, sizeof csv2, "%s/runs.csv", out2);
    write_text(spec2,
               "{\"flags\": {\"task\": \"icr\", \"icr-dim\": 4, \"seq-len\": 16, \"weight-decay\": 10, \"clip\": 0, " TINY "},\n"
               " \"grid\": {\"model\": [\"gdn\"], \"lr\": [0.003, 10], \"steps\": [12]},\n"
               " \"eval_seq_len\": [24],\n"
               " \"plots\": [{\"name\": \"mse\", \"x\": \"eval_len\", \"y\": \"mse_d\", \"series\": \"lr\"}]}\n");
    st = la_run_cli(&so, e, sizeof e, NULL, g_bin, "sweep %s --out %s", spec2, out2);
    la_expect(st == 1, "icr sweep with a diverging run: exit %d (want 1): %s", st, e);
    la_expect(so && strstr(so, "1 run(s) failed"), "icr sweep stdout: %s", so ? so : "");
    free(so);
    char * icr = la_read_file(csv2, &n);
    // a grid key that is also a measured column (steps) appears once
    const char * want = "run,model,lr,steps,status,params,depth,attn_layers,attn_fraction,state_bytes,"
                        "seq_len,train_s,loss,val_loss,mse_d,ls_mse_d,mse_d@24,ls_mse_d@24\n";
    la_expect(icr && !strncmp(icr, want, strlen(want)), "icr header: %.300s", icr ? icr : "");
    la_expect(icr && strstr(icr, "model=gdn;lr=0.003;steps=12,gdn,0.003,12,ok,"), "icr ok row: %s", icr ? icr : "");
    la_expect(icr && strstr(icr, "model=gdn;lr=10;steps=12,gdn,10,12,failed: "), "icr failed row: %s", icr ? icr : "");
    free(icr);
    snprintf(path, sizeof path, "%s/mse.svg", out2);
    la_expect(exists(path), "no %s", path);

    // Bad specs: one line, exit 2, and the existing CSV is untouched.
    static const struct { const char * json, *want; } bad[] = {
        { "{\"flags\": {\"out\": \"x\"}}", "set by the sweep" },
        { "{\"flags\": {\"hidden\": 16}, \"gird\": {}}", "unknown or mistyped key 'gird'" },
        { "{\"grid\": {\"model\": []}}", "non-empty list" },
        { "{\"grid\": {\"model\": [\"gdn\", \"warp\"]}}", "unknown mixer 'warp'" },
        { "{\"grid\": {\"heads\": [\"x\"]}}", "--heads" },
        { "{\"grid\": {\"model\": [\"gdn\", \"gdn\"]}}", "appears twice" },
        { "{\"flags\": {\"seq-len\": 64, \"mqar-vocab\": 64}}", "vocab" },
        { "{\"eval_seq_len\": [1]}", "eval_seq_len" },
        { "{\"plots\": [{\"name\": \"a b\", \"x\": \"seed\", \"y\": \"accuracy\"}]}", "letters, digits" },
        { "{\"plots\": [{\"name\": \"p\", \"x\": \"seed\"}]}", "needs 'y'" },
        { "[1, 2]", "not a JSON object" },
        { "{\"flags\": {\"seq-len\": 32, \"mqar-vocab\": 64, \"mqar-pairs\": 4, " TINY "}, "
          "\"grid\": {\"depth\": [1]}}", "unknown flag '--depth'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(spec2, bad[i].json);
        int nl = 0;
        char * before = la_read_file(csv, &n);
        st = la_run_cli(NULL, e, sizeof e, &nl, g_bin, "sweep %s --out %s", spec2, out);
        char * after = la_read_file(csv, &n);
        la_expect(st == 2 && nl == 1 && strstr(e, bad[i].want), "bad spec %zu: exit %d, %d lines: %s",
                  i, st, nl, e);
        la_expect(before && after && !strcmp(before, after), "bad spec %zu changed the CSV", i);
        free(before);
        free(after);
    }
    // A CSV written by another spec is refused, not overwritten.
    write_text(spec2, "{\"flags\": {\"seq-len\": 32, \"mqar-vocab\": 64, \"mqar-pairs\": 4, " TINY "}, "
                      "\"grid\": {\"seed\": [5]}}");
    st = la_run_cli(NULL, e, sizeof e, NULL, g_bin, "sweep %s --out %s", spec2, out);
    la_expect(st == 2 && strstr(e, "not the ones this spec writes"), "foreign CSV: exit %d: %s", st, e);
    char * after = la_read_file(csv, &n);
    char * ref2 = first;
    la_expect(after && ref2 && count_lines(after) == 6, "foreign CSV: runs.csv was changed");
    free(after);
    free(first);
    la_runner_cleanup();
    return la_test_summary();
}
