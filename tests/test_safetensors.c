// safetensors reader and writer: exact round trips of every dtype (F16/BF16 from hand-made bit
// patterns: subnormals, inf, NaN, -0), metadata, scalars and empty tensors, a corpus of
// malformed files built here in a temp dir (each must fail with the right status and a message
// that names the file), and the writer's atomic replace (a failed save leaves the old file
// byte-identical and no temp file behind).
#include "testlib.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static const char * path_in(const char * name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_bytes(const char * name, const void * p, size_t n) {
    FILE * fp = fopen(path_in(name), "wb");
    if (!fp || fwrite(p, 1, n, fp) != n || fclose(fp) != 0) {
        fprintf(stderr, "cannot write %s\n", path_in(name));
        exit(1);
    }
}

static unsigned char * read_bytes(const char * path, size_t * n) {
    FILE * fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char * p = la_test_alloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, fp);
    fclose(fp);
    return p;
}

// A file with the given header text (its length is N, no padding) and dlen data bytes 0..255.
static void write_st(const char * name, const char * header, size_t dlen) {
    size_t hn = strlen(header);
    unsigned char * p = la_test_alloc(8 + hn + dlen);
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(p + 8, header, hn);
    for (size_t i = 0; i < dlen; i++) p[8 + hn + i] = (unsigned char)i;
    write_bytes(name, p, 8 + hn + dlen);
    free(p);
}

// A file that starts with the 8-byte length hn followed by body.
static void write_len(const char * name, uint64_t hn, const char * body) {
    unsigned char p[256];
    size_t bl = strlen(body);
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(hn >> (8 * i));
    memcpy(p + 8, body, bl);
    write_bytes(name, p, 8 + bl);
}

static void expect_open_fail(const char * name, la_status want, const char * needle) {
    const char * p = path_in(name);
    la_st_file * f = NULL;
    char err[512] = "(unset)";
    la_status s = la_st_open(&f, p, err, sizeof err);
    bool ok = s == want && f == NULL && strstr(err, p) != NULL &&
              (!needle || strstr(err, needle) != NULL) && strchr(err, '\n') == NULL;
    la_check(ok, "reject %-24s %-17s %s", name, la_status_str(s), err);
    la_st_close(f);
}

static la_st_file * expect_open(const char * path) {
    la_st_file * f = NULL;
    char err[512] = "";
    la_status s = la_st_open(&f, path, err, sizeof err);
    la_check(s == LA_STATUS_OK && f != NULL, "open %s: %s %s", path, la_status_str(s), err);
    return f;
}

static int count_temp_files(const char * dir) {
    DIR * d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent * e; (e = readdir(d));) {
        if (strstr(e->d_name, ".tmp.")) n++;
    }
    closedir(d);
    return n;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// ---------------------------------------------------------------------------------------------

static void test_dtypes(void) {
    const char * names[] = { "F32", "F64", "F16", "BF16", "I64", "I32" };
    const size_t sizes[] = { 4, 8, 2, 2, 8, 4 };
    bool ok = true;
    for (int d = 0; d < 6; d++) {
        ok = ok && strcmp(la_dtype_str((la_dtype)d), names[d]) == 0 &&
             la_dtype_size((la_dtype)d) == sizes[d];
    }
    la_check(ok, "la_dtype_str / la_dtype_size");
}

static void test_round_trip(void) {
    la_rng rng;
    la_rng_seed(&rng, 7);

    // F32: random values plus the specials, compared bit for bit.
    enum { NF = 1000 };
    float * f32 = la_test_alloc(NF * sizeof(float));
    la_fill_normal(&rng, f32, NF, 3.0);
    f32[0] = -0.0f;
    f32[1] = INFINITY;
    f32[2] = -INFINITY;
    f32[3] = 1e-45f;  // smallest subnormal
    uint32_t qnan = 0x7fc00123u;
    memcpy(&f32[4], &qnan, 4);
    const int64_t sh_f32[2] = { 10, 100 };

    double f64[5] = { 1.5, -0.25, 3.0e38, 1.0 / 3.0, -0.0 };
    const int64_t sh_f64[1] = { 5 };

    // F16 bit patterns and their exact float32 values (as bit patterns).
    const uint16_t h16[] = { 0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0xc000,
                             0x7bff, 0x3555, 0x7c00, 0xfc00, 0x7e00, 0x7d01, 0xfe00 };
    const float h16_want[] = { 0.0f, -0.0f, ldexpf(1.0f, -24), -ldexpf(1.0f, -24),
                               1023.0f * ldexpf(1.0f, -24), ldexpf(1.0f, -14), 1.0f, -2.0f,
                               65504.0f, 0.333251953125f, INFINITY, -INFINITY, 0, 0, 0 };
    // NaNs keep sign and payload: 0x7e00 -> 0x7fc00000, 0x7d01 -> 0x7fa02000, 0xfe00 -> 0xffc00000
    const uint32_t h16_nan[3] = { 0x7fc00000u, 0x7fa02000u, 0xffc00000u };
    enum { NH = sizeof h16 / sizeof h16[0] };
    const int64_t sh_f16[1] = { NH };

    const uint16_t b16[] = { 0x3f80, 0xc000, 0x8000, 0x0001, 0x4049, 0x7f80, 0xff80, 0x7fc1 };
    enum { NB = sizeof b16 / sizeof b16[0] };
    const int64_t sh_b16[2] = { 2, NB / 2 };

    const int64_t i64[] = { INT64_MIN, INT64_MAX, -1, 0, 42 };
    const int32_t i32[] = { INT32_MIN, INT32_MAX, -1, 0, 7, -123456 };
    const int64_t sh_i64[1] = { 5 };
    const int64_t sh_i32[3] = { 1, 2, 3 };

    const float scalar = 2.5f;
    const int64_t sh_empty[2] = { 3, 0 };
    const int64_t sh_zero[1] = { 0 };

    // Insertion order is not sorted by name, and an odd-sized F16 comes first: the writer must
    // still place every tensor at a multiple of its element size (torch's safe_open needs it).
    la_st_writer * w = la_st_writer_new();
    char err[512];
    la_status s = LA_STATUS_OK;
    s |= la_st_writer_add(w, "z.half", LA_DTYPE_F16, 1, sh_f16, h16, err, sizeof err);
    s |= la_st_writer_add(w, "weight", LA_DTYPE_F32, 2, sh_f32, f32, err, sizeof err);
    s |= la_st_writer_add(w, "a.double", LA_DTYPE_F64, 1, sh_f64, f64, err, sizeof err);
    s |= la_st_writer_add(w, "bf", LA_DTYPE_BF16, 2, sh_b16, b16, err, sizeof err);
    s |= la_st_writer_add(w, "ids", LA_DTYPE_I64, 1, sh_i64, i64, err, sizeof err);
    s |= la_st_writer_add(w, "ids32", LA_DTYPE_I32, 3, sh_i32, i32, err, sizeof err);
    s |= la_st_writer_add(w, "scalar", LA_DTYPE_F32, 0, NULL, &scalar, err, sizeof err);
    s |= la_st_writer_add(w, "empty", LA_DTYPE_F32, 2, sh_empty, NULL, err, sizeof err);
    s |= la_st_writer_add(w, "zero", LA_DTYPE_BF16, 1, sh_zero, NULL, err, sizeof err);
    s |= la_st_writer_add(w, "quote\"back\\slash \xc3\xa4", LA_DTYPE_I32, 0, NULL, i32, err,
                          sizeof err);
    la_check(s == LA_STATUS_OK, "writer_add x10: %s", err);
    const char * path = path_in("all.safetensors");
    s = la_st_writer_save(w, path, err, sizeof err);
    la_check(s == LA_STATUS_OK, "writer_save %s: %s", path, err);
    la_st_writer_free(w);

    // Layout: N a multiple of 8, metadata present, file = 8 + N + data.
    size_t len = 0;
    unsigned char * raw = read_bytes(path, &len);
    uint64_t hn = 0;
    for (int i = 0; i < 8; i++) hn |= (uint64_t)raw[i] << (8 * i);
    size_t want_data = NH * 2 + NF * 4 + 5 * 8 + NB * 2 + 5 * 8 + 6 * 4 + 4 + 4;
    la_check(hn % 8 == 0 && len == 8 + hn + want_data, "layout: N = %llu (mod 8 = 0), size %zu",
             (unsigned long long)hn, len);
    raw[8 + hn - 1] = 0;
    la_check(strstr((char *)raw + 8, "\"__metadata__\":{\"format\":\"pt\"}") != NULL &&
             strstr((char *)raw + 8, "\"data_offsets\"") != NULL, "header: %.80s...", raw + 8);
    free(raw);

    la_st_file * f = expect_open(path);
    if (!f) return;
    la_check(la_st_count(f) == 10, "count = %lld", (long long)la_st_count(f));
    const char * order[] = { "z.half", "weight", "a.double", "bf", "ids", "ids32", "scalar",
                             "empty", "zero", "quote\"back\\slash \xc3\xa4" };
    bool in_order = true;
    for (int i = 0; i < 10; i++) {
        const la_st_tensor * t = la_st_get(f, i);
        in_order = in_order && t && strcmp(t->name, order[i]) == 0 && la_st_find(f, order[i]) == t;
    }
    la_check(in_order, "file order kept, la_st_find finds each (incl. escaped/UTF-8 name)");
    la_check(la_st_get(f, -1) == NULL && la_st_get(f, 10) == NULL &&
             la_st_find(f, "nope") == NULL && la_st_find(f, "") == NULL,
             "get out of range / find absent -> NULL");

    bool aligned = true;
    for (int i = 0; i < 10; i++) {
        const la_st_tensor * ti = la_st_get(f, i);
        aligned = aligned && (uintptr_t)ti->data % la_dtype_size(ti->dtype) == 0;
    }
    la_check(aligned, "every tensor's data is aligned to its element size");
    const la_st_tensor * t = la_st_find(f, "weight");
    la_check(t->dtype == LA_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 10 && t->shape[1] == 100 &&
             t->numel == NF && t->nbytes == NF * 4, "weight: F32 [10, 100]");
    float * got = la_test_alloc(NF * sizeof(float));
    s = la_st_read_f32(f, t, got, NF, err, sizeof err);
    la_check(s == LA_STATUS_OK && memcmp(got, f32, NF * 4) == 0, "F32 bit-exact (NaN, inf, -0)");
    la_check_close("F32 values", got + 5, f32 + 5, NF - 5, 0, 0);

    t = la_st_find(f, "a.double");
    float fd[5];
    s = la_st_read_f32(f, t, fd, 5, err, sizeof err);
    bool ok = s == LA_STATUS_OK && memcmp(t->data, f64, sizeof f64) == 0;
    for (int i = 0; i < 5; i++) ok = ok && f32_bits(fd[i]) == f32_bits((float)f64[i]);
    la_check(ok, "F64 raw bytes exact, read_f32 == (float)x incl. -0");

    t = la_st_find(f, "z.half");
    float fh[NH];
    s = la_st_read_f32(f, t, fh, NH, err, sizeof err);
    ok = s == LA_STATUS_OK && t->dtype == LA_DTYPE_F16;
    for (int i = 0; i < NH; i++) {
        uint32_t want = i < NH - 3 ? f32_bits(h16_want[i]) : h16_nan[i - (NH - 3)];
        if (f32_bits(fh[i]) != want) {
            printf("  F16 0x%04x -> 0x%08x, want 0x%08x\n", h16[i], f32_bits(fh[i]), want);
            ok = false;
        }
    }
    la_check(ok, "F16 -> F32 exact: +-0, subnormals, max, inf, NaN payloads");

    t = la_st_find(f, "bf");
    float fb[NB];
    s = la_st_read_f32(f, t, fb, NB, err, sizeof err);
    ok = s == LA_STATUS_OK && t->ndim == 2 && t->shape[1] == NB / 2;
    for (int i = 0; i < NB; i++) ok = ok && f32_bits(fb[i]) == (uint32_t)b16[i] << 16;
    la_check(ok && fb[0] == 1.0f && fb[4] == 3.140625f && isinf(fb[5]) && isnan(fb[7]),
             "BF16 -> F32 exact (shift): subnormal, inf, NaN, -0");

    int64_t gi[6];
    t = la_st_find(f, "ids");
    s = la_st_read_i64(f, t, gi, 5, err, sizeof err);
    la_check(s == LA_STATUS_OK && memcmp(gi, i64, sizeof i64) == 0, "I64 exact (min, max)");
    t = la_st_find(f, "ids32");
    s = la_st_read_i64(f, t, gi, 6, err, sizeof err);
    ok = s == LA_STATUS_OK && t->ndim == 3;
    for (int i = 0; i < 6; i++) ok = ok && gi[i] == i32[i];
    la_check(ok, "I32 widened to I64 exactly (sign extension)");

    t = la_st_find(f, "scalar");
    float sc = 0;
    s = la_st_read_f32(f, t, &sc, 1, err, sizeof err);
    la_check(s == LA_STATUS_OK && t->ndim == 0 && t->numel == 1 && sc == 2.5f, "scalar shape []");
    t = la_st_find(f, "empty");
    s = la_st_read_f32(f, t, NULL, 0, err, sizeof err);
    la_check(s == LA_STATUS_OK && t->ndim == 2 && t->numel == 0 && t->nbytes == 0,
             "empty [3, 0] reads with n = 0, dst NULL");
    t = la_st_find(f, "zero");
    s = la_st_read_f32(f, t, NULL, 0, err, sizeof err);
    la_check(s == LA_STATUS_OK && t->ndim == 1 && t->numel == 0, "zero-size BF16 [0]");
    t = la_st_find(f, "quote\"back\\slash \xc3\xa4");
    s = la_st_read_i64(f, t, gi, 1, err, sizeof err);
    la_check(s == LA_STATUS_OK && gi[0] == INT32_MIN, "escaped name scalar I32");

    // Dtype and count mismatches.
    s = la_st_read_i64(f, la_st_find(f, "weight"), gi, NF, err, sizeof err);
    la_check(s == LA_STATUS_DTYPE && strstr(err, "weight") && strstr(err, path),
             "read_i64 of F32 -> DTYPE: %s", err);
    s = la_st_read_f32(f, la_st_find(f, "ids"), got, 5, err, sizeof err);
    la_check(s == LA_STATUS_DTYPE && strstr(err, "ids") && strstr(err, "I64"),
             "read_f32 of I64 -> DTYPE: %s", err);
    s = la_st_read_f32(f, la_st_find(f, "weight"), got, NF - 1, err, sizeof err);
    la_check(s == LA_STATUS_SHAPE && strstr(err, "weight"), "n != numel -> SHAPE: %s", err);
    s = la_st_read_f32(f, la_st_find(f, "weight"), NULL, NF, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG, "NULL dst -> INVALID_ARG: %s", err);
    la_st_tensor copy = *la_st_find(f, "weight");
    s = la_st_read_f32(f, &copy, got, NF, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG, "foreign tensor -> INVALID_ARG: %s", err);
    s = la_st_read_f32(NULL, NULL, got, NF, NULL, 0);
    la_check(s == LA_STATUS_INVALID_ARG, "NULL file, NULL err buffer");
    char tiny[6];
    s = la_st_read_f32(f, la_st_find(f, "ids"), got, 5, tiny, sizeof tiny);
    la_check(s == LA_STATUS_DTYPE && strlen(tiny) == 5, "short err buffer is truncated: '%s'",
             tiny);

    la_st_close(f);
    free(f32);
    free(got);
}

// Every F16 and BF16 bit pattern against a conversion written independently (through double).
static void test_all_halves(void) {
    enum { N = 65536 };
    uint16_t * bits = la_test_alloc(N * sizeof(uint16_t));
    float * got = la_test_alloc(N * sizeof(float));
    for (int i = 0; i < N; i++) bits[i] = (uint16_t)i;
    const int64_t n = N;
    char err[256];
    la_st_writer * w = la_st_writer_new();
    la_status s = la_st_writer_add(w, "h", LA_DTYPE_F16, 1, &n, bits, err, sizeof err);
    s |= la_st_writer_add(w, "b", LA_DTYPE_BF16, 1, &n, bits, err, sizeof err);
    s |= la_st_writer_save(w, path_in("halves.safetensors"), err, sizeof err);
    la_st_writer_free(w);
    la_st_file * f = expect_open(path_in("halves.safetensors"));
    if (!f || s) {
        la_check(false, "halves file: %s", err);
        la_st_close(f);
        free(bits);
        free(got);
        return;
    }
    int64_t bad = 0;
    s = la_st_read_f32(f, la_st_find(f, "h"), got, n, err, sizeof err);
    for (int i = 0; i < N; i++) {
        int sign = i >> 15, e = (i >> 10) & 0x1f, m = i & 0x3ff;
        uint32_t g = f32_bits(got[i]);
        bool ok;
        if (e == 0x1f && m != 0) {
            ok = isnan(got[i]) && (g >> 31) == (uint32_t)sign && ((g >> 13) & 0x3ff) == (uint32_t)m;
        } else {
            double v = e == 0x1f ? (double)INFINITY
                     : e == 0    ? ldexp(m, -24)             // subnormal: m * 2^-24
                                 : ldexp(1024 + m, e - 25);  // (1 + m/1024) * 2^(e-15)
            ok = f32_bits((float)(sign ? -v : v)) == g;
        }
        if (!ok && bad++ < 5) printf("  F16 0x%04x -> 0x%08x\n", i, g);
    }
    la_check(s == LA_STATUS_OK && bad == 0, "all 65536 F16 patterns convert exactly (%lld bad)",
             (long long)bad);
    bad = 0;
    s = la_st_read_f32(f, la_st_find(f, "b"), got, n, err, sizeof err);
    for (int i = 0; i < N; i++) bad += f32_bits(got[i]) != (uint32_t)i << 16;
    la_check(s == LA_STATUS_OK && bad == 0, "all 65536 BF16 patterns convert exactly");
    la_st_close(f);
    free(bits);
    free(got);
}

// Hand-written headers the writer would never produce, but that are valid.
static void test_valid_variants(void) {
    // __metadata__ anywhere, unknown fields, leading/trailing whitespace, out-of-order offsets.
    write_st("meta.safetensors",
             " {\"b\":{\"shape\":[1],\"dtype\":\"F32\",\"data_offsets\":[4,8],\"extra\":[1.5]},"
             "\"__metadata__\":{\"format\":\"pt\",\"note\":\"x\"},"
             "\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}\n   ", 8);
    la_st_file * f = expect_open(path_in("meta.safetensors"));
    if (f) {
        const la_st_tensor * a = la_st_get(f, 1);
        la_check(la_st_count(f) == 2 && strcmp(la_st_get(f, 0)->name, "b") == 0 && a &&
                 strcmp(a->name, "a") == 0 && a->data == (const char *)la_st_get(f, 0)->data - 4,
                 "__metadata__ skipped, file order kept, offsets honoured");
        la_st_close(f);
    }
    // Misaligned data (other writers pack tensors back to back): read through byte loads.
    write_st("packed.safetensors",
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]},"
             "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]},"
             "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[6,14]},"
             "\"q\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[14,22]},"
             "\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[22,26]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[26,28]}}", 28);
    f = expect_open(path_in("packed.safetensors"));
    if (f) {
        // write_st fills data byte k with k, so each value is a little-endian byte ramp.
        float v[6] = { 0 };
        int64_t q = 0, iv = 0;
        char err[256];
        la_status s = la_st_read_f32(f, la_st_find(f, "h"), &v[0], 1, err, sizeof err);
        s |= la_st_read_f32(f, la_st_find(f, "f"), &v[1], 1, err, sizeof err);
        s |= la_st_read_f32(f, la_st_find(f, "d"), &v[2], 1, err, sizeof err);
        s |= la_st_read_i64(f, la_st_find(f, "q"), &q, 1, err, sizeof err);
        s |= la_st_read_i64(f, la_st_find(f, "i"), &iv, 1, err, sizeof err);
        s |= la_st_read_f32(f, la_st_find(f, "b"), &v[3], 1, err, sizeof err);
        uint64_t d_bits = 0x0d0c0b0a09080706ull;
        double d;
        memcpy(&d, &d_bits, 8);
        la_check(s == LA_STATUS_OK && f32_bits(v[0]) == 0x37800000u &&  // F16 0x0100 = 2^-16
                 f32_bits(v[1]) == 0x05040302u && f32_bits(v[2]) == f32_bits((float)d) &&
                 q == 0x1514131211100f0ell && iv == 0x19181716 && f32_bits(v[3]) == 0x1b1a0000u,
                 "packed, misaligned tensors of every dtype read exactly");
        la_st_close(f);
    }

    write_st("nothing.safetensors", "{}", 0);
    f = expect_open(path_in("nothing.safetensors"));
    la_check(f && la_st_count(f) == 0 && la_st_get(f, 0) == NULL, "empty header {} -> 0 tensors");
    la_st_close(f);
    write_st("onlymeta.safetensors", "{\"__metadata__\":{}}", 0);
    f = expect_open(path_in("onlymeta.safetensors"));
    la_check(f && la_st_count(f) == 0, "only __metadata__ -> 0 tensors");
    la_st_close(f);
    write_st("zeros.safetensors",
             "{\"e\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[0,0]},"
             "\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
             "\"f\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}", 8);
    f = expect_open(path_in("zeros.safetensors"));
    la_check(f && la_st_count(f) == 3 && la_st_find(f, "s")->numel == 1 &&
             la_st_find(f, "e")->numel == 0 && la_st_find(f, "e")->ndim == 2,
             "zero-size tensors at the section edges, scalar F64");
    la_st_close(f);
}

static void test_malformed(void) {
    char err[512];
    la_st_file * f = NULL;
    la_status s = la_st_open(&f, path_in("does-not-exist.safetensors"), err, sizeof err);
    la_check(s == LA_STATUS_IO && f == NULL && strstr(err, "does-not-exist"), "missing -> IO: %s",
             err);
    s = la_st_open(&f, g_dir, err, sizeof err);
    la_check(s == LA_STATUS_IO && strstr(err, g_dir), "directory -> IO: %s", err);
    s = la_st_open(NULL, g_dir, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG, "NULL out -> INVALID_ARG");
    s = la_st_open(&f, NULL, NULL, 0);
    la_check(s == LA_STATUS_INVALID_ARG, "NULL path -> INVALID_ARG");

    const la_status FMT = LA_STATUS_FORMAT;
    write_bytes("empty.st", "", 0);
    expect_open_fail("empty.st", FMT, "0 bytes");
    write_bytes("seven.st", "\x10\0\0\0\0\0\0", 7);
    expect_open_fail("seven.st", FMT, "7 bytes");
    write_bytes("eight.st", "\0\0\0\0\0\0\0\0", 8);
    expect_open_fail("eight.st", FMT, "length is 0");
    write_len("hlen-past-eof.st", 1000, "{}");
    expect_open_fail("hlen-past-eof.st", FMT, "runs past the end");
    write_len("hlen-absurd.st", 1ull << 40, "{}");
    expect_open_fail("hlen-absurd.st", FMT, "limit");
    write_len("hlen-max.st", UINT64_MAX, "{}");
    expect_open_fail("hlen-max.st", FMT, "limit");
    write_len("hlen-100MB.st", 100000001ull, "{}");
    expect_open_fail("hlen-100MB.st", FMT, "limit");

    write_st("garbage.st", "{not json at all", 0);
    expect_open_fail("garbage.st", FMT, "not valid JSON");
    write_st("binary.st", "\x89PNG\r\n\x1a\n", 0);
    expect_open_fail("binary.st", FMT, "UTF-8");
    write_st("non-utf8.st", "{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("non-utf8.st", FMT, "UTF-8");
    write_st("overlong.st",
             "{\"\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("overlong.st", FMT, "UTF-8");
    write_st("surrogate.st", "{\"\xed\xa0\x80\":1}", 0);
    expect_open_fail("surrogate.st", FMT, "UTF-8");
    write_st("control.st",
             "{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("control.st", FMT, "control byte");
    write_st("control-out.st", "{\x02}", 0);
    expect_open_fail("control-out.st", FMT, "control byte");
    write_st("array.st", "[{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}]", 4);
    expect_open_fail("array.st", FMT, "not a JSON object");
    write_st("string.st", "\"hello\"", 0);
    expect_open_fail("string.st", FMT, "not a JSON object");
    write_st("trailing.st", "{} x", 0);
    expect_open_fail("trailing.st", FMT, "trailing");
    write_st("two-objects.st", "{}{}", 0);
    expect_open_fail("two-objects.st", FMT, "trailing");
    write_st("truncated-json.st", "{\"a\":{\"dtype\":\"F32\",\"sha", 0);
    expect_open_fail("truncated-json.st", FMT, "not valid JSON");

    // Entries.
    write_st("entry-number.st", "{\"a\":5}", 0);
    expect_open_fail("entry-number.st", FMT, "'a'");
    write_st("dtype-number.st", "{\"a\":{\"dtype\":1,\"shape\":[],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("dtype-number.st", FMT, "\"dtype\" is not a string");
    write_st("dtype-missing.st", "{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("dtype-missing.st", FMT, "missing field \"dtype\"");
    write_st("shape-missing.st", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("shape-missing.st", FMT, "missing field \"shape\"");
    write_st("offsets-missing.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 4);
    expect_open_fail("offsets-missing.st", FMT, "missing field \"data_offsets\"");
    write_st("dup-field.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("dup-field.st", FMT, "duplicate field");
    write_st("dtype-f8.st", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("dtype-f8.st", LA_STATUS_DTYPE, "'a': dtype 'F8_E4M3'");
    write_st("dtype-u8.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("dtype-u8.st", LA_STATUS_DTYPE, "'U8'");
    write_st("dtype-bool.st", "{\"a\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("dtype-bool.st", LA_STATUS_DTYPE, "'BOOL'");
    write_st("dtype-lower.st", "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("dtype-lower.st", LA_STATUS_DTYPE, "'f32'");
    write_st("shape-string.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":\"[1]\",\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("shape-string.st", FMT, "\"shape\" is not an array");
    write_st("shape-negative.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("shape-negative.st", FMT, "shape[0] '-1' is negative");
    write_st("shape-fraction.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,0.5],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("shape-fraction.st", FMT, "shape[1] '0.5' is not an integer");
    write_st("shape-float-syntax.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("shape-float-syntax.st", FMT, "'1.0'");
    write_st("shape-exponent.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("shape-exponent.st", FMT, "'1e0'");
    write_st("shape-leading-zero.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("shape-leading-zero.st", FMT, "'01' is not an integer");
    write_st("shape-bool.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("shape-bool.st", FMT, "shape[0] is not a number");
    write_st("shape-9dims.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("shape-9dims.st", FMT, "9 dims");
    write_st("shape-overflow.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
             "\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("shape-overflow.st", FMT, "overflows");
    write_st("shape-overflow-bytes.st",
             "{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
             "\"data_offsets\":[0,8]}}", 8);
    expect_open_fail("shape-overflow-bytes.st", FMT, "overflows");
    write_st("shape-huge-dim.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("shape-huge-dim.st", FMT, "too large");

    write_st("offsets-string.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}",
             4);
    expect_open_fail("offsets-string.st", FMT, "two integers");
    write_st("offsets-one.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4);
    expect_open_fail("offsets-one.st", FMT, "two integers");
    write_st("offsets-three.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8);
    expect_open_fail("offsets-three.st", FMT, "two integers");
    write_st("offsets-negative.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[-4,-4]}}", 0);
    expect_open_fail("offsets-negative.st", FMT, "negative");
    write_st("offsets-null.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[null,4]}}", 4);
    expect_open_fail("offsets-null.st", FMT, "not a number");
    write_st("offsets-reversed.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4);
    expect_open_fail("offsets-reversed.st", FMT, "reversed");
    write_st("offsets-size.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("offsets-size.st", FMT, "needs 8");
    write_st("offsets-past-data.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    expect_open_fail("offsets-past-data.st", FMT, "beyond");
    write_st("overlap.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    expect_open_fail("overlap.st", FMT, "'a' and 'b' overlap");
    write_st("overlap-same.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_open_fail("overlap-same.st", FMT, "overlap");
    write_st("overlap-empty-inside.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8);
    expect_open_fail("overlap-empty-inside.st", FMT, "overlap");
    write_st("hole.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12);
    expect_open_fail("hole.st", FMT, "4 bytes not covered by any tensor");
    write_st("hole-leading.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_open_fail("hole-leading.st", FMT, "not covered");
    write_st("trailing-data.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 7);
    expect_open_fail("trailing-data.st", FMT, "3 bytes not covered");
    write_st("data-no-tensors.st", "{}", 16);
    expect_open_fail("data-no-tensors.st", FMT, "16 bytes not covered");
    write_st("dup-name.st",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_open_fail("dup-name.st", FMT, "duplicate tensor name 'a'");
    write_st("empty-name.st", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("empty-name.st", FMT, "empty name");
    write_st("meta-string.st", "{\"__metadata__\":\"pt\"}", 0);
    expect_open_fail("meta-string.st", FMT, "__metadata__");
    write_st("meta-number-value.st", "{\"__metadata__\":{\"format\":1}}", 0);
    expect_open_fail("meta-number-value.st", FMT, "'format' is not a string");
    write_st("meta-twice.st", "{\"__metadata__\":{},\"__metadata__\":{}}", 0);
    expect_open_fail("meta-twice.st", FMT, "__metadata__");
    write_st("nul-name.st",
             "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
             4);
    expect_open_fail("nul-name.st", FMT, "u0000");
    write_st("newline-name.st",
             "{\"x\\ny\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    expect_open_fail("newline-name.st", FMT, "'x?y'");  // the message stays one line

    // A valid file cut at several points: every prefix is malformed, the whole file is fine.
    la_st_writer * w = la_st_writer_new();
    float a[6] = { 1, 2, 3, 4, 5, 6 };
    int64_t b[3] = { 7, 8, 9 };
    const int64_t sh_a[2] = { 2, 3 };
    const int64_t sh_b[1] = { 3 };
    la_st_writer_add(w, "a", LA_DTYPE_F32, 2, sh_a, a, err, sizeof err);
    la_st_writer_add(w, "b", LA_DTYPE_I64, 1, sh_b, b, err, sizeof err);
    const char * full = path_in("full.safetensors");
    s = la_st_writer_save(w, full, err, sizeof err);
    la_st_writer_free(w);
    size_t len = 0;
    unsigned char * raw = read_bytes(full, &len);
    la_check(s == LA_STATUS_OK && raw && len > 60, "full file written (%zu bytes)", len);
    size_t hn = raw[0] | (size_t)raw[1] << 8;
    size_t cuts[] = { 1, 4, 8, 9, 8 + hn / 2, 8 + hn - 1, 8 + hn, 8 + hn + 1, 8 + hn + 24,
                      len - 1 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "cut-at-%zu.st", cuts[i]);
        write_bytes(name, raw, cuts[i]);
        expect_open_fail(name, FMT, NULL);
    }
    write_bytes("plus-one.st", raw, len);
    FILE * fp = fopen(path_in("plus-one.st"), "ab");
    fputc(0, fp);
    fclose(fp);
    expect_open_fail("plus-one.st", FMT, "1 bytes not covered");
    free(raw);
}

static void test_writer_args(void) {
    char err[512];
    float x[4] = { 0 };
    const int64_t sh[2] = { 2, 2 };
    const int64_t neg[1] = { -1 };
    const int64_t nine[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 4 };
    la_st_writer * w = la_st_writer_new();
    la_status s = la_st_writer_add(w, "x", LA_DTYPE_F32, 2, sh, x, err, sizeof err);
    la_check(s == LA_STATUS_OK, "add x");
    s = la_st_writer_add(w, "x", LA_DTYPE_F32, 2, sh, x, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG && strstr(err, "'x'"), "duplicate name: %s", err);
    s = la_st_writer_add(w, "y", LA_DTYPE_F32, 2, sh, NULL, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG && strstr(err, "'y'"), "NULL data: %s", err);
    s = la_st_writer_add(w, "y", LA_DTYPE_F32, 1, neg, x, err, sizeof err);
    la_check(s == LA_STATUS_SHAPE, "negative dim: %s", err);
    s = la_st_writer_add(w, "y", LA_DTYPE_F32, 9, nine, x, err, sizeof err);
    la_check(s == LA_STATUS_SHAPE, "9 dims: %s", err);
    s = la_st_writer_add(w, "y", (la_dtype)17, 2, sh, x, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG, "bad dtype: %s", err);
    s = la_st_writer_add(w, "", LA_DTYPE_F32, 2, sh, x, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG, "empty name: %s", err);
    s = la_st_writer_add(w, "__metadata__", LA_DTYPE_F32, 2, sh, x, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG, "reserved name: %s", err);
    s = la_st_writer_add(w, "bad\xff", LA_DTYPE_F32, 2, sh, x, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG && strstr(err, "UTF-8") && strstr(err, "0xff"),
             "non-UTF-8 name: %s", err);
    s = la_st_writer_add(w, "tab\there", LA_DTYPE_F32, 2, sh, x, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG && !strchr(err, '\t'), "control char in name: %s", err);
    s = la_st_writer_add(NULL, "x", LA_DTYPE_F32, 2, sh, x, NULL, 0);
    la_check(s == LA_STATUS_INVALID_ARG, "NULL writer");
    s = la_st_writer_save(w, NULL, err, sizeof err);
    la_check(s == LA_STATUS_INVALID_ARG, "NULL path: %s", err);
    la_st_writer_free(w);
    la_st_writer_free(NULL);
    la_st_close(NULL);
    la_check(la_st_count(NULL) == 0 && la_st_get(NULL, 0) == NULL && la_st_find(NULL, "x") == NULL,
             "NULL file accessors");

    // An empty writer saves a valid file with no tensors.
    w = la_st_writer_new();
    s = la_st_writer_save(w, path_in("no-tensors.safetensors"), err, sizeof err);
    la_st_writer_free(w);
    la_st_file * f = expect_open(path_in("no-tensors.safetensors"));
    la_check(s == LA_STATUS_OK && f && la_st_count(f) == 0, "empty writer -> valid empty file");
    la_st_close(f);
}

static la_status save_one(const char * path, float v, int64_t n, char * err, size_t errlen) {
    float * x = la_test_alloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = v;
    la_st_writer * w = la_st_writer_new();
    la_st_writer_add(w, "v", LA_DTYPE_F32, 1, &n, x, err, errlen);
    la_status s = la_st_writer_save(w, path, err, errlen);
    la_st_writer_free(w);
    free(x);
    return s;
}

static float load_first(const char * path) {
    la_st_file * f = NULL;
    float v = NAN;
    if (la_st_open(&f, path, NULL, 0) == LA_STATUS_OK && la_st_count(f) > 0) {
        const la_st_tensor * t = la_st_get(f, 0);
        float * x = la_test_alloc((size_t)t->numel * sizeof(float));
        if (la_st_read_f32(f, t, x, t->numel, NULL, 0) == LA_STATUS_OK) v = x[0];
        free(x);
    }
    la_st_close(f);
    return v;
}

static void test_atomic_save(void) {
    char err[512];
    const char * p = path_in("ckpt.safetensors");
    la_status s = save_one(p, 1.0f, 4, err, sizeof err);
    struct stat st = { 0 };
    stat(p, &st);
    la_check(s == LA_STATUS_OK && load_first(p) == 1.0f && (st.st_mode & 0777) == 0644,
             "new file, mode 0644 under umask 022 (mode %o)", (unsigned)(st.st_mode & 0777));
    chmod(p, 0600);
    s = save_one(p, 2.0f, 8, err, sizeof err);
    la_check(s == LA_STATUS_OK && load_first(p) == 2.0f && stat(p, &st) == 0 &&
             (st.st_mode & 0777) == 0600, "save over an existing file replaces it, keeps mode");

    size_t len0 = 0, len1 = 0;
    unsigned char * before = read_bytes(p, &len0);

    // A missing directory: mkstemp fails.
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.safetensors", g_dir);
    s = save_one(missing, 3.0f, 4, err, sizeof err);
    la_check(s == LA_STATUS_IO && strstr(err, missing), "save into a missing dir -> IO: %s", err);

    // The path is a directory: the rename fails after the data was written.
    const char * dir = path_in("adir.safetensors");
    mkdir(dir, 0755);
    s = save_one(dir, 3.0f, 4, err, sizeof err);
    struct stat dst;
    la_check(s == LA_STATUS_IO && strstr(err, dir) && stat(dir, &dst) == 0 && S_ISDIR(dst.st_mode),
             "save over a directory -> IO, directory intact: %s", err);

    // A write that fails part way (file size limit) over the existing checkpoint.
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        s = save_one(p, 4.0f, 100000, err, sizeof err);
        setrlimit(RLIMIT_FSIZE, &old);
        la_check(s == LA_STATUS_IO && strstr(err, p), "write failure (EFBIG) -> IO: %s", err);
    } else {
        la_check(false, "setrlimit(RLIMIT_FSIZE): %s", strerror(errno));
    }
    signal(SIGXFSZ, SIG_DFL);

    unsigned char * after = read_bytes(p, &len1);
    la_check(before && after && len0 == len1 && memcmp(before, after, len0) == 0 &&
             load_first(p) == 2.0f, "failed saves left the existing file byte-identical");
    la_check(count_temp_files(g_dir) == 0, "no temp files left behind");
    free(before);
    free(after);

    // A relative path (no '/') works too.
    char cwd[1024];
    if (getcwd(cwd, sizeof cwd) && chdir(g_dir) == 0) {
        s = save_one("relative.safetensors", 5.0f, 2, err, sizeof err);
        la_check(s == LA_STATUS_OK && load_first("relative.safetensors") == 5.0f,
                 "save to a relative path");
        if (chdir(cwd) != 0) la_check(false, "chdir back");
    }
}

// Removes everything the test wrote (one level of files plus the empty subdirectory).
static void cleanup(void) {
    DIR * d = opendir(g_dir);
    if (!d) return;
    for (struct dirent * e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        const char * p = path_in(e->d_name);
        if (unlink(p) != 0) rmdir(p);
    }
    closedir(d);
    rmdir(g_dir);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/la_st_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    umask(022);
    test_dtypes();
    test_round_trip();
    test_all_halves();
    test_valid_variants();
    test_malformed();
    test_writer_args();
    test_atomic_save();
    // LA_ST_KEEP=1 keeps the corpus for inspection.
    if (!getenv("LA_ST_KEEP")) cleanup();
    else printf("corpus kept in %s\n", g_dir);
    return la_test_summary();
}
