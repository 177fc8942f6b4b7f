/* select_simd.c: the vector passes of decoding (sampling.c), compiled once per SIMD level against
 * vmath.h and instantiated for float and double (the file includes itself, as softmax_simd.c).
 *   max / argmax        the row max, and its first index
 *   max_nan             the row max, and whether the row holds NaN (the row check)
 *   chunk_bound         min over `chunks` contiguous chunks of each chunk's max: at least `chunks` values
 *                       are >= it, so it bounds the chunks-th largest from below
 *   masses              sum of v[j] over v[j] >= tau[q], for FL_PIVOTS thresholds at once (float64)
 *   collect_ge          the indices j with v[j] >= tau, in increasing order
 *   apply_cut           y[j] = x[j] where v[j] > cv or (v[j] == cv and j <= ci), else fill
 * No value is NaN here: rows are checked before.
 */
#ifndef FL_T
#include <stddef.h>
#include "dispatch.h"
#include "vmath.h"

#define FL_T float
#define FL_V vf32
#define FL_W vf32_W
#define VF(op) vf32_##op
#define FN(name) name##_f32
#include "select_simd.c"
#undef FL_T
#undef FL_V
#undef FL_W
#undef VF
#undef FN

#define FL_T double
#define FL_V vf64
#define FL_W vf64_W
#define VF(op) vf64_##op
#define FN(name) name##_f64
#include "select_simd.c"

const fl_select_kernels FL_CAT(fl_select_kernels_, FL_SIMD_SUFFIX) = {
    sel_max_f32, sel_max_f64, sel_max_nan_f32, sel_max_nan_f64, sel_argmax_f32, sel_argmax_f64, sel_chunk_bound_f32, sel_chunk_bound_f64,
    sel_masses_f32, sel_masses_f64, sel_collect_ge_f32, sel_collect_ge_f64, sel_apply_cut_f32, sel_apply_cut_f64,
};

#else /* ---------------------------------------------------------------- template body, T = FL_T */

static inline FL_V FN(sel_load)(const FL_T *p, int64_t n, FL_T fill) {
    if (n >= FL_W) return VF(load)(p);
    FL_T b[FL_W];
    for (int64_t i = 0; i < FL_W; i++) b[i] = i < n ? p[i] : fill;
    return VF(load)(b);
}

static FL_T FN(sel_max)(const FL_T *x, int64_t n) {
    FL_V a = VF(set1)(-INFINITY), b = a;
    int64_t j = 0;
    for (; j + 2 * FL_W <= n; j += 2 * FL_W) {
        a = VF(max)(a, VF(load)(x + j));
        b = VF(max)(b, VF(load)(x + j + FL_W));
    }
    for (; j < n; j += FL_W) a = VF(max)(a, FN(sel_load)(x + j, n - j, -INFINITY));
    return VF(hmax)(VF(max)(a, b));
}

static FL_T FN(sel_max_nan)(const FL_T *x, int64_t n, int *nan) {
    FL_V a = VF(set1)(-INFINITY);
    unsigned ordered = ~0u;
    const unsigned all = FL_W >= 32 ? ~0u : (1u << FL_W) - 1;
    for (int64_t j = 0; j < n; j += FL_W) {
        FL_V v = FN(sel_load)(x + j, n - j, -INFINITY);
        a = VF(max)(a, v);
        ordered &= VF(ge_bits)(v, v) | ~all; /* v >= v fails only for NaN */
    }
    *nan = (ordered & all) != all;
    return VF(hmax)(a);
}

static int64_t FN(sel_argmax)(const FL_T *x, int64_t n) {
    const FL_V m = VF(set1)(FN(sel_max)(x, n));
    for (int64_t j = 0; j < n; j += FL_W) {
        unsigned bits = VF(ge_bits)(FN(sel_load)(x + j, n - j, -INFINITY), m);
        if (bits) return j + __builtin_ctz(bits);
    }
    return 0;
}

static FL_T FN(sel_chunk_bound)(const FL_T *x, int64_t n, int64_t chunks) {
    FL_T bound = INFINITY;
    int64_t size = (n + chunks - 1) / chunks;
    for (int64_t lo = 0; lo < n; lo += size) {
        FL_T m = FN(sel_max)(x + lo, n - lo < size ? n - lo : size);
        bound = m < bound ? m : bound;
    }
    return bound;
}

static void FN(sel_masses)(const FL_T *v, int64_t n, const FL_T *tau, double *mass) {
    vf64 acc[FL_PIVOTS][2];
    FL_V t[FL_PIVOTS];
    const FL_V zero = VF(set1)(0);
    for (int q = 0; q < FL_PIVOTS; q++) {
        acc[q][0] = acc[q][1] = vf64_set1(0);
        t[q] = VF(set1)(tau[q]);
    }
    for (int64_t j = 0; j < n; j += 4 * FL_W) { /* four vectors summed in T per group, then float64 */
        FL_V x0 = FN(sel_load)(v + j, n - j, 0), x1 = FN(sel_load)(v + j + FL_W, n - j - FL_W, 0);
        FL_V x2 = FN(sel_load)(v + j + 2 * FL_W, n - j - 2 * FL_W, 0);
        FL_V x3 = FN(sel_load)(v + j + 3 * FL_W, n - j - 3 * FL_W, 0);
        for (int q = 0; q < FL_PIVOTS; q++) {
            FL_V s01 = VF(add)(VF(sel_ge)(x0, t[q], x0, zero), VF(sel_ge)(x1, t[q], x1, zero));
            FL_V s23 = VF(add)(VF(sel_ge)(x2, t[q], x2, zero), VF(sel_ge)(x3, t[q], x3, zero));
            VF(acc)(acc[q], VF(add)(s01, s23));
        }
    }
    for (int q = 0; q < FL_PIVOTS; q++) mass[q] = vf64_hsum(vf64_add(acc[q][0], acc[q][1]));
}

static int64_t FN(sel_collect_ge)(const FL_T *v, int64_t n, FL_T tau, int64_t *idx) {
    const FL_V t = VF(set1)(tau);
    int64_t m = 0;
    for (int64_t j = 0; j < n; j += FL_W) {
        unsigned bits = VF(ge_bits)(FN(sel_load)(v + j, n - j, -INFINITY), t);
        while (bits) {
            idx[m++] = j + __builtin_ctz(bits);
            bits &= bits - 1;
        }
    }
    return m;
}

static void FN(sel_apply_cut)(const FL_T *x, const FL_T *v, FL_T *y, int64_t n, FL_T cv, int64_t ci, FL_T fill) {
    const FL_V c = VF(set1)(cv), f = VF(set1)(fill);
    const int64_t split = ci < 0 ? 0 : ci >= n ? n : ci + 1; /* up to ci ties stay (>=), after it they go (>) */
    for (int64_t j = 0; j < n; j += FL_W) {
        int64_t len = n - j < FL_W ? n - j : FL_W;
        FL_V xv = FN(sel_load)(x + j, len, 0), vv = FN(sel_load)(v + j, len, -INFINITY), out;
        if (j + len <= split) out = VF(sel_ge)(vv, c, xv, f);
        else if (j >= split) out = VF(sel_gt)(vv, c, xv, f);
        else { /* the vector holding the split: element by element */
            FL_T xb[FL_W], vb[FL_W];
            VF(store)(xb, xv);
            VF(store)(vb, vv);
            for (int64_t k = 0; k < len; k++) xb[k] = (vb[k] > cv || (vb[k] == cv && j + k <= ci)) ? xb[k] : fill;
            out = VF(load)(xb);
        }
        if (len == FL_W) VF(store)(y + j, out);
        else {
            FL_T b[FL_W];
            VF(store)(b, out);
            memcpy(y + j, b, (size_t)len * sizeof(FL_T));
        }
    }
}

#endif
