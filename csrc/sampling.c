/* sampling.c: decoding filters (top-k, top-p, min-p, typical), greedy, the fused sampler and the
 * beam-search step. Baseline C; the vector passes go through the dispatched kernels (softmax_simd.c,
 * select_simd.c). This file includes itself once per dtype (T = float, double).
 *
 * Top-p (filter and sampler) ranks tokens by logit, which is the order of the probabilities (ties in x
 * are ties in p), and weighs them by e = exp((x - max) / T), the largest exactly 1. One pass sums the
 * weights, takes each 256-block's max of x and collects the candidates x >= max - 10 T (weights >=
 * e^-10) with their logits and weights. When they hold less than the top-p budget, the candidates are
 * collected again from x >= max - 18 T, then from every finite logit. Flat rows (16384 logits or more,
 * the weight spread over many tokens) collect only a band of logits guessed from a sample of the row,
 * with the weight above it per block (FN(flat_topp)).
 *
 * Selection without sorting the vocabulary: values are mapped to order-preserving unsigned keys; a
 * histogram over the top 11 bits (count and weight per bucket) finds, scanning from the largest bucket,
 * the bucket holding the cut; that bucket's tokens are collected and histogrammed on the next 11 bits
 * while more than FL_SORT_MAX remain; the last few are insertion-sorted by (value desc, index asc).
 * O(V) per row plus O(b log b) for the final bucket. The selection sums weights in float64.
 */
#ifndef FL_T
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dispatch.h"

#define FL_HBITS 11
#define FL_P0_GAP 745 /* a logit this far below the max (or the log-sum-exp) has probability 0 in float64 */
#define FL_HSIZE (1 << FL_HBITS)
#define FL_SORT_MAX 64

/* splitmix64 finalizer: a bijective mix of 64 bits */
static inline uint64_t fl_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
/* Uniform [0, 1) with 53 random bits, a pure function of (seed, row): a counter-based generator. */
static inline double fl_uniform(uint64_t seed, int64_t row) {
    uint64_t h = fl_mix64(fl_mix64(seed + 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)row * 0xd1b54a32d192ed03ULL));
    return (double)(h >> 11) * 0x1.0p-53;
}

enum { FL_TOPK, FL_TOPP, FL_MINP, FL_TYPICAL };


#define FL_T float
#define FL_TINY FLT_MIN
#define FL_MAX FLT_MAX
#define FL_U uint32_t
#define FN(name) name##_f32
#define API(name) fl_##name##_f32
#define KERNEL(name) name##_f32
#include "sampling.c"
#undef FL_T
#undef FL_TINY
#undef FL_MAX
#undef FL_U
#undef FN
#undef API
#undef KERNEL

#define FL_T double
#define FL_TINY DBL_MIN
#define FL_MAX DBL_MAX
#define FL_U uint64_t
#define FN(name) name##_f64
#define API(name) fl_##name##_f64
#define KERNEL(name) name##_f64
#include "sampling.c"

#else /* ---------------------------------------------------------------- template body, T = FL_T */

#define FL_UBITS ((int)(8 * sizeof(FL_U)))
#define SEL(name) fl_select_active()->KERNEL(name)

/* Order-preserving key: a < b (as numbers, no NaN) iff key(a) < key(b), and -0, +0 share a key. */
static inline FL_U FN(key)(FL_T v) {
    FL_U u;
    v += (FL_T)0; /* -0 + 0 = +0: the two zeros are one value */
    memcpy(&u, &v, sizeof u);
    return u >> (FL_UBITS - 1) ? ~u : u | ((FL_U)1 << (FL_UBITS - 1));
}

typedef struct {
    FL_T v;
    double w;
    int64_t i;
} FN(item);

/* A prefix of the order (value desc, index asc): kept iff v > cut.v, or v == cut.v and i <= cut.i. */
typedef struct {
    FL_T v;
    int64_t i;
    int64_t count; /* tokens kept */
    double weight; /* their weight */
    int64_t cand;  /* > 0: every kept token is among the candidates s->idx / s->vals [0, cand) */
} FN(cut);

static inline int FN(kept)(FL_T v, int64_t i, const FN(cut) *c) { return v > c->v || (v == c->v && i <= c->i); }

static FN(cut) FN(cut_all)(int64_t n, double weight) {
    FN(cut) c = {(FL_T)-INFINITY, INT64_MAX, n, weight, 0};
    return c;
}

static inline int FN(before)(const FN(item) *a, const FN(item) *b) { return a->v > b->v || (a->v == b->v && a->i < b->i); }

/* Scan buckets from the largest: the first whose count (by_count) or weight takes the running total to
 * >= budget. Totals of the buckets above it go to *cum_c / *cum_w. Returns -1 if the budget is never
 * reached (with lowest_ok, the lowest non-empty bucket instead, for rounding in the recursion). */
static int FN(scan)(const int32_t *hc, const double *hw, double budget, int by_count, int lowest_ok,
                    int64_t *cum_c, double *cum_w) {
    int lowest = -1;
    for (int b = FL_HSIZE - 1; b >= 0; b--) {
        if (!hc[b]) continue;
        if ((by_count ? (double)(*cum_c + hc[b]) : *cum_w + hw[b]) >= budget) return b;
        *cum_c += hc[b];
        *cum_w += hw[b];
        lowest = b;
    }
    if (lowest_ok && lowest >= 0) {
        *cum_c -= hc[lowest];
        *cum_w -= hw[lowest];
        return lowest;
    }
    return -1;
}

/* The longest prefix whose every token has (count or weight, as by_count says) ranked before it
 * < budget; w == NULL: weight 1. budget > 0, n >= 1. items, bk: scratch of n entries. With lo < hi (the
 * range of v, finite) the first histogram is linear in the value over [lo, hi] (logits spread about
 * evenly); else, and for every refinement, it is on the keys' bits. Equal values always share a bucket. */
static FN(cut) FN(select)(const FL_T *v, const FL_T *w, int64_t n, double budget, int by_count, FN(item) *items,
                          uint16_t *bk, double lo, double hi) {
    int32_t hc[FL_HSIZE]; /* n < 2^31 */
    double hw[FL_HSIZE];
    int64_t cum_c = 0;
    double cum_w = 0;
    const double scale = lo < hi ? (FL_HSIZE - 0.5) / (hi - lo) : 0;
    const int linear = scale > 0 && scale < INFINITY; /* a finite range, not too narrow for double */
    int shift = linear ? FL_UBITS : FL_UBITS - FL_HBITS;
    memset(hc, 0, sizeof hc);
    memset(hw, 0, sizeof hw);
    if (linear) /* bucket ids first (a loop without stores to the histogram), then the histogram */
        SEL(buckets)(v, n, lo, scale, bk);
    else
        for (int64_t i = 0; i < n; i++) bk[i] = (uint16_t)(FN(key)(v[i]) >> (FL_UBITS - FL_HBITS));
    for (int64_t i = 0; i < n; i++) {
        hc[bk[i]]++;
        hw[bk[i]] += w ? (double)w[i] : 1.0;
    }
    int bs = FN(scan)(hc, hw, budget, by_count, 0, &cum_c, &cum_w);
    if (bs < 0) return FN(cut_all)(n, cum_w);
    int64_t m = 0;
    const uint64_t ones = 0x0001000100010001ULL, lanes = ones * (uint64_t)bs;
    for (int64_t i = 0; i < n; i += 4) {
        uint64_t four = 0;
        if (i + 4 <= n) {
            memcpy(&four, bk + i, sizeof four);
            four ^= lanes; /* a lane of bs is now 0: skip the four unless one is */
            if (!((four - ones) & ~four & 0x8000800080008000ULL)) continue;
        }
        for (int64_t k = i; k < n && k < i + 4; k++)
            if (bk[k] == bs) {
                items[m].v = v[k];
                items[m].w = w ? (double)w[k] : 1.0;
                items[m++].i = k;
            }
    }
    while (m > FL_SORT_MAX && shift > 0) { /* refine on the next bits, keeping index order */
        shift = shift > FL_HBITS ? shift - FL_HBITS : 0;
        memset(hc, 0, sizeof hc);
        memset(hw, 0, sizeof hw);
        for (int64_t k = 0; k < m; k++) {
            size_t b = (size_t)(FN(key)(items[k].v) >> shift) & (FL_HSIZE - 1);
            hc[b]++;
            hw[b] += items[k].w;
        }
        bs = FN(scan)(hc, hw, budget, by_count, 1, &cum_c, &cum_w);
        int64_t m2 = 0;
        for (int64_t k = 0; k < m; k++)
            if ((int)((FN(key)(items[k].v) >> shift) & (FL_HSIZE - 1)) == bs) items[m2++] = items[k];
        m = m2;
    }
    if (shift > 0) /* at shift 0 all values are equal and already in index order */
        for (int64_t k = 1; k < m; k++) {
            FN(item) t = items[k];
            int64_t j = k;
            for (; j > 0 && FN(before)(&t, &items[j - 1]); j--) items[j] = items[j - 1];
            items[j] = t;
        }
    FN(cut) c = {items[0].v, items[0].i, cum_c, cum_w, 0};
    for (int64_t k = 0; k < m && (by_count ? (double)c.count : c.weight) < budget; k++) {
        c.v = items[k].v;
        c.i = items[k].i;
        c.count++;
        c.weight += items[k].w;
    }
    return c;
}

/* Every row checked before anything is written, by one read: NaN -> FL_ERR_NAN, no value above -inf
 * -> FL_ERR_EMPTY. xmax[i]: the row's max (+inf: the row holds +inf). */
static int FN(check_rows)(const FL_T *x, const fl_rows *r, double *xmax, fl_decode *d) {
    for (int64_t i = 0; i < r->rows; i++) {
        int nan;
        xmax[i] = (double)SEL(max_nan)(x + i * r->x_stride, r->cols, &nan);
        if (nan || xmax[i] == -INFINITY) {
            d->bad_row = i;
            return nan ? FL_ERR_NAN : FL_ERR_EMPTY;
        }
    }
    return FL_OK;
}

/* p = softmax(x * inv_t); a row holding +inf gives its +inf entries equal shares. */
static void FN(probs)(const FL_T *x, int64_t n, double inv_t, int pinf, FL_T *p) {
    if (pinf) {
        int64_t c = 0;
        for (int64_t j = 0; j < n; j++) c += x[j] == INFINITY;
        for (int64_t j = 0; j < n; j++) p[j] = x[j] == INFINITY ? (FL_T)(1.0 / (double)c) : 0;
        return;
    }
    fl_rows one = {1, n, n, n, 1};
    fl_softmax_active()->KERNEL(softmax)(x, p, &one, inv_t, 0);
}

/* Scratch of one thread, n entries each, carved from fl_scratch. */
typedef struct {
    FL_T *p, *v, *vals, *wts;
    FL_T *bmax;   /* the max of x per block of FL_BMAX_BLOCK (top-p) */
    double *bup;  /* weights per block: above the band (top-p of flat rows), or the draw's block sums */
    int32_t *bfirst; /* the band's tokens before each block */
    int32_t *idx; /* candidate indices (rows are < 2^31 long), with 16 entries of slack */
    int32_t *pos; /* two arrays: positions of the bands of FN(select_weighted) */
    uint16_t *bk; /* first-level bucket of each value in FN(select) */
    FN(item) *items;
    void *base;
    size_t bytes;
} FN(scratch);

static int FN(scratch_get)(FN(scratch) *s, int64_t n) {
    const size_t each = (size_t)(n > 0 ? n : 1) + 16, blocks = (size_t)(n / FL_BMAX_BLOCK) + 1;
    s->bytes = each * (sizeof(FN(item)) + 4 * sizeof(FL_T) + 3 * sizeof(int32_t) + sizeof(uint16_t)) +
               blocks * (sizeof(FL_T) + sizeof(double) + sizeof(int32_t));
    char *b = s->base = fl_scratch(s->bytes);
    if (!b) return 0;
    s->items = (FN(item) *)b;
    s->bup = (double *)(b + each * sizeof(FN(item)));
    s->p = (FL_T *)(s->bup + blocks);
    s->v = s->p + each;
    s->vals = s->v + each;
    s->wts = s->vals + each;
    s->bmax = s->wts + each;
    s->idx = (int32_t *)(s->bmax + blocks);
    s->pos = s->idx + each;
    s->bfirst = s->pos + 2 * each;
    s->bk = (uint16_t *)(s->bfirst + blocks);
    return 1;
}
static void FN(scratch_put)(FN(scratch) *s) { fl_scratch_release(s->base, s->bytes); }

/* Runs row(i, scratch, ctx) for every row, in parallel, each thread with its own scratch. Returns
 * FL_ERR_NOMEM, with no row run, if any thread's scratch could not be had. */
static int FN(for_rows)(const fl_rows *r, void (*row)(int64_t i, const FN(scratch) *s, void *ctx), void *ctx) {
    int fail = 0, nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        FN(scratch) mine;
        const int ok = FN(scratch_get)(&mine, r->cols);
        if (!ok) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp barrier
        if (!fail) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < r->rows; i++) row(i, &mine, ctx);
        }
        if (ok) FN(scratch_put)(&mine);
    }
    return fail ? FL_ERR_NOMEM : FL_OK;
}

/* Blocks of FL_BMAX_BLOCK values with upper bounds bmax, taken in runs: the run from block b is the
 * blocks on the same side of t as b (bmax >= t, returned, or not); [*lo, *hi) its values, *e the
 * block after it. */
static int FN(block_run)(const FL_T *bmax, int64_t n, int64_t b, FL_T t, int64_t *lo, int64_t *hi, int64_t *e) {
    const int64_t nb = (n + FL_BMAX_BLOCK - 1) / FL_BMAX_BLOCK;
    const int reach = bmax[b] >= t;
    for (*e = b + 1; *e < nb && (bmax[*e] >= t) == reach;) ++*e;
    *lo = b * FL_BMAX_BLOCK;
    *hi = *e * FL_BMAX_BLOCK < n ? *e * FL_BMAX_BLOCK : n;
    return reach;
}

/* The indices j with v[j] >= tau into s->idx and their values into s->vals, in index order, scanning only
 * the blocks whose upper bound bmax reaches tau (bmax NULL: the whole row). */
static int64_t FN(collect)(const FL_T *v, int64_t n, FL_T tau, const FL_T *bmax, const FN(scratch) *s) {
    if (!bmax) return SEL(collect_ge)(v, n, tau, s->idx, v, s->vals, NULL, NULL);
    int64_t m = 0, lo, hi;
    for (int64_t b = 0; b * FL_BMAX_BLOCK < n;) {
        if (!FN(block_run)(bmax, n, b, tau, &lo, &hi, &b)) continue;
        const int64_t got = SEL(collect_ge)(v + lo, hi - lo, tau, s->idx + m, v + lo, s->vals + m, NULL, NULL);
        for (int64_t k = m; k < m + got; k++) s->idx[k] += (int32_t)lo;
        m += got;
    }
    return m;
}

/* FN(select) by weight (w >= 0) of n values in [lo, hi]. Many values are narrowed first: the masses
 * above FL_BANDS thresholds spread over [lo, hi] (one vector pass; in the first round the ascending
 * thresholds `first` instead, if given) locate a band [a, b) that holds the cut, with margins for their
 * rounding; its tokens are collected, with the exact weight and number of
 * those above it, and narrowed again while that shrinks them. FN(select) then runs on the band. When
 * the exact sums contradict the margins, it runs on all n instead. The bands go to s->v, s->p, s->pos. */
#define FL_NARROW_MIN 2048
static FN(cut) FN(select_weighted)(const FL_T *v, const FL_T *w, int64_t n, double budget, double lo, double hi,
                                    const FL_T *first, const FN(scratch) *s) {
    const FL_T *bv = v, *bw = w;
    int32_t *pos = s->pos, *tmp = s->pos + n + 16; /* s->pos holds two arrays of a row's length + 16 */
    int64_t m = n, count_above = 0;
    double above = 0, blo = lo, bhi = hi;
    while (m > FL_NARROW_MIN && blo < bhi && bhi - blo < INFINITY) {
        FL_T t[FL_BANDS];
        double mass[FL_BANDS], up;
        int64_t cu, ka = -1, kb = FL_BANDS;
        for (int k = 0; k < FL_BANDS; k++)
            t[k] = first && bv == v ? first[k] : (FL_T)(blo + (bhi - blo) * (k + 1) / (FL_BANDS + 1));
        SEL(band_masses)(bv, bw, m, t, mass);
        for (int k = 0; k < FL_BANDS; k++)
            if (above + mass[k] >= budget * (1 + 1e-5)) ka = k; /* surely reaches the budget */
        for (int k = FL_BANDS - 1; k > ka; k--)
            if (above + mass[k] < budget * (1 - 1e-5)) kb = k; /* surely does not */
        const FL_T a = ka < 0 ? (FL_T)blo : t[ka], b = kb < FL_BANDS ? t[kb] : (FL_T)INFINITY;
        const int64_t m2 = SEL(collect_band)(bv, bw, m, a, b, bv == v ? pos : tmp, s->v, s->p, &up, &cu);
        if (bv != v)
            for (int64_t k = 0; k < m2; k++) pos[k] = pos[tmp[k]]; /* tmp[k] >= k: in place */
        above += up;
        count_above += cu;
        bv = s->v;
        bw = s->p;
        blo = (double)a;
        bhi = kb < FL_BANDS ? (double)b : bhi;
        const int shrunk = m2 <= m / 2;
        m = m2;
        if (above >= budget) m = 0; /* the cut is above the band: the margins failed */
        if (!shrunk) break;
    }
    FN(cut) c = m ? FN(select)(bv, bw, m, budget - above, 0, s->items, s->bk, blo, bhi) : FN(cut_all)(0, 0);
    if (bv == v) return c;
    if (c.i == INT64_MAX) return FN(select)(v, w, n, budget, 0, s->items, s->bk, lo, hi);
    c.i = pos[c.i];
    c.count += count_above;
    c.weight += above;
    return c;
}

/* FN(select) over the m candidates s->vals (rows s->idx): the tokens of the row >= tau, none above hi
 * (NaN: their max). Each weighs 1 (by_count) or s->wts; the cut comes back in row indices. When the
 * budget is not reached, every candidate is kept. */
static FN(cut) FN(cut_among)(int64_t m, FL_T tau, double hi, double budget, int by_count, const FN(scratch) *s) {
    if (m == 0) {
        FN(cut) none = {(FL_T)INFINITY, -1, 0, 0, 0};
        return none;
    }
    if (hi != hi) hi = (double)SEL(max)(s->vals, m);
    FN(cut) c = by_count ? FN(select)(s->vals, NULL, m, budget, 1, s->items, s->bk, (double)tau, hi)
                         : FN(select_weighted)(s->vals, s->wts, m, budget, (double)tau, hi, NULL, s);
    if (c.i == INT64_MAX)
        c.v = tau;
    else
        c.i = s->idx[c.i];
    c.cand = m;
    return c;
}

/* y = x where the cut keeps v, else fill. When the kept tokens are few and all among the candidates,
 * y is filled and they are written back (their x gathered first: y may be x). Else blocks whose upper
 * bound bmax is below the cut are filled without reading x or v (bmax NULL: none are). */
static void FN(apply)(const FL_T *x, const FL_T *v, FL_T *y, int64_t n, FN(cut) c, FL_T fill, const FL_T *bmax,
                      const FN(scratch) *s) {
    if (c.cand > 0 && c.cand <= n / 16 && c.count <= n / 64) { /* few candidates to scan, few kept */
        int64_t kept = 0;
        for (int64_t k = 0; k < c.cand; k++)
            if (FN(kept)(s->vals[k], s->idx[k], &c)) {
                s->idx[kept] = s->idx[k];
                s->wts[kept++] = x[s->idx[k]];
            }
        for (int64_t j = 0; j < n; j++) y[j] = fill;
        for (int64_t k = 0; k < kept; k++) y[s->idx[k]] = s->wts[k];
        return;
    }
    if (!bmax) {
        SEL(apply_cut)(x, v, y, n, c.v, c.i, fill);
        return;
    }
    for (int64_t b = 0, lo, hi; b * FL_BMAX_BLOCK < n;) {
        if (FN(block_run)(bmax, n, b, c.v, &lo, &hi, &b))
            SEL(apply_cut)(x + lo, v + lo, y + lo, hi - lo, c.v, c.i == INT64_MAX ? INT64_MAX : c.i - lo, fill);
        else /* every value below the cut */
            for (int64_t j = lo; j < hi; j++) y[j] = fill;
    }
}

/* The top `count` tokens (count < n), ties to the lower index: candidates from the chunk bound. */
static FN(cut) FN(top_count)(const FL_T *v, int64_t n, int64_t count, const FN(scratch) *s) {
    if (count >= n) return FN(cut_all)(n, NAN);
    const FL_T tau = count * 64 <= n ? SEL(chunk_bound)(v, n, count) : (FL_T)-INFINITY;
    if (tau == -INFINITY) return FN(select)(v, NULL, n, (double)count, 1, s->items, s->bk, NAN, NAN);
    return FN(cut_among)(FN(collect)(v, n, tau, NULL, s), tau, NAN, (double)count, 1, s);
}

/* 1/T in T's precision, kept finite and > 0: a huge T gives uniform weights over the finite logits, a
 * tiny one (below what Python accepts) the greedy limit. */
static FL_T FN(inv_temperature)(double it) {
    const FL_T t = (FL_T)it;
    return t > 0 ? (t < FL_MAX ? t : FL_MAX) : FL_TINY;
}

/* xmax + d (d <= 0) as a threshold on x, at least the lowest finite value. */
static FL_T FN(below)(double xmax, double d) {
    const double t = xmax + d;
    return (FL_T)(t > -FL_MAX ? t : -FL_MAX);
}

/* A weighted sample of a flat row's logits (weight spread over many tokens), to guess where its top-p
 * cut lies: one logit in FL_SAMPLE_STRIDE (in runs of 16, a cache line of float, from each 512 logits
 * at offsets varying against periodic rows), with weights exp((x - max) / T), in a histogram of
 * FL_QBINS bins over [max - 20 T, max] (finite; lower logits count in bin 0): the weight and squared
 * weight per bin. The row's max, weight 1, is known without sampling: it joins the weights at its own
 * share (each sample stands for n / ns logits), so that a cut at a peak the sample misses is seen. */
#define FL_SAMPLE_STRIDE 32
#define FL_FLAT_NEFF 50
#define FL_FLAT_MIN 4096 /* tokens at or above the band, estimated from the sample */
#define FL_QBINS 1024
typedef struct {
    double w[FL_QBINS], w2[FL_QBINS], lo, scale, c; /* c: the weight of a sample in the row's, ns / n */
    int32_t count[FL_QBINS];                        /* samples per bin */
} FN(sketch);

/* Returns 0 for rows shorter than 512 FL_SAMPLE_STRIDE, rows whose sample (the max aside) has fewer
 * than min_neff effective tokens, (sum w)^2 / sum w^2, or no weight, and rows whose max is too large
 * for max - 20 T to differ from it in T. xmax is finite. s->v, s->p, s->bk: scratch. */
static int FN(sketch_row)(const FL_T *x, int64_t n, double xmax, FL_T itt, double min_neff, FN(sketch) *k,
                         const FN(scratch) *s) {
    if (n < 512 * FL_SAMPLE_STRIDE) return 0;
    const int64_t runs = n / (16 * FL_SAMPLE_STRIDE), ns = 16 * runs;
    FL_T *sx = s->v, *sw = s->p;
    double sum = 0, sq[4] = {0, 0, 0, 0};
    /* a quarter first: a peaked row (most rows of a language model) is told by it already */
    for (int64_t r0 = 0, r1 = runs / 4; r0 < runs; r0 = r1, r1 = runs) {
#define FL_RUN(r) (x + 16 * ((r) * FL_SAMPLE_STRIDE + (((r) * 7) & (FL_SAMPLE_STRIDE - 1))))
        for (int64_t r = r0; r < r1; r++) {
            if (r + 16 < r1) __builtin_prefetch(FL_RUN(r + 16)); /* scattered lines: ask for them early */
            memcpy(sx + 16 * r, FL_RUN(r), 16 * sizeof(FL_T));
        }
#undef FL_RUN
        sum += SEL(exp_collect)(sx + 16 * r0, 16 * (r1 - r0), (FL_T)xmax, itt, sw + 16 * r0, 0, NULL, NULL, NULL,
                                NULL, NULL);
        for (int64_t j = 16 * r0; j < 16 * r1; j += 4) /* runs of 16 */
            for (int l = 0; l < 4; l++) sq[l] += (double)sw[j + l] * (double)sw[j + l];
        /* the quarter needs an eighth of the effective tokens, the whole sample all of them */
        if (!(sum > 0 && sum * sum >= (r1 < runs ? min_neff / 8 : min_neff) * (sq[0] + sq[1] + sq[2] + sq[3])))
            return 0;
    }
    const double c = (double)ns / (double)n;
    k->lo = (double)FN(below)(xmax, -20 / (double)itt);
    k->scale = (FL_QBINS - 0.5) / (xmax - k->lo); /* the max: the top bin */
    if (!(k->scale < INFINITY)) return 0; /* 20 T below a huge max rounds to the max itself */
    memset(k->w, 0, sizeof k->w);
    memset(k->w2, 0, sizeof k->w2);
    memset(k->count, 0, sizeof k->count);
    k->w[FL_QBINS - 1] = k->c = c; /* exact: no share in the sampling variance */
    for (int64_t j = 0; j < ns; j++) sx[j] = (double)sx[j] > k->lo ? sx[j] : (FL_T)k->lo;
    SEL(buckets)(sx, ns, k->lo, k->scale, s->bk);
    for (int64_t j = 0; j < ns; j++) {
        k->w[s->bk[j]] += (double)sw[j];
        k->w2[s->bk[j]] += (double)sw[j] * (double)sw[j];
        k->count[s->bk[j]]++;
    }
    return 1;
}

/* A band [t[0], t[FL_BANDS + 1]) likely to hold the logit below which the sketch's bins under `top`
 * hold the fraction 1 - f of their weight (f of it from bin top - 1 down): the bins' edges where that
 * fraction, counted from the top, is f + delta (t[0], the bottom of its bin, edge[0]) up to f - delta
 * (the top of its bin, or the edge `top` itself when f <= delta: +inf for the whole sketch; edge[1]),
 * with FL_BANDS thresholds
 * t[1..FL_BANDS] in equal steps between, ascending, for the band's first narrowing. delta is 4.5
 * standard errors of the fraction above the f-quantile (its variance: the sum of w^2 (1[above] - f)^2
 * over (sum w)^2) plus 0.5 / the effective size (sum w)^2 / sum w^2. A guess only: the caller checks the
 * band against the row's exact sums. */
static void FN(sketch_band)(const FN(sketch) *k, int top, double f, FL_T *t, int *edge) {
    double sum = 0, sq = 0, cum = 0, cum2 = 0;
    for (int q = 0; q < top; q++) {
        sum += k->w[q];
        sq += k->w2[q];
    }
    for (int q = top - 1; q >= 0 && cum < f * sum; q--) {
        cum += k->w[q];
        cum2 += k->w2[q];
    }
    const double var = (cum2 * (1 - f) * (1 - f) + (sq - cum2) * f * f) / (sum * sum);
    const double delta = 4.5 * sqrt(var) + 0.5 * sq / (sum * sum);
    int i = FL_BANDS, b = f > delta ? -1 : top; /* level i < FL_BANDS + 1: f - delta + 2 delta (B + 1 - i) / (B + 1) */
    cum = 0;
    for (int q = top - 1; q > 0 && i >= 0; q--) {
        cum += k->w[q];
        if (b < 0 && cum > (f - delta) * sum) b = q + 1;
        for (; i >= 0 && cum >= (f - delta + 2 * delta * (FL_BANDS + 1 - i) / (FL_BANDS + 1)) * sum; i--) {
            t[i] = (FL_T)(k->lo + q / k->scale);
            edge[0] = q;
        }
    }
    if (i >= 0) edge[0] = 0;
    for (; i >= 0; i--) t[i] = (FL_T)k->lo; /* at least max - 20 T: narrowing needs a finite range */
    edge[1] = b >= 0 ? b : 1; /* not reached above bin 0: the top of bin 0 */
    t[FL_BANDS + 1] = edge[1] < FL_QBINS ? (FL_T)(k->lo + edge[1] / k->scale) : (FL_T)INFINITY;
}

/* The band, as FN(sketch_band), around the logit above the bin edge `bot` under which the sketch holds
 * the weight d of the row (d c in the sketch's; the max's share aside, as it is above): from bot up, the
 * bin edges where that weight is d - delta (t[0], the bottom of its bin) up to d + delta (t[FL_BANDS + 1],
 * the top of its bin, +inf past the sketch), delta 4.5 standard deviations of the sampled sum (its
 * variance: the sum of w^2 there) plus half a mean weight. edge: the bins of t[0] and t[FL_BANDS + 1]. */
static void FN(sketch_up)(const FN(sketch) *k, int bot, double d, FL_T *t, int *edge) {
#define FL_BODY(q) (k->w[q] - ((q) == FL_QBINS - 1 ? k->c : 0))
    double cum = 0, cum2 = 0;
    d *= k->c;
    for (int q = bot; q < FL_QBINS && cum < d; q++) {
        cum += FL_BODY(q);
        cum2 += k->w2[q];
    }
    const double delta = 4.5 * sqrt(cum2) + (cum > 0 ? 0.5 * cum2 / cum : 0);
    int i = 0;
    cum = 0;
    edge[0] = bot;
    edge[1] = FL_QBINS;
    for (int q = bot; q < FL_QBINS && i <= FL_BANDS + 1; q++) { /* level i: d - delta + 2 delta i / (B + 1) */
        cum += FL_BODY(q);
        for (; i <= FL_BANDS + 1 && cum >= d - delta + 2 * delta * i / (FL_BANDS + 1); i++) {
            if (i == 0) edge[0] = q;
            if (i <= FL_BANDS) t[i] = (FL_T)(k->lo + q / k->scale);
            else edge[1] = q + 1;
        }
    }
#undef FL_BODY
    for (; i <= FL_BANDS; i++) t[i] = (FL_T)(k->lo + (FL_QBINS - 1) / k->scale);
    t[FL_BANDS + 1] = edge[1] < FL_QBINS ? (FL_T)(k->lo + edge[1] / k->scale) : (FL_T)INFINITY;
}

/* Top-p candidates at temperature 1/it of a row with max xmax: s->idx, s->vals (x), s->wts (weights
 * exp((x - xmax) it), the largest exactly 1), a prefix of the logit order holding weight >= p * *total
 * (*total: the weight of the whole row), unless they reach down to floor (a bound the caller needs no
 * token below, or -inf) or to every finite logit; p >= 1: all tokens down to floor (> -inf). They are
 * the tokens >= *tau; s->bmax: each block's max of x. Returns their count. */
static int64_t FN(topp_candidates)(const FL_T *x, int64_t n, double xmax, double it, double p, FL_T floor,
                                   double *total, FL_T *tau_out, const FN(scratch) *s) {
    int64_t m;
    if (xmax == INFINITY) { /* the +inf logits share all the weight */
        for (int64_t b = 0; b * FL_BMAX_BLOCK < n; b++) s->bmax[b] = (FL_T)INFINITY;
        m = SEL(collect_ge)(x, n, (FL_T)INFINITY, s->idx, x, s->vals, NULL, NULL);
        for (int64_t k = 0; k < m; k++) s->wts[k] = 1;
        *total = (double)m;
        *tau_out = (FL_T)INFINITY;
        return m;
    }
    const FL_T itt = FN(inv_temperature)(it);
    const double T = 1.0 / (double)itt;
    FL_T tau = p < 1 ? FN(below)(xmax, -10 * T) : floor;
    tau = tau > floor ? tau : floor;
    *total = SEL(exp_collect)(x, n, (FL_T)xmax, itt, NULL, tau, s->idx, s->vals, s->wts, &m, s->bmax);
    for (int tier = 1;; tier++) {
        const double got = SEL(kept_sum)(s->wts, s->wts, m, (FL_T)-INFINITY, 0, 0); /* all of them */
        *tau_out = tau;
        /* the margin covers summing the weights another way (*total: in groups of four vectors in T) */
        if (got >= p * *total * (1 + 1e-6) || tau <= floor || tau == -FL_MAX) return m;
        FL_T next = tier == 1 ? FN(below)(xmax, -18 * T) : (FL_T)-FL_MAX;
        FN(sketch) sk;
        if (tier == 1 && FN(sketch_row)(x, n, xmax, itt, 0, &sk, s)) {
            /* a long tail: the weight still needed below tau, guessed from a sample of the row (the heavy
             * tokens, which make such guesses poor, are above tau and counted exactly) */
            const int top = (int)(((double)tau - sk.lo) * sk.scale); /* the bins below tau */
            FL_T t[FL_BANDS + 2];
            int edge[2];
            if (top > 0) {
                FN(sketch_band)(&sk, top, (p * *total - got) / (*total - got), t, edge);
                if (t[0] < tau) next = t[0];
            }
        }
        tau = next > floor ? next : floor;
        m = FN(collect)(x, n, tau, s->bmax, s);
        SEL(exp_collect)(s->vals, m, (FL_T)xmax, itt, s->wts, 0, NULL, NULL, NULL, NULL, NULL);
    }
}

/* The row index of the k-th token of the band a <= x < b (k below the band's count), from the band's
 * tokens before each block. */
static int64_t FN(band_index)(const FL_T *x, int64_t n, int64_t k, FL_T a, FL_T b, const int32_t *bfirst) {
    int64_t lo = 0, hi = (n - 1) / FL_BMAX_BLOCK; /* the last block with bfirst <= k holds it */
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (bfirst[mid] <= k) lo = mid;
        else hi = mid - 1;
    }
    int64_t left = k - bfirst[lo], j = lo * FL_BMAX_BLOCK;
    for (; j < n - 1; j++)
        if (x[j] >= a && x[j] < b && left-- == 0) break;
    return j;
}

/* Top-p of a flat row at temperature 1/itt, if its sketch (FN(sketch_row)) says it is flat and min-p
 * (floor: a bound 1e-3 T below its own, or -inf) keeps every token of the band guessed from it: one
 * pass (exp_band) takes the row's weight, the band's logits s->vals and the weight and number of the
 * tokens above it; the band's weights s->wts are computed again (cheaper than compressing them in the
 * pass). When the band holds the cut (with margins for the rounding of the sums), the cut (in row
 * indices, c.cand = 0) goes to *cut, its place in the band to *kpos (INT64_MAX: all of the band), and
 * the band's size is returned. When the cut lies outside the band, a second band is guessed from the
 * exact sums: above it, where the sketch holds the weight above - P that the cut leaves between the band
 * and itself; below it, at the exact share of the weight below the band that the cut needs (a sample
 * that misses a few heavy tokens still holds the rest well). Else 0: the caller takes the candidate
 * tiers. */
static int64_t FN(flat_topp)(const FL_T *x, int64_t n, double xmax, FL_T itt, double p, FL_T floor, FN(cut) *cut,
                             int64_t *kpos, const FN(scratch) *s) {
    FN(sketch) sk;
    /* p within the sums' margin of 1 cannot be told from 1 here: the tiers */
    if (!(p > 0 && p * (1 + 1e-5) < 1 && xmax < INFINITY && FN(sketch_row)(x, n, xmax, itt, FL_FLAT_NEFF, &sk, s)))
        return 0;
    FL_T t[FL_BANDS + 2];
    int edge[2];
    FN(sketch_band)(&sk, FL_QBINS, p, t, edge);
    int64_t sampled = 0; /* few tokens down to the band (a peak): the tiers collect them cheaply */
    for (int q = edge[0]; q < FL_QBINS; q++) sampled += sk.count[q];
    if (sampled * FL_SAMPLE_STRIDE < FL_FLAT_MIN) return 0;
    for (int round = 0;; round++) {
        if (!((double)t[0] - (double)floor > 2e-3 / (double)itt)) return 0;
        const FL_T a = t[0], b = t[FL_BANDS + 1];
        int64_t count[2];
        const double total = SEL(exp_band)(x, n, (FL_T)xmax, itt, a, b, s->vals, count, s->bup, s->bfirst);
        const int64_t m = count[0];
        const double band = SEL(exp_collect)(s->vals, m, (FL_T)xmax, itt, s->wts, 0, NULL, NULL, NULL, NULL, NULL);
        double above = 0, P = p * total;
        for (int64_t k = 0; k * FL_BMAX_BLOCK < n; k++) above += s->bup[k];
        /* the total is summed in groups of four vectors in T, the weight above in lanes over a block */
        if (above < P * (1 - 1e-5) && above + band >= P * (1 + 1e-5)) {
            FN(cut) c = FN(select_weighted)(s->vals, s->wts, m, P - above, (double)a, b < INFINITY ? (double)b : xmax,
                                            t + 1, s);
            *kpos = c.i;
            if (c.i == INT64_MAX)
                c.v = a;
            else
                c.i = FN(band_index)(x, n, c.i, a, b, s->bfirst);
            c.count += count[1];
            c.weight += above;
            c.cand = 0;
            *cut = c;
            return m;
        }
        if (round == 1) return 0;
        /* a second guess from the exact sums: the cut leaves the weight above - P between b and it, or
         * takes the share (P - above - band) / (what is below a) of the weight below a */
        if (above >= P * (1 - 1e-5))
            FN(sketch_up)(&sk, edge[1], above - P, t, edge);
        else
            FN(sketch_band)(&sk, edge[0], (P - above - band) / (total - above - band), t, edge);
    }
}

/* The top `count` tokens by probability, ties to the lower index: by logit, with every token of
 * probability 0 tied (in float64, logits more than 745 below the max; with +inf in the row, every
 * finite logit). *vals: the ranking values (s->v), *bmax: NULL. */
static FN(cut) FN(top_by_prob)(const FL_T *x, int64_t n, int64_t count, double xmax, const FN(scratch) *s,
                               const FL_T **vals, const FL_T **bmax) {
    FL_T *v = s->v;
    if (xmax == INFINITY)
        for (int64_t j = 0; j < n; j++) v[j] = (FL_T)(x[j] == INFINITY);
    else
        for (int64_t j = 0; j < n; j++) v[j] = (double)x[j] - xmax >= -FL_P0_GAP ? x[j] : (FL_T)-INFINITY;
    *vals = v;
    *bmax = NULL;
    return FN(top_count)(v, n, count, s);
}

/* The cut with every token tied to its value kept too, unless that is fewer than min_keep tokens: then
 * the top min_keep (the union of the two prefixes, as Hugging Face's warpers keep). */
static FN(cut) FN(ties_or_min_keep)(FN(cut) c, const FL_T *v, int64_t n, int64_t min_keep, const FN(scratch) *s) {
    c.i = INT64_MAX;
    if (min_keep <= 1 || c.count >= min_keep) return c;
    c.count = SEL(collect_ge)(v, n, c.v, s->idx, NULL, NULL, NULL, NULL);
    c.cand = 0;
    return c.count >= min_keep ? c : FN(top_count)(v, n, min_keep, s);
}

/* The kept prefix of one row for one filter; *vals: the values the cut refers to (x, p or scores),
 * *bmax: upper bounds of them per block, or NULL. */
static FN(cut) FN(filter_cut)(int kind, const FL_T *x, int64_t n, double param, int64_t min_keep, double xmax,
                              const FN(scratch) *s, const FL_T **vals, const FL_T **bmax) {
    const int pinf = xmax == INFINITY;
    FN(cut) c;
    *vals = x;
    *bmax = NULL;
    if (kind == FL_TOPK) { /* on logits; ties with the k-th value kept (Hugging Face) */
        int64_t k = (int64_t)param;
        if (k <= 0) return FN(cut_all)(n, NAN);
        c = FN(top_count)(x, n, k > min_keep ? k : min_keep, s);
        c.i = INT64_MAX;
        return c;
    }
    if (kind == FL_TOPP) { /* ranked by logit (the order of the probabilities), lower index first */
        if (param >= 1) return FN(cut_all)(n, NAN);
        int64_t kpos; /* the sampler's */
        if (!(param > 0))
            c = FN(cut_all)(0, 0);
        else if (!FN(flat_topp)(x, n, xmax, 1, param, (FL_T)-INFINITY, &c, &kpos, s)) {
            double total;
            FL_T tau;
            const int64_t m = FN(topp_candidates)(x, n, xmax, 1.0, param, (FL_T)-INFINITY, &total, &tau, s);
            *bmax = s->bmax;
            c = FN(cut_among)(m, tau, xmax, param * total, 0, s); /* the max is a candidate */
        }
        return c.count < min_keep ? FN(top_by_prob)(x, n, min_keep, xmax, s, vals, bmax) : c;
    }
    *vals = s->p;
    FN(probs)(x, n, 1.0, pinf, s->p);
    if (kind == FL_MINP) { /* p >= min_p * p_max, ties kept */
        FN(cut) t = {(FL_T)(param * (double)SEL(max)(s->p, n)), INT64_MAX, 0, NAN, 0};
        t.count = SEL(collect_ge)(s->p, n, t.v, s->idx, NULL, NULL, NULL, NULL);
        return t.count < min_keep ? FN(top_by_prob)(x, n, min_keep, xmax, s, vals, bmax) : t;
    }
    /* typical: value = -|(-log p_i) - H|, ranked descending, weights p; lse = max - log(p_max) */
    const FL_T *p = s->p;
    const double lse = pinf ? 0 : xmax - log((double)SEL(max)(p, n));
    double px = 0;
    for (int64_t j = 0; j < n; j++)
        if (p[j] > 0) px += (double)p[j] * (double)x[j];
    const double H = pinf ? 0 : lse - px;
    for (int64_t j = 0; j < n; j++) /* probability 0: -inf, tied */
        s->v[j] = pinf ? (x[j] == INFINITY ? (FL_T)0 : (FL_T)-INFINITY)
                       : lse - (double)x[j] > FL_P0_GAP ? (FL_T)-INFINITY : (FL_T)-fabs((lse - (double)x[j]) - H);
    *vals = s->v;
    return FN(ties_or_min_keep)(FN(select)(s->v, p, n, param, 0, s->items, s->bk, NAN, NAN), s->v, n, min_keep, s);
}

typedef struct {
    int kind;
    const FL_T *x;
    FL_T *y;
    const fl_rows *r;
    const double *param, *xmax;
    FL_T fill;
    int64_t min_keep;
} FN(filter_job);

static void FN(filter_row)(int64_t i, const FN(scratch) *s, void *ctx) {
    const FN(filter_job) *j = ctx;
    const FL_T *xi = j->x + i * j->r->x_stride, *vals, *bmax;
    FN(cut) c = FN(filter_cut)(j->kind, xi, j->r->cols, j->param[i], j->min_keep, j->xmax[i], s, &vals, &bmax);
    FN(apply)(xi, vals, j->y + i * j->r->y_stride, j->r->cols, c, j->fill, bmax, s);
}

static int FN(filter)(int kind, const FL_T *x, FL_T *y, const fl_rows *r, const double *param, FL_T fill,
                      fl_decode *d) {
    if (!fl_rows_ok(r, 1) || r->cols > INT32_MAX || !d || !param || d->min_keep < 1) return FL_ERR_ARG;
    if (r->rows == 0) return FL_OK;
    double *xmax = malloc(sizeof(double) * (size_t)r->rows);
    if (!xmax) return FL_ERR_NOMEM;
    int st = FN(check_rows)(x, r, xmax, d);
    FN(filter_job) job = {kind, x, y, r, param, xmax, fill, d->min_keep};
    if (st == FL_OK) st = FN(for_rows)(r, FN(filter_row), &job);
    free(xmax);
    return st;
}

int API(top_k_filter)(const FL_T *x, FL_T *y, const fl_rows *r, const int64_t *k, FL_T fill, fl_decode *d) {
    if (!k || !r || r->rows < 0) return FL_ERR_ARG;
    double *kd = malloc(sizeof(double) * (size_t)(r->rows > 0 ? r->rows : 1));
    if (!kd) return FL_ERR_NOMEM;
    for (int64_t i = 0; i < r->rows; i++) kd[i] = (double)k[i];
    int st = FN(filter)(FL_TOPK, x, y, r, kd, fill, d);
    free(kd);
    return st;
}
int API(top_p_filter)(const FL_T *x, FL_T *y, const fl_rows *r, const double *p, FL_T fill, fl_decode *d) {
    return FN(filter)(FL_TOPP, x, y, r, p, fill, d);
}
int API(min_p_filter)(const FL_T *x, FL_T *y, const fl_rows *r, const double *min_p, FL_T fill, fl_decode *d) {
    return FN(filter)(FL_MINP, x, y, r, min_p, fill, d);
}
int API(typical_filter)(const FL_T *x, FL_T *y, const fl_rows *r, const double *mass, FL_T fill, fl_decode *d) {
    return FN(filter)(FL_TYPICAL, x, y, r, mass, fill, d);
}

int API(greedy)(const FL_T *x, const fl_rows *r, int64_t *ids, fl_decode *d) {
    if (!fl_rows_ok(r, 0) || !ids || !d) return FL_ERR_ARG;
    if (r->rows == 0) return FL_OK;
    double *xmax = malloc(sizeof(double) * (size_t)r->rows);
    if (!xmax) return FL_ERR_NOMEM;
    int st = FN(check_rows)(x, r, xmax, d);
    int nt = fl_threads_for(r);
    (void)nt;
    if (st == FL_OK) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t i = 0; i < r->rows; i++) ids[i] = SEL(argmax)(x + i * r->x_stride, r->cols, (FL_T)xmax[i]);
    }
    free(xmax);
    return st;
}

/* Draw among m tokens (rows idx[k], increasing; idx == NULL: k itself) with ranking values kv[k] and
 * probabilities q[k] (maybe unnormalized): the kept ones are those of the cut cp (in k) with q >= thr and
 * q > 0. The token is the first, in index order, whose cumulative kept q exceeds u times the kept mass:
 * the sums of blocks of FL_DRAW_BLOCK (vector passes, once, into bsum; the kept mass is their sum) find
 * its block. m >= 1. */
#define FL_DRAW_BLOCK 512
static inline int FN(drawable)(const FL_T *kv, const FL_T *q, int64_t k, FL_T thr, const FN(cut) *cp) {
    return q[k] > 0 && q[k] >= thr && FN(kept)(kv[k], k, cp);
}
/* kept_sum's split for the cut at place ci (INT64_MAX: every tie kept) in an array starting at place b */
static inline int64_t FN(split_at)(int64_t ci, int64_t b) { return ci == INT64_MAX ? INT64_MAX : ci + 1 - b; }
static int64_t FN(draw_kept)(const int32_t *idx, const FL_T *kv, const FL_T *q, int64_t m, FN(cut) cp, FL_T thr,
                             double u, double *bsum) {
    double mass = 0, cum = 0;
    for (int64_t b = 0; b < m; b += FL_DRAW_BLOCK) {
        const int64_t e = m - b < FL_DRAW_BLOCK ? m : b + FL_DRAW_BLOCK;
        mass += bsum[b / FL_DRAW_BLOCK] = SEL(kept_sum)(kv + b, q + b, e - b, cp.v, FN(split_at)(cp.i, b), thr);
    }
    const double target = u * mass;
    for (int64_t b = 0; b < m; b += FL_DRAW_BLOCK) {
        const int64_t e = m - b < FL_DRAW_BLOCK ? m : b + FL_DRAW_BLOCK;
        const double block = bsum[b / FL_DRAW_BLOCK];
        if (block <= 0 || cum + block <= target) {
            cum += block;
            continue;
        }
        for (int64_t k = b; k < e; k++)
            if (FN(drawable)(kv, q, k, thr, &cp)) {
                cum += (double)q[k];
                if (cum > target) return idx ? idx[k] : k;
            }
    }
    /* rounding left the target unreached: the last kept token (the top one always is, with q > 0) */
    int64_t k = m - 1;
    while (k > 0 && !FN(drawable)(kv, q, k, thr, &cp)) k--;
    return idx ? idx[k] : k;
}

/* Draw from the candidates (as FN(draw_kept)) with logits v[k] (all in [lo, hi]) and probabilities q[k],
 * which hold every token the filters keep: top-p with budget (< 0: off; v may then be NULL) on q ranked
 * by v descending, the lower index first on ties, then min-p relative to the top q. */
static int64_t FN(draw)(const int32_t *idx, const FL_T *v, const FL_T *q, int64_t m, double lo, double hi,
                        double budget, double min_p, double u, const FN(scratch) *s) {
    FN(cut) cp = budget < 0   ? FN(cut_all)(m, NAN)
                 : budget > 0 ? FN(select_weighted)(v, q, m, budget, lo, hi, NULL, s)
                              : FN(select)(v, NULL, m, 1, 1, s->items, s->bk, lo, hi);
    /* without top-p: q > -inf, every token */
    return FN(draw_kept)(idx, budget < 0 ? q : v, q, m, cp, (FL_T)(min_p * (double)SEL(max)(q, m)), u, s->bup);
}

/* The draw of a flat row's top-p cut cp (FN(flat_topp), which leaves the band's m logits and weights in
 * s->vals, s->wts, the cut at place kpos among them), min-p keeping every token: the kept tokens are
 * those above the band (their weight per block in s->bup) and the band's, up to the cut. As
 * FN(draw_kept), the first token in index order whose cumulative kept weight exceeds u times the kept
 * mass: block sums find its block, whose weights are then computed again (the same exp, the same
 * values). */
static int64_t FN(draw_flat)(const FL_T *x, int64_t n, double xmax, FL_T itt, int64_t m, FN(cut) cp, int64_t kpos,
                             double u, const FN(scratch) *s) {
    const int64_t nb = (n + FL_BMAX_BLOCK - 1) / FL_BMAX_BLOCK;
    /* the band's kept weight in one pass; per block (a short kept_sum each) only up to the draw's block */
    double mass = SEL(kept_sum)(s->vals, s->wts, m, cp.v, FN(split_at)(kpos, 0), 0), cum = 0;
    for (int64_t b = 0; b < nb; b++) mass += s->bup[b];
    const double target = u * mass;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t c0 = s->bfirst[b], c1 = b + 1 < nb ? s->bfirst[b + 1] : m;
        const double w =
            s->bup[b] + (c1 > c0 ? SEL(kept_sum)(s->vals + c0, s->wts + c0, c1 - c0, cp.v, FN(split_at)(kpos, c0), 0) : 0);
        if (w <= 0 || cum + w <= target) {
            cum += w;
            continue;
        }
        FL_T e[FL_BMAX_BLOCK + 16];
        const int64_t j0 = b * FL_BMAX_BLOCK, len = n - j0 < FL_BMAX_BLOCK ? n - j0 : FL_BMAX_BLOCK;
        SEL(exp_collect)(x + j0, len, (FL_T)xmax, itt, e, 0, NULL, NULL, NULL, NULL, NULL);
        for (int64_t j = 0; j < len; j++)
            if (e[j] > 0 && FN(kept)(x[j0 + j], j0 + j, &cp)) {
                cum += (double)e[j];
                if (cum > target) return j0 + j;
            }
    }
    /* rounding left the target unreached: the last kept token surely of weight > 0 (the exp is 0 only
     * below log of the smallest normal; the max is one) */
    int64_t j = n - 1;
    while (j > 0 && !(FN(kept)(x[j], j, &cp) && ((double)x[j] - xmax) * (double)itt > log(FL_TINY) + 1)) j--;
    return j;
}

/* One row of the sampler. */
static int64_t FN(sample_row)(const FL_T *x, int64_t n, int64_t row, double T, int64_t K, double P, double M,
                              uint64_t seed, double xmax_row, const FN(scratch) *s) {
    if (T == 0 || K == 1) return SEL(argmax)(x, n, (FL_T)xmax_row);
    const int pinf = xmax_row == INFINITY;
    const double u = fl_uniform(seed, row), it = 1.0 / T;
    if (K > 0 && K < n) { /* the top-k tokens by logit (ties kept) are the whole distribution */
        FN(cut) ck = FN(top_count)(x, n, K, s);
        const int64_t m = SEL(collect_ge)(x, n, ck.v, s->idx, x, s->vals, NULL, NULL);
        FL_T xmax = -INFINITY;
        for (int64_t k = 0; k < m; k++) xmax = s->vals[k] > xmax ? s->vals[k] : xmax;
        double mass = 0;
        for (int64_t k = 0; k < m; k++) {
            const FL_T xk = s->vals[k];
            s->wts[k] = pinf ? (FL_T)(xk == INFINITY) : (FL_T)exp(((double)xk - (double)xmax) * it);
            mass += (double)s->wts[k];
        }
        return FN(draw)(s->idx, s->vals, s->wts, m, (double)ck.v, (double)xmax, P < 1 ? P * mass : -1, M, u, s);
    }
    const FL_T itt = FN(inv_temperature)(it);
    if (P >= 1 && M <= 0 && !pinf) { /* every token */
        SEL(exp_collect)(x, n, (FL_T)xmax_row, itt, s->p, 0, NULL, NULL, NULL, NULL, NULL);
        return FN(draw)(NULL, NULL, s->p, n, NAN, NAN, -1, 0, u, s);
    }
    /* candidates: with min-p, none below weight M e^-0.001 (the top weight is 1; the margin covers the
     * rounding of the weights, and draw applies min-p exactly) */
    const FL_T floor = M > 0 && !pinf ? FN(below)(xmax_row, (log(M) - 1e-3) / (double)itt) : (FL_T)-INFINITY;
    FN(cut) cf;
    int64_t kpos;
    const int64_t mf = FN(flat_topp)(x, n, xmax_row, itt, P, floor, &cf, &kpos, s);
    if (mf) return FN(draw_flat)(x, n, xmax_row, itt, mf, cf, kpos, u, s);
    double total;
    FL_T tau;
    const int64_t m = FN(topp_candidates)(x, n, xmax_row, it, P, floor, &total, &tau, s);
    return m ? FN(draw)(s->idx, s->vals, s->wts, m, (double)tau, xmax_row, P < 1 ? P * total : -1, M, u, s)
             : SEL(argmax)(x, n, (FL_T)xmax_row); /* none: only with min_p > 1, which the API rejects */
}

typedef struct {
    const FL_T *x;
    const fl_rows *r;
    const fl_sample_params *sp;
    const double *xmax;
    int64_t *ids;
} FN(sample_job);

static void FN(sample_one)(int64_t i, const FN(scratch) *s, void *ctx) {
    const FN(sample_job) *j = ctx;
    const fl_sample_params *sp = j->sp;
    j->ids[i] = FN(sample_row)(j->x + i * j->r->x_stride, j->r->cols, i, sp->temperature[i], sp->top_k[i],
                               sp->top_p[i], sp->min_p[i], sp->seed[i], j->xmax[i], s);
}

int API(sample)(const FL_T *x, const fl_rows *r, const fl_sample_params *sp, int64_t *ids, fl_decode *d) {
    if (!fl_rows_ok(r, 0) || r->cols > INT32_MAX || !sp || !ids || !d || !sp->temperature || !sp->top_k || !sp->top_p || !sp->min_p ||
        !sp->seed)
        return FL_ERR_ARG;
    if (r->rows == 0) return FL_OK;
    double *xmax = malloc(sizeof(double) * (size_t)r->rows);
    if (!xmax) return FL_ERR_NOMEM;
    int st = FN(check_rows)(x, r, xmax, d);
    FN(sample_job) job = {x, r, sp, xmax, ids};
    if (st == FL_OK) st = FN(for_rows)(r, FN(sample_one), &job);
    free(xmax);
    return st;
}

typedef struct {
    double s;
    int64_t beam, token;
} FN(cand);

/* score desc, then beam asc, then token asc */
static int FN(cand_cmp)(const void *pa, const void *pb) {
    const FN(cand) *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    if (a->beam != b->beam) return a->beam < b->beam ? -1 : 1;
    return (a->token > b->token) - (a->token < b->token);
}

int API(beam_step)(const FL_T *x, const fl_rows *r, const double *score, int64_t k, int64_t *out_beam,
                   int64_t *out_token, double *out_score, fl_decode *d) {
    if (!fl_rows_ok(r, 0) || r->cols > INT32_MAX || !score || !d || k < 0 || k > r->rows * r->cols) return FL_ERR_ARG;
    if (k == 0) return FL_OK;
    const int64_t per_row = k < r->cols ? k : r->cols;
    double *lse = malloc(sizeof(double) * (size_t)r->rows);
    FN(cand) *cand = malloc(sizeof(FN(cand)) * (size_t)r->rows * (size_t)per_row);
    FN(scratch) s;
    int st = !lse || !cand || !FN(scratch_get)(&s, r->cols) ? FL_ERR_NOMEM : FL_OK;
    const int have_scratch = st == FL_OK;
    if (st == FL_OK) st = FN(check_rows)(x, r, lse, d);
    if (st == FL_OK) fl_softmax_active()->KERNEL(logsumexp)(x, r, 1.0, lse);
    int64_t m = 0;
    for (int64_t b = 0; st == FL_OK && b < r->rows; b++) {
        /* the row's per_row best tokens (exactly: ties to the lower index), scored in float64 */
        const FL_T *xb = x + b * r->x_stride;
        FN(cut) c = FN(top_count)(xb, r->cols, per_row, &s);
        for (int64_t j = 0, taken = 0; j < r->cols && taken < per_row; j++)
            if (FN(kept)(xb[j], j, &c)) {
                FN(cand) e = {score[b] + ((double)xb[j] - lse[b]), b, j};
                cand[m++] = e;
                taken++;
            }
    }
    if (st == FL_OK) {
        qsort(cand, (size_t)m, sizeof *cand, FN(cand_cmp));
        for (int64_t q = 0; q < k; q++) {
            out_beam[q] = cand[q].beam;
            out_token[q] = cand[q].token;
            out_score[q] = cand[q].s;
        }
    }
    if (have_scratch) FN(scratch_put)(&s);
    free(lse);
    free(cand);
    return st;
}

#undef FL_UBITS
#undef SEL
#endif
