/* softmax_simd.c: row kernels of the softmax family (logsumexp, softmax / log-softmax, fused
 * cross-entropy + gradient, entropy, KL, temperature statistics), written against vmath.h and compiled
 * once per SIMD level and dtype (dtype.h); exports the table fl_softmax_<dtype>_<level>.
 *
 * One row, one read pass: an online log-sum-exp over blocks of FL_BLOCK elements. The first block takes
 * its max m, then s = sum exp(z - m). Each later block is summed against the current m while its own
 * max m_b is taken in the same loop; if m_b > m the total is rescaled by exp(m - m_b) (and the block is
 * redone from its max when m_b - m is too large for exp(z - m) to stay finite).
 * Softmax and the gradient (without softcap) keep the terms exp(z - m) of that pass in their output row
 * (marks records which m each stretch is relative to) and a second, exp-free pass rescales them;
 * log-softmax and the softcap gradient recompute from the input in their second pass.
 * The running max is shifted to 0 while it is -inf, so that -inf logits add exactly 0 and an all -inf
 * row gives s = 0 (lse = -inf); NaN propagates into s; once the max is +inf the row normalizes to NaN and
 * only NaN versus +inf is tracked (for logsumexp). Temperature is applied inside exp, after the max is
 * subtracted. Terms are summed in groups of four vectors in T, the groups in float64.
 */
#include <stddef.h>
#include "vmath.h"
#include "dtype.h"

#define FL_BLOCK 2048
#define FL_MAX_JUMP 64   /* a later block may raise the max by this much in one pass: exp(64) is finite */
#define FL_SPLIT 60.0    /* rescale factors below e^-FL_SPLIT are applied in two steps */
#define FL_MAX_MARKS 256 /* rises of the max recorded before the stored terms are rebased */

static inline double fl_shift(double m) { return isfinite(m) ? m : 0.0; }

/* Rebase entropy sums from max m to a larger max m' (s != 0): s <- s e^(m - m'),
 * u = sum e (z - m) <- e^(m - m') (u - (m' - m) s). */
static inline void fl_rebase(double *s, double *u, double m, double m_new) {
    const double dm = m_new - m, f = exp(-dm);
    *u = f * (*u - dm * *s);
    *s *= f;
}

static inline void store_part(FL_T *p, int64_t n, FL_V v) {
    FL_T b[FL_W];
    VF(store)(b, v);
    memcpy(p, b, (size_t)n * sizeof(FL_T));
}

/* z = v * it, v = cap * tanh(x / cap) with softcap, else v = x; it = 1/T. The kernels work on v and
 * apply it inside exp ((v - max) * it), so that the temperature never scales a large v before the max is
 * subtracted. d = dz/dx = it * (1 - tanh^2) or it. */
typedef struct {
    FL_T it, inv_cap, cap_f; /* it: 1/T in T, for the vector code */
    double it_d;             /* 1/T in float64, for the row totals */
    int cap;
} xform;

static xform make_xform(double inv_t, double cap) {
    xform tf = {(FL_T)inv_t, cap > 0 ? (FL_T)(1.0 / cap) : 0, (FL_T)cap, inv_t, cap > 0};
    return tf;
}
static inline FL_V apply(const xform *tf, FL_V x, FL_V *d) {
    FL_V it = VF(set1)(tf->it);
    if (tf->cap) {
        FL_V t = VF(tanh)(VF(mul)(x, VF(set1)(tf->inv_cap)));
        if (d) *d = VF(mul)(it, VF(sub)(VF(set1)(1), VF(mul)(t, t)));
        return VF(mul)(t, VF(set1)(tf->cap_f));
    }
    if (d) *d = it;
    return x;
}
/* v and dz/dx of one element, through the same vector code as the row. */
static inline FL_T apply1(const xform *tf, FL_T x, FL_T *d) {
    FL_T zb[FL_W], db[FL_W];
    FL_V dv;
    VF(store)(zb, apply(tf, VF(set1)(x), &dv));
    VF(store)(db, dv);
    *d = db[0];
    return zb[0];
}

static void transform_block(const xform *tf, const FL_T *x, int64_t n, FL_T *z) {
    int64_t j = 0;
    for (; j + FL_W <= n; j += FL_W) VF(store)(z + j, apply(tf, VF(load)(x + j), NULL));
    if (j < n) store_part(z + j, n - j, apply(tf, load_part(x + j, n - j, 0), NULL));
}

/* sum_j exp((v_j - m) * it), for (v_j - m) * it <= FL_MAX_JUMP; with bmax != NULL also the block's max
 * into *bmax, with e != NULL also the terms into e[j]. Groups of four vectors are added pairwise in T
 * (relative error <= 2 ulp(T) per group), the groups in float64. While it computes, it prefetches the
 * same span of `next` (the next block of the row, or NULL), so that the next block is in cache when it
 * is reached. */
static inline double block_expsum(const FL_T *z, int64_t n, FL_T m, FL_T it, int scaled, const FL_T *next,
                                     FL_T *bmax, FL_T *e) {
    vf64 acc[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V mv = VF(set1)(m), itv = VF(set1)(it);
    FL_V mx = VF(set1)(-INFINITY);
    int64_t j = 0;
    for (; j + 4 * FL_W <= n; j += 4 * FL_W) {
        if (next)
            for (size_t k = 0; k < 4 * FL_W * sizeof(FL_T); k += 64) __builtin_prefetch((const char *)(next + j) + k);
        FL_V v0 = VF(load)(z + j), v1 = VF(load)(z + j + FL_W);
        FL_V v2 = VF(load)(z + j + 2 * FL_W), v3 = VF(load)(z + j + 3 * FL_W);
        if (bmax) mx = VF(max)(mx, VF(max)(VF(max)(v0, v1), VF(max)(v2, v3)));
        FL_V e0 = exp_shifted(v0, mv, itv, scaled), e1 = exp_shifted(v1, mv, itv, scaled);
        FL_V e2 = exp_shifted(v2, mv, itv, scaled), e3 = exp_shifted(v3, mv, itv, scaled);
        if (e) {
            VF(store)(e + j, e0);
            VF(store)(e + j + FL_W, e1);
            VF(store)(e + j + 2 * FL_W, e2);
            VF(store)(e + j + 3 * FL_W, e3);
        }
        VF(acc)(acc, VF(add)(VF(add)(e0, e1), VF(add)(e2, e3)));
    }
    for (; j < n; j += FL_W) {
        int64_t len = n - j < FL_W ? n - j : FL_W;
        FL_V v = len == FL_W ? VF(load)(z + j) : load_part(z + j, len, -INFINITY);
        if (bmax) mx = VF(max)(mx, v);
        FL_V ev = exp_shifted(v, mv, itv, scaled);
        if (e) store_part(e + j, len, ev);
        VF(acc)(acc, ev);
    }
    if (bmax) *bmax = VF(hmax)(mx);
    return vf64_hsum(vf64_add(acc[0], acc[1]));
}

/* sum_j w_j (v_j - a) (w == NULL: all ones), in float64 */
static inline double block_dot(const FL_T *z, const FL_T *w, int64_t n, FL_T a) {
    vf64 acc[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V av = VF(set1)(a);
    int64_t j = 0;
    for (; j < n; j += FL_W) {
        int64_t len = n - j < FL_W ? n - j : FL_W;
        FL_V d = VF(sub)(len == FL_W ? VF(load)(z + j) : load_part(z + j, len, a), av);
        VF(acc)(acc, w ? VF(mul)(d, len == FL_W ? VF(load)(w + j) : load_part(w + j, len, 0)) : d);
    }
    return vf64_hsum(vf64_add(acc[0], acc[1]));
}

static int has_nan(const FL_T *x, int64_t n) {
    for (int64_t j = 0; j < n; j++)
        if (x[j] != x[j]) return 1;
    return 0;
}

/* Stored exponentials: out[start[k] .. start[k+1]) holds exp((v - shift[k]) * it), shifts increasing;
 * each term is <= exp(FL_MAX_JUMP). */
typedef struct {
    int count;
    int64_t start[FL_MAX_MARKS];
    FL_T shift[FL_MAX_MARKS];
} marks;

/* out[j] = exp((v_j - F) * it) * a + nb w_j for j < end (w == NULL: nb), from the stored terms. The
 * factor exp((shift_k - F) * it) is applied in two steps when it is below e^-FL_SPLIT, so that no
 * term that is representable after scaling is flushed on the way. */
static void rescale(FL_T *out, int64_t end, const marks *mk, FL_T F, double it, FL_T a, FL_T nb,
                        const FL_T *w) {
    const FL_V av = VF(set1)(a), nbv = VF(set1)(nb);
    for (int k = 0; k < (mk->count ? mk->count : 1); k++) {
        int64_t lo = mk->count ? mk->start[k] : 0, hi = k + 1 < mk->count ? mk->start[k + 1] : end;
        double lf = mk->count ? ((double)mk->shift[k] - (double)F) * it : 0; /* log of the factor, <= 0 */
        const FL_V f1 = VF(set1)((FL_T)exp(lf > -FL_SPLIT ? lf : -FL_SPLIT));
        const FL_V f2 = VF(set1)((FL_T)exp(lf > -FL_SPLIT ? 0 : lf + FL_SPLIT));
        const int split = lf < -FL_SPLIT;
        for (int64_t j = lo; j < hi; j += FL_W) {
            int64_t len = hi - j < FL_W ? hi - j : FL_W;
            FL_V e = VF(mul)(len == FL_W ? VF(load)(out + j) : load_part(out + j, len, 0), f1);
            if (split) e = VF(mul)(e, f2);
            FL_V b = w ? VF(mul)(nbv, len == FL_W ? VF(load)(w + j) : load_part(w + j, len, 0)) : nbv;
            FL_V v = VF(fma)(e, av, b);
            if (len == FL_W) VF(store)(out + j, v);
            else store_part(out + j, len, v);
        }
    }
}

/* Note that out[off ...] holds terms relative to sh. When the table is full, first rebase everything
 * stored to sh (an extra pass over out[0, off), once every FL_MAX_MARKS rises of the max). */
static void mark(marks *mk, FL_T *out, int64_t off, FL_T sh, double it) {
    if (mk->count > 0 && mk->shift[mk->count - 1] == sh) return;
    if (mk->count == FL_MAX_MARKS) {
        rescale(out, off, mk, sh, it, 1, 0, NULL);
        mk->count = 0;
    }
    mk->start[mk->count] = mk->count ? off : 0; /* the first mark also covers a leading all -inf prefix */
    mk->shift[mk->count++] = sh;
}

/* Row statistics, with s = sum_c exp((v_c - shift) * it):
 *   p_c = exp((v_c - shift) * it) * inv_s,  log p_c = (v_c - shift) * it - log_s,
 *   lse = log sum_c exp(z_c) = shift * it + log s.
 * A row holding +inf (pinf) normalizes to NaN (torch); its lse is +inf, or NaN if it also holds NaN.
 * An all -inf row has s = 0: lse = -inf, and NaN probabilities. */
typedef struct {
    FL_T shift, log_s, inv_s;
    double log_s_d, lse, vdot; /* vdot = sum_c w_c (v_c - anchor) when asked for */
    int pinf;                  /* the row holds +inf (then out, if given, is not filled) */
} stats;

/* One read pass over a row. With out != NULL it also leaves the terms exp((v_c - shift_k) * it) in out
 * (which may be x itself: each block is written only after it has been read), described by *mk, for
 * rescale. */
static stats row_stats(const FL_T *x, int64_t n, const xform *tf, const FL_T *w, int want_dot,
                               FL_T anchor, FL_T *out, marks *mk) {
    FL_T buf[FL_BLOCK], ebuf[FL_BLOCK];
    const FL_T it = tf->it;
    const int scaled = tf->it_d != 1.0;
    FL_T m = -INFINITY; /* running max of v; never NaN (NaN fails every comparison) */
    double s = 0, vdot = 0;
    int nan_seen = 0;   /* tracked once the max is +inf, when s no longer tells */
    if (mk) mk->count = 0;
    for (int64_t off = 0; off < n; off += FL_BLOCK) {
        int64_t len = n - off < FL_BLOCK ? n - off : FL_BLOCK;
        const FL_T *z = x + off, *next = off + FL_BLOCK < n ? x + off + FL_BLOCK : NULL;
        /* terms go straight to out, or through ebuf when out is x itself (not yet read) */
        FL_T *e = !out ? NULL : out == x ? ebuf : out + off, sh;
        if (tf->cap) {
            transform_block(tf, z, len, buf);
            z = buf;
        }
        if (want_dot) vdot += block_dot(z, w ? w + off : NULL, len, anchor);
        if (m == INFINITY) { /* the row normalizes to NaN: only NaN vs +inf is left to tell for lse */
            nan_seen |= has_nan(z, len);
            continue;
        }
        FL_T bm;
        int done = 0;
        if (isfinite(m)) { /* one pass: the sum relative to the max so far, and the block's max */
            double bs = scaled ? block_expsum(z, len, m, it, 1, next, &bm, e)
                               : block_expsum(z, len, m, it, 0, next, &bm, e);
            sh = m;
            if (!(bm > m)) { /* the usual case once the row's max has been met */
                s += bs;
                done = 1;
            } else if (((double)bm - (double)m) * tf->it_d <= FL_MAX_JUMP) { /* terms finite: rescale */
                s = (s + bs) * exp(((double)m - (double)bm) * tf->it_d);
                m = bm;
                done = 1;
            }
        }
        if (!done) { /* first block, or a jump too large: max first, then the sum */
            bm = vector_max(z, len);
            if (bm == INFINITY) {
                nan_seen = s != s || has_nan(z, len);
                m = bm;
                continue;
            }
            if (bm > m) {
                if (s != 0) s *= exp((fl_shift(m) - fl_shift(bm)) * tf->it_d);
                m = bm;
            }
            sh = (FL_T)fl_shift(m);
            s += scaled ? block_expsum(z, len, sh, it, 1, next, NULL, e)
                        : block_expsum(z, len, sh, it, 0, next, NULL, e);
        }
        if (out) {
            if (isfinite(m)) mark(mk, out, off, sh, tf->it_d);
            if (e == ebuf) memcpy(out + off, ebuf, (size_t)len * sizeof(FL_T));
        }
    }
    stats st;
    st.shift = (FL_T)fl_shift(m);
    st.vdot = vdot;
    st.pinf = m == INFINITY;
    st.log_s_d = st.pinf ? NAN : log(s);
    st.lse = st.pinf ? (nan_seen ? NAN : INFINITY) : (double)st.shift * tf->it_d + st.log_s_d;
    st.log_s = (FL_T)st.log_s_d;
    st.inv_s = st.pinf ? (FL_T)NAN : (FL_T)(1.0 / s);
    return st;
}

/* out[0, n) = NaN: the rows that normalize to NaN. */
static void fill_nan(FL_T *out, int64_t n) {
    for (int64_t j = 0; j < n; j++) out[j] = (FL_T)NAN;
}

static int logsumexp_rows(const FL_T *x, const fl_rows *r, double inv_t, double *out) {
    xform tf = make_xform(inv_t, 0);
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++)
        out[i] = row_stats(x + i * r->x_stride, r->cols, &tf, NULL, 0, 0, NULL, NULL).lse;
    return FL_OK;
}

static int softmax_rows(const FL_T *x, FL_T *y, const fl_rows *r, double inv_t, int log) {
    xform tf = make_xform(inv_t, 0);
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++) {
        const FL_T *xi = x + i * r->x_stride;
        FL_T *yi = y + i * r->y_stride;
        const int64_t n = r->cols;
        if (!log) { /* p = exp((v - shift) * it) * inv_s from the stored terms */
            marks mk;
            stats st = row_stats(xi, n, &tf, NULL, 0, 0, yi, &mk);
            if (st.pinf) fill_nan(yi, n);
            else rescale(yi, n, &mk, st.shift, tf.it_d, st.inv_s, 0, NULL);
            continue;
        }
        stats st = row_stats(xi, n, &tf, NULL, 0, 0, NULL, NULL);
        const FL_V sh = VF(set1)(st.shift), ls = VF(set1)(st.log_s), itv = VF(set1)(tf.it);
        for (int64_t j = 0; j < n; j += FL_W) {
            int64_t len = n - j < FL_W ? n - j : FL_W;
            FL_V v = len == FL_W ? VF(load)(xi + j) : load_part(xi + j, len, 0);
            v = VF(sub)(VF(mul)(VF(sub)(v, sh), itv), ls);
            if (len == FL_W) VF(store)(yi + j, v);
            else store_part(yi + j, len, v);
        }
    }
    return FL_OK;
}

/* One row's loss, and its gradient row when g != NULL (g may alias x: read before written). */
static double xent_row(const FL_T *x, FL_T *g, int64_t n, int64_t y, const xform *tf, const fl_xent *p,
                           double class_weight_sum, double scale) {
    const FL_T *wt = (const FL_T *)p->weight_t;
    const double e = p->label_smoothing, zl = p->z_loss, it = tf->it_d;
    const double wy = p->weight ? p->weight[y] : 1.0;
    FL_T dy;
    const FL_T vy = apply1(tf, x[y], &dy);
    const FL_T anchor = isfinite(vy) ? vy : 0; /* smoothing sums w_c (v_c - anchor): no cancellation */
    /* Without softcap the gradient is rebuilt from the terms the read pass leaves in g. */
    const int stored = g && !tf->cap;
    marks mk;
    stats st = row_stats(x, n, tf, wt, e > 0, anchor, stored ? g : NULL, &mk);
    /* -log p_y = (shift - v_y) * it + log s; for the smoothing term the same at the anchor */
    const double nll = st.pinf ? NAN : ((double)st.shift - (double)vy) * it + st.log_s_d;
    double loss = (1 - e) * wy * nll + zl * wy * st.lse * st.lse;
    if (e > 0) {
        const double nll_anchor = st.pinf ? NAN : ((double)st.shift - (double)anchor) * it + st.log_s_d;
        loss += e / (double)n * (class_weight_sum * nll_anchor - it * st.vdot);
    }
    if (!g) return loss;
    if (st.pinf) {
        fill_nan(g, n);
        return loss;
    }

    /* g_c = scale * d_c * (A p_c - (e/V) w_c) - [c == y] scale * d_y * (1-e) w_y,
     * p_c = exp((v_c - shift) * it) inv_s: g_c = term_c A1 + NB1 w_c, times d_c with softcap (without,
     * d_c = it is folded into A1 and NB1). */
    const double a = (1 - e) * wy + e / (double)n * class_weight_sum + 2 * zl * wy * st.lse;
    const double fold = tf->cap ? 1.0 : it;
    const FL_T a1 = (FL_T)(a * (double)st.inv_s * scale * fold), nb1 = (FL_T)(-e / (double)n * scale * fold);
    if (stored) {
        rescale(g, n, &mk, st.shift, it, a1, nb1, wt);
    } else {
        const FL_V a1v = VF(set1)(a1), nb1v = VF(set1)(nb1), sh = VF(set1)(st.shift), itv = VF(set1)(tf->it);
        for (int64_t j = 0; j < n; j += FL_W) {
            int64_t len = n - j < FL_W ? n - j : FL_W;
            FL_V d, xv = len == FL_W ? VF(load)(x + j) : load_part(x + j, len, 0);
            FL_V ez = VF(expn)(VF(mul)(VF(sub)(apply(tf, xv, &d), sh), itv));
            FL_V nb = wt ? VF(mul)(nb1v, len == FL_W ? VF(load)(wt + j) : load_part(wt + j, len, 0)) : nb1v;
            FL_V gv = VF(mul)(VF(fma)(ez, a1v, nb), d);
            if (len == FL_W) VF(store)(g + j, gv);
            else store_part(g + j, len, gv);
        }
    }
    g[y] -= (FL_T)(scale * (double)dy * (1 - e) * wy);
    return loss;
}

/* Moments of one row under p = softmax(beta x), against its max ref (finite):
 *   s = sum e, a = sum e d, b = sum e d^2, with d = x - ref, e = exp(beta d) (<= 1),
 * a term with e = 0 adding 0 (so -inf entries never make NaN; a NaN entry makes s NaN). Groups of four
 * vectors are summed in T, the groups in float64. */
static inline void moment_terms(FL_V v, FL_V rv, FL_V bv, int scaled, int want_b, FL_V *e, FL_V *t, FL_V *u) {
    const FL_V zero = VF(set1)(0), d = VF(sub)(v, rv);
    *e = VF(expn)(scaled ? VF(mul)(d, bv) : d);
    /* d >= -max: a -inf entry gives e = 0 times a finite d (NaN entries already made e NaN) */
    const FL_V dc = VF(max)(d, VF(set1)(-FL_MAX));
    *t = VF(mul)(*e, dc);
    if (want_b) *u = VF(sel_gt)(*e, zero, VF(mul)(*t, dc), zero);
}

static void moments(const FL_T *x, int64_t n, FL_T ref, FL_T beta, double *s, double *a, double *b) {
    const int scaled = 1, want_b = 1;
    vf64 as[2] = {vf64_set1(0), vf64_set1(0)}, aa[2] = {vf64_set1(0), vf64_set1(0)};
    vf64 ab[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V rv = VF(set1)(ref), bv = VF(set1)(beta);
    FL_V e0, e1, e2, e3, t0, t1, t2, t3, u0 = rv, u1 = rv, u2 = rv, u3 = rv;
    int64_t j = 0;
    for (; j + 4 * FL_W <= n; j += 4 * FL_W) {
        moment_terms(VF(load)(x + j), rv, bv, scaled, want_b, &e0, &t0, &u0);
        moment_terms(VF(load)(x + j + FL_W), rv, bv, scaled, want_b, &e1, &t1, &u1);
        moment_terms(VF(load)(x + j + 2 * FL_W), rv, bv, scaled, want_b, &e2, &t2, &u2);
        moment_terms(VF(load)(x + j + 3 * FL_W), rv, bv, scaled, want_b, &e3, &t3, &u3);
        VF(acc)(as, VF(add)(VF(add)(e0, e1), VF(add)(e2, e3)));
        VF(acc)(aa, VF(add)(VF(add)(t0, t1), VF(add)(t2, t3)));
        if (want_b) VF(acc)(ab, VF(add)(VF(add)(u0, u1), VF(add)(u2, u3)));
    }
    for (; j < n; j += FL_W) {
        moment_terms(n - j >= FL_W ? VF(load)(x + j) : load_part(x + j, n - j, -INFINITY), rv, bv, scaled,
                         want_b, &e0, &t0, &u0);
        VF(acc)(as, e0);
        VF(acc)(aa, t0);
        if (want_b) VF(acc)(ab, u0);
    }
    *s = vf64_hsum(vf64_add(as[0], as[1]));
    *a = vf64_hsum(vf64_add(aa[0], aa[1]));
    *b = want_b ? vf64_hsum(vf64_add(ab[0], ab[1])) : 0;
}



/* One block for the entropy: s = sum e, u = sum e (z - m), e = exp(z - m) (m finite), and the block's
 * max into *bmax; -inf entries add 0 to both. */
static inline void block_entropy(const FL_T *z, int64_t n, FL_T m, FL_T *bmax, double *s, double *u) {
    vf64 as[2] = {vf64_set1(0), vf64_set1(0)}, au[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V mv = VF(set1)(m), lo = VF(set1)(-FL_MAX);
    FL_V mx = VF(set1)(-INFINITY);
    int64_t j = 0;
    for (; j + 4 * FL_W <= n; j += 4 * FL_W) { /* four vectors a step, summed in T first */
        FL_V v0 = VF(load)(z + j), v1 = VF(load)(z + j + FL_W), v2 = VF(load)(z + j + 2 * FL_W);
        FL_V v3 = VF(load)(z + j + 3 * FL_W);
        mx = VF(max)(mx, VF(max)(VF(max)(v0, v1), VF(max)(v2, v3)));
        FL_V d0 = VF(sub)(v0, mv), d1 = VF(sub)(v1, mv), d2 = VF(sub)(v2, mv), d3 = VF(sub)(v3, mv);
        FL_V e0 = VF(expn)(d0), e1 = VF(expn)(d1), e2 = VF(expn)(d2), e3 = VF(expn)(d3);
        VF(acc)(as, VF(add)(VF(add)(e0, e1), VF(add)(e2, e3)));
        VF(acc)(au, VF(add)(VF(add)(VF(mul)(e0, VF(max)(d0, lo)), VF(mul)(e1, VF(max)(d1, lo))),
                            VF(add)(VF(mul)(e2, VF(max)(d2, lo)), VF(mul)(e3, VF(max)(d3, lo)))));
    }
    for (; j < n; j += FL_W) {
        FL_V v = n - j >= FL_W ? VF(load)(z + j) : load_part(z + j, n - j, -INFINITY);
        mx = VF(max)(mx, v);
        FL_V d = VF(sub)(v, mv), e = VF(expn)(d);
        VF(acc)(as, e);
        VF(acc)(au, VF(mul)(e, VF(max)(d, lo)));
    }
    *bmax = VF(hmax)(mx);
    *s = vf64_hsum(vf64_add(as[0], as[1]));
    *u = vf64_hsum(vf64_add(au[0], au[1]));
}

/* H(softmax(x)) per row in one read pass: the online log-sum-exp of row_stats, carrying also
 * u = sum e (z - m); when the max rises from m to m', s <- s e^(m - m') and u <- e^(m - m') (u - (m' - m) s).
 * H = log s - u / s (nats; 0 log 0 = 0). */
static double entropy_row(const FL_T *x, int64_t n) {
    FL_T m = -INFINITY;
    double s = 0, u = 0;
    for (int64_t off = 0; off < n; off += FL_BLOCK) {
        const int64_t len = n - off < FL_BLOCK ? n - off : FL_BLOCK;
        const FL_T *z = x + off;
        FL_T bm;
        double bs, bu;
        if (isfinite(m)) {
            block_entropy(z, len, m, &bm, &bs, &bu);
            if (!(bm > m) || (double)bm - (double)m <= FL_MAX_JUMP) {
                s += bs;
                u += bu;
                if (bm > m) { /* rebase both sums to the new max */
                    fl_rebase(&s, &u, (double)m, (double)bm);
                    m = bm;
                }
                continue;
            }
        }
        bm = vector_max(z, len); /* first block, or a jump too large for one pass */
        if (bm > m) {
            if (s != 0) fl_rebase(&s, &u, (double)m, (double)bm);
            m = bm;
        }
        block_entropy(z, len, (FL_T)fl_shift(m), &bm, &bs, &bu);
        s += bs;
        u += bu;
    }
    return m == INFINITY ? NAN : log(s) - u / s;
}

/* H(softmax(x)) per row (nats). */
static int entropy_rows(const FL_T *x, const fl_rows *r, double *out) {
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++) out[i] = entropy_row(x + i * r->x_stride, r->cols);
    return FL_OK;
}

/* One block for KL: sp = sum e_p, sq = sum e_q, u = sum e_p (z_p - z_q) (e_p = 0 terms add 0), with
 * e_p = exp(z_p - mp), e_q = exp(z_q - mq), the blocks' maxima, and *bz the max of z_p where z_q = -inf. */
static inline void block_kl(const FL_T *p, const FL_T *q, int64_t n, FL_T mp, FL_T mq, FL_T *bp, FL_T *bq, FL_T *bz,
                            double *sp, double *sq, double *u) {
    vf64 ap[2] = {vf64_set1(0), vf64_set1(0)}, aq[2] = {vf64_set1(0), vf64_set1(0)};
    vf64 au[2] = {vf64_set1(0), vf64_set1(0)};
    const FL_V mpv = VF(set1)(mp), mqv = VF(set1)(mq), zero = VF(set1)(0), ninf = VF(set1)(-INFINITY);
    FL_V xp = ninf, xq = ninf, xz = ninf;
    int64_t j = 0;
    for (; j + 2 * FL_W <= n; j += 2 * FL_W) { /* two vectors a step, summed in T first */
        FL_V p0 = VF(load)(p + j), p1 = VF(load)(p + j + FL_W), q0 = VF(load)(q + j), q1 = VF(load)(q + j + FL_W);
        xp = VF(max)(xp, VF(max)(p0, p1));
        xq = VF(max)(xq, VF(max)(q0, q1));
        xz = VF(max)(xz, VF(max)(VF(sel_gt)(q0, ninf, ninf, p0), VF(sel_gt)(q1, ninf, ninf, p1)));
        FL_V e0 = VF(expn)(VF(sub)(p0, mpv)), e1 = VF(expn)(VF(sub)(p1, mpv));
        VF(acc)(ap, VF(add)(e0, e1));
        VF(acc)(aq, VF(add)(VF(expn)(VF(sub)(q0, mqv)), VF(expn)(VF(sub)(q1, mqv))));
        VF(acc)(au, VF(add)(VF(sel_gt)(e0, zero, VF(mul)(e0, VF(sub)(p0, q0)), zero),
                            VF(sel_gt)(e1, zero, VF(mul)(e1, VF(sub)(p1, q1)), zero)));
    }
    for (; j < n; j += FL_W) {
        FL_V pv = n - j >= FL_W ? VF(load)(p + j) : load_part(p + j, n - j, -INFINITY);
        FL_V qv = n - j >= FL_W ? VF(load)(q + j) : load_part(q + j, n - j, -INFINITY);
        xp = VF(max)(xp, pv);
        xq = VF(max)(xq, qv);
        xz = VF(max)(xz, VF(sel_gt)(qv, ninf, ninf, pv));
        FL_V ep = VF(expn)(VF(sub)(pv, mpv));
        VF(acc)(ap, ep);
        VF(acc)(aq, VF(expn)(VF(sub)(qv, mqv)));
        VF(acc)(au, VF(sel_gt)(ep, zero, VF(mul)(ep, VF(sub)(pv, qv)), zero));
    }
    *bp = VF(hmax)(xp);
    *bq = VF(hmax)(xq);
    *bz = VF(hmax)(xz);
    *sp = vf64_hsum(vf64_add(ap[0], ap[1]));
    *sq = vf64_hsum(vf64_add(aq[0], aq[1]));
    *u = vf64_hsum(vf64_add(au[0], au[1]));
}

/* KL(p || q) = sum p (log p - log q) for one pair of rows in one read pass: online log-sum-exps of both
 * (sums rebased when a max rises; u = sum e_p (z_p - z_q) follows p's), then
 * u / s_p - (m_p + log s_p) + (m_q + log s_q), clamped at 0. +inf where some q is 0 < p: q's logit is
 * -inf where p's probability is positive in float64 (its logit within FL_P0_GAP of p's log-sum-exp; the
 * fast exp flushes such terms to 0 well before that, so the max of those logits is tracked apart). */
static double kl_row(const FL_T *p, const FL_T *q, int64_t n) {
    FL_T mp = -INFINITY, mq = -INFINITY, zmax = -INFINITY;
    double sp = 0, sq = 0, u = 0;
    for (int64_t off = 0; off < n; off += FL_BLOCK) {
        const int64_t len = n - off < FL_BLOCK ? n - off : FL_BLOCK;
        FL_T bp, bq, bz;
        double bsp, bsq, bu;
        int fresh = !isfinite(mp) || !isfinite(mq);
        if (!fresh) {
            block_kl(p + off, q + off, len, mp, mq, &bp, &bq, &bz, &bsp, &bsq, &bu);
            fresh = ((double)bp - (double)mp > FL_MAX_JUMP) || ((double)bq - (double)mq > FL_MAX_JUMP);
        }
        if (fresh) { /* first blocks, or a jump too large for one pass: maxima first */
            bp = vector_max(p + off, len);
            bq = vector_max(q + off, len);
            const FL_T np_ = bp > mp ? bp : mp, nq = bq > mq ? bq : mq;
            const double fp = sp != 0 ? exp(fl_shift(mp) - fl_shift(np_)) : 0, fq = sq != 0 ? exp(fl_shift(mq) - fl_shift(nq)) : 0;
            sp *= fp, u *= fp, sq *= fq;
            mp = np_, mq = nq;
            block_kl(p + off, q + off, len, (FL_T)fl_shift(mp), (FL_T)fl_shift(mq), &bp, &bq, &bz, &bsp, &bsq, &bu);
            sp += bsp, sq += bsq, u += bu;
            zmax = bz > zmax ? bz : zmax;
            continue;
        }
        sp += bsp, sq += bsq, u += bu;
        zmax = bz > zmax ? bz : zmax;
        if (bp > mp) {
            const double f = exp((double)mp - (double)bp);
            sp *= f, u *= f;
            mp = bp;
        }
        if (bq > mq) {
            sq *= exp((double)mq - (double)bq);
            mq = bq;
        }
    }
    if (mp == INFINITY || mq == INFINITY) return NAN;
    const double lse_p = fl_shift(mp) + log(sp);
    if ((double)zmax - lse_p > -FL_P0_GAP && sq == sq) return INFINITY; /* q = 0 < p (NaN stays NaN) */
    const double kl = u / sp - lse_p + (fl_shift(mq) + log(sq));
    return kl > 0 || kl != kl ? kl : 0;
}

static int kl_rows(const FL_T *x, const FL_T *y, const fl_rows *r, double *out) {
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++) out[i] = kl_row(x + i * r->x_stride, y + i * r->y_stride, r->cols);
    return FL_OK;
}

/* Temperature statistics at beta = 1/T, per row with target y and row max xmax[i]:
 *   nll = lse(beta x) - beta x_y,  g = E_p[x] - x_y = d nll / d beta,  v = Var_p[x] = d2 nll / d beta2. */
static int temperature_stats_rows(const FL_T *x, const fl_rows *r, const int64_t *y, const double *xmax, double beta,
                           double *nll, double *g, double *v) {
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++) {
        const FL_T *xi = x + i * r->x_stride;
        double s, a, b;
        const FL_T ref = (FL_T)xmax[i];
        moments(xi, r->cols, ref, (FL_T)beta, &s, &a, &b);
        const double mean = a / s, xy = (double)xi[y[i]] - (double)ref;
        nll[i] = log(s) - beta * xy;
        g[i] = mean - xy;
        v[i] = b / s - mean * mean;
    }
    return FL_OK;
}

static int xent_rows(const FL_T *x, FL_T *g, const fl_rows *r, const fl_xent *p, double class_weight_sum,
                         double scale) {
    xform tf = make_xform(p->inv_temperature, p->softcap);
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
            p->row_loss[i] = xent_row(x + i * r->x_stride, gi, r->cols, y, &tf, p, class_weight_sum, scale);
        }
    }
    return FL_OK;
}

/* bfloat16 (the high half of a float32) to float32 and back, rounding to nearest even, NaN kept quiet.
 * Plain C: the compiler vectorizes it for each level. */
static void bf16_to_f32(const uint16_t *h, float *f, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        const uint32_t u = (uint32_t)h[j] << 16;
        memcpy(f + j, &u, sizeof u);
    }
}
static void f32_to_bf16(const float *f, uint16_t *h, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        uint32_t u;
        memcpy(&u, f + j, sizeof u);
        const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16, q = (u >> 16) | 0x40;
        h[j] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

const fl_softmax_kernels_T FL_LEVEL_TABLE(softmax) = {
    .logsumexp = logsumexp_rows,
    .softmax = softmax_rows,
    .xent = xent_rows,
    .entropy = entropy_rows,
    .kl = kl_rows,
    .temperature_stats = temperature_stats_rows,
    .bf16_to_f32 = bf16_to_f32,
    .f32_to_bf16 = f32_to_bf16,
};
