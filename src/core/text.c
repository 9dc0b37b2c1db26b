// Text helpers shared by the file readers and the model code: one-line error messages and
// UTF-8 validation.
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

la_status la_fail(char * err, size_t errlen, la_status s, const char * fmt, ...) {
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        // one line, whatever a file name or tensor name held
        for (char * p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    }
    return s;
}

// Offset of the first byte of the first ill-formed sequence (Unicode 15, table 3-7: no
// overlong forms, no UTF-16 surrogates, nothing past U+10FFFF), or -1 when s[0, n) is UTF-8.
int64_t la_utf8_bad_offset(const unsigned char * s, size_t n) {
    size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;  // range of the second byte
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;       // overlong
            else if (c == 0xED) hi = 0x9F;  // surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;       // overlong
            else if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
        } else {
            return (int64_t)i;  // a continuation byte, C0, C1 or F5..FF as a lead byte
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return (int64_t)i;
        for (size_t j = 2; j < len; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xBF) return (int64_t)i;
        i += len;
    }
    return -1;
}
