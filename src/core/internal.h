// Internal interfaces shared by the library's translation units: the small-matrix GEMM used by
// every chunkwise algorithm, the kernel dispatch table, workspace carving and threading helpers.
#ifndef LA_INTERNAL_H
#define LA_INTERNAL_H

#include "linattn.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

// ---------------------------------------------------------------------------------------------
// Small GEMM (the chunkwise workhorse)
//
// Row-major C[M,N] = alpha * op(A)[M,Kd] * op(B)[Kd,N] + beta * C.
//   op(A) = A (lda >= Kd) or A^T with A stored [Kd, M] (lda >= M); likewise op(B).
//   beta == 0: C is overwritten and never read (it may hold NaN); beta == 1: accumulate.
//   alpha == 0: C = beta * C and A, B are never read (as BLAS).
//   M, N or Kd may be 0 (Kd == 0 scales C by beta).
// Single-threaded, never allocates; stack scratch is bounded by LA_GEMM_STACK_BYTES.
// Tuned for operands that sit in L2 (M, N, Kd up to a few hundred); correct for any size.
#define LA_GEMM_STACK_BYTES (96 * 1024)

typedef void (*la_gemm_fn)(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd,
                           float alpha, const float * restrict A, int64_t lda,
                           const float * restrict B, int64_t ldb, float beta,
                           float * restrict C, int64_t ldc);

void la_gemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                 const float * restrict A, int64_t lda, const float * restrict B, int64_t ldb,
                 float beta, float * restrict C, int64_t ldc);
void la_gemm_avx2(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                  const float * restrict A, int64_t lda, const float * restrict B, int64_t ldb,
                  float beta, float * restrict C, int64_t ldc);
void la_gemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                    const float * restrict A, int64_t lda, const float * restrict B, int64_t ldb,
                    float beta, float * restrict C, int64_t ldc);

// ---------------------------------------------------------------------------------------------
// Dispatch table: filled with the references, then overridden after CPU detection.

typedef struct la_kernels {
    la_gemm_fn  gemm;
    const char *isa;
} la_kernels;

const la_kernels * la_kern(void);

// ---------------------------------------------------------------------------------------------
// Helpers

#define LA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LA_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LA_ALIGN 64
static inline size_t la_align_up(size_t n) { return (n + LA_ALIGN - 1) & ~(size_t)(LA_ALIGN - 1); }

// Bump allocator over a caller-provided block (64-byte aligned carving).
typedef struct la_carver {
    char * base;
    size_t used;
} la_carver;
static inline void * la_carve(la_carver * c, size_t bytes) {
    void * p = c->base ? c->base + c->used : NULL;
    c->used += la_align_up(bytes);
    return p;
}

// Workspace acquisition: uses opts->work when given (aligned up to LA_ALIGN, checking its size),
// otherwise allocates. `need` is a public workspace size, i.e. carved bytes + LA_ALIGN of slack
// (every la_<op>_workspace_size adds it). *owned is set when the caller must free with
// la_ws_release.
la_status la_ws_acquire(const la_opts * opts, size_t need, void ** ws, bool * owned);
void      la_ws_release(void * ws, bool owned);

// Sequence bounds: returns N and fills bos/eos for sequence n (in tokens of the flat B*T axis).
static inline void la_seq_bounds(const la_opts * opts, la_shape sh, int64_t n, int64_t * bos,
                                 int64_t * eos) {
    if (opts->cu_seqlens) {
        *bos = opts->cu_seqlens[n];
        *eos = opts->cu_seqlens[n + 1];
    } else {
        *bos = n * sh.T;
        *eos = (n + 1) * sh.T;
    }
}

// Validates shape, cu_seqlens, chunk size; returns N through *n_out. la_check_common also
// rejects grouped value heads (sh.HV other than 0 or H) and the delta family's flags;
// la_check_base leaves those to the delta-family drivers.
la_status la_check_common(la_shape sh, const la_opts * opts, int64_t * n_out);
la_status la_check_base(la_shape sh, const la_opts * opts, int64_t * n_out);

int32_t la_opts_chunk(const la_opts * opts);
static inline float la_opts_scale(const la_opts * opts, int64_t K) {
    return opts->scale != 0.0f ? opts->scale : (float)(1.0 / sqrt((double)K));
}
int32_t la_nthreads(void);

// Index of the calling thread inside a parallel region (0 outside one, and without OpenMP).
static inline int la_thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Runs fn(ctx, task, scratch) for task in [0, ntask) on la_slots(ntask) threads, statically
// split; the thread with index i gets scratch = ws + i * per bytes. Each task must write only
// its own outputs, so results do not depend on the thread count.
typedef void (*la_task_fn)(const void * ctx, int64_t task, void * scratch);
void la_run_tasks(int64_t ntask, void * ws, size_t per, la_task_fn fn, const void * ctx);
// Workspace slots (and threads) for a call with ntask independent tasks: no more than the tasks.
static inline int32_t la_slots(int64_t ntask) {
    const int32_t nt = la_nthreads();
    return ntask < 1 ? 1 : ntask < nt ? (int32_t)ntask : nt;
}

// sum_j x[j] y[j] in 16 independent float lanes: the fixed lane order keeps results
// reproducible and lets the compiler vectorise without reassociating (no -ffast-math).
static inline float la_dot_lanes(const float * restrict x, const float * restrict y, int64_t n) {
    float acc[16] = { 0 };
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[j + l] * y[j + l];
    for (int l = 0; j + l < n; l++) acc[l] += x[j + l] * y[j + l];
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += acc[l];
    return s;
}

// Log gates are clamped at this floor inside cumulative sums: exp() of anything below it is 0
// in float32 already, and a gate of -inf (a hard reset) would otherwise give -inf - -inf = NaN
// in the chunk forms' differences of cumulative gates.
#define LA_GATE_FLOOR (-1.0e4)

static inline float la_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float la_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }



// Chunk-boundary states kept by a chunkwise backward over a sequence of nch chunks: all of
// them while nch <= LA_CKPT_ALL, otherwise a checkpoint every M = ceil(sqrt(nch)) chunks, from
// which each group of M states is replayed when the reverse pass reaches it (one extra state
// pass; memory O(sqrt(T)) states instead of O(T): 16 MiB instead of 1 GiB per head at T = 10^6,
// K = V = 128). la_ckpt_group gives M for the longest sequence of a call; every sequence of the
// call uses it. Buffers: la_ckpt_count(nch_max, M) checkpoints + M group states.
#define LA_CKPT_ALL 256
static inline int64_t la_ckpt_group(int64_t nch_max) {
    if (nch_max <= LA_CKPT_ALL) return nch_max > 0 ? nch_max : 1;
    int64_t m = (int64_t)sqrt((double)nch_max);
    while (m * m < nch_max) m++;
    return m;
}
static inline int64_t la_ckpt_count(int64_t nch_max, int64_t M) { return (nch_max + M - 1) / M + 1; }

// Advances the state S (K*V floats) over chunk `chunk` of the sequence in ctx.
typedef void (*la_chunk_step_fn)(const void * ctx, int64_t chunk, float * S);

typedef struct la_ckpt {
    float * ckpt;  // (la_ckpt_count, K*V) checkpoints S_[gM]
    float * grp;   // (M, K*V) the boundary states of the group being processed
    int64_t M;     // la_ckpt_group of the call
    int64_t nch;   // chunks of this sequence
    int64_t KV;
} la_ckpt;

// Pass 1: S holds S_[0]; advances it over all nch chunks (S ends as S_T), keeping the
// checkpoints (or, when one group holds them all, every boundary state).
void la_ckpt_run(la_ckpt * c, float * S, la_chunk_step_fn step, const void * ctx);
// Pass 2, called for chunk = nch-1 down to 0 in that order: the boundary state S_[chunk],
// replaying its group from the checkpoint when the reverse pass enters it.
const float * la_ckpt_state(la_ckpt * c, int64_t chunk, la_chunk_step_fn step, const void * ctx);

// Longest sequence of a call (T, or the longest cu_seqlens segment).
static inline int64_t la_max_seq_len(la_shape sh, const la_opts * opts) {
    if (!opts->cu_seqlens) return sh.T;
    int64_t m = 0;
    for (int64_t n = 0; n < opts->n_seqs; n++) {
        int64_t l = opts->cu_seqlens[n + 1] - opts->cu_seqlens[n];
        m = l > m ? l : m;
    }
    return m;
}

// State of (sequence n, head h) = slot idx of an (N, H, K, V) tensor, KV floats.
static inline void la_state_load(float * S, const float * init, int64_t idx, int64_t KV) {
    if (init) memcpy(S, init + idx * KV, (size_t)KV * sizeof(float));
    else memset(S, 0, (size_t)KV * sizeof(float));
}

// The state a forward pass updates: final_state's own slot when the caller wants it (so a
// decode step with final_state == initial_state updates in place and touches the state once),
// otherwise the scratch ws. initial_state and final_state are either the same tensor or disjoint.
static inline float * la_state_begin(float * ws, float * final, const float * init, int64_t idx,
                                     int64_t KV) {
    float * S = final ? final + idx * KV : ws;
    if (!init) memset(S, 0, (size_t)KV * sizeof(float));
    else if (init + idx * KV != S) memcpy(S, init + idx * KV, (size_t)KV * sizeof(float));
    return S;
}

// Touches rows [0, rows) of a (rows, ncol) float block with row stride ld, one prefetch per
// cache line. In the [B, T, H, D] layout one head's consecutive tokens sit H*D floats apart,
// often a page apart, which the hardware prefetcher does not follow; the chunk loops prefetch
// the next chunk's rows while they compute the current one.
static inline void la_prefetch_rows(const float * base, int64_t ld, int64_t rows, int64_t ncol) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < ncol; j += 16) __builtin_prefetch(base + r * ld + j, 0, 3);
}

// Hot token loops are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and baseline
// x86-64 and picked at load time. The psABI levels, not "avx512f"/"avx2": those leave FMA off,
// and the ops files are built with -ffp-contract=fast so a*b + c becomes one FMA (the recurrent
// delta-rule forward gains 20%).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(LA_NO_CLONES)
#define LA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LA_CLONES
#endif
// 0777 & ~umask (read without changing the umask); a new file takes & 0666 (src/io).
#include <sys/types.h>
mode_t la_new_file_mode(void);

// One-line error message into err (control characters become '?'); returns s.
la_status la_fail(char * err, size_t errlen, la_status s, const char * fmt, ...)
    __attribute__((format(printf, 4, 5)));
// Offset of the first byte of the first ill-formed UTF-8 sequence in s[0, n), or -1.
int64_t la_utf8_bad_offset(const unsigned char * s, size_t n);

#endif  // LA_INTERNAL_H
