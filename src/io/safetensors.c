// safetensors I/O: a strict reader over a read-only mapping and an atomic writer.
//
// File layout (https://github.com/huggingface/safetensors):
//   8 bytes    N, little-endian u64
//   N bytes    UTF-8 JSON object: name -> {"dtype", "shape", "data_offsets": [begin, end]},
//              plus an optional "__metadata__" string -> string map; may end in spaces
//   rest       the data section; offsets are relative to its start and must tile it exactly
//
// The reader validates everything before handing out a tensor, so callers can trust shape,
// dtype and nbytes, and data + nbytes never leaves the mapping. Tensor data may be unaligned
// (other writers pack tensors back to back); conversions use byte loads. The writer mirrors the
// reference implementation's output: header padded with spaces to a multiple of 8, data grouped
// by element size so every tensor is aligned; its header lists tensors in the caller's order.
#include "internal.h"
#include "linattn.h"

#include <cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

// The reference implementation's limit; a bigger header is an attack, not a checkpoint.
#define ST_MAX_HEADER 100000000ull

// ---------------------------------------------------------------------------------------------
// Dtypes

static const struct {
    const char * name;
    size_t       size;
} st_dtypes[] = {
    [LA_DTYPE_F32] = { "F32", 4 },  [LA_DTYPE_F64] = { "F64", 8 },
    [LA_DTYPE_F16] = { "F16", 2 },  [LA_DTYPE_BF16] = { "BF16", 2 },
    [LA_DTYPE_I64] = { "I64", 8 },  [LA_DTYPE_I32] = { "I32", 4 },
};
#define ST_NDTYPES ((int)(sizeof(st_dtypes) / sizeof(st_dtypes[0])))

static bool st_dtype_ok(la_dtype d) { return (int)d >= 0 && (int)d < ST_NDTYPES; }

LA_API const char * la_dtype_str(la_dtype d) { return st_dtype_ok(d) ? st_dtypes[d].name : "?"; }
LA_API size_t la_dtype_size(la_dtype d) { return st_dtype_ok(d) ? st_dtypes[d].size : 0; }

// ---------------------------------------------------------------------------------------------
// Errors


static void st_shape_str(char * buf, size_t len, int32_t ndim, const int64_t * shape) {
    size_t used = 0;
    int w = snprintf(buf, len, "[");
    used = w > 0 ? (size_t)w : 0;
    for (int32_t i = 0; i < ndim && used < len; i++) {
        w = snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    if (used < len) snprintf(buf + used, len - used, "]");
}

// ---------------------------------------------------------------------------------------------
// Little-endian loads from any address (compilers turn these into plain moves on x86, arm64)

static inline uint16_t st_ld16(const unsigned char * p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t st_ld32(const unsigned char * p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t st_ld64(const unsigned char * p) {
    return (uint64_t)st_ld32(p) | (uint64_t)st_ld32(p + 4) << 32;
}
static inline float st_f32_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// IEEE binary16 -> binary32, exact for every input: subnormals are renormalised, inf stays
// inf, and a NaN keeps its sign and payload (shifted into the wider mantissa).
static inline float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return st_f32_bits(sign | 0x7f800000u | man << 13);
    if (exp == 0) {
        if (man == 0) return st_f32_bits(sign);
        // man * 2^-24: shift the leading one up to bit 10, lowering the exponent each step.
        uint32_t e = 113;  // 2^-14 in the float bias
        while (!(man & 0x400)) {
            man <<= 1;
            e--;
        }
        return st_f32_bits(sign | e << 23 | (man & 0x3ff) << 13);
    }
    return st_f32_bits(sign | (exp + 112) << 23 | man << 13);
}

// ---------------------------------------------------------------------------------------------
// Reader

struct la_st_file {
    char *          path;
    unsigned char * map;       // whole file, read-only; NULL for an empty mapping
    size_t          size;
    la_st_tensor *  tensors;   // (n) in file order
    int64_t         n;
    int64_t *       by_name;   // (n) indices into tensors, sorted by name, for la_st_find
};


// Every number of the header as written. cJSON keeps only a double, which cannot tell "3"
// from "3.0", "1e3" or "007" (the reference reader rejects those) and loses integers above
// 2^53; the text has neither problem.
typedef struct st_numtext {
    size_t off, len;  // in the header
} st_numtext;

// A cJSON number item and its rank in text order: cJSON keeps members in document order, so a
// pre-order walk meets the numbers in the same order as the scan of the text does.
typedef struct st_numref {
    const cJSON * item;
    size_t        k;
} st_numref;

typedef struct st_nums {
    const unsigned char * h;
    st_numtext *          text;   // (n) in text order
    size_t                n, cap;
    st_numref *           refs;   // (n) sorted by item address
} st_nums;

static void st_nums_free(st_nums * nums) {
    free(nums->text);
    free(nums->refs);
}

// Checks the header bytes before cJSON sees them: UTF-8 (cJSON does not check) and no control
// bytes (cJSON treats any byte <= 0x20 as whitespace, and raw controls inside strings are not
// JSON). Records where each number is written.
static la_status st_scan_header(st_nums * nums, size_t n, const char * path, char * err,
                                size_t errlen) {
    const unsigned char * h = nums->h;
    const int64_t bad = la_utf8_bad_offset(h, n);
    if (bad >= 0) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: header is not valid UTF-8 (byte 0x%02x at header offset %lld)", path,
                       h[bad], (long long)bad);
    }
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = h[i];
        if (c < 0x20 && !(!in_str && (c == '\t' || c == '\n' || c == '\r'))) {
            return la_fail(err, errlen, LA_STATUS_FORMAT,
                           "%s: header has control byte 0x%02x at header offset %zu", path, c,
                           i);
        }
        if (in_str) {
            // cJSON would decode \u0000 into a NUL that silently cuts the name short.
            if (c == '\\' && i + 5 < n && memcmp(h + i + 1, "u0000", 5) == 0) {
                return la_fail(err, errlen, LA_STATUS_FORMAT,
                               "%s: header has an escaped NUL (\\u0000) at header offset %zu",
                               path, i);
            }
            if (c == '\\') i++;  // the escaped character cannot end the string
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            // Outside strings only numbers contain these; take the widest run cJSON could read.
            size_t j = i;
            while (j < n && ((h[j] >= '0' && h[j] <= '9') || h[j] == '.' || h[j] == 'e' ||
                             h[j] == 'E' || h[j] == '+' || h[j] == '-')) {
                j++;
            }
            if (nums->n == nums->cap) {
                size_t cap = nums->cap ? 2 * nums->cap : 64;
                st_numtext * t = realloc(nums->text, cap * sizeof *t);
                if (!t) return la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory", path);
                nums->text = t;
                nums->cap = cap;
            }
            nums->text[nums->n++] = (st_numtext){ i, j - i };
            i = j - 1;
        }
    }
    return LA_STATUS_OK;
}

static void st_walk_numbers(const cJSON * item, st_numref * refs, size_t * k, size_t cap) {
    for (; item; item = item->next) {
        if (cJSON_IsNumber(item)) {
            if (*k < cap) refs[*k] = (st_numref){ item, *k };
            (*k)++;
        }
        st_walk_numbers(item->child, refs, k, cap);
    }
}

static int st_cmp_numref(const void * a, const void * b) {
    uintptr_t x = (uintptr_t)((const st_numref *)a)->item;
    uintptr_t y = (uintptr_t)((const st_numref *)b)->item;
    return x < y ? -1 : x > y;
}

// Pairs the parsed numbers with their text. LA_STATUS_FORMAT if they do not pair up (which
// cannot happen for a header cJSON accepted; checked rather than trusted).
static la_status st_nums_index(st_nums * nums, const cJSON * root) {
    nums->refs = malloc((nums->n ? nums->n : 1) * sizeof *nums->refs);
    if (!nums->refs) return LA_STATUS_NOMEM;
    size_t k = 0;
    st_walk_numbers(root, nums->refs, &k, nums->n);
    if (k != nums->n) return LA_STATUS_FORMAT;
    qsort(nums->refs, k, sizeof *nums->refs, st_cmp_numref);
    return LA_STATUS_OK;
}

// Reads a number that must be written as a plain non-negative integer that fits int64_t.
// Returns NULL, or a description of what is wrong in why.
static const char * st_get_uint(const st_nums * nums, const cJSON * item, uint64_t * v,
                                char * why, size_t whylen) {
    if (!cJSON_IsNumber(item)) return "is not a number";
    st_numref key = { item, 0 };
    const st_numref * r = bsearch(&key, nums->refs, nums->n, sizeof key, st_cmp_numref);
    if (!r) return "is not a number";
    const char * p = (const char *)nums->h + nums->text[r->k].off;
    size_t len = nums->text[r->k].len;
    int shown = (int)(len > 24 ? 24 : len);
    bool plain = len > 0 && !(p[0] == '0' && len > 1);
    uint64_t x = 0;
    bool big = false;
    for (size_t i = 0; plain && i < len; i++) {
        if (p[i] < '0' || p[i] > '9') plain = false;
        else if (x > ((uint64_t)INT64_MAX - (uint64_t)(p[i] - '0')) / 10) big = true;
        else x = x * 10 + (uint64_t)(p[i] - '0');
    }
    if (p[0] == '-') snprintf(why, whylen, "'%.*s' is negative", shown, p);
    else if (!plain) snprintf(why, whylen, "'%.*s' is not an integer", shown, p);
    else if (big) snprintf(why, whylen, "'%.*s' is too large", shown, p);
    else {
        *v = x;
        return NULL;
    }
    return why;
}

typedef struct st_span {
    uint64_t begin, end;
    int64_t  idx;
} st_span;

static int st_cmp_span(const void * a, const void * b) {
    const st_span * x = a;
    const st_span * y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

// Sorting la_st_file::by_name needs the names; qsort has no context argument, so sort pairs.
typedef struct st_named {
    const char * name;
    int64_t      idx;
} st_named;

static int st_cmp_named(const void * a, const void * b) {
    return strcmp(((const st_named *)a)->name, ((const st_named *)b)->name);
}

// Fills t from one header entry; data is set by the caller once offsets are known to fit.
static la_status st_parse_entry(const st_nums * nums, const cJSON * it, la_st_tensor * t,
                                uint64_t * begin, uint64_t * end, uint64_t data_size,
                                const char * path, char * err, size_t errlen) {
    const char * nm = t->name;
    char why[80];
    if (!cJSON_IsObject(it)) {
        return la_fail(err, errlen, LA_STATUS_FORMAT, "%s: tensor '%s': entry is not a JSON object",
                       path, nm);
    }
    const cJSON * jd = NULL;
    const cJSON * js = NULL;
    const cJSON * jo = NULL;
    // cJSON keeps repeated keys; a second "shape" would silently lose to the first.
    for (const cJSON * c = it->child; c; c = c->next) {
        const cJSON ** slot = strcmp(c->string, "dtype") == 0          ? &jd
                            : strcmp(c->string, "shape") == 0          ? &js
                            : strcmp(c->string, "data_offsets") == 0   ? &jo
                            : NULL;
        if (!slot) continue;  // unknown fields are ignored, as by the reference reader
        if (*slot) {
            return la_fail(err, errlen, LA_STATUS_FORMAT, "%s: tensor '%s': duplicate field \"%s\"",
                           path, nm, c->string);
        }
        *slot = c;
    }
    if (!jd || !js || !jo) {
        return la_fail(err, errlen, LA_STATUS_FORMAT, "%s: tensor '%s': missing field \"%s\"",
                       path, nm, !jd ? "dtype" : !js ? "shape" : "data_offsets");
    }

    if (!cJSON_IsString(jd)) {
        return la_fail(err, errlen, LA_STATUS_FORMAT, "%s: tensor '%s': \"dtype\" is not a string",
                       path, nm);
    }
    int d = 0;
    while (d < ST_NDTYPES && strcmp(jd->valuestring, st_dtypes[d].name) != 0) d++;
    if (d == ST_NDTYPES) {
        return la_fail(err, errlen, LA_STATUS_DTYPE,
                       "%s: tensor '%s': dtype '%s' is not supported (F32, F64, F16, BF16, I64, "
                       "I32)", path, nm, jd->valuestring);
    }
    t->dtype = (la_dtype)d;

    if (!cJSON_IsArray(js)) {
        return la_fail(err, errlen, LA_STATUS_FORMAT, "%s: tensor '%s': \"shape\" is not an array",
                       path, nm);
    }
    int nd = cJSON_GetArraySize(js);
    if (nd > LA_ST_MAX_DIMS) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: tensor '%s': shape has %d dims, more than the %d linattn supports",
                       path, nm, nd, LA_ST_MAX_DIMS);
    }
    t->ndim = nd;
    int64_t numel = 1;
    bool overflow = false;
    int k = 0;
    for (const cJSON * c = js->child; c; c = c->next, k++) {
        uint64_t v = 0;
        const char * bad = st_get_uint(nums, c, &v, why, sizeof why);
        if (bad) {
            return la_fail(err, errlen, LA_STATUS_FORMAT, "%s: tensor '%s': shape[%d] %s", path,
                           nm, k, bad);
        }
        t->shape[k] = (int64_t)v;
        // Keep multiplying after an overflow only to find a later zero dim, which makes it 0.
        if (v != 0 && numel > INT64_MAX / (int64_t)v) overflow = true;
        else numel *= (int64_t)v;
    }
    for (int i = 0; i < nd; i++) {
        if (t->shape[i] == 0) { numel = 0; overflow = false; }
    }
    size_t es = st_dtypes[d].size;
    char sh[200];
    st_shape_str(sh, sizeof sh, t->ndim, t->shape);
    if (overflow || numel > (int64_t)(INT64_MAX / (int64_t)es) ||
        (uint64_t)numel * es > (uint64_t)SIZE_MAX) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: tensor '%s': shape %s is too large (byte size overflows)", path, nm,
                       sh);
    }
    t->numel = numel;
    t->nbytes = (size_t)numel * es;

    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: tensor '%s': \"data_offsets\" is not an array of two integers", path,
                       nm);
    }
    const char * bad = st_get_uint(nums, jo->child, begin, why, sizeof why);
    if (!bad) bad = st_get_uint(nums, jo->child->next, end, why, sizeof why);
    if (bad) {
        return la_fail(err, errlen, LA_STATUS_FORMAT, "%s: tensor '%s': data offset %s", path,
                       nm, bad);
    }
    if (*begin > *end) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", path, nm,
                       (unsigned long long)*begin, (unsigned long long)*end);
    }
    if (*end - *begin != (uint64_t)t->nbytes) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s %s "
                       "needs %zu", path, nm, (unsigned long long)*begin,
                       (unsigned long long)*end, (unsigned long long)(*end - *begin),
                       st_dtypes[d].name, sh, t->nbytes);
    }
    if (*end > data_size) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: tensor '%s': data_offsets end %llu is beyond the %llu-byte data "
                       "section (truncated file?)", path, nm, (unsigned long long)*end,
                       (unsigned long long)data_size);
    }
    return LA_STATUS_OK;
}

// Validates the mapped file and builds f->tensors and f->by_name.
static la_status st_parse(la_st_file * f, char * err, size_t errlen) {
    const char * path = f->path;
    if (f->size < 8) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: file has %zu bytes, too short for the 8-byte header length", path,
                       f->size);
    }
    uint64_t hn = st_ld64(f->map);
    if (hn == 0) {
        return la_fail(err, errlen, LA_STATUS_FORMAT, "%s: header length is 0", path);
    }
    if (hn > ST_MAX_HEADER) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: header length %llu is larger than the %llu-byte limit", path,
                       (unsigned long long)hn, ST_MAX_HEADER);
    }
    if (hn > f->size - 8) {
        return la_fail(err, errlen, LA_STATUS_FORMAT,
                       "%s: header length %llu runs past the end of the %zu-byte file", path,
                       (unsigned long long)hn, f->size);
    }
    size_t n = (size_t)hn;
    const unsigned char * h = f->map + 8;
    uint64_t data_size = f->size - 8 - n;
    st_nums nums = { .h = h };
    char * text = NULL;
    cJSON * root = NULL;
    st_span * spans = NULL;
    st_named * named = NULL;
    la_status s = st_scan_header(&nums, n, path, err, errlen);
    if (s) goto done;

    // A NUL-terminated copy: cJSON's length-limited parse has had overreads past the buffer.
    text = malloc(n + 1);
    if (!text) {
        s = la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(text, h, n);
    text[n] = 0;
    const char * end = NULL;
    root = cJSON_ParseWithLengthOpts(text, n, &end, false);
    if (!root) {
        size_t at = end && end >= text && end <= text + n ? (size_t)(end - text) : 0;
        s = la_fail(err, errlen, LA_STATUS_FORMAT, "%s: header is not valid JSON (near byte %zu)",
                    path, at);
        goto done;
    }
    // The reference writer pads with spaces; anything else after the value is garbage.
    for (const char * p = end; p < text + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            s = la_fail(err, errlen, LA_STATUS_FORMAT,
                        "%s: header has trailing bytes after the JSON value (byte %zu)", path,
                        (size_t)(p - text));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        s = la_fail(err, errlen, LA_STATUS_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    s = st_nums_index(&nums, root);
    if (s) {
        s = la_fail(err, errlen, s, "%s: %s", path, s == LA_STATUS_NOMEM ? "out of memory"
                    : "the header's numbers do not match its text");
        goto done;
    }

    int64_t count = 0, nmeta = 0;
    for (const cJSON * it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) nmeta++;
        else count++;
    }
    if (nmeta > 1) {
        s = la_fail(err, errlen, LA_STATUS_FORMAT, "%s: header has %lld \"__metadata__\" entries",
                    path, (long long)nmeta);
        goto done;
    }
    f->tensors = calloc(count ? (size_t)count : 1, sizeof(la_st_tensor));
    f->by_name = calloc(count ? (size_t)count : 1, sizeof(int64_t));
    spans = calloc(count ? (size_t)count : 1, sizeof(st_span));
    named = calloc(count ? (size_t)count : 1, sizeof(st_named));
    if (!f->tensors || !f->by_name || !spans || !named) {
        s = la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }

    for (const cJSON * it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                s = la_fail(err, errlen, LA_STATUS_FORMAT,
                            "%s: \"__metadata__\" is not a JSON object", path);
                goto done;
            }
            for (const cJSON * m = it->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    s = la_fail(err, errlen, LA_STATUS_FORMAT,
                                "%s: \"__metadata__\" value '%s' is not a string", path,
                                m->string);
                    goto done;
                }
            }
            continue;
        }
        if (it->string[0] == 0) {
            s = la_fail(err, errlen, LA_STATUS_FORMAT, "%s: a tensor has an empty name", path);
            goto done;
        }
        la_st_tensor * t = &f->tensors[f->n];
        char * name = malloc(strlen(it->string) + 1);
        if (!name) {
            s = la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory", path);
            goto done;
        }
        strcpy(name, it->string);
        t->name = name;
        f->n++;  // counted now so la_st_close frees the name on any later failure
        uint64_t b = 0, e = 0;
        s = st_parse_entry(&nums, it, t, &b, &e, data_size, path, err, errlen);
        if (s) goto done;
        t->data = h + n + b;
        spans[f->n - 1] = (st_span){ b, e, f->n - 1 };
        named[f->n - 1] = (st_named){ t->name, f->n - 1 };
    }

    qsort(named, (size_t)f->n, sizeof *named, st_cmp_named);
    for (int64_t i = 0; i < f->n; i++) {
        if (i > 0 && strcmp(named[i].name, named[i - 1].name) == 0) {
            s = la_fail(err, errlen, LA_STATUS_FORMAT, "%s: duplicate tensor name '%s'", path,
                        named[i].name);
            goto done;
        }
        f->by_name[i] = named[i].idx;
    }

    // The spec requires the tensors to tile the data section: no overlaps, no holes.
    qsort(spans, (size_t)f->n, sizeof *spans, st_cmp_span);
    uint64_t cursor = 0, holes = 0, first_hole = 0;
    int64_t prev = -1;
    for (int64_t i = 0; i < f->n; i++) {
        if (spans[i].begin < cursor) {
            s = la_fail(err, errlen, LA_STATUS_FORMAT,
                        "%s: tensors '%s' and '%s' overlap in the data section", path,
                        f->tensors[prev].name, f->tensors[spans[i].idx].name);
            goto done;
        }
        if (spans[i].begin > cursor) {
            if (!holes) first_hole = cursor;
            holes += spans[i].begin - cursor;
        }
        // A zero-size tensor does not cover anything, so it cannot be the "previous" owner.
        if (spans[i].end > spans[i].begin || prev < 0) prev = spans[i].idx;
        cursor = spans[i].end;
    }
    if (cursor < data_size) {
        if (!holes) first_hole = cursor;
        holes += data_size - cursor;
    }
    if (holes) {
        s = la_fail(err, errlen, LA_STATUS_FORMAT,
                    "%s: data section has %llu bytes not covered by any tensor (first at byte "
                    "%llu)", path, (unsigned long long)holes, (unsigned long long)first_hole);
        goto done;
    }

done:
    st_nums_free(&nums);
    free(text);
    free(spans);
    free(named);
    cJSON_Delete(root);
    return s;
}

LA_API void la_st_close(la_st_file * f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    free(f);
}

LA_API la_status la_st_open(la_st_file ** out, const char * path, char * err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!out || !path) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "la_st_open: NULL %s",
                       !out ? "out" : "path");
    }
    *out = NULL;
    la_st_file * f = calloc(1, sizeof *f);
    if (f) f->path = malloc(strlen(path) + 1);
    if (!f || !f->path) {
        free(f);
        return la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory", path);
    }
    strcpy(f->path, path);

    la_status s = LA_STATUS_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    } else if (fstat(fd, &st) != 0) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: not a regular file", path);
    } else if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: file too large to map", path);
    } else {
        f->size = (size_t)st.st_size;
        // mmap rejects length 0; st_parse reports the empty file as a format error.
        if (f->size > 0) {
            void * m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (m == MAP_FAILED) {
                s = la_fail(err, errlen, LA_STATUS_IO, "%s: cannot map: %s", path,
                            strerror(errno));
            } else {
                f->map = m;
            }
        }
    }
    if (fd >= 0) close(fd);  // the mapping keeps the file alive
    if (!s) s = st_parse(f, err, errlen);
    if (s) {
        la_st_close(f);
        return s;
    }
    *out = f;
    return LA_STATUS_OK;
}

LA_API int64_t la_st_count(const la_st_file * f) { return f ? f->n : 0; }

LA_API const la_st_tensor * la_st_get(const la_st_file * f, int64_t i) {
    return f && i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

LA_API const la_st_tensor * la_st_find(const la_st_file * f, const char * name) {
    if (!f || !name) return NULL;
    int64_t lo = 0, hi = f->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->tensors[f->by_name[mid]].name);
        if (c == 0) return &f->tensors[f->by_name[mid]];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

// Common argument checks of the read calls; t must be one of f's own tensors.
static la_status st_check_read(const la_st_file * f, const la_st_tensor * t, const void * dst,
                               int64_t n, const char * fn, char * err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!f || !t) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "%s: NULL %s", fn,
                       !f ? "file" : "tensor");
    }
    uintptr_t p = (uintptr_t)t, lo = (uintptr_t)f->tensors, hi = (uintptr_t)(f->tensors + f->n);
    if (p < lo || p >= hi) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG,
                       "%s: %s: tensor does not belong to this file", fn, f->path);
    }
    if (n != t->numel) {
        return la_fail(err, errlen, LA_STATUS_SHAPE,
                       "%s: tensor '%s' has %lld elements, the destination holds %lld", f->path,
                       t->name, (long long)t->numel, (long long)n);
    }
    if (!dst && n > 0) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "%s: NULL destination", fn);
    }
    return LA_STATUS_OK;
}

LA_API la_status la_st_read_f32(const la_st_file * f, const la_st_tensor * t, float * dst,
                                int64_t n, char * err, size_t errlen) {
    la_status s = st_check_read(f, t, dst, n, "la_st_read_f32", err, errlen);
    if (s) return s;
    const unsigned char * p = t->data;
    switch (t->dtype) {
    case LA_DTYPE_F32:
        for (int64_t i = 0; i < n; i++) dst[i] = st_f32_bits(st_ld32(p + 4 * i));
        break;
    case LA_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            uint64_t u = st_ld64(p + 8 * i);
            double d;
            memcpy(&d, &u, 8);
            dst[i] = (float)d;
        }
        break;
    case LA_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = st_f16_to_f32(st_ld16(p + 2 * i));
        break;
    case LA_DTYPE_BF16:
        // bfloat16 is the top half of a float32.
        for (int64_t i = 0; i < n; i++) dst[i] = st_f32_bits((uint32_t)st_ld16(p + 2 * i) << 16);
        break;
    default:
        return la_fail(err, errlen, LA_STATUS_DTYPE,
                       "%s: tensor '%s' has dtype %s; la_st_read_f32 reads F32, F64, F16, BF16",
                       f->path, t->name, la_dtype_str(t->dtype));
    }
    return LA_STATUS_OK;
}

LA_API la_status la_st_read_i64(const la_st_file * f, const la_st_tensor * t, int64_t * dst,
                                int64_t n, char * err, size_t errlen) {
    la_status s = st_check_read(f, t, dst, n, "la_st_read_i64", err, errlen);
    if (s) return s;
    const unsigned char * p = t->data;
    switch (t->dtype) {
    case LA_DTYPE_I64:
        for (int64_t i = 0; i < n; i++) dst[i] = (int64_t)st_ld64(p + 8 * i);
        break;
    case LA_DTYPE_I32:
        for (int64_t i = 0; i < n; i++) dst[i] = (int32_t)st_ld32(p + 4 * i);
        break;
    default:
        return la_fail(err, errlen, LA_STATUS_DTYPE,
                       "%s: tensor '%s' has dtype %s; la_st_read_i64 reads I64, I32", f->path,
                       t->name, la_dtype_str(t->dtype));
    }
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Writer

typedef struct st_entry {
    char *       name;
    la_dtype     dtype;
    int32_t      ndim;
    int64_t      shape[LA_ST_MAX_DIMS];
    size_t       nbytes;
    const void * data;    // borrowed
    uint64_t     offset;  // in the data section, set by la_st_writer_save
} st_entry;

struct la_st_writer {
    st_entry * v;
    int64_t    n, cap;
};

LA_API la_st_writer * la_st_writer_new(void) { return calloc(1, sizeof(la_st_writer)); }

LA_API void la_st_writer_free(la_st_writer * w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n; i++) free(w->v[i].name);
    free(w->v);
    free(w);
}

LA_API la_status la_st_writer_add(la_st_writer * w, const char * name, la_dtype dtype,
                                  int32_t ndim, const int64_t * shape, const void * data,
                                  char * err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!w || !name) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "la_st_writer_add: NULL %s",
                       !w ? "writer" : "name");
    }
    if (!name[0] || strcmp(name, "__metadata__") == 0) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG,
                       "la_st_writer_add: tensor name '%s' is reserved or empty", name);
    }
    // Names go into the JSON header verbatim (escaped), so they must be UTF-8 text.
    for (const char * p = name; *p; p++) {
        if ((unsigned char)*p < 0x20) {
            return la_fail(err, errlen, LA_STATUS_INVALID_ARG,
                           "la_st_writer_add: tensor name '%s' has a control character", name);
        }
    }
    const int64_t bad = la_utf8_bad_offset((const unsigned char *)name, strlen(name));
    if (bad >= 0) {
        // Not echoed: the message itself should stay valid UTF-8.
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG,
                       "la_st_writer_add: tensor name is not valid UTF-8 (byte 0x%02x at %lld)",
                       (unsigned char)name[bad], (long long)bad);
    }
    if (!st_dtype_ok(dtype)) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG,
                       "la_st_writer_add: tensor '%s': bad dtype %d", name, (int)dtype);
    }
    if (ndim < 0 || ndim > LA_ST_MAX_DIMS || (ndim > 0 && !shape)) {
        return la_fail(err, errlen, LA_STATUS_SHAPE,
                       "la_st_writer_add: tensor '%s': ndim %d (0 .. %d, shape non-NULL)", name,
                       (int)ndim, LA_ST_MAX_DIMS);
    }
    uint64_t numel = 1;
    bool overflow = false, zero = false;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            return la_fail(err, errlen, LA_STATUS_SHAPE,
                           "la_st_writer_add: tensor '%s': shape[%d] = %lld is negative", name,
                           (int)i, (long long)shape[i]);
        }
        if (shape[i] == 0) zero = true;
        else if (numel > (uint64_t)INT64_MAX / (uint64_t)shape[i]) overflow = true;
        else numel *= (uint64_t)shape[i];
    }
    if (zero) numel = 0;
    uint64_t nbytes = numel * st_dtypes[dtype].size;
    if (overflow || numel > (uint64_t)INT64_MAX / st_dtypes[dtype].size ||
        nbytes > (uint64_t)SIZE_MAX) {
        return la_fail(err, errlen, LA_STATUS_SHAPE,
                       "la_st_writer_add: tensor '%s': byte size overflows", name);
    }
    if (!data && nbytes > 0) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG,
                       "la_st_writer_add: tensor '%s': NULL data for %llu bytes", name,
                       (unsigned long long)nbytes);
    }
    for (int64_t i = 0; i < w->n; i++) {
        if (strcmp(w->v[i].name, name) == 0) {
            return la_fail(err, errlen, LA_STATUS_INVALID_ARG,
                           "la_st_writer_add: duplicate tensor name '%s'", name);
        }
    }
    if (w->n == w->cap) {
        int64_t cap = w->cap ? 2 * w->cap : 16;
        st_entry * v = realloc(w->v, (size_t)cap * sizeof *v);
        if (!v) return la_fail(err, errlen, LA_STATUS_NOMEM, "la_st_writer_add: out of memory");
        w->v = v;
        w->cap = cap;
    }
    st_entry * e = &w->v[w->n];
    memset(e, 0, sizeof *e);
    e->name = malloc(strlen(name) + 1);
    if (!e->name) return la_fail(err, errlen, LA_STATUS_NOMEM, "la_st_writer_add: out of memory");
    strcpy(e->name, name);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->nbytes = (size_t)nbytes;
    e->data = data;
    w->n++;
    return LA_STATUS_OK;
}

// A growable byte buffer for the header; ok turns false on the first failed allocation.
typedef struct st_buf {
    char * p;
    size_t len, cap;
    bool   ok;
} st_buf;

static void st_put(st_buf * b, const char * s, size_t n) {
    if (!b->ok) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char * p = realloc(b->p, cap);
        if (!p) { b->ok = false; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void st_putf(st_buf * b, const char * fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) st_put(b, tmp, (size_t)n);
}

// A JSON string: names are checked UTF-8 without controls, so only '"' and '\' need escapes.
static void st_put_str(st_buf * b, const char * s) {
    st_put(b, "\"", 1);
    for (const char * p = s; *p; p++) {
        if (*p == '"' || *p == '\\') st_put(b, "\\", 1);
        st_put(b, p, 1);
    }
    st_put(b, "\"", 1);
}

// Data layout: tensors by element size, 8-byte ones first, insertion order within a size, so
// every tensor starts at a multiple of its element size (the reference writer sorts the same
// way). torch's safe_open views the file's bytes as the dtype and refuses misaligned offsets.
static const size_t st_layout_sizes[] = { 8, 4, 2, 1 };

static void st_layout(la_st_writer * w) {
    uint64_t off = 0;
    for (size_t g = 0; g < sizeof st_layout_sizes / sizeof st_layout_sizes[0]; g++) {
        for (int64_t i = 0; i < w->n; i++) {
            if (st_dtypes[w->v[i].dtype].size != st_layout_sizes[g]) continue;
            w->v[i].offset = off;
            off += w->v[i].nbytes;
        }
    }
}

// The header: "__metadata__" {"format": "pt"} first (transformers checks it when loading),
// then the tensors in insertion order, padded with spaces to a multiple of 8 so the data
// section starts 8-byte aligned, as the reference writer does.
static bool st_build_header(const la_st_writer * w, st_buf * b) {
    b->ok = true;
    const char * meta = "{\"__metadata__\":{\"format\":\"pt\"}";
    st_put(b, meta, strlen(meta));
    for (int64_t i = 0; i < w->n; i++) {
        const st_entry * e = &w->v[i];
        st_put(b, ",", 1);
        st_put_str(b, e->name);
        st_putf(b, ":{\"dtype\":\"%s\",\"shape\":[", st_dtypes[e->dtype].name);
        for (int32_t k = 0; k < e->ndim; k++) {
            st_putf(b, "%s%lld", k ? "," : "", (long long)e->shape[k]);
        }
        st_putf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)e->offset,
                (unsigned long long)(e->offset + e->nbytes));
    }
    st_put(b, "}", 1);
    while (b->ok && b->len % 8) st_put(b, " ", 1);
    return b->ok;
}

static bool st_host_le(void) {
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

// Writes one tensor's bytes in little-endian order (byte-swapped through a buffer on a
// big-endian host, where the caller's data is native-order).
static bool st_write_data(FILE * fp, const st_entry * e) {
    if (e->nbytes == 0) return true;
    size_t es = st_dtypes[e->dtype].size;
    if (st_host_le() || es == 1) return fwrite(e->data, 1, e->nbytes, fp) == e->nbytes;
    unsigned char tmp[4096];
    const unsigned char * src = e->data;
    for (size_t done = 0; done < e->nbytes;) {
        size_t chunk = e->nbytes - done < sizeof tmp ? e->nbytes - done : sizeof tmp;
        for (size_t i = 0; i < chunk; i += es) {
            for (size_t k = 0; k < es; k++) tmp[i + k] = src[done + i + es - 1 - k];
        }
        if (fwrite(tmp, 1, chunk, fp) != chunk) return false;
        done += chunk;
    }
    return true;
}

// Permissions for a new file or directory: mkstemp makes 0600 (mkdtemp 0700), but a
// checkpoint should get what open() / mkdir() would give (0666 / 0777 & ~umask); this returns
// 0777 & ~umask, files take & 0666. umask() itself can only be read by setting it, which races with
// other threads, so read it from /proc; fall back to the common 022.
mode_t la_new_file_mode(void) {
    unsigned int mask = 022;
    FILE * fp = fopen("/proc/self/status", "r");
    if (fp) {
        char line[256];
        while (fgets(line, sizeof line, fp)) {
            if (sscanf(line, "Umask: %o", &mask) == 1) break;
        }
        fclose(fp);
    }
    return (mode_t)(0777 & ~mask);
}

LA_API la_status la_st_writer_save(la_st_writer * w, const char * path, char * err,
                                   size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!w || !path || !path[0]) {
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "la_st_writer_save: NULL or empty %s",
                       !w ? "writer" : "path");
    }
    st_layout(w);
    st_buf hdr = { 0 };
    if (!st_build_header(w, &hdr)) {
        free(hdr.p);
        return la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory building the header",
                       path);
    }
    size_t plen = strlen(path);
    char * tmp = malloc(plen + 12);
    if (!tmp) {
        free(hdr.p);
        return la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);

    la_status s = LA_STATUS_OK;
    FILE * fp = NULL;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: cannot create a temporary file: %s", path,
                    strerror(errno));
        goto out;
    }
    // Replacing a file keeps its permissions; a new one gets the umask's.
    struct stat st;
    mode_t mode = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (st.st_mode & 07777)
                                                                : (la_new_file_mode() & 0666);
    (void)fchmod(fd, mode);  // best effort: a file with the wrong mode still holds valid data
    fp = fdopen(fd, "wb");
    if (!fp) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: cannot write %s: %s", path, tmp,
                    strerror(errno));
        close(fd);
        goto out;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));
    bool ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(hdr.p, 1, hdr.len, fp) == hdr.len;
    for (size_t g = 0; g < sizeof st_layout_sizes / sizeof st_layout_sizes[0]; g++) {
        for (int64_t i = 0; ok && i < w->n; i++) {
            if (st_dtypes[w->v[i].dtype].size != st_layout_sizes[g]) continue;
            ok = st_write_data(fp, &w->v[i]);
        }
    }
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int saved = errno;
    if (fclose(fp) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    fp = NULL;
    if (!ok) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: writing %s failed: %s", path, tmp,
                    strerror(saved));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: cannot rename %s over it: %s", path, tmp,
                    strerror(errno));
        goto out;
    }
    // Make the rename itself durable; failing here leaves a complete file, so it is not an error.
    const char * slash = strrchr(path, '/');
    size_t dl = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char * dir = malloc(dl + 1);
    if (dir) {
        memcpy(dir, slash ? path : ".", dl);
        dir[dl] = 0;
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
    free(dir);
    free(tmp);
    free(hdr.p);
    return LA_STATUS_OK;

out:
    if (fd >= 0) unlink(tmp);
    free(tmp);
    free(hdr.p);
    return s;
}
