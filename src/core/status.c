// Status codes and their messages, op option defaults and shared argument checks.
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>

const char * la_status_str(la_status s) {
    switch (s) {
    case LA_STATUS_OK:           return "ok";
    case LA_STATUS_INVALID_ARG:  return "invalid argument";
    case LA_STATUS_SHAPE:        return "shape mismatch";
    case LA_STATUS_CU_SEQLENS:   return "invalid cu_seqlens";
    case LA_STATUS_NONFINITE:    return "non-finite value";
    case LA_STATUS_NOMEM:        return "out of memory";
    case LA_STATUS_WORKSPACE:    return "workspace too small";
    case LA_STATUS_IO:           return "i/o error";
    case LA_STATUS_FORMAT:       return "malformed file";
    case LA_STATUS_DTYPE:        return "unsupported dtype";
    case LA_STATUS_NOT_FOUND:    return "not found";
    case LA_STATUS_UNSUPPORTED:  return "unsupported";
    }
    return "unknown status";
}

const char * la_form_str(la_form f) {
    switch (f) {
    case LA_FORM_CHUNK:     return "chunk";
    case LA_FORM_RECURRENT: return "recurrent";
    case LA_FORM_REF:       return "ref";
    }
    return "?";
}

la_opts la_opts_default(void) {
    la_opts o = {0};
    o.form = LA_FORM_CHUNK;
    return o;
}

int32_t la_opts_chunk(const la_opts * opts) {
    return opts->chunk_size > 0 ? opts->chunk_size : 64;
}

la_status la_check_common(la_shape sh, const la_opts * opts, int64_t * n_out) {
    if (!opts) return LA_STATUS_INVALID_ARG;
    if (sh.HV != 0 && sh.HV != sh.H) return LA_STATUS_SHAPE;
    if (opts->use_qk_l2norm_in_kernel || opts->use_beta_sigmoid_in_kernel ||
        opts->allow_neg_eigval || opts->use_gate_in_kernel || opts->lower_bound != 0.0f)
        return LA_STATUS_INVALID_ARG;  // the delta family's flags (OPS.md 1.7)
    return la_check_base(sh, opts, n_out);
}

la_status la_check_base(la_shape sh, const la_opts * opts, int64_t * n_out) {
    if (!opts) return LA_STATUS_INVALID_ARG;
    if (sh.B < 1 || sh.T < 0 || sh.H < 1 || sh.K < 1 || sh.V < 1) return LA_STATUS_SHAPE;
    if (opts->chunk_size < 0 || opts->chunk_size > 256) return LA_STATUS_INVALID_ARG;
    if (opts->form != LA_FORM_CHUNK && opts->form != LA_FORM_RECURRENT &&
        opts->form != LA_FORM_REF)
        return LA_STATUS_INVALID_ARG;
    if (!isfinite(opts->scale)) return LA_STATUS_INVALID_ARG;
    if (opts->cu_seqlens) {
        const int64_t * cu = opts->cu_seqlens;
        if (sh.B != 1 || opts->n_seqs < 1) return LA_STATUS_CU_SEQLENS;
        if (cu[0] != 0 || cu[opts->n_seqs] != sh.T) return LA_STATUS_CU_SEQLENS;
        for (int64_t i = 0; i < opts->n_seqs; i++)
            if (cu[i + 1] < cu[i]) return LA_STATUS_CU_SEQLENS;
        *n_out = opts->n_seqs;
    } else {
        *n_out = sh.B;
    }
    return LA_STATUS_OK;
}

la_status la_ws_acquire(const la_opts * opts, size_t need, void ** ws, bool * owned) {
    // need is a public workspace size: what the op carves plus LA_ALIGN bytes of slack, so a
    // caller's block of any alignment can be rounded up to the 64-byte boundary the ops carve
    // from (some buffers hold doubles).
    *owned = false;
    if (opts->work) {
        const uintptr_t p = (uintptr_t)opts->work;
        const size_t skip = (size_t)((LA_ALIGN - p % LA_ALIGN) % LA_ALIGN);
        if (opts->work_size < need) return LA_STATUS_WORKSPACE;  // skip < LA_ALIGN fits in it
        *ws = (char *)opts->work + skip;
        return LA_STATUS_OK;
    }
    if (need == 0) { *ws = NULL; return LA_STATUS_OK; }
    void * p = NULL;
    if (posix_memalign(&p, LA_ALIGN, need) != 0) return LA_STATUS_NOMEM;
    *ws = p;
    *owned = true;
    return LA_STATUS_OK;
}

void la_ws_release(void * ws, bool owned) {
    if (owned) free(ws);
}
