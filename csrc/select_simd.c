/* select_simd.c: the vector passes of decoding (decode_*.c), written against vmath.h and compiled once
 * per SIMD level and dtype (dtype.h); exports the table fl_select_<dtype>_<level>.
 *   row_max / argmax    the row max; the first index at or above a given max
 *   row_max_nan         the row max, and whether the row holds NaN (the row check)
 *   chunk_bound         min over `chunks` contiguous chunks of each chunk's max: at least `chunks` values
 *                       are >= it, so it bounds the chunks-th largest from below
 *   exp_weights         e[j] = exp((x[j] - m) it) for the row max m, stored, and their sum
 *   exp_candidates      the sum of those weights, in one pass with the candidates x[j] >= tau (their j, x
 *                       and weight) and the max of x over each block of FL_BMAX_BLOCK
 *   exp_band            the sum of the weights, in one pass with the band a <= x[j] < b (its x, and how
 *                       many before each block), the number of x[j] >= b and their weight per block
 *   count_ge            the number of v[j] >= tau
 *   collect_ge          the indices j with v[j] >= tau and their values, in increasing order
 *   apply_cut           y[j] = x[j] where v[j] > cv, or v[j] == cv and j < split; else fill
 *   buckets             bk[j] = (int)((v[j] - lo) scale) in float64 (a histogram linear in the value)
 *   band_masses         sum of w[j] over v[j] >= t[k], for FL_BANDS thresholds at once
 *   collect_band        the j with a <= v[j] < b and their v, w; the weight and number of v[j] >= b
 *   kept_sum            sum of q[j] over q[j] >= thr and (v[j] > cv, or v[j] == cv and j < split)
 * Sums of weights: groups of four vectors (or each lane over a run) in T, then float64. Outputs written
 * by compression (indices, values) need 16 entries of slack. No value is NaN here: rows are checked
 * before. Rows are shorter than 2^31 (int32 indices).
 */
#include <stddef.h>
#include "vmath.h"
#include "dtype.h"

/* Compression: the lanes set in `bits` (lane i = bit i), in order, to the front of dst; a whole vector
 * (16 entries at most) is written, so dst needs that slack. Each returns popcount(bits).
 *   fl_compress_idx: the indices base + i; fl_compress_f32 / _f64: the lanes of a vector. */
#if defined(FL_SIMD_IS_AVX512)
/* compress in a register, then a full store: compressing straight to memory is slow on some CPUs */
static inline int fl_compress_idx(int32_t *idx, unsigned bits, int32_t base) {
    const __m512i j = _mm512_add_epi32(_mm512_set1_epi32(base),
                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    _mm512_storeu_si512((void *)idx, _mm512_maskz_compress_epi32((__mmask16)bits, j));
    return __builtin_popcount(bits);
}
static inline int fl_compress_f32(float *dst, unsigned bits, vf32 v) {
    _mm512_storeu_ps(dst, _mm512_maskz_compress_ps((__mmask16)bits, v));
    return __builtin_popcount(bits);
}
static inline int fl_compress_f64(double *dst, unsigned bits, vf64 v) {
    _mm512_storeu_pd(dst, _mm512_maskz_compress_pd((__mmask8)bits, v));
    return __builtin_popcount(bits);
}
#elif defined(FL_SIMD_IS_AVX2)
/* byte k of fl_lanes[m]: the k-th set lane of the 8-bit mask m */
static const uint64_t fl_lanes[256] = {
    0x0000000000000000ULL, 0x0000000000000000ULL, 0x0000000000000001ULL, 0x0000000000000100ULL,
    0x0000000000000002ULL, 0x0000000000000200ULL, 0x0000000000000201ULL, 0x0000000000020100ULL,
    0x0000000000000003ULL, 0x0000000000000300ULL, 0x0000000000000301ULL, 0x0000000000030100ULL,
    0x0000000000000302ULL, 0x0000000000030200ULL, 0x0000000000030201ULL, 0x0000000003020100ULL,
    0x0000000000000004ULL, 0x0000000000000400ULL, 0x0000000000000401ULL, 0x0000000000040100ULL,
    0x0000000000000402ULL, 0x0000000000040200ULL, 0x0000000000040201ULL, 0x0000000004020100ULL,
    0x0000000000000403ULL, 0x0000000000040300ULL, 0x0000000000040301ULL, 0x0000000004030100ULL,
    0x0000000000040302ULL, 0x0000000004030200ULL, 0x0000000004030201ULL, 0x0000000403020100ULL,
    0x0000000000000005ULL, 0x0000000000000500ULL, 0x0000000000000501ULL, 0x0000000000050100ULL,
    0x0000000000000502ULL, 0x0000000000050200ULL, 0x0000000000050201ULL, 0x0000000005020100ULL,
    0x0000000000000503ULL, 0x0000000000050300ULL, 0x0000000000050301ULL, 0x0000000005030100ULL,
    0x0000000000050302ULL, 0x0000000005030200ULL, 0x0000000005030201ULL, 0x0000000503020100ULL,
    0x0000000000000504ULL, 0x0000000000050400ULL, 0x0000000000050401ULL, 0x0000000005040100ULL,
    0x0000000000050402ULL, 0x0000000005040200ULL, 0x0000000005040201ULL, 0x0000000504020100ULL,
    0x0000000000050403ULL, 0x0000000005040300ULL, 0x0000000005040301ULL, 0x0000000504030100ULL,
    0x0000000005040302ULL, 0x0000000504030200ULL, 0x0000000504030201ULL, 0x0000050403020100ULL,
    0x0000000000000006ULL, 0x0000000000000600ULL, 0x0000000000000601ULL, 0x0000000000060100ULL,
    0x0000000000000602ULL, 0x0000000000060200ULL, 0x0000000000060201ULL, 0x0000000006020100ULL,
    0x0000000000000603ULL, 0x0000000000060300ULL, 0x0000000000060301ULL, 0x0000000006030100ULL,
    0x0000000000060302ULL, 0x0000000006030200ULL, 0x0000000006030201ULL, 0x0000000603020100ULL,
    0x0000000000000604ULL, 0x0000000000060400ULL, 0x0000000000060401ULL, 0x0000000006040100ULL,
    0x0000000000060402ULL, 0x0000000006040200ULL, 0x0000000006040201ULL, 0x0000000604020100ULL,
    0x0000000000060403ULL, 0x0000000006040300ULL, 0x0000000006040301ULL, 0x0000000604030100ULL,
    0x0000000006040302ULL, 0x0000000604030200ULL, 0x0000000604030201ULL, 0x0000060403020100ULL,
    0x0000000000000605ULL, 0x0000000000060500ULL, 0x0000000000060501ULL, 0x0000000006050100ULL,
    0x0000000000060502ULL, 0x0000000006050200ULL, 0x0000000006050201ULL, 0x0000000605020100ULL,
    0x0000000000060503ULL, 0x0000000006050300ULL, 0x0000000006050301ULL, 0x0000000605030100ULL,
    0x0000000006050302ULL, 0x0000000605030200ULL, 0x0000000605030201ULL, 0x0000060503020100ULL,
    0x0000000000060504ULL, 0x0000000006050400ULL, 0x0000000006050401ULL, 0x0000000605040100ULL,
    0x0000000006050402ULL, 0x0000000605040200ULL, 0x0000000605040201ULL, 0x0000060504020100ULL,
    0x0000000006050403ULL, 0x0000000605040300ULL, 0x0000000605040301ULL, 0x0000060504030100ULL,
    0x0000000605040302ULL, 0x0000060504030200ULL, 0x0000060504030201ULL, 0x0006050403020100ULL,
    0x0000000000000007ULL, 0x0000000000000700ULL, 0x0000000000000701ULL, 0x0000000000070100ULL,
    0x0000000000000702ULL, 0x0000000000070200ULL, 0x0000000000070201ULL, 0x0000000007020100ULL,
    0x0000000000000703ULL, 0x0000000000070300ULL, 0x0000000000070301ULL, 0x0000000007030100ULL,
    0x0000000000070302ULL, 0x0000000007030200ULL, 0x0000000007030201ULL, 0x0000000703020100ULL,
    0x0000000000000704ULL, 0x0000000000070400ULL, 0x0000000000070401ULL, 0x0000000007040100ULL,
    0x0000000000070402ULL, 0x0000000007040200ULL, 0x0000000007040201ULL, 0x0000000704020100ULL,
    0x0000000000070403ULL, 0x0000000007040300ULL, 0x0000000007040301ULL, 0x0000000704030100ULL,
    0x0000000007040302ULL, 0x0000000704030200ULL, 0x0000000704030201ULL, 0x0000070403020100ULL,
    0x0000000000000705ULL, 0x0000000000070500ULL, 0x0000000000070501ULL, 0x0000000007050100ULL,
    0x0000000000070502ULL, 0x0000000007050200ULL, 0x0000000007050201ULL, 0x0000000705020100ULL,
    0x0000000000070503ULL, 0x0000000007050300ULL, 0x0000000007050301ULL, 0x0000000705030100ULL,
    0x0000000007050302ULL, 0x0000000705030200ULL, 0x0000000705030201ULL, 0x0000070503020100ULL,
    0x0000000000070504ULL, 0x0000000007050400ULL, 0x0000000007050401ULL, 0x0000000705040100ULL,
    0x0000000007050402ULL, 0x0000000705040200ULL, 0x0000000705040201ULL, 0x0000070504020100ULL,
    0x0000000007050403ULL, 0x0000000705040300ULL, 0x0000000705040301ULL, 0x0000070504030100ULL,
    0x0000000705040302ULL, 0x0000070504030200ULL, 0x0000070504030201ULL, 0x0007050403020100ULL,
    0x0000000000000706ULL, 0x0000000000070600ULL, 0x0000000000070601ULL, 0x0000000007060100ULL,
    0x0000000000070602ULL, 0x0000000007060200ULL, 0x0000000007060201ULL, 0x0000000706020100ULL,
    0x0000000000070603ULL, 0x0000000007060300ULL, 0x0000000007060301ULL, 0x0000000706030100ULL,
    0x0000000007060302ULL, 0x0000000706030200ULL, 0x0000000706030201ULL, 0x0000070603020100ULL,
    0x0000000000070604ULL, 0x0000000007060400ULL, 0x0000000007060401ULL, 0x0000000706040100ULL,
    0x0000000007060402ULL, 0x0000000706040200ULL, 0x0000000706040201ULL, 0x0000070604020100ULL,
    0x0000000007060403ULL, 0x0000000706040300ULL, 0x0000000706040301ULL, 0x0000070604030100ULL,
    0x0000000706040302ULL, 0x0000070604030200ULL, 0x0000070604030201ULL, 0x0007060403020100ULL,
    0x0000000000070605ULL, 0x0000000007060500ULL, 0x0000000007060501ULL, 0x0000000706050100ULL,
    0x0000000007060502ULL, 0x0000000706050200ULL, 0x0000000706050201ULL, 0x0000070605020100ULL,
    0x0000000007060503ULL, 0x0000000706050300ULL, 0x0000000706050301ULL, 0x0000070605030100ULL,
    0x0000000706050302ULL, 0x0000070605030200ULL, 0x0000070605030201ULL, 0x0007060503020100ULL,
    0x0000000007060504ULL, 0x0000000706050400ULL, 0x0000000706050401ULL, 0x0000070605040100ULL,
    0x0000000706050402ULL, 0x0000070605040200ULL, 0x0000070605040201ULL, 0x0007060504020100ULL,
    0x0000000706050403ULL, 0x0000070605040300ULL, 0x0000070605040301ULL, 0x0007060504030100ULL,
    0x0000070605040302ULL, 0x0007060504030200ULL, 0x0007060504030201ULL, 0x0706050403020100ULL,
};
static inline __m256i fl_lanes8(unsigned bits) {
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)fl_lanes[bits & 255]));
}
static inline int fl_compress_idx(int32_t *idx, unsigned bits, int32_t base) {
    _mm256_storeu_si256((__m256i *)idx, _mm256_add_epi32(fl_lanes8(bits), _mm256_set1_epi32(base)));
    return __builtin_popcount(bits);
}
static inline int fl_compress_f32(float *dst, unsigned bits, vf32 v) {
    _mm256_storeu_ps(dst, _mm256_permutevar8x32_ps(v, fl_lanes8(bits)));
    return __builtin_popcount(bits);
}
static inline int fl_compress_f64(double *dst, unsigned bits, vf64 v) {
    /* double lane l is float lanes 2l, 2l + 1 */
    __m256i l = _mm256_cvtepu32_epi64(_mm256_castsi256_si128(fl_lanes8(bits)));
    l = _mm256_add_epi64(l, l);
    l = _mm256_or_si256(l, _mm256_slli_epi64(_mm256_add_epi64(l, _mm256_set1_epi64x(1)), 32));
    _mm256_storeu_pd(dst, _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), l)));
    return __builtin_popcount(bits);
}
#else
static inline int fl_compress_idx(int32_t *idx, unsigned bits, int32_t base) {
    int c = 0;
    for (; bits; bits &= bits - 1) idx[c++] = base + __builtin_ctz(bits);
    return c;
}
static inline int fl_compress_f32(float *dst, unsigned bits, vf32 v) {
    float b[vf32_W];
    int c = 0;
    vf32_store(b, v);
    for (; bits; bits &= bits - 1) dst[c++] = b[__builtin_ctz(bits)];
    return c;
}
static inline int fl_compress_f64(double *dst, unsigned bits, vf64 v) {
    double b[vf64_W];
    int c = 0;
    vf64_store(b, v);
    for (; bits; bits &= bits - 1) dst[c++] = b[__builtin_ctz(bits)];
    return c;
}
#endif

/* the compression of FL_T lanes */
#define compress_values FL_PICK(fl_compress_f32, fl_compress_f64)


static FL_T row_max(const FL_T *x, int64_t n) { return vector_max(x, n); }

static FL_T row_max_nan(const FL_T *x, int64_t n, int *nan) {
    const unsigned all = FL_W >= 32 ? ~0u : (1u << FL_W) - 1;
    FL_V a0 = VF(set1)(-INFINITY), a1 = a0, a2 = a0, a3 = a0;
    unsigned ordered = all;
    int64_t j = 0;
    for (; j + 4 * FL_W <= n; j += 4 * FL_W) {
        const FL_V v0 = VF(load)(x + j), v1 = VF(load)(x + j + FL_W), v2 = VF(load)(x + j + 2 * FL_W),
                   v3 = VF(load)(x + j + 3 * FL_W);
        a0 = VF(max)(a0, v0);
        a1 = VF(max)(a1, v1);
        a2 = VF(max)(a2, v2);
        a3 = VF(max)(a3, v3);
        const FL_V sum = VF(add)(VF(add)(v0, v1), VF(add)(v2, v3)); /* NaN: a NaN, or +inf meeting -inf */
        ordered &= VF(ge_bits)(sum, sum);
    }
    for (; j < n; j += FL_W) {
        const FL_V v = load_part(x + j, n - j, -INFINITY);
        a0 = VF(max)(a0, v);
        ordered &= VF(ge_bits)(v, v);
    }
    *nan = 0;
    if (ordered != all) /* rare: look at each value */
        for (j = 0; j < n && !*nan; j++) *nan = x[j] != x[j];
    return VF(hmax)(VF(max)(VF(max)(a0, a1), VF(max)(a2, a3)));
}

/* The first index j with x[j] >= m (0 if none): with m the row max, the argmax (lowest index on ties). */
static int64_t argmax(const FL_T *x, int64_t n, FL_T m) {
    const FL_V mv = VF(set1)(m);
    for (int64_t j = 0; j < n; j += FL_W) {
        unsigned bits = VF(ge_bits)(load_part(x + j, n - j, -INFINITY), mv);
        if (bits) return j + __builtin_ctz(bits);
    }
    return 0;
}

static FL_T chunk_bound(const FL_T *x, int64_t n, int64_t chunks) {
    FL_T bound = INFINITY;
    int64_t size = (n + chunks - 1) / chunks;
    for (int64_t lo = 0; lo < n; lo += size) {
        FL_T m = row_max(x + lo, n - lo < size ? n - lo : size);
        bound = m < bound ? m : bound;
    }
    return bound;
}

/* e[j] = exp((x[j] - m) it) over x[0..n) (m >= every x, it > 0), stored to e (16 entries of slack) and
 * returned summed. */
static double exp_weights(const FL_T *x, int64_t n, FL_T m, FL_T it, FL_T *e) {
    vf64 all[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V mv = VF(set1)(m), itv = VF(set1)(it);
    const int scaled = it != 1; /* the loop is compiled for both */
    for (int64_t j = 0; j < n; j += FL_W) {
        const FL_V ev = exp_shifted(load_part(x + j, n - j, -INFINITY), mv, itv, scaled); /* e^-inf = 0 */
        VF(store)(e + j, ev);
        VF(acc)(all, ev);
    }
    return vf64_hsum(vf64_add(all[0], all[1]));
}

/* The sum of exp((x[j] - m) it) over x[0..n) (m >= every x, it > 0), in one pass with the candidates
 * x[j] >= tau (tau > -inf): their j, x and weight to idx / vals / wts in index order, their number to
 * *count; and the max of x over each block of FL_BMAX_BLOCK to bmax. The loops over four vectors name
 * each one: arrays of vectors indexed in a loop end up on the stack. */
static inline int64_t take(int64_t c, unsigned bits, FL_V x, FL_V e, int64_t j, int32_t *idx, FL_T *vals,
                           FL_T *wts) {
    compress_values(vals + c, bits, x);
    compress_values(wts + c, bits, e);
    return c + fl_compress_idx(idx + c, bits, (int32_t)j);
}
static double exp_candidates(const FL_T *x, int64_t n, FL_T m, FL_T it, FL_T tau, int32_t *idx, FL_T *vals,
                             FL_T *wts, int64_t *count, FL_T *bmax) {
    vf64 all[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V mv = VF(set1)(m), itv = VF(set1)(it), t = VF(set1)(tau);
    const int scaled = it != 1; /* the loops are compiled for both */
    int64_t c = 0;
    for (int64_t s = 0; s < n; s += FL_BMAX_BLOCK) {
        const int64_t end = n - s < FL_BMAX_BLOCK ? n : s + FL_BMAX_BLOCK;
        FL_V top = VF(set1)(-INFINITY);
        int64_t j = s;
        for (; j + 4 * FL_W <= end; j += 4 * FL_W) {
            const FL_V x0 = VF(load)(x + j), x1 = VF(load)(x + j + FL_W), x2 = VF(load)(x + j + 2 * FL_W),
                       x3 = VF(load)(x + j + 3 * FL_W);
            const FL_V e0 = exp_shifted(x0, mv, itv, scaled), e1 = exp_shifted(x1, mv, itv, scaled),
                       e2 = exp_shifted(x2, mv, itv, scaled), e3 = exp_shifted(x3, mv, itv, scaled);
            VF(acc)(all, VF(add)(VF(add)(e0, e1), VF(add)(e2, e3)));
            top = VF(max)(top, VF(max)(VF(max)(x0, x1), VF(max)(x2, x3)));
            const unsigned b0 = VF(ge_bits)(x0, t), b1 = VF(ge_bits)(x1, t), b2 = VF(ge_bits)(x2, t),
                           b3 = VF(ge_bits)(x3, t);
            if (b0 | b1 | b2 | b3) { /* sparse candidates skip whole groups */
                c = take(c, b0, x0, e0, j, idx, vals, wts);
                c = take(c, b1, x1, e1, j + FL_W, idx, vals, wts);
                c = take(c, b2, x2, e2, j + 2 * FL_W, idx, vals, wts);
                c = take(c, b3, x3, e3, j + 3 * FL_W, idx, vals, wts);
            }
        }
        for (; j < end; j += FL_W) {
            const FL_V xv = load_part(x + j, end - j, -INFINITY); /* e^-inf = 0 */
            const FL_V ev = exp_shifted(xv, mv, itv, scaled);
            VF(acc)(all, ev);
            top = VF(max)(top, xv);
            c = take(c, VF(ge_bits)(xv, t), xv, ev, j, idx, vals, wts);
        }
        bmax[s / FL_BMAX_BLOCK] = VF(hmax)(top);
    }
    *count = c;
    return vf64_hsum(vf64_add(all[0], all[1]));
}

/* The pass over a flat row's top-p band [a, b): e = exp((x - m) it) over x[0..n), returned summed as by
 * exp_collect; the x[j] with a <= x[j] < b to vals in index order (16 entries of slack), their number to
 * count[0], and how many come before each block of FL_BMAX_BLOCK to bfirst; the number of x[j] >= b to
 * count[1] and their weight in each block to bup (each lane sums at most 16 values in T, then goes to
 * float64). */
static inline FL_V add_ge4(FL_V acc, FL_V t, FL_V x0, FL_V e0, FL_V x1, FL_V e1, FL_V x2, FL_V e2, FL_V x3,
                               FL_V e3) {
    return VF(add_ge)(VF(add_ge)(VF(add_ge)(VF(add_ge)(acc, x0, t, e0), x1, t, e1), x2, t, e2), x3, t, e3);
}
static double exp_band(const FL_T *x, int64_t n, FL_T m, FL_T it, FL_T a, FL_T b, FL_T *vals,
                               int64_t *count, double *bup, int32_t *bfirst) {
    vf64 all[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V mv = VF(set1)(m), itv = VF(set1)(it), av = VF(set1)(a), bv = VF(set1)(b), zero = VF(set1)(0);
    const int scaled = it != 1; /* the loops are compiled for both */
    int64_t c = 0, cu = 0;
    for (int64_t s = 0; s < n; s += FL_BMAX_BLOCK) {
        const int64_t end = n - s < FL_BMAX_BLOCK ? n : s + FL_BMAX_BLOCK;
        FL_V up = zero;
        vf64 bs[2] = {vf64_set1(0), vf64_set1(0)};
        int64_t j = s;
        int run = 0;
        bfirst[s / FL_BMAX_BLOCK] = (int32_t)c;
        for (; j + 4 * FL_W <= end; j += 4 * FL_W) {
            const FL_V x0 = VF(load)(x + j), x1 = VF(load)(x + j + FL_W), x2 = VF(load)(x + j + 2 * FL_W),
                       x3 = VF(load)(x + j + 3 * FL_W);
            const FL_V e0 = exp_shifted(x0, mv, itv, scaled), e1 = exp_shifted(x1, mv, itv, scaled),
                       e2 = exp_shifted(x2, mv, itv, scaled), e3 = exp_shifted(x3, mv, itv, scaled);
            VF(acc)(all, VF(add)(VF(add)(e0, e1), VF(add)(e2, e3)));
            up = add_ge4(up, bv, x0, e0, x1, e1, x2, e2, x3, e3);
            const unsigned h0 = VF(ge_bits)(x0, bv), h1 = VF(ge_bits)(x1, bv), h2 = VF(ge_bits)(x2, bv),
                           h3 = VF(ge_bits)(x3, bv);
            cu += __builtin_popcount(h0) + __builtin_popcount(h1) + __builtin_popcount(h2) + __builtin_popcount(h3);
            const unsigned b0 = VF(ge_bits)(x0, av) & ~h0, b1 = VF(ge_bits)(x1, av) & ~h1,
                           b2 = VF(ge_bits)(x2, av) & ~h2, b3 = VF(ge_bits)(x3, av) & ~h3;
            if (b0 | b1 | b2 | b3) {
                c += compress_values(vals + c, b0, x0);
                c += compress_values(vals + c, b1, x1);
                c += compress_values(vals + c, b2, x2);
                c += compress_values(vals + c, b3, x3);
            }
            if (++run == 4) { /* each lane sums 16 values in T at most */
                VF(acc)(bs, up);
                up = zero;
                run = 0;
            }
        }
        for (; j < end; j += FL_W) {
            const FL_V xv = load_part(x + j, end - j, -INFINITY); /* e^-inf = 0, never >= a */
            const FL_V ev = exp_shifted(xv, mv, itv, scaled);
            const unsigned hb = VF(ge_bits)(xv, bv);
            VF(acc)(all, ev);
            up = VF(add_ge)(up, xv, bv, ev);
            cu += __builtin_popcount(hb);
            c += compress_values(vals + c, VF(ge_bits)(xv, av) & ~hb, xv);
        }
        VF(acc)(bs, up);
        bup[s / FL_BMAX_BLOCK] = vf64_hsum(vf64_add(bs[0], bs[1]));
    }
    count[0] = c;
    count[1] = cu;
    return vf64_hsum(vf64_add(all[0], all[1]));
}

/* The number of v[j] >= tau. */
static int64_t count_ge(const FL_T *v, int64_t n, FL_T tau) {
    const FL_V t = VF(set1)(tau);
    int64_t m = 0;
    for (int64_t j = 0; j < n; j += FL_W) /* NaN padding is never >= tau */
        m += __builtin_popcount(VF(ge_bits)(load_part(v + j, n - j, NAN), t));
    return m;
}

/* The indices j with v[j] >= tau to idx and their values to vals, in increasing order; returns their
 * number. */
static int64_t collect_ge(const FL_T *v, int64_t n, FL_T tau, int32_t *idx, FL_T *vals) {
    const FL_V t = VF(set1)(tau);
    int64_t m = 0, j = 0;
    for (; j + 4 * FL_W <= n; j += 4 * FL_W) {
        const FL_V v0 = VF(load)(v + j), v1 = VF(load)(v + j + FL_W), v2 = VF(load)(v + j + 2 * FL_W),
                   v3 = VF(load)(v + j + 3 * FL_W);
        const unsigned b0 = VF(ge_bits)(v0, t), b1 = VF(ge_bits)(v1, t), b2 = VF(ge_bits)(v2, t),
                       b3 = VF(ge_bits)(v3, t);
        if (!(b0 | b1 | b2 | b3)) continue; /* sparse candidates skip whole groups */
        compress_values(vals + m, b0, v0);
        m += fl_compress_idx(idx + m, b0, (int32_t)j);
        compress_values(vals + m, b1, v1);
        m += fl_compress_idx(idx + m, b1, (int32_t)(j + FL_W));
        compress_values(vals + m, b2, v2);
        m += fl_compress_idx(idx + m, b2, (int32_t)(j + 2 * FL_W));
        compress_values(vals + m, b3, v3);
        m += fl_compress_idx(idx + m, b3, (int32_t)(j + 3 * FL_W));
    }
    for (; j < n; j += FL_W) {
        const FL_V vv = load_part(v + j, n - j, NAN); /* NaN padding is never >= tau */
        const unsigned bits = VF(ge_bits)(vv, t);
        compress_values(vals + m, bits, vv);
        m += fl_compress_idx(idx + m, bits, (int32_t)j);
    }
    return m;
}

/* mass[k] ~ the sum of w[j] over v[j] >= t[k], k < FL_BANDS: sums in T over runs of 64 vectors, then
 * in float64 (relative error below 4e-6: callers keep a margin). w >= 0. */
static void band_masses(const FL_T *v, const FL_T *w, int64_t n, const FL_T *t, double *mass) {
    vf64 acc[FL_BANDS][2];
    FL_V tv[FL_BANDS], part[FL_BANDS];
    for (int k = 0; k < FL_BANDS; k++) {
        acc[k][0] = acc[k][1] = vf64_set1(0);
        tv[k] = VF(set1)(t[k]);
    }
    for (int64_t s = 0; s < n; s += 64 * FL_W) {
        const int64_t end = n - s < 64 * FL_W ? n : s + 64 * FL_W;
        for (int k = 0; k < FL_BANDS; k++) part[k] = VF(set1)(0);
        int64_t j = s;
        for (; j + FL_W <= end; j += FL_W) {
            const FL_V vv = VF(load)(v + j), ww = VF(load)(w + j);
            for (int k = 0; k < FL_BANDS; k++) part[k] = VF(add_ge)(part[k], vv, tv[k], ww);
        }
        if (j < end) {
            const FL_V vv = load_part(v + j, end - j, -INFINITY), ww = load_part(w + j, end - j, 0);
            for (int k = 0; k < FL_BANDS; k++) part[k] = VF(add_ge)(part[k], vv, tv[k], ww);
        }
        for (int k = 0; k < FL_BANDS; k++) VF(acc)(acc[k], part[k]);
    }
    for (int k = 0; k < FL_BANDS; k++) mass[k] = vf64_hsum(vf64_add(acc[k][0], acc[k][1]));
}

/* The j with a <= v[j] < b into pos, their v, w into ov, ow (may be v, w themselves; 16 entries of
 * slack), in order; *above = the float64 sum of w[j] over v[j] >= b, *count_above their number.
 * Returns the count. */
static int64_t collect_band(const FL_T *v, const FL_T *w, int64_t n, FL_T a, FL_T b, int32_t *pos, FL_T *ov,
                                    FL_T *ow, double *above, int64_t *count_above) {
    const FL_V av = VF(set1)(a), bv = VF(set1)(b), zero = VF(set1)(0);
    vf64 up[2] = {vf64_set1(0), vf64_set1(0)};
    int64_t c = 0, cu = 0;
    for (int64_t j = 0; j < n; j += FL_W) { /* reads each vector before writing at c <= j */
        const FL_V vv = load_part(v + j, n - j, NAN), ww = load_part(w + j, n - j, 0);
        const unsigned hi = VF(ge_bits)(vv, bv), in = VF(ge_bits)(vv, av) & ~hi;
        VF(acc)(up, VF(sel_ge)(vv, bv, ww, zero));
        cu += __builtin_popcount(hi);
        compress_values(ov + c, in, vv);
        compress_values(ow + c, in, ww);
        c += fl_compress_idx(pos + c, in, (int32_t)j);
    }
    *above = vf64_hsum(vf64_add(up[0], up[1]));
    *count_above = cu;
    return c;
}

/* The float64 sum of q[j] over q[j] >= thr and (v[j] > cv, or v[j] == cv and j < split): the kept
 * tokens of a cut (cv, i) with split = i + 1 - the first index. */
static double kept_run(const FL_T *v, const FL_T *q, int64_t n, FL_T cv, FL_T thr, int ties) {
    const FL_V c = VF(set1)(cv), t = VF(set1)(thr), zero = VF(set1)(0);
    vf64 acc[2] = {vf64_set1(0), vf64_set1(0)};
    for (int64_t j = 0; j < n; j += FL_W) {
        const FL_V vv = load_part(v + j, n - j, -INFINITY), qq = load_part(q + j, n - j, 0);
        const FL_V kept = ties ? VF(sel_ge)(vv, c, qq, zero) : VF(sel_gt)(vv, c, qq, zero);
        VF(acc)(acc, VF(sel_ge)(qq, t, kept, zero));
    }
    return vf64_hsum(vf64_add(acc[0], acc[1]));
}
static double kept_sum(const FL_T *v, const FL_T *q, int64_t n, FL_T cv, int64_t split, FL_T thr) {
    const int64_t s0 = split <= 0 ? 0 : split >= n ? n : split - split % FL_W, s1 = s0 + FL_W < n ? s0 + FL_W : n;
    double sum = kept_run(v, q, s0, cv, thr, 1) + kept_run(v + s1, q + s1, n - s1, cv, thr, 0);
    for (int64_t j = s0; j < s1; j++) /* the vector holding the split */
        if (q[j] >= thr && (v[j] > cv || (v[j] == cv && j < split))) sum += (double)q[j];
    return sum;
}

/* plain C: the compiler vectorizes it for each level */
static void buckets(const FL_T *v, int64_t n, double lo, double scale, uint16_t *bk) {
    for (int64_t j = 0; j < n; j++) bk[j] = (uint16_t)(int)(((double)v[j] - lo) * scale);
}

static void apply_cut(const FL_T *x, const FL_T *v, FL_T *y, int64_t n, FL_T cv, int64_t split, FL_T fill) {
    const FL_V c = VF(set1)(cv), f = VF(set1)(fill);
    split = split < 0 ? 0 : split > n ? n : split; /* before split ties stay (>=), after they go (>) */
    int64_t j = 0;
    for (; j + FL_W <= split; j += FL_W) VF(store)(y + j, VF(sel_ge)(VF(load)(v + j), c, VF(load)(x + j), f));
    for (; j < n && j < split; j++) y[j] = v[j] >= cv ? x[j] : fill; /* up to the next vector boundary */
    for (; j < n && j % FL_W; j++) y[j] = v[j] > cv ? x[j] : fill;
    for (; j + FL_W <= n; j += FL_W) VF(store)(y + j, VF(sel_gt)(VF(load)(v + j), c, VF(load)(x + j), f));
    for (; j < n; j++) y[j] = v[j] > cv ? x[j] : fill;
}

const fl_select_kernels_T FL_LEVEL_TABLE(select) = {
    .row_max = row_max,
    .row_max_nan = row_max_nan,
    .argmax = argmax,
    .chunk_bound = chunk_bound,
    .exp_weights = exp_weights,
    .exp_candidates = exp_candidates,
    .exp_band = exp_band,
    .count_ge = count_ge,
    .collect_ge = collect_ge,
    .apply_cut = apply_cut,
    .buckets = buckets,
    .band_masses = band_masses,
    .collect_band = collect_band,
    .kept_sum = kept_sum,
};
