/* softmax_simd.c: row kernels of the softmax family (logsumexp, softmax / log-softmax, fused
 * cross-entropy + gradient), compiled once per SIMD level against vmath.h. The file includes itself
 * twice below, once per dtype (T = float, double); everything dtype-specific is named through FN / VF.
 *
 * One row, one read pass: an online log-sum-exp over blocks of FL_BLOCK elements. The first block takes
 * its max m, then s = sum exp(z - m). Each later block is summed against the current m while its own
 * max m_b is taken in the same loop; if m_b > m the total is rescaled by exp(m - m_b) (and the block is
 * redone from its max when m_b - m is too large for exp(z - m) to stay finite). A second pass
 * (softmax, gradient) re-reads the row and writes the output.
 * The running max is shifted to 0 when it is +-inf, so that -inf logits add exactly 0, an all -inf
 * row gives s = 0 (lse = -inf), and +inf / NaN propagate into s. Sums are accumulated in float64.
 */
#ifndef FL_T
#include <stddef.h>
#include "dispatch.h"
#include "vmath.h"

#define FL_BLOCK 2048
#define FL_MAX_JUMP 64 /* exp(64) is far from overflow in float32 */

static inline double fl_shift(double m) { return isfinite(m) ? m : 0.0; }

#define FL_T float
#define FL_V vf32
#define FL_W vf32_W
#define VF(op) vf32_##op
#define FN(name) name##_f32
#include "softmax_simd.c"
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
#include "softmax_simd.c"

const fl_softmax_kernels FL_CAT(fl_softmax_kernels_, FL_SIMD_SUFFIX) = {
    logsumexp_rows_f32, logsumexp_rows_f64, softmax_rows_f32, softmax_rows_f64, xent_rows_f32, xent_rows_f64,
};

#else /* ---------------------------------------------- template body: T = FL_T, vector = FL_V */

static inline FL_V FN(load_part)(const FL_T *p, int64_t n, FL_T fill) {
    FL_T b[FL_W];
    for (int64_t i = 0; i < FL_W; i++) b[i] = i < n ? p[i] : fill;
    return VF(load)(b);
}
static inline void FN(store_part)(FL_T *p, int64_t n, FL_V v) {
    FL_T b[FL_W];
    VF(store)(b, v);
    memcpy(p, b, (size_t)n * sizeof(FL_T));
}

/* z = u(x) / T with u = cap * tanh(x / cap) or the identity; d = dz/dx when asked for. */
typedef struct {
    FL_T inv_t, inv_cap, cap_inv_t;
    int cap, identity;
} FN(xform);

static FN(xform) FN(make_xform)(double inv_t, double cap) {
    FN(xform) tf = {(FL_T)inv_t, cap > 0 ? (FL_T)(1.0 / cap) : 0, (FL_T)(cap * inv_t), cap > 0, cap <= 0 && inv_t == 1.0};
    return tf;
}
static inline FL_V FN(apply)(const FN(xform) *tf, FL_V x, FL_V *d) {
    FL_V it = VF(set1)(tf->inv_t);
    if (tf->cap) {
        FL_V t = VF(tanh)(VF(mul)(x, VF(set1)(tf->inv_cap)));
        if (d) *d = VF(mul)(it, VF(sub)(VF(set1)(1), VF(mul)(t, t)));
        return VF(mul)(t, VF(set1)(tf->cap_inv_t));
    }
    if (d) *d = it;
    return tf->identity ? x : VF(mul)(x, it);
}
/* z and dz/dx of one element, through the same vector code as the row. */
static inline FL_T FN(apply1)(const FN(xform) *tf, FL_T x, FL_T *d) {
    FL_T zb[FL_W], db[FL_W];
    FL_V dv;
    VF(store)(zb, FN(apply)(tf, VF(set1)(x), &dv));
    VF(store)(db, dv);
    *d = db[0];
    return zb[0];
}

static void FN(transform_block)(const FN(xform) *tf, const FL_T *x, int64_t n, FL_T *z) {
    int64_t j = 0;
    for (; j + FL_W <= n; j += FL_W) VF(store)(z + j, FN(apply)(tf, VF(load)(x + j), NULL));
    if (j < n) FN(store_part)(z + j, n - j, FN(apply)(tf, FN(load_part)(x + j, n - j, 0), NULL));
}

static inline FL_T FN(block_max)(const FL_T *z, int64_t n) {
    FL_V a = VF(set1)(-INFINITY), b = a;
    int64_t j = 0;
    for (; j + 2 * FL_W <= n; j += 2 * FL_W) {
        a = VF(max)(a, VF(load)(z + j));
        b = VF(max)(b, VF(load)(z + j + FL_W));
    }
    for (; j + FL_W <= n; j += FL_W) a = VF(max)(a, VF(load)(z + j));
    if (j < n) b = VF(max)(b, FN(load_part)(z + j, n - j, -INFINITY));
    return VF(hmax)(VF(max)(a, b));
}

/* sum_j exp(z_j - m), for z_j - m <= FL_MAX_JUMP; with bmax != NULL also the block's max into *bmax.
 * Groups of four vectors are added pairwise in T (relative error <= 2 ulp(T) per group), the groups in
 * float64. While it computes, it prefetches the same span of `next` (the next block of the row, or
 * NULL), so that the next block is in cache when it is reached. */
static inline double FN(block_expsum)(const FL_T *z, int64_t n, FL_T m, const FL_T *next, FL_T *bmax) {
    vf64 acc[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V mv = VF(set1)(m);
    FL_V mx = VF(set1)(-INFINITY);
    int64_t j = 0;
    for (; j + 4 * FL_W <= n; j += 4 * FL_W) {
        if (next)
            for (size_t k = 0; k < 4 * FL_W * sizeof(FL_T); k += 64) __builtin_prefetch((const char *)(next + j) + k);
        FL_V v0 = VF(load)(z + j), v1 = VF(load)(z + j + FL_W);
        FL_V v2 = VF(load)(z + j + 2 * FL_W), v3 = VF(load)(z + j + 3 * FL_W);
        if (bmax) mx = VF(max)(mx, VF(max)(VF(max)(v0, v1), VF(max)(v2, v3)));
        FL_V e0 = VF(expn)(VF(sub)(v0, mv)), e1 = VF(expn)(VF(sub)(v1, mv));
        FL_V e2 = VF(expn)(VF(sub)(v2, mv)), e3 = VF(expn)(VF(sub)(v3, mv));
        VF(acc)(acc, VF(add)(VF(add)(e0, e1), VF(add)(e2, e3)));
    }
    for (; j < n; j += FL_W) {
        FL_V v = n - j >= FL_W ? VF(load)(z + j) : FN(load_part)(z + j, n - j, -INFINITY);
        if (bmax) mx = VF(max)(mx, v);
        VF(acc)(acc, VF(expn)(VF(sub)(v, mv)));
    }
    if (bmax) *bmax = VF(hmax)(mx);
    return vf64_hsum(vf64_add(acc[0], acc[1]));
}

/* sum_j w_j z_j (w == NULL: all ones), in float64 */
static inline double FN(block_dot)(const FL_T *z, const FL_T *w, int64_t n) {
    vf64 acc[2] = {vf64_set1(0), vf64_set1(0)};
    int64_t j = 0;
    for (; j + FL_W <= n; j += FL_W) VF(acc)(acc, w ? VF(mul)(VF(load)(z + j), VF(load)(w + j)) : VF(load)(z + j));
    if (j < n) {
        FL_V zv = FN(load_part)(z + j, n - j, 0);
        VF(acc)(acc, w ? VF(mul)(zv, FN(load_part)(w + j, n - j, 0)) : zv);
    }
    return vf64_hsum(vf64_add(acc[0], acc[1]));
}

static int FN(has_nan)(const FL_T *x, int64_t n) {
    for (int64_t j = 0; j < n; j++)
        if (x[j] != x[j]) return 1;
    return 0;
}

/* Row statistics. With s = sum_c exp(z_c - shift):
 *   p_c = exp(z_c - shift) * inv_s,  log p_c = (z_c - shift) - log_s = z_c - norm,  lse = log sum_c exp z_c.
 * norm equals lse except in a row holding +inf, where lse = +inf (NaN if the row also holds NaN) and
 * norm, log_s, inv_s are NaN (torch: such rows normalize to NaN). */
typedef struct {
    FL_T shift, log_s, inv_s;
    double lse, norm, zdot; /* zdot = sum_c w_c z_c when asked for */
} FN(stats);

static FN(stats) FN(row_stats)(const FL_T *x, int64_t n, const FN(xform) *tf, const FL_T *w, int want_zdot) {
    FL_T buf[FL_BLOCK];
    FL_T m = -INFINITY; /* running max; never NaN (NaN fails every comparison) */
    double s = 0, zdot = 0;
    for (int64_t off = 0; off < n; off += FL_BLOCK) {
        int64_t len = n - off < FL_BLOCK ? n - off : FL_BLOCK;
        const FL_T *z = x + off, *next = off + FL_BLOCK < n ? x + off + FL_BLOCK : NULL;
        if (!tf->identity) {
            FN(transform_block)(tf, z, len, buf);
            z = buf;
        }
        if (want_zdot) zdot += FN(block_dot)(z, w ? w + off : NULL, len);
        FL_T bm;
        if (isfinite(m)) { /* one pass: the sum relative to the max so far, and the block's max */
            double bs = FN(block_expsum)(z, len, m, next, &bm);
            if (!(bm > m)) { /* the usual case once the row's max has been met */
                s += bs;
                continue;
            }
            if (bm - m <= FL_MAX_JUMP) { /* exp(z - m) did not overflow: rescale to the new max */
                s = (s + bs) * exp((double)m - (double)bm);
                m = bm;
                continue;
            }
        }
        bm = FN(block_max)(z, len); /* first block, or a jump too large: max first, then the sum */
        if (bm > m) {
            if (s != 0) s *= exp(fl_shift(m) - fl_shift(bm));
            m = bm;
        }
        s += FN(block_expsum)(z, len, (FL_T)fl_shift(m), next, NULL);
    }
    FN(stats) st;
    st.shift = (FL_T)fl_shift(m);
    st.zdot = zdot;
    if (m == INFINITY) {
        st.lse = FN(has_nan)(x, n) ? NAN : INFINITY;
        st.norm = NAN;
        st.log_s = st.inv_s = (FL_T)NAN;
    } else {
        st.lse = st.norm = fl_shift(m) + log(s);
        st.log_s = (FL_T)log(s);
        st.inv_s = (FL_T)(1.0 / s);
    }
    return st;
}

static int FN(logsumexp_rows)(const FL_T *x, const fl_rows *r, double inv_t, double *out) {
    FN(xform) tf = FN(make_xform)(inv_t, 0);
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++) out[i] = FN(row_stats)(x + i * r->x_stride, r->cols, &tf, NULL, 0).lse;
    return FL_OK;
}

static int FN(softmax_rows)(const FL_T *x, FL_T *y, const fl_rows *r, double inv_t, int log) {
    FN(xform) tf = FN(make_xform)(inv_t, 0);
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++) {
        const FL_T *xi = x + i * r->x_stride;
        FL_T *yi = y + i * r->y_stride;
        FN(stats) st = FN(row_stats)(xi, r->cols, &tf, NULL, 0);
        const FL_V sh = VF(set1)(st.shift), ls = VF(set1)(st.log_s), is = VF(set1)(st.inv_s);
        for (int64_t j = 0; j < r->cols; j += FL_W) {
            int64_t len = r->cols - j < FL_W ? r->cols - j : FL_W;
            FL_V z = VF(sub)(FN(apply)(&tf, len == FL_W ? VF(load)(xi + j) : FN(load_part)(xi + j, len, 0), NULL), sh);
            FL_V v = log ? VF(sub)(z, ls) : VF(mul)(VF(expn)(z), is);
            if (len == FL_W) VF(store)(yi + j, v);
            else FN(store_part)(yi + j, len, v);
        }
    }
    return FL_OK;
}

/* One row's loss, and its gradient row when g != NULL (g may alias x: read before written). */
static double FN(xent_row)(const FL_T *x, FL_T *g, int64_t n, int64_t y, const FN(xform) *tf, const fl_xent *p,
                           double class_weight_sum, double scale) {
    const FL_T *wt = (const FL_T *)p->weight_t;
    const double e = p->label_smoothing, zl = p->z_loss;
    const double wy = p->weight ? p->weight[y] : 1.0;
    FL_T dy;
    const FL_T zy = FN(apply1)(tf, x[y], &dy);
    FN(stats) st = FN(row_stats)(x, n, tf, wt, e > 0);
    double loss = (1 - e) * wy * (st.norm - zy) + zl * wy * st.lse * st.lse;
    if (e > 0) loss += e / (double)n * (class_weight_sum * st.norm - st.zdot);
    if (!g) return loss;

    /* g_c = scale * d_c * (A p_c - (e/V) w_c) - [c == y] scale * d_y * (1-e) w_y, p_c = exp(z_c - shift) inv_s.
     * Without softcap d_c = 1/T is folded into the constants: g_c = exp(z_c - shift) A1 - B1 w_c. */
    const double a = (1 - e) * wy + e / (double)n * class_weight_sum + 2 * zl * wy * st.lse;
    const double fold = tf->cap ? 1.0 : (double)tf->inv_t;
    const FL_V a1 = VF(set1)((FL_T)(a * (double)st.inv_s * scale * fold));
    const FL_V nb1 = VF(set1)((FL_T)(-e / (double)n * scale * fold));
    const FL_V sh = VF(set1)(st.shift);
    for (int64_t j = 0; j < n; j += FL_W) {
        int64_t len = n - j < FL_W ? n - j : FL_W;
        FL_V d, xv = len == FL_W ? VF(load)(x + j) : FN(load_part)(x + j, len, 0);
        FL_V ez = VF(expn)(VF(sub)(FN(apply)(tf, xv, &d), sh));
        FL_V nb = wt ? VF(mul)(nb1, len == FL_W ? VF(load)(wt + j) : FN(load_part)(wt + j, len, 0)) : nb1;
        FL_V gv = VF(fma)(ez, a1, nb);
        if (tf->cap) gv = VF(mul)(gv, d);
        if (len == FL_W) VF(store)(g + j, gv);
        else FN(store_part)(g + j, len, gv);
    }
    g[y] -= (FL_T)(scale * (double)dy * (1 - e) * wy);
    return loss;
}

static int FN(xent_rows)(const FL_T *x, FL_T *g, const fl_rows *r, const fl_xent *p, double class_weight_sum,
                         double scale) {
    FN(xform) tf = FN(make_xform)(p->inv_temperature, p->softcap);
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++) {
        int64_t y = p->targets[i];
        FL_T *gi = g ? g + i * r->y_stride : NULL;
        if (y == p->ignore_index) {
            p->row_loss[i] = 0;
            if (gi) memset(gi, 0, (size_t)r->cols * sizeof(FL_T));
        } else {
            p->row_loss[i] = FN(xent_row)(x + i * r->x_stride, gi, r->cols, y, &tf, p, class_weight_sum, scale);
        }
    }
    return FL_OK;
}

#endif
