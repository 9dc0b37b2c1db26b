// linattn op: run one op on tensors from a safetensors file and write its results to another.
//
//   linattn op NAME --in IN.safetensors --out OUT.safetensors [--form ref|recurrent|chunk]
//       [--backward] [--scale S] [--chunk-size N] [--threads N] [--normalize] ...
//
// Inputs are named like fla's keyword arguments (q, k, v, g, g_gamma, initial_state,
// cu_seqlens, ...). OUT receives `o` and, where the op has a recurrent state, `final_state`.
// With --backward, IN also holds `do` (and optionally `dfinal_state`), and OUT also receives the
// gradient of sum(o * do) + sum(final_state * dfinal_state) with respect to every floating
// input, named "d" + the input's name.
//
// The runner is strict: an unknown op or flag, a flag the op does not take, a tensor the op
// does not read, a missing or misshaped tensor, a wrong dtype, bad cu_seqlens or a non-finite
// input value is one line on stderr and exit status 2. OUT is written to a temporary file and
// renamed into place, so an existing OUT survives any failure.
//
// Shapes are checked symbolically: each op lists its tensors with one letter per axis (B, T, H,
// K, V, N = number of sequences, G, P, ...); the first tensor that shows an axis fixes it.
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Flags beyond the common --form/--backward/--threads/--in/--out.
enum {
    OPF_SCALE = 1u << 0,
    OPF_CHUNK = 1u << 1,
    OPF_NORMALIZE = 1u << 2,
    OPF_QK_L2NORM = 1u << 3,
    OPF_BETA_SIGMOID = 1u << 4,
    OPF_GATE_IN_KERNEL = 1u << 5,
    OPF_NEG_EIGVAL = 1u << 6,
    OPF_LOWER_BOUND = 1u << 7,
    OPF_WINDOW = 1u << 8,
    OPF_DELTA_SOFTPLUS = 1u << 9,
    OPF_NON_CAUSAL = 1u << 10,
    OPF_THETA = 1u << 11,
    OPF_ACTIVATION = 1u << 12,
    OPF_EPS = 1u << 13,
    OPF_NO_NORM = 1u << 14,
};

static const struct {
    const char * name;
    unsigned     bit;
    bool         takes_value;
} g_flags[] = {
    { "--scale", OPF_SCALE, true },
    { "--chunk-size", OPF_CHUNK, true },
    { "--normalize", OPF_NORMALIZE, false },
    { "--use-qk-l2norm-in-kernel", OPF_QK_L2NORM, false },
    { "--use-beta-sigmoid-in-kernel", OPF_BETA_SIGMOID, false },
    { "--use-gate-in-kernel", OPF_GATE_IN_KERNEL, false },
    { "--allow-neg-eigval", OPF_NEG_EIGVAL, false },
    { "--lower-bound", OPF_LOWER_BOUND, true },
    { "--window-size", OPF_WINDOW, true },
    { "--delta-softplus", OPF_DELTA_SOFTPLUS, false },
    { "--non-causal", OPF_NON_CAUSAL, false },
    { "--theta", OPF_THETA, true },
    { "--activation", OPF_ACTIVATION, true },
    { "--eps", OPF_EPS, true },
    { "--no-norm", OPF_NO_NORM, false },
};
#define N_FLAGS (sizeof g_flags / sizeof g_flags[0])

#define MAX_TENSORS 64

typedef struct tensor {
    char    name[64];
    float * data;
    int32_t ndim;
    int64_t shape[LA_ST_MAX_DIMS];
    int64_t numel;
} tensor;

typedef struct run_ctx {
    const char *   op;
    const char *   in_path;
    const char *   out_path;
    la_st_file *   in;
    bool           used[MAX_TENSORS * 4];  // which IN tensors the op read
    la_opts        opts;
    bool           backward;
    unsigned       given;                  // OPF_* flags present on the command line
    const char *   flag_val[N_FLAGS];
    int64_t        dim[128];               // axis letter -> size, -1 while unknown
    int64_t        window;                 // --window-size (0: none)
    double         theta;                  // --theta (rope; 10000 by default)
    la_act         act;                    // --activation (short_conv)
    double         eps;                    // --eps (rebased; 1e-5 by default)
    int64_t *      cu;                     // (N+1) cu_seqlens or NULL
    tensor         outs[MAX_TENSORS];      // outputs, written in this order
    int            nout;
    float *        owned[MAX_TENSORS * 2]; // inputs to free
    int            nowned;
} run_ctx;

// --- inputs -----------------------------------------------------------------------------------

static void mark_used(run_ctx * c, const char * name) {
    for (int64_t i = 0; i < la_st_count(c->in); i++)
        if (!strcmp(la_st_get(c->in, i)->name, name)) c->used[i] = true;
}

static void fmt_shape(char * buf, size_t n, const int64_t * shape, int32_t ndim) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int32_t i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

// Loads a floating tensor whose axes are the letters of `axes` ("BTHK"); binds unknown axes,
// checks known ones and that every value is finite. Returns NULL when absent and optional.
static float * load_f32(run_ctx * c, const char * name, bool required, const char * axes) {
    const la_st_tensor * t = la_st_find(c->in, name);
    if (!t) {
        if (required) cli_die("%s: op %s needs tensor '%s' (axes %s)", c->in_path, c->op, name, axes);
        return NULL;
    }
    mark_used(c, name);
    const int32_t nd = (int32_t)strlen(axes);
    char got[160];
    fmt_shape(got, sizeof got, t->shape, t->ndim);
    if (t->ndim != nd)
        cli_die("%s: tensor '%s' has shape %s, expected %d axes (%s)", c->in_path, name, got, nd,
                axes);
    for (int32_t i = 0; i < nd; i++) {
        int64_t * d = &c->dim[(unsigned char)axes[i]];
        if (*d < 0) *d = t->shape[i];
        else if (*d != t->shape[i])
            cli_die("%s: tensor '%s' has shape %s, but its axis %c must be %lld (%s)", c->in_path,
                    name, got, axes[i], (long long)*d, axes);
    }
    float * x = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    if (!x) cli_die("out of memory loading '%s'", name);
    c->owned[c->nowned++] = x;  // reachable before any exit below (leak checkers)
    char err[512];
    la_status st = la_st_read_f32(c->in, t, x, t->numel, err, sizeof err);
    if (st != LA_STATUS_OK) cli_die("%s", err);
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(x[i]))
            cli_die("%s: tensor '%s' holds a non-finite value (%g) at flat index %lld",
                    c->in_path, name, (double)x[i], (long long)i);
    return x;
}

// Axes of a z tensor (linear_attn --normalize): fla's (N, 1, H, K) or the plain (N, H, K).
static const char * z_axes(run_ctx * c, const char * name) {
    const la_st_tensor * t = la_st_find(c->in, name);
    return t && t->ndim == 3 ? "NHK" : "N1HK";
}

// cu_seqlens: 1-D integer [N+1], 0 = cu[0] <= ... <= cu[N] = T, and B = 1. Binds N.
static void load_cu_seqlens(run_ctx * c) {
    const la_st_tensor * t = la_st_find(c->in, "cu_seqlens");
    const int64_t B = c->dim['B'], T = c->dim['T'];
    if (!t) {
        c->dim['N'] = B;
        return;
    }
    mark_used(c, "cu_seqlens");
    if (t->ndim != 1 || t->numel < 2)
        cli_die("%s: cu_seqlens must be 1-D with at least 2 entries", c->in_path);
    int64_t * cu = malloc((size_t)t->numel * sizeof(int64_t));
    if (!cu) cli_die("out of memory");
    c->cu = cu;
    char err[512];
    if (la_st_read_i64(c->in, t, cu, t->numel, err, sizeof err) != LA_STATUS_OK)
        cli_die("%s", err);
    if (B != 1) cli_die("%s: cu_seqlens requires batch size B = 1, got B = %lld", c->in_path, (long long)B);
    if (cu[0] != 0) cli_die("%s: cu_seqlens[0] must be 0, got %lld", c->in_path, (long long)cu[0]);
    for (int64_t i = 1; i < t->numel; i++)
        if (cu[i] < cu[i - 1])
            cli_die("%s: cu_seqlens must be non-decreasing (cu[%lld] = %lld < cu[%lld] = %lld)",
                    c->in_path, (long long)i, (long long)cu[i], (long long)(i - 1),
                    (long long)cu[i - 1]);
    if (cu[t->numel - 1] != T)
        cli_die("%s: cu_seqlens must end at T = %lld, ends at %lld", c->in_path, (long long)T,
                (long long)cu[t->numel - 1]);
    c->dim['N'] = t->numel - 1;
    c->opts.cu_seqlens = cu;
    c->opts.n_seqs = t->numel - 1;
}

// Every tensor in IN must be read by the op: an ignored tensor would silently change meaning.
static void check_all_used(run_ctx * c) {
    for (int64_t i = 0; i < la_st_count(c->in); i++)
        if (!c->used[i]) {
            const char * n = la_st_get(c->in, i)->name;
            if (!c->backward && (!strcmp(n, "do") || !strncmp(n, "dfinal", 6)))
                cli_die("%s: tensor '%s' is only read with --backward", c->in_path, n);
            cli_die("%s: tensor '%s' is not an input of op %s", c->in_path, n, c->op);
        }
}

// --- outputs ----------------------------------------------------------------------------------

static float * out_f32(run_ctx * c, const char * name, const char * axes) {
    if (c->nout >= MAX_TENSORS) cli_die("too many outputs");
    tensor * t = &c->outs[c->nout++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = (int32_t)strlen(axes);
    t->numel = 1;
    for (int32_t i = 0; i < t->ndim; i++) {
        t->shape[i] = c->dim[(unsigned char)axes[i]];
        t->numel *= t->shape[i];
    }
    t->data = calloc((size_t)(t->numel ? t->numel : 1), sizeof(float));
    if (!t->data) cli_die("out of memory for output '%s'", name);
    return t->data;
}

// Gradient output for an optional input: allocated only when the input is present.
static float * grad_for(run_ctx * c, const float * input, const char * name, const char * axes) {
    return input ? out_f32(c, name, axes) : NULL;
}

static void save_outputs(run_ctx * c) {
    la_st_writer * w = la_st_writer_new();
    if (!w) cli_die("out of memory");
    char err[512];
    for (int i = 0; i < c->nout; i++) {
        tensor * t = &c->outs[i];
        if (la_st_writer_add(w, t->name, LA_DTYPE_F32, t->ndim, t->shape, t->data, err,
                             sizeof err) != LA_STATUS_OK)
            cli_die("%s", err);
    }
    if (la_st_writer_save(w, c->out_path, err, sizeof err) != LA_STATUS_OK) cli_die("%s", err);
    la_st_writer_free(w);
}

static void check_status(run_ctx * c, la_status st, const char * what) {
    if (st != LA_STATUS_OK) cli_die("op %s %s failed: %s", c->op, what, la_status_str(st));
}

static void need_dims(run_ctx * c) {
    // Every axis the shared shape uses must be known and positive (T may be 0).
    const char * ax = "BHKV";
    for (const char * p = ax; *p; p++)
        if (c->dim[(unsigned char)*p] < 1)
            cli_die("%s: axis %c must be at least 1, got %lld", c->in_path, *p,
                    (long long)c->dim[(unsigned char)*p]);
}

static la_shape shape_of(run_ctx * c) {
    need_dims(c);
    return (la_shape){ c->dim['B'], c->dim['T'], c->dim['H'], c->dim['K'], c->dim['V'] };
}

// --- ops --------------------------------------------------------------------------------------

// simple_gla, retention, linear_attn: q, k (B,T,H,K), v (B,T,H,V), state (N,H,K,V).
typedef enum { SG_SIMPLE_GLA, SG_RETENTION, SG_LINEAR_ATTN } sg_kind;

// Non-causal linear_attn / simple_gla (encoders): no states; OUT holds o (and gradients).
static void run_sg_noncausal(run_ctx * c, sg_kind kind) {
    const float * q = load_f32(c, "q", true, "BTHK");
    const float * k = load_f32(c, "k", true, "BTHK");
    const float * v = load_f32(c, "v", true, "BTHV");
    const float * g = kind == SG_SIMPLE_GLA ? load_f32(c, "g", false, "BTH") : NULL;
    const float * gg = kind == SG_SIMPLE_GLA ? load_f32(c, "g_gamma", false, "H") : NULL;
    if (g && gg) cli_die("%s: give at most one of 'g' and 'g_gamma'", c->in_path);
    if (la_st_find(c->in, "initial_state") || la_st_find(c->in, "initial_z"))
        cli_die("%s: --non-causal takes no initial state", c->in_path);
    load_cu_seqlens(c);
    const bool norm = (c->given & OPF_NORMALIZE) != 0;
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHV") : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);
    float * o = out_f32(c, "o", "BTHV");
    la_status st = kind == SG_SIMPLE_GLA
                       ? la_simple_gla_noncausal_forward(o, q, k, v, g, gg, sh, &c->opts)
                       : la_linear_attn_noncausal_forward(o, q, k, v, norm, sh, &c->opts);
    check_status(c, st, "forward");
    if (!c->backward) return;
    float * dq = out_f32(c, "dq", "BTHK");
    float * dk = out_f32(c, "dk", "BTHK");
    float * dv = out_f32(c, "dv", "BTHV");
    float * dg = grad_for(c, g, "dg", "BTH");
    st = kind == SG_SIMPLE_GLA
             ? la_simple_gla_noncausal_backward(dq, dk, dv, dg, dout, q, k, v, g, gg, sh, &c->opts)
             : la_linear_attn_noncausal_backward(dq, dk, dv, dout, q, k, v, norm, sh, &c->opts);
    check_status(c, st, "backward");
}

static void run_sg_family(run_ctx * c, sg_kind kind) {
    if (c->given & OPF_NON_CAUSAL) {
        run_sg_noncausal(c, kind);
        return;
    }
    const float * q = load_f32(c, "q", true, "BTHK");
    const float * k = load_f32(c, "k", true, "BTHK");
    const float * v = load_f32(c, "v", true, "BTHV");
    const float * g = kind == SG_SIMPLE_GLA ? load_f32(c, "g", false, "BTH") : NULL;
    const float * gg = kind == SG_SIMPLE_GLA ? load_f32(c, "g_gamma", false, "H") : NULL;
    if (g && gg) cli_die("%s: give at most one of 'g' and 'g_gamma'", c->in_path);
    load_cu_seqlens(c);
    const bool norm = kind == SG_LINEAR_ATTN && (c->given & OPF_NORMALIZE);
    const float * s0 = load_f32(c, "initial_state", false, "NHKV");
    // z: fla's (N, 1, H, K), or (N, H, K); outputs use fla's shape.
    const float * z0 = norm ? load_f32(c, "initial_z", false, z_axes(c, "initial_z")) : NULL;
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHV") : NULL;
    const float * dfin = c->backward ? load_f32(c, "dfinal_state", false, "NHKV") : NULL;
    const float * dfz =
        c->backward && norm ? load_f32(c, "dfinal_z", false, z_axes(c, "dfinal_z")) : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);

    float * o = out_f32(c, "o", "BTHV");
    float * fin = out_f32(c, "final_state", "NHKV");
    float * fz = norm ? out_f32(c, "final_z", "N1HK") : NULL;
    la_status st;
    if (kind == SG_SIMPLE_GLA)
        st = la_simple_gla_forward(o, fin, q, k, v, g, gg, s0, sh, &c->opts);
    else if (kind == SG_RETENTION)
        st = la_retention_forward(o, fin, q, k, v, s0, sh, &c->opts);
    else
        st = la_linear_attn_forward(o, fin, fz, q, k, v, s0, z0, norm, sh, &c->opts);
    check_status(c, st, "forward");
    if (!c->backward) return;

    float * dq = out_f32(c, "dq", "BTHK");
    float * dk = out_f32(c, "dk", "BTHK");
    float * dv = out_f32(c, "dv", "BTHV");
    float * dg = grad_for(c, g, "dg", "BTH");
    float * ds0 = grad_for(c, s0, "dinitial_state", "NHKV");
    float * dz0 = grad_for(c, z0, "dinitial_z", z_axes(c, "initial_z"));
    if (kind == SG_SIMPLE_GLA)
        st = la_simple_gla_backward(dq, dk, dv, dg, ds0, dout, dfin, q, k, v, g, gg, s0, sh,
                                    &c->opts);
    else if (kind == SG_RETENTION)
        st = la_retention_backward(dq, dk, dv, ds0, dout, dfin, q, k, v, s0, sh, &c->opts);
    else
        st = la_linear_attn_backward(dq, dk, dv, ds0, dz0, dout, dfin, dfz, q, k, v, s0, z0, norm,
                                     sh, &c->opts);
    check_status(c, st, "backward");
}

static void op_simple_gla(run_ctx * c) { run_sg_family(c, SG_SIMPLE_GLA); }
static void op_retention(run_ctx * c) { run_sg_family(c, SG_RETENTION); }
static void op_linear_attn(run_ctx * c) { run_sg_family(c, SG_LINEAR_ATTN); }

// mamba2: x (B,T,H,P), dt (B,T,H), A_log (H), B, C (B,T,G,Nst), D (H), dt_bias (H),
// state (N,H,Nst,P). Axis letters: P -> V, Nst -> K (simple_gla's layout).
static void op_mamba2(run_ctx * c) {
    const float * x = load_f32(c, "x", true, "BTHV");
    const float * dt = load_f32(c, "dt", true, "BTH");
    const float * A_log = load_f32(c, "A_log", true, "H");
    const float * Bm = load_f32(c, "B", true, "BTGK");
    const float * Cm = load_f32(c, "C", true, "BTGK");
    const float * D = load_f32(c, "D", false, "H");
    const float * dt_bias = load_f32(c, "dt_bias", false, "H");
    load_cu_seqlens(c);
    const float * s0 = load_f32(c, "initial_state", false, "NHKV");
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHV") : NULL;
    const float * dfin = c->backward ? load_f32(c, "dfinal_state", false, "NHKV") : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);
    const int64_t G = c->dim['G'];
    if (G < 1 || sh.H % G != 0)
        cli_die("%s: heads H = %lld must be a multiple of groups G = %lld", c->in_path,
                (long long)sh.H, (long long)G);

    float * o = out_f32(c, "o", "BTHV");
    float * fin = out_f32(c, "final_state", "NHKV");
    check_status(c, la_mamba2_forward(o, fin, x, dt, A_log, Bm, Cm, D, dt_bias, s0, sh, G, &c->opts),
                 "forward");
    if (!c->backward) return;
    float * dx = out_f32(c, "dx", "BTHV");
    float * ddt = out_f32(c, "ddt", "BTH");
    float * dA = out_f32(c, "dA_log", "H");
    float * dB = out_f32(c, "dB", "BTGK");
    float * dC = out_f32(c, "dC", "BTGK");
    float * dD = grad_for(c, D, "dD", "H");
    float * dbias = grad_for(c, dt_bias, "ddt_bias", "H");
    float * ds0 = grad_for(c, s0, "dinitial_state", "NHKV");
    check_status(c, la_mamba2_backward(dx, ddt, dA, dB, dC, dD, dbias, ds0, dout, dfin, x, dt, A_log,
                                       Bm, Cm, D, dt_bias, s0, sh, G, &c->opts),
                 "backward");
}

// gla: q, k, gk (B,T,H,K); v, gv (B,T,H,V); state (N,H,K,V).
static void op_gla(run_ctx * c) {
    const float * q = load_f32(c, "q", true, "BTHK");
    const float * k = load_f32(c, "k", true, "BTHK");
    const float * v = load_f32(c, "v", true, "BTHV");
    const float * gk = load_f32(c, "gk", c->opts.form == LA_FORM_CHUNK, "BTHK");
    const float * gv = load_f32(c, "gv", false, "BTHV");
    if (gv && c->opts.form == LA_FORM_CHUNK)
        cli_die("%s: 'gv' is accepted by the recurrent and ref forms only (as fla's chunk_gla)",
                c->in_path);
    load_cu_seqlens(c);
    const float * s0 = load_f32(c, "initial_state", false, "NHKV");
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHV") : NULL;
    const float * dfin = c->backward ? load_f32(c, "dfinal_state", false, "NHKV") : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);
    float * o = out_f32(c, "o", "BTHV");
    float * fin = out_f32(c, "final_state", "NHKV");
    check_status(c, la_gla_forward(o, fin, q, k, v, gk, gv, s0, sh, &c->opts), "forward");
    if (!c->backward) return;
    float * dq = out_f32(c, "dq", "BTHK");
    float * dk = out_f32(c, "dk", "BTHK");
    float * dv = out_f32(c, "dv", "BTHV");
    float * dgk = grad_for(c, gk, "dgk", "BTHK");
    float * dgv = grad_for(c, gv, "dgv", "BTHV");
    float * ds0 = grad_for(c, s0, "dinitial_state", "NHKV");
    check_status(c, la_gla_backward(dq, dk, dv, dgk, dgv, ds0, dout, dfin, q, k, v, gk, gv, s0, sh,
                                    &c->opts),
                 "backward");
}

// rwkv6: r, k, w (B,T,H,K); v (B,T,H,V); u (H,K); state (N,H,K,V).
static void op_rwkv6(run_ctx * c) {
    const float * r = load_f32(c, "r", true, "BTHK");
    const float * k = load_f32(c, "k", true, "BTHK");
    const float * v = load_f32(c, "v", true, "BTHV");
    const float * w = load_f32(c, "w", true, "BTHK");
    const float * u = load_f32(c, "u", true, "HK");
    load_cu_seqlens(c);
    const float * s0 = load_f32(c, "initial_state", false, "NHKV");
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHV") : NULL;
    const float * dfin = c->backward ? load_f32(c, "dfinal_state", false, "NHKV") : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);
    float * o = out_f32(c, "o", "BTHV");
    float * fin = out_f32(c, "final_state", "NHKV");
    check_status(c, la_rwkv6_forward(o, fin, r, k, v, w, u, s0, sh, &c->opts), "forward");
    if (!c->backward) return;
    float * dr = out_f32(c, "dr", "BTHK");
    float * dk = out_f32(c, "dk", "BTHK");
    float * dv = out_f32(c, "dv", "BTHV");
    float * dw = out_f32(c, "dw", "BTHK");
    float * du = out_f32(c, "du", "HK");
    float * ds0 = grad_for(c, s0, "dinitial_state", "NHKV");
    check_status(c, la_rwkv6_backward(dr, dk, dv, dw, du, ds0, dout, dfin, r, k, v, w, u, s0, sh,
                                      &c->opts),
                 "backward");
}

// Sizes of the axes in `axes` must be known; T may be 0, the others must be >= 1.
static void need_axes(run_ctx * c, const char * axes) {
    for (const char * p = axes; *p; p++) {
        const int64_t d = c->dim[(unsigned char)*p];
        if (d < (*p == 'T' ? 0 : 1))
            cli_die("%s: axis %c must be at least %d, got %lld", c->in_path, *p, *p == 'T' ? 0 : 1,
                    (long long)d);
    }
}

// hgrn: x, g (B,T,D); state (N,D).
static void op_hgrn(run_ctx * c) {
    const float * x = load_f32(c, "x", true, "BTD");
    const float * g = load_f32(c, "g", true, "BTD");
    load_cu_seqlens(c);
    const float * s0 = load_f32(c, "initial_state", false, "ND");
    const float * dout = c->backward ? load_f32(c, "do", true, "BTD") : NULL;
    const float * dfin = c->backward ? load_f32(c, "dfinal_state", false, "ND") : NULL;
    check_all_used(c);
    need_axes(c, "BTD");
    const int64_t B = c->dim['B'], T = c->dim['T'], D = c->dim['D'];
    float * o = out_f32(c, "o", "BTD");
    float * fin = out_f32(c, "final_state", "ND");
    check_status(c, la_hgrn_forward(o, fin, x, g, s0, B, T, D, &c->opts), "forward");
    if (!c->backward) return;
    float * dx = out_f32(c, "dx", "BTD");
    float * dg = out_f32(c, "dg", "BTD");
    float * ds0 = grad_for(c, s0, "dinitial_state", "ND");
    check_status(c, la_hgrn_backward(dx, dg, ds0, dout, dfin, x, g, s0, B, T, D, &c->opts),
                 "backward");
}

// selective_scan: u, delta (B,T,D); A (D,M); B, C (B,T,M); D, delta_bias (D); state (N,D,M)
// with M = d_state.
static void op_selective_scan(run_ctx * c) {
    const float * u = load_f32(c, "u", true, "BTD");
    const float * delta = load_f32(c, "delta", true, "BTD");
    const float * A = load_f32(c, "A", true, "DM");
    const float * Bm = load_f32(c, "B", true, "BTM");
    const float * Cm = load_f32(c, "C", true, "BTM");
    const float * D = load_f32(c, "D", false, "D");
    const float * bias = load_f32(c, "delta_bias", false, "D");
    load_cu_seqlens(c);
    const float * s0 = load_f32(c, "initial_state", false, "NDM");
    const float * dout = c->backward ? load_f32(c, "do", true, "BTD") : NULL;
    const float * dfin = c->backward ? load_f32(c, "dfinal_state", false, "NDM") : NULL;
    check_all_used(c);
    need_axes(c, "BTDM");
    const int64_t Bn = c->dim['B'], T = c->dim['T'], Dm = c->dim['D'], M = c->dim['M'];
    const bool sp = (c->given & OPF_DELTA_SOFTPLUS) != 0;
    float * o = out_f32(c, "o", "BTD");
    float * fin = out_f32(c, "final_state", "NDM");
    check_status(c, la_selective_scan_forward(o, fin, u, delta, A, Bm, Cm, D, bias, sp, s0, Bn, T,
                                              Dm, M, &c->opts),
                 "forward");
    if (!c->backward) return;
    float * du = out_f32(c, "du", "BTD");
    float * ddelta = out_f32(c, "ddelta", "BTD");
    float * dA = out_f32(c, "dA", "DM");
    float * dB = out_f32(c, "dB", "BTM");
    float * dC = out_f32(c, "dC", "BTM");
    float * dD = grad_for(c, D, "dD", "D");
    float * dbias = grad_for(c, bias, "ddelta_bias", "D");
    float * ds0 = grad_for(c, s0, "dinitial_state", "NDM");
    check_status(c, la_selective_scan_backward(du, ddelta, dA, dB, dC, dD, dbias, ds0, dout, dfin,
                                               u, delta, A, Bm, Cm, D, bias, sp, s0, Bn, T, Dm, M,
                                               &c->opts),
                 "backward");
}

// The delta family. Axis J is the number of value heads HV (gated_delta_rule, kda: a multiple
// of H); delta_rule and the dplr ops have HV = H.
typedef enum { DN_DELTA, DN_GDN, DN_KDA } dn_kind;

static void run_dn_family(run_ctx * c, dn_kind kind) {
    const bool gate_in = (c->given & OPF_GATE_IN_KERNEL) != 0;
    const char * vh = kind == DN_DELTA ? "BTHV" : "BTJV";
    const float * q = load_f32(c, "q", true, "BTHK");
    const float * k = load_f32(c, "k", true, "BTHK");
    const float * v = load_f32(c, "v", true, vh);
    const float * g = kind == DN_DELTA ? NULL : load_f32(c, "g", true, kind == DN_KDA ? "BTJK" : "BTJ");
    const float * beta = load_f32(c, "beta", kind != DN_DELTA, kind == DN_DELTA ? "BTH" : "BTJ");
    const float * A_log = NULL, * dt_bias = NULL;
    if (kind != DN_DELTA) {
        if (!gate_in && (la_st_find(c->in, "A_log") || la_st_find(c->in, "dt_bias")))
            cli_die("%s: 'A_log' and 'dt_bias' are read only with --use-gate-in-kernel", c->in_path);
        if (gate_in) {
            // kda's lower-bound gate may go without A_log (g = lb sigmoid(g_raw + dt_bias)).
            const bool lb = (c->given & OPF_LOWER_BOUND) != 0;
            A_log = load_f32(c, "A_log", !(kind == DN_KDA && lb), "J");
            dt_bias = load_f32(c, "dt_bias", false, kind == DN_KDA ? "X" : "J");
            if (dt_bias && kind == DN_KDA && c->dim['X'] != c->dim['J'] * c->dim['K'])
                cli_die("%s: kda's dt_bias must have HV*K = %lld entries, has %lld", c->in_path,
                        (long long)(c->dim['J'] * c->dim['K']), (long long)c->dim['X']);
        }
    }
    load_cu_seqlens(c);
    const char * st = kind == DN_DELTA ? "NHKV" : "NJKV";
    const float * s0 = load_f32(c, "initial_state", false, st);
    const float * dout = c->backward ? load_f32(c, "do", true, vh) : NULL;
    const float * dfin = c->backward ? load_f32(c, "dfinal_state", false, st) : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);
    if (kind != DN_DELTA) {
        sh.HV = c->dim['J'];
        if (sh.HV < 1 || sh.HV % sh.H != 0)
            cli_die("%s: value heads HV = %lld must be a multiple of q/k heads H = %lld",
                    c->in_path, (long long)sh.HV, (long long)sh.H);
    }
    float * o = out_f32(c, "o", vh);
    float * fin = out_f32(c, "final_state", st);
    la_status rs;
    if (kind == DN_DELTA) rs = la_delta_rule_forward(o, fin, q, k, v, beta, s0, sh, &c->opts);
    else if (kind == DN_GDN)
        rs = la_gated_delta_rule_forward(o, fin, q, k, v, g, beta, A_log, dt_bias, s0, sh,
                                         &c->opts);
    else rs = la_kda_forward(o, fin, q, k, v, g, beta, A_log, dt_bias, s0, sh, &c->opts);
    check_status(c, rs, "forward");
    if (!c->backward) return;
    float * dq = out_f32(c, "dq", "BTHK");
    float * dk = out_f32(c, "dk", "BTHK");
    float * dv = out_f32(c, "dv", vh);
    float * dg = grad_for(c, g, "dg", kind == DN_KDA ? "BTJK" : "BTJ");
    float * dbeta = grad_for(c, beta, "dbeta", kind == DN_DELTA ? "BTH" : "BTJ");
    float * dA = grad_for(c, A_log, "dA_log", "J");
    float * ddt = grad_for(c, dt_bias, "ddt_bias", kind == DN_KDA ? "X" : "J");
    float * ds0 = grad_for(c, s0, "dinitial_state", st);
    if (kind == DN_DELTA)
        rs = la_delta_rule_backward(dq, dk, dv, dbeta, ds0, dout, dfin, q, k, v, beta, s0, sh,
                                    &c->opts);
    else if (kind == DN_GDN)
        rs = la_gated_delta_rule_backward(dq, dk, dv, dg, dbeta, dA, ddt, ds0, dout, dfin, q, k,
                                          v, g, beta, A_log, dt_bias, s0, sh, &c->opts);
    else
        rs = la_kda_backward(dq, dk, dv, dg, dbeta, dA, ddt, ds0, dout, dfin, q, k, v, g, beta,
                             A_log, dt_bias, s0, sh, &c->opts);
    check_status(c, rs, "backward");
}

static void op_delta_rule(run_ctx * c) { run_dn_family(c, DN_DELTA); }
static void op_gated_delta_rule(run_ctx * c) { run_dn_family(c, DN_GDN); }
static void op_kda(run_ctx * c) { run_dn_family(c, DN_KDA); }

// dplr_delta_rule, iplr_delta_rule (no gk), rwkv7 (q is r, gk is w; scale 1 by default).
typedef enum { DP_DPLR, DP_IPLR, DP_RWKV7 } dp_kind;

static void run_dp_family(run_ctx * c, dp_kind kind) {
    const bool rw = kind == DP_RWKV7;
    const float * q = load_f32(c, rw ? "r" : "q", true, "BTHK");
    const float * gk = kind == DP_IPLR ? NULL : load_f32(c, rw ? "w" : "gk", true, "BTHK");
    const float * k = load_f32(c, "k", true, "BTHK");
    const float * v = load_f32(c, "v", true, "BTHV");
    const float * a = load_f32(c, "a", true, "BTHK");
    const float * b = load_f32(c, "b", true, "BTHK");
    load_cu_seqlens(c);
    const float * s0 = load_f32(c, "initial_state", false, "NHKV");
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHV") : NULL;
    const float * dfin = c->backward ? load_f32(c, "dfinal_state", false, "NHKV") : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);
    float * o = out_f32(c, "o", "BTHV");
    float * fin = out_f32(c, "final_state", "NHKV");
    la_status rs;
    if (kind == DP_DPLR)
        rs = la_dplr_delta_rule_forward(o, fin, q, k, v, a, b, gk, s0, sh, &c->opts);
    else if (kind == DP_IPLR)
        rs = la_iplr_delta_rule_forward(o, fin, q, k, v, a, b, s0, sh, &c->opts);
    else rs = la_rwkv7_forward(o, fin, q, gk, k, v, a, b, s0, sh, &c->opts);
    check_status(c, rs, "forward");
    if (!c->backward) return;
    float * dq = out_f32(c, rw ? "dr" : "dq", "BTHK");
    float * dgk = grad_for(c, gk, rw ? "dw" : "dgk", "BTHK");
    float * dk = out_f32(c, "dk", "BTHK");
    float * dv = out_f32(c, "dv", "BTHV");
    float * da = out_f32(c, "da", "BTHK");
    float * db = out_f32(c, "db", "BTHK");
    float * ds0 = grad_for(c, s0, "dinitial_state", "NHKV");
    if (kind == DP_DPLR)
        rs = la_dplr_delta_rule_backward(dq, dk, dv, da, db, dgk, ds0, dout, dfin, q, k, v, a, b,
                                         gk, s0, sh, &c->opts);
    else if (kind == DP_IPLR)
        rs = la_iplr_delta_rule_backward(dq, dk, dv, da, db, ds0, dout, dfin, q, k, v, a, b, s0,
                                         sh, &c->opts);
    else
        rs = la_rwkv7_backward(dq, dgk, dk, dv, da, db, ds0, dout, dfin, q, gk, k, v, a, b, s0,
                               sh, &c->opts);
    check_status(c, rs, "backward");
}

static void op_dplr(run_ctx * c) { run_dp_family(c, DP_DPLR); }
static void op_iplr(run_ctx * c) { run_dp_family(c, DP_IPLR); }
static void op_rwkv7(run_ctx * c) { run_dp_family(c, DP_RWKV7); }

// attn: q [B,T,H,K]; k [B,T,J,K], v [B,T,J,V] (J = kv heads); g [B,T,H] optional.
// OUT: o [B,T,H,V], lse [B,T,H]; with --backward dq, dk, dv (dg).
static void op_attn(run_ctx * c) {
    const float * q = load_f32(c, "q", true, "BTHK");
    const float * k = load_f32(c, "k", true, "BTJK");
    const float * v = load_f32(c, "v", true, "BTJV");
    const float * g = load_f32(c, "g", false, "BTH");
    load_cu_seqlens(c);
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHV") : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);
    sh.HV = c->dim['J'];
    if (sh.HV < 1 || sh.H % sh.HV != 0)
        cli_die("%s: query heads H = %lld must be a multiple of kv heads %lld", c->in_path,
                (long long)sh.H, (long long)sh.HV);
    const bool causal = !(c->given & OPF_NON_CAUSAL);
    if (g && !causal) cli_die("%s: the gate 'g' needs causal attention", c->in_path);
    float * o = out_f32(c, "o", "BTHV");
    float * lse = out_f32(c, "lse", "BTH");
    check_status(c, la_attn_forward(o, lse, q, k, v, g, c->window, causal, sh, &c->opts),
                 "forward");
    if (!c->backward) return;
    float * dq = out_f32(c, "dq", "BTHK");
    float * dk = out_f32(c, "dk", "BTJK");
    float * dv = out_f32(c, "dv", "BTJV");
    float * dg = grad_for(c, g, "dg", "BTH");
    check_status(c, la_attn_backward(dq, dk, dv, dg, dout, q, k, v, g, o, lse, c->window, causal,
                                     sh, &c->opts),
                 "backward");
}

// based, rebased: q, k [B,T,H,K] (K = feature dim), v [B,T,H,V]; no state.
static void run_poly(run_ctx * c, bool rebased) {
    const float * q = load_f32(c, "q", true, "BTHK");
    const float * k = load_f32(c, "k", true, "BTHK");
    const float * v = load_f32(c, "v", true, "BTHV");
    load_cu_seqlens(c);
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHV") : NULL;
    check_all_used(c);
    la_shape sh = shape_of(c);
    const bool norm = !(c->given & OPF_NO_NORM);
    const float eps = (float)c->eps;
    float * o = out_f32(c, "o", "BTHV");
    check_status(c, rebased ? la_rebased_forward(o, q, k, v, eps, norm, sh, &c->opts)
                            : la_based_forward(o, q, k, v, norm, sh, &c->opts),
                 "forward");
    if (!c->backward) return;
    float * dq = out_f32(c, "dq", "BTHK");
    float * dk = out_f32(c, "dk", "BTHK");
    float * dv = out_f32(c, "dv", "BTHV");
    check_status(c, rebased ? la_rebased_backward(dq, dk, dv, dout, q, k, v, eps, norm, sh, &c->opts)
                            : la_based_backward(dq, dk, dv, dout, q, k, v, norm, sh, &c->opts),
                 "backward");
}
static void op_based(run_ctx * c) { run_poly(c, false); }
static void op_rebased(run_ctx * c) { run_poly(c, true); }

// rope: x [B,T,H,D]; offsets [N] (int64/int32) optional. OUT: o; --backward: dx from do.
static void op_rope(run_ctx * c) {
    const float * x = load_f32(c, "x", true, "BTHD");
    load_cu_seqlens(c);
    int64_t * off = NULL;
    const la_st_tensor * t = la_st_find(c->in, "offsets");
    if (t) {
        mark_used(c, "offsets");
        if (t->ndim != 1 || t->numel != c->dim['N'])
            cli_die("%s: offsets must be 1-D with one entry per sequence (%lld)", c->in_path,
                    (long long)c->dim['N']);
        off = malloc((size_t)t->numel * sizeof(int64_t));
        if (!off) cli_die("out of memory");
        char err[512];
        if (la_st_read_i64(c->in, t, off, t->numel, err, sizeof err) != LA_STATUS_OK) {
            free(off);
            cli_die("%s", err);
        }
        for (int64_t i = 0; i < t->numel; i++)
            if (off[i] < 0) {
                free(off);
                cli_die("%s: offsets must be non-negative", c->in_path);
            }
    }
    const float * dout = c->backward ? load_f32(c, "do", true, "BTHD") : NULL;
    check_all_used(c);
    need_axes(c, "BTHD");
    const int64_t Bn = c->dim['B'], T = c->dim['T'], H = c->dim['H'], D = c->dim['D'];
    if (D % 2) cli_die("%s: rope needs an even head dim, got D = %lld", c->in_path, (long long)D);
    float * o = out_f32(c, "o", "BTHD");
    la_status st = la_rope_forward(o, x, (float)c->theta, off, Bn, T, H, D, &c->opts);
    if (st == LA_STATUS_OK && c->backward) {
        float * dx = out_f32(c, "dx", "BTHD");
        st = la_rope_backward(dx, dout, (float)c->theta, off, Bn, T, H, D, &c->opts);
    }
    free(off);
    check_status(c, st, c->backward ? "forward/backward" : "forward");
}

// short_conv: x [B,T,D]; weight [D,W] (or torch's [D,1,W]); bias [D]; initial_cache [N,D,W].
// OUT: o, final_cache; --backward: dx, dweight, dbias, dinitial_cache (dfinal_cache read).
static void op_short_conv(run_ctx * c) {
    const float * x = load_f32(c, "x", true, "BTD");
    const la_st_tensor * wt = la_st_find(c->in, "weight");
    const float * w = load_f32(c, "weight", true, wt && wt->ndim == 3 ? "D1W" : "DW");
    const float * bias = load_f32(c, "bias", false, "D");
    load_cu_seqlens(c);
    const float * c0 = load_f32(c, "initial_cache", false, "NDW");
    const float * dout = c->backward ? load_f32(c, "do", true, "BTD") : NULL;
    const float * dfc = c->backward ? load_f32(c, "dfinal_cache", false, "NDW") : NULL;
    check_all_used(c);
    need_axes(c, "BTDW");
    const int64_t Bn = c->dim['B'], T = c->dim['T'], D = c->dim['D'], W = c->dim['W'];
    float * o = out_f32(c, "o", "BTD");
    float * fc = out_f32(c, "final_cache", "NDW");
    check_status(c, la_short_conv_forward(o, fc, x, w, bias, c0, c->act, Bn, T, D, W, &c->opts),
                 "forward");
    if (!c->backward) return;
    float * dx = out_f32(c, "dx", "BTD");
    float * dw = out_f32(c, "dweight", wt && wt->ndim == 3 ? "D1W" : "DW");
    float * db = grad_for(c, bias, "dbias", "D");
    float * dc0 = grad_for(c, c0, "dinitial_cache", "NDW");
    check_status(c, la_short_conv_backward(dx, dw, db, dc0, dout, dfc, x, w, bias, c0, c->act, Bn,
                                           T, D, W, false, &c->opts),
                 "backward");
}

typedef struct op_desc {
    const char * name;
    unsigned     flags;  // OPF_* the op accepts
    void (*run)(run_ctx * c);
    const char * inputs;
} op_desc;

static const op_desc g_ops[] = {
    { "linear_attn", OPF_SCALE | OPF_CHUNK | OPF_NORMALIZE | OPF_NON_CAUSAL, op_linear_attn,
      "q, k [B,T,H,K]; v [B,T,H,V]; initial_state [N,H,K,V]; with --normalize initial_z "
      "[N,1,H,K] (or [N,H,K])" },
    { "simple_gla", OPF_SCALE | OPF_CHUNK | OPF_NON_CAUSAL, op_simple_gla,
      "q, k [B,T,H,K]; v [B,T,H,V]; g [B,T,H] or g_gamma [H]; initial_state [N,H,K,V]" },
    { "retention", OPF_SCALE | OPF_CHUNK, op_retention,
      "q, k [B,T,H,K]; v [B,T,H,V]; initial_state [N,H,K,V]" },
    { "gla", OPF_SCALE | OPF_CHUNK, op_gla,
      "q, k [B,T,H,K]; v [B,T,H,V]; gk [B,T,H,K] (required by --form chunk); gv [B,T,H,V] "
      "(recurrent, ref); initial_state [N,H,K,V]" },
    { "rwkv6", OPF_SCALE | OPF_CHUNK, op_rwkv6,
      "r, k, w [B,T,H,K]; v [B,T,H,V]; u [H,K]; initial_state [N,H,K,V]" },
    { "hgrn", OPF_CHUNK, op_hgrn, "x, g [B,T,D]; initial_state [N,D]" },
    { "selective_scan", OPF_CHUNK | OPF_DELTA_SOFTPLUS, op_selective_scan,
      "u, delta [B,T,D]; A [D,M]; B, C [B,T,M]; D [D]; delta_bias [D]; initial_state [N,D,M] "
      "(M = d_state; mamba_ssm's [B,D,T] layouts transposed)" },
    { "delta_rule", OPF_SCALE | OPF_CHUNK | OPF_QK_L2NORM, op_delta_rule,
      "q, k [B,T,H,K]; v [B,T,H,V]; beta [B,T,H] (absent: 1); initial_state [N,H,K,V]" },
    { "gated_delta_rule",
      OPF_SCALE | OPF_CHUNK | OPF_QK_L2NORM | OPF_BETA_SIGMOID | OPF_NEG_EIGVAL |
          OPF_GATE_IN_KERNEL,
      op_gated_delta_rule,
      "q, k [B,T,H,K]; v [B,T,HV,V]; g, beta [B,T,HV]; with --use-gate-in-kernel A_log [HV], "
      "dt_bias [HV]; initial_state [N,HV,K,V]" },
    { "kda",
      OPF_SCALE | OPF_CHUNK | OPF_QK_L2NORM | OPF_BETA_SIGMOID | OPF_NEG_EIGVAL |
          OPF_GATE_IN_KERNEL | OPF_LOWER_BOUND,
      op_kda,
      "q, k [B,T,H,K]; v [B,T,HV,V]; g [B,T,HV,K]; beta [B,T,HV]; with --use-gate-in-kernel "
      "A_log [HV], dt_bias [HV*K]; initial_state [N,HV,K,V]" },
    { "dplr_delta_rule", OPF_SCALE | OPF_CHUNK, op_dplr,
      "q, k, a, b, gk [B,T,H,K]; v [B,T,H,V]; initial_state [N,H,K,V]" },
    { "iplr_delta_rule", OPF_SCALE | OPF_CHUNK, op_iplr,
      "q, k, a, b [B,T,H,K]; v [B,T,H,V]; initial_state [N,H,K,V]" },
    { "rwkv7", OPF_SCALE | OPF_CHUNK, op_rwkv7,
      "r, w, k, a, b [B,T,H,K]; v [B,T,H,V]; initial_state [N,H,K,V] (scale 1 by default)" },
    { "attn", OPF_SCALE | OPF_WINDOW | OPF_NON_CAUSAL, op_attn,
      "q [B,T,H,K]; k [B,T,HKV,K]; v [B,T,HKV,V]; g [B,T,H] (forgetting attention); "
      "OUT also lse [B,T,H]" },
    { "based", OPF_SCALE | OPF_NO_NORM, op_based, "q, k [B,T,H,F]; v [B,T,H,V]" },
    { "rebased", OPF_SCALE | OPF_NO_NORM | OPF_EPS, op_rebased,
      "q, k [B,T,H,F]; v [B,T,H,V] (eps 1e-5 unless --eps)" },
    { "rope", OPF_THETA, op_rope,
      "x [B,T,H,D]; offsets [N] (start position per sequence); theta 10000 unless --theta" },
    { "short_conv", OPF_ACTIVATION, op_short_conv,
      "x [B,T,D]; weight [D,W] or [D,1,W]; bias [D]; initial_cache [N,D,W]; "
      "--activation silu|identity (default identity)" },
    { "mamba2", OPF_CHUNK, op_mamba2,
      "x [B,T,H,P]; dt [B,T,H]; A_log [H]; B, C [B,T,G,Nst]; D [H]; dt_bias [H]; "
      "initial_state [N,H,Nst,P]" },
};
#define N_OPS (sizeof g_ops / sizeof g_ops[0])

static void op_usage(FILE * f) {
    fprintf(f, "usage: linattn op NAME --in IN.safetensors --out OUT.safetensors\n"
               "         [--form ref|recurrent|chunk] [--backward] [--threads N] [flags]\n"
               "\nops and their inputs (all take cu_seqlens [N+1] int64/int32 for varlen):\n");
    for (size_t i = 0; i < N_OPS; i++) {
        fprintf(f, "  %-16s %s\n                   flags:", g_ops[i].name, g_ops[i].inputs);
        for (size_t j = 0; j < N_FLAGS; j++)
            if (g_ops[i].flags & g_flags[j].bit) fprintf(f, " %s", g_flags[j].name);
        fputc('\n', f);
    }
    fprintf(f, "\nOUT holds o, final_state and, with --backward (IN then also holds do and\n"
               "optionally dfinal_state), d<name> for every floating input.\n");
}

int cmd_op(int argc, char ** argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        op_usage(stdout);
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-') {
        cli_die("op: missing op NAME (try 'linattn op --help')");
    }
    run_ctx * c = calloc(1, sizeof *c);
    if (!c) cli_die("out of memory");
    c->op = argv[1];
    c->opts = la_opts_default();
    for (int i = 0; i < 128; i++) c->dim[i] = -1;
    c->dim['1'] = 1;  // a literal axis of size 1
    c->theta = 10000.0;
    c->eps = 1e-5;
    c->act = LA_ACT_IDENTITY;
    const op_desc * op = NULL;
    for (size_t i = 0; i < N_OPS; i++)
        if (!strcmp(g_ops[i].name, c->op)) op = &g_ops[i];
    if (!op) {
        fprintf(stderr, "linattn: error: unknown op '%s' (ops:", c->op);
        for (size_t i = 0; i < N_OPS; i++) fprintf(stderr, " %s", g_ops[i].name);
        fprintf(stderr, ")\n");
        exit(LA_EXIT_USAGE);
    }
    for (int i = 2; i < argc; i++) {
        const char * a = argv[i];
        // A following "--flag" is never taken as a value (negative numbers have one dash).
        const char * val = i + 1 < argc && strncmp(argv[i + 1], "--", 2) ? argv[i + 1] : NULL;
        static const char * once[] = { "--in", "--out", "--form", "--backward", "--threads" };
        for (size_t j = 0; j < sizeof once / sizeof once[0]; j++)
            if (!strcmp(a, once[j])) {
                for (int i2 = 2; i2 < i; i2++)
                    if (!strcmp(argv[i2], a)) cli_die("%s given twice", a);
            }
        if (!strcmp(a, "--in")) {
            if (!val) cli_die("--in needs a file");
            c->in_path = val;
            i++;
        } else if (!strcmp(a, "--out")) {
            if (!val) cli_die("--out needs a file");
            c->out_path = val;
            i++;
        } else if (!strcmp(a, "--form")) {
            if (!val) cli_die("--form needs one of ref, recurrent, chunk");
            if (!strcmp(val, "ref")) c->opts.form = LA_FORM_REF;
            else if (!strcmp(val, "recurrent")) c->opts.form = LA_FORM_RECURRENT;
            else if (!strcmp(val, "chunk")) c->opts.form = LA_FORM_CHUNK;
            else cli_die("--form: '%s' is not one of ref, recurrent, chunk", val);
            i++;
        } else if (!strcmp(a, "--backward")) {
            c->backward = true;
        } else if (!strcmp(a, "--threads")) {
            la_set_num_threads((int32_t)cli_parse_int("--threads", val, 1, 1024));
            i++;
        } else {
            size_t j = 0;
            while (j < N_FLAGS && strcmp(g_flags[j].name, a)) j++;
            if (j == N_FLAGS) cli_die("op %s: unknown flag '%s'", c->op, a);
            if (!(op->flags & g_flags[j].bit))
                cli_die("op %s does not take %s", c->op, g_flags[j].name);
            if (c->given & g_flags[j].bit) cli_die("%s given twice", a);
            c->given |= g_flags[j].bit;
            if (g_flags[j].takes_value) {
                if (!val) cli_die("%s needs a value", a);
                c->flag_val[j] = val;
                i++;
            }
        }
    }
    if (!c->in_path) cli_die("op %s: --in IN.safetensors is required", c->op);
    if (!c->out_path) cli_die("op %s: --out OUT.safetensors is required", c->op);
    for (size_t j = 0; j < N_FLAGS; j++) {
        if (!c->flag_val[j]) continue;
        if (g_flags[j].bit == OPF_SCALE) {
            c->opts.scale = (float)cli_parse_double("--scale", c->flag_val[j], -1e6, 1e6);
            if (c->opts.scale == 0.0f) cli_die("--scale must be non-zero");
        } else if (g_flags[j].bit == OPF_WINDOW) {
            c->window = cli_parse_int("--window-size", c->flag_val[j], 1, (int64_t)1 << 40);
        } else if (g_flags[j].bit == OPF_THETA) {
            c->theta = cli_parse_double("--theta", c->flag_val[j], 1.0, 1e12);
        } else if (g_flags[j].bit == OPF_EPS) {
            c->eps = cli_parse_double("--eps", c->flag_val[j], 1e-30, 1.0);
        } else if (g_flags[j].bit == OPF_ACTIVATION) {
            if (!strcmp(c->flag_val[j], "silu") || !strcmp(c->flag_val[j], "swish"))
                c->act = LA_ACT_SILU;
            else if (!strcmp(c->flag_val[j], "identity")) c->act = LA_ACT_IDENTITY;
            else cli_die("--activation: '%s' is not one of silu, identity", c->flag_val[j]);
        } else if (g_flags[j].bit == OPF_LOWER_BOUND) {
            c->opts.lower_bound =
                (float)cli_parse_double("--lower-bound", c->flag_val[j], -1e6, 0.0);
            if (!(c->opts.lower_bound < 0.0f)) cli_die("--lower-bound must be negative");
            if (!(c->given & OPF_GATE_IN_KERNEL))
                cli_die("--lower-bound applies with --use-gate-in-kernel");
        } else if (g_flags[j].bit == OPF_CHUNK) {
            c->opts.chunk_size = (int32_t)cli_parse_int("--chunk-size", c->flag_val[j], 1, 256);
            if (c->opts.form != LA_FORM_CHUNK)
                cli_die("--chunk-size applies only to --form chunk");
        }
    }
    c->opts.use_qk_l2norm_in_kernel = (c->given & OPF_QK_L2NORM) != 0;
    c->opts.use_beta_sigmoid_in_kernel = (c->given & OPF_BETA_SIGMOID) != 0;
    c->opts.allow_neg_eigval = (c->given & OPF_NEG_EIGVAL) != 0;
    c->opts.use_gate_in_kernel = (c->given & OPF_GATE_IN_KERNEL) != 0;
    if (c->opts.allow_neg_eigval && !c->opts.use_beta_sigmoid_in_kernel)
        cli_die("--allow-neg-eigval applies with --use-beta-sigmoid-in-kernel");
    char err[1024];
    if (la_st_open(&c->in, c->in_path, err, sizeof err) != LA_STATUS_OK) cli_die("%s", err);
    if (la_st_count(c->in) > (int64_t)(sizeof c->used / sizeof c->used[0]))
        cli_die("%s: too many tensors for op %s", c->in_path, c->op);
    op->run(c);
    save_outputs(c);
    for (int i = 0; i < c->nout; i++) free(c->outs[i].data);
    for (int i = 0; i < c->nowned; i++) free(c->owned[i]);
    free(c->cu);
    la_st_close(c->in);
    free(c);
    return 0;
}
