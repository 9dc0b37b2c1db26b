// Internal contract of the delta-rule family (OPS.md 2.6-2.12, ALGORITHMS.md 2.1-2.2, 3.3-3.6).
//
// Two engines, each in three forms (ref, recurrent, chunk) with forward and backward:
//
//   dn (delta_rule, gated_delta_rule, kda), on *effective* inputs -- after the in-kernel
//   conveniences of OPS.md 1.7, which the driver (delta.c) applies before and differentiates
//   after:
//       P = D_t S_{t-1},  D_t = I | exp(g_t) I | Diag(exp(g_t))      (gate NONE | SCALAR | CHANNEL)
//       u_t = beta_t (v_t - P^T k_t) ;  S_t = P + k_t u_t^T ;  o_t = scale S_t^T q_t
//
//   dp (dplr_delta_rule, iplr_delta_rule, rwkv7):
//       S_t = Diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T ;  o_t = scale S_t^T q_t
//       (gk NULL: no decay, iplr)
//
// A form's task handles one (sequence n, value head hv) pair end to end and writes only that
// pair's rows of every output (the rows of its tokens, head hv), so tasks run in any order on
// any thread with identical results. Scratch: `bytes(x, backward)` per task, 64-byte aligned,
// contents undefined on entry.
#ifndef LA_DELTA_H
#define LA_DELTA_H

#include "internal.h"

enum { LA_DN_GATE_NONE = 0, LA_DN_GATE_SCALAR = 1, LA_DN_GATE_CHANNEL = 2 };

typedef struct la_dn_args {
    int             gate;        // LA_DN_GATE_*
    const float *   q, * k;      // (B*T, H, K)  q unscaled; the engines apply `scale`
    const float *   v;           // (B*T, HV, V)
    const float *   beta;        // (B*T, HV)    never NULL (the driver fills ones)
    const float *   g;           // (B*T, HV) SCALAR, (B*T, HV, K) CHANNEL, NULL for NONE
    const float *   init;        // (N, HV, K, V) or NULL (zero state)
    float *         o;           // (B*T, HV, V)            forward output
    float *         final;       // (N, HV, K, V) or NULL   forward output; may equal init
    const float *   dout;        // (B*T, HV, V)            backward input
    const float *   dfinal;      // (N, HV, K, V) or NULL   backward input
    float *         dq, * dk;    // (B*T, HV, K): one row per *value* head; the driver sums
                                 //   the HV/H rows of each group (GVA) afterwards
    float *         dv;          // (B*T, HV, V)
    float *         dbeta;       // (B*T, HV)
    float *         dg;          // shaped like g; NULL when gate == NONE
    float *         dinit;       // (N, HV, K, V) or NULL
    la_shape        sh;          // sh.H = q/k heads, sh.K, sh.V; sh.HV already resolved (> 0)
    int64_t         N;           // sequences
    const la_opts * opts;        // cu_seqlens (via la_seq_bounds), chunk size, form
    float           scale;       // resolved scale
    int64_t         C;           // resolved chunk size (1 .. 256)
    int64_t         maxlen;      // longest sequence (la_max_seq_len)
} la_dn_args;

typedef struct la_dp_args {
    const float *   q, * k, * a, * b;  // (B*T, H, K)  q unscaled
    const float *   v;                 // (B*T, H, V)
    const float *   gk;                // (B*T, H, K) log decay, or NULL (iplr)
    const float *   init;              // (N, H, K, V) or NULL
    float *         o, * final;        // (B*T, H, V); (N, H, K, V) or NULL, may equal init
    const float *   dout, * dfinal;    // (B*T, H, V); (N, H, K, V) or NULL
    float *         dq, * dk, * da, * db;  // (B*T, H, K)
    float *         dv;                // (B*T, H, V)
    float *         dgk;               // (B*T, H, K), NULL exactly when gk is
    float *         dinit;             // (N, H, K, V) or NULL
    la_shape        sh;                // sh.HV == sh.H
    int64_t         N;
    const la_opts * opts;
    float           scale;
    int64_t         C;
    int64_t         maxlen;
} la_dp_args;

// Forms. n = sequence, h = value head (dn) or head (dp).
size_t la_dn_rec_bytes(const la_dn_args * x, bool backward);
void   la_dn_rec_task(const la_dn_args * x, int64_t n, int64_t h, void * ws, bool backward);
size_t la_dn_chunk_bytes(const la_dn_args * x, bool backward);
void   la_dn_chunk_task(const la_dn_args * x, int64_t n, int64_t h, void * ws, bool backward);

size_t la_dp_rec_bytes(const la_dp_args * x, bool backward);
void   la_dp_rec_task(const la_dp_args * x, int64_t n, int64_t h, void * ws, bool backward);
size_t la_dp_chunk_bytes(const la_dp_args * x, bool backward);
void   la_dp_chunk_task(const la_dp_args * x, int64_t n, int64_t h, void * ws, bool backward);

#endif
