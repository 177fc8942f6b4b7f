/* arpa.c: the text of an ARPA section (csrc/README.md, "ARPA files").
 *
 * Each entry is `log10 p<TAB>w_1 ... w_k[<TAB>log10 backoff]\n`, numbers with 8 significant digits as
 * printf's %.8g writes them (lmplz's precision), byte for byte. In %.8g's fixed range (1e-4 <= |x| < 1e8)
 * the digits come from one rounding of |x| 10^d to an integer, d = 7 - floor(log10 |x|): the product's
 * error (~1e-16 relative) can only change that rounding within 1e-6 of a half, and those values, like
 * every value outside the range, go through snprintf.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "fastlm.h"

static const double P10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12};
static const double EXP10[] = {1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8}; /* [e + 4] */

/* Writes x like %.8g; returns the number of characters (at most 24, no terminator). */
static int printf_g8(double x, char *out) {
    char tmp[32];
    const int n = snprintf(tmp, sizeof tmp, "%.8g", x);
    memcpy(out, tmp, (size_t)n);
    return n;
}

static int format_g8(double x, char *out) {
    const double a = fabs(x);
    if (a == 0.0) { /* log10 1: the most common backoff */
        int n = 0;
        if (signbit(x)) out[n++] = '-';
        out[n++] = '0';
        return n;
    }
    if (!(a >= 1e-4 && a < 1e8)) return printf_g8(x, out); /* tiny, huge, inf, NaN */
    int e = -4; /* the decimal exponent: EXP10[e + 4] <= a < EXP10[e + 5] */
    while (a >= EXP10[e + 5]) e++;
    int d = 7 - e; /* decimals: 0 .. 11 */
    double scaled = a * P10[d];
    if (fabs(scaled - floor(scaled) - 0.5) < 1e-6) return printf_g8(x, out); /* a near-half: exact rounding */
    uint64_t v = (uint64_t)(scaled + 0.5);
    if (v >= 100000000u) { /* rounding carried into a 9th digit: one decimal less, or %g's exponent form */
        if (d == 0) return printf_g8(x, out);
        d--;
        scaled = a * P10[d];
        if (fabs(scaled - floor(scaled) - 0.5) < 1e-6) return printf_g8(x, out);
        v = (uint64_t)(scaled + 0.5);
    }
    char *p = out;
    if (x < 0) *p++ = '-';
    const uint64_t scale = (uint64_t)P10[d], ip = v / scale;
    uint64_t frac = v % scale;
    char digits[24];
    int n = 0;
    uint64_t t = ip;
    do {
        digits[n++] = (char)('0' + t % 10);
        t /= 10;
    } while (t);
    while (n) *p++ = digits[--n];
    if (frac) {
        int width = d;
        while (frac % 10 == 0) { /* trailing zeros go, as %g drops them */
            frac /= 10;
            width--;
        }
        *p++ = '.';
        for (int i = width - 1; i >= 0; i--) {
            p[i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        p += width;
    }
    return (int)(p - out);
}

/* The lines of entries j < m of one order (ids: m rows of k word ids; backoff NULL at the top order;
 * real: NULL or 0 to leave an entry out) into out[0 .. cap). words[word_off[w] .. word_off[w+1]) is word
 * w. Returns the bytes written, or -1 when cap is too small. */
int64_t fl_arpa_lines(int k, int64_t m, const uint32_t *ids, const double *prob, const double *backoff,
                      const uint8_t *real, const char *words, const int64_t *word_off, char *out, int64_t cap) {
    char *p = out, *const end = out + cap;
    for (int64_t j = 0; j < m; j++) {
        if (real && !real[j]) continue;
        if (end - p < 64) return -1;
        p += format_g8(prob[j], p);
        for (int i = 0; i < k; i++) {
            const uint32_t w = ids[j * k + i];
            const int64_t len = word_off[w + 1] - word_off[w];
            if (end - p < len + 32) return -1;
            *p++ = i ? ' ' : '\t';
            memcpy(p, words + word_off[w], (size_t)len);
            p += len;
        }
        if (backoff) {
            *p++ = '\t';
            p += format_g8(backoff[j], p);
        }
        *p++ = '\n';
    }
    return p - out;
}
