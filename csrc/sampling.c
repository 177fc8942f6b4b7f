/* sampling.c: decoding filters (top-k, top-p, min-p, typical), greedy, the fused sampler and the
 * beam-search step. Baseline C; the vector passes (softmax, log-sum-exp) go through the dispatched
 * softmax kernels. This file includes itself once per dtype (T = float, double).
 *
 * Selection without sorting the vocabulary: values are mapped to order-preserving unsigned keys; a
 * histogram over the top 11 bits (count and weight per bucket) finds, scanning from the largest bucket,
 * the bucket holding the cut; that bucket's tokens are collected and histogrammed on the next 11 bits
 * while more than FL_SORT_MAX remain; the last few are insertion-sorted by (value desc, index asc).
 * O(V) per row plus O(b log b) for the final bucket. Weights are summed in float64.
 */
#ifndef FL_T
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dispatch.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define FL_HBITS 11
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

static int rows_ok(const fl_rows *r, int has_output) {
    if (!r || r->rows < 0 || r->cols < 0) return 0;
    if (r->rows > 1 && r->x_stride < r->cols) return 0;
    if (has_output && r->rows > 1 && r->y_stride < r->cols) return 0;
    return 1;
}

#define FL_T float
#define FL_U uint32_t
#define FN(name) name##_f32
#define API(name) fl_##name##_f32
#define KERNEL(name) name##_f32
#include "sampling.c"
#undef FL_T
#undef FL_U
#undef FN
#undef API
#undef KERNEL

#define FL_T double
#define FL_U uint64_t
#define FN(name) name##_f64
#define API(name) fl_##name##_f64
#define KERNEL(name) name##_f64
#include "sampling.c"

#else /* ---------------------------------------------------------------- template body, T = FL_T */

#define FL_UBITS ((int)(8 * sizeof(FL_U)))

/* Order-preserving key: a < b (as numbers, no NaN) iff key(a) < key(b); -0 sorts just below +0. */
static inline FL_U FN(key)(FL_T v) {
    FL_U u;
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
} FN(cut);

static inline int FN(kept)(FL_T v, int64_t i, const FN(cut) *c) { return v > c->v || (v == c->v && i <= c->i); }

static FN(cut) FN(cut_all)(int64_t n, double weight) {
    FN(cut) c = {(FL_T)-INFINITY, INT64_MAX, n, weight};
    return c;
}

static inline int FN(before)(const FN(item) *a, const FN(item) *b) { return a->v > b->v || (a->v == b->v && a->i < b->i); }

/* Scan buckets from the largest: the first whose count (by_count) or weight takes the running total to
 * >= budget. Totals of the buckets above it go to *cum_c / *cum_w. Returns -1 if the budget is never
 * reached (with lowest_ok, the lowest non-empty bucket instead, for rounding in the recursion). */
static int FN(scan)(const int64_t *hc, const double *hw, double budget, int by_count, int lowest_ok,
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
 * < budget; w == NULL: weight 1. budget > 0, n >= 1. items: scratch of n entries. */
static FN(cut) FN(select)(const FL_T *v, const FL_T *w, int64_t n, double budget, int by_count, FN(item) *items) {
    int64_t hc[FL_HSIZE];
    double hw[FL_HSIZE];
    int64_t cum_c = 0;
    double cum_w = 0;
    int shift = FL_UBITS - FL_HBITS;
    memset(hc, 0, sizeof hc);
    memset(hw, 0, sizeof hw);
    for (int64_t i = 0; i < n; i++) {
        size_t b = (size_t)(FN(key)(v[i]) >> shift);
        hc[b]++;
        hw[b] += w ? (double)w[i] : 1.0;
    }
    int bs = FN(scan)(hc, hw, budget, by_count, 0, &cum_c, &cum_w);
    if (bs < 0) return FN(cut_all)(n, cum_w);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if ((int)(FN(key)(v[i]) >> shift) == bs) {
            items[m].v = v[i];
            items[m].w = w ? (double)w[i] : 1.0;
            items[m++].i = i;
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
    FN(cut) c = {items[0].v, items[0].i, cum_c, cum_w};
    for (int64_t k = 0; k < m && (by_count ? (double)c.count : c.weight) < budget; k++) {
        c.v = items[k].v;
        c.i = items[k].i;
        c.count++;
        c.weight += items[k].w;
    }
    return c;
}

/* The first max_count-best prefix by count: the top `count` tokens (count >= 1). */
static FN(cut) FN(top_count)(const FL_T *v, const FL_T *w, int64_t n, int64_t count, FN(item) *items) {
    return count >= n ? FN(cut_all)(n, NAN) : FN(select)(v, w, n, (double)count, 1, items);
}

/* Row check: 0, FL_ERR_NAN or FL_ERR_EMPTY from the row's log-sum-exp; *pinf: it holds +inf. */
static int FN(check_row)(double lse, int *pinf) {
    *pinf = lse == INFINITY;
    if (lse != lse) return FL_ERR_NAN;
    if (lse == -INFINITY) return FL_ERR_EMPTY;
    return FL_OK;
}

/* All rows' log-sum-exp (x / T with inv_t), checked before anything is written. */
static int FN(check_rows)(const FL_T *x, const fl_rows *r, double *lse, fl_decode *d) {
    fl_rows r1 = *r;
    fl_softmax_active()->KERNEL(logsumexp)(x, &r1, 1.0, lse);
    for (int64_t i = 0; i < r->rows; i++) {
        int pinf;
        int st = FN(check_row)(lse[i], &pinf);
        if (st != FL_OK) {
            d->bad_row = i;
            return st;
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

/* Scratch per thread: values (n), weights (n), items (n). */
typedef struct {
    FL_T *v, *p;
    FN(item) *items;
} FN(scratch);

static int FN(scratch_alloc)(FN(scratch) *s, int nt, int64_t n) {
    size_t each = (size_t)(n > 0 ? n : 1);
    s->v = malloc(sizeof(FL_T) * each * (size_t)nt);
    s->p = malloc(sizeof(FL_T) * each * (size_t)nt);
    s->items = malloc(sizeof(FN(item)) * each * (size_t)nt);
    if (!s->v || !s->p || !s->items) {
        free(s->v);
        free(s->p);
        free(s->items);
        return FL_ERR_NOMEM;
    }
    return FL_OK;
}
static void FN(scratch_free)(FN(scratch) *s) {
    free(s->v);
    free(s->p);
    free(s->items);
}

/* The kept prefix of one row for one filter; values the cut refers to in *vals (x, p or -score). */
static FN(cut) FN(filter_cut)(int kind, const FL_T *x, int64_t n, double param, int64_t min_keep, int pinf,
                              double lse, FL_T *p, FL_T *v, FN(item) *items, const FL_T **vals) {
    FN(cut) c;
    switch (kind) {
    case FL_TOPK: { /* on logits; ties with the k-th value kept (Hugging Face) */
        int64_t k = (int64_t)param;
        *vals = x;
        if (k <= 0) return FN(cut_all)(n, NAN);
        c = FN(top_count)(x, NULL, n, k > min_keep ? k : min_keep, items);
        c.i = INT64_MAX;
        return c;
    }
    case FL_TOPP:
        FN(probs)(x, n, 1.0, pinf, p);
        *vals = p;
        if (param >= 1) return FN(cut_all)(n, NAN);
        c = param > 0 ? FN(select)(p, p, n, param, 0, items) : FN(top_count)(p, p, n, 1, items);
        return c.count < min_keep ? FN(top_count)(p, p, n, min_keep, items) : c;
    case FL_MINP: {
        FN(probs)(x, n, 1.0, pinf, p);
        *vals = p;
        FL_T pmax = 0;
        for (int64_t j = 0; j < n; j++) pmax = p[j] > pmax ? p[j] : pmax;
        const FL_T thr = (FL_T)(param * (double)pmax);
        int64_t count = 0;
        for (int64_t j = 0; j < n; j++) count += p[j] >= thr;
        if (count < min_keep) return FN(top_count)(p, p, n, min_keep, items);
        FN(cut) t = {thr, INT64_MAX, count, NAN}; /* kept iff p >= thr */
        return t;
    }
    default: { /* typical: value = -|(-log p_i) - H|, ranked descending, weights p */
        FN(probs)(x, n, 1.0, pinf, p);
        double px = 0;
        for (int64_t j = 0; j < n; j++)
            if (p[j] > 0) px += (double)p[j] * (double)x[j];
        const double H = pinf ? 0 : lse - px;
        for (int64_t j = 0; j < n; j++)
            v[j] = pinf ? (x[j] == INFINITY ? (FL_T)0 : (FL_T)-INFINITY) : (FL_T)-fabs((lse - (double)x[j]) - H);
        *vals = v;
        c = FN(select)(v, p, n, param, 0, items);
        c.i = INT64_MAX; /* ties with the last kept score stay */
        return c.count < min_keep ? FN(top_count)(v, p, n, min_keep, items) : c;
    }
    }
}

static int FN(filter)(int kind, const FL_T *x, FL_T *y, const fl_rows *r, const double *param, FL_T fill,
                      fl_decode *d) {
    if (!rows_ok(r, 1) || !d || !param || d->min_keep < 1) return FL_ERR_ARG;
    if (r->rows == 0) return FL_OK;
    double *lse = malloc(sizeof(double) * (size_t)r->rows);
    if (!lse) return FL_ERR_NOMEM;
    int st = FN(check_rows)(x, r, lse, d);
    int nt = fl_threads_for(r);
    FN(scratch) s;
    if (st == FL_OK) st = FN(scratch_alloc)(&s, nt, r->cols);
    if (st != FL_OK) {
        free(lse);
        return st;
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num();
#else
        int t = 0;
#endif
        FL_T *p = s.p + (size_t)t * (size_t)r->cols, *v = s.v + (size_t)t * (size_t)r->cols;
        FN(item) *items = s.items + (size_t)t * (size_t)r->cols;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < r->rows; i++) {
            const FL_T *xi = x + i * r->x_stride;
            FL_T *yi = y + i * r->y_stride;
            const FL_T *vals;
            FN(cut) c = FN(filter_cut)(kind, xi, r->cols, param[i], d->min_keep, lse[i] == INFINITY, lse[i], p, v,
                                       items, &vals);
            for (int64_t j = 0; j < r->cols; j++) yi[j] = FN(kept)(vals[j], j, &c) ? xi[j] : fill;
        }
    }
    FN(scratch_free)(&s);
    free(lse);
    return FL_OK;
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

static int64_t FN(argmax)(const FL_T *x, int64_t n) {
    int64_t best = 0;
    for (int64_t j = 1; j < n; j++)
        if (x[j] > x[best]) best = j;
    return best;
}

int API(greedy)(const FL_T *x, const fl_rows *r, int64_t *ids, fl_decode *d) {
    if (!rows_ok(r, 0) || !ids || !d) return FL_ERR_ARG;
    if (r->rows == 0) return FL_OK;
    double *lse = malloc(sizeof(double) * (size_t)r->rows);
    if (!lse) return FL_ERR_NOMEM;
    int st = FN(check_rows)(x, r, lse, d);
    free(lse);
    if (st != FL_OK) return st;
    int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < r->rows; i++) ids[i] = FN(argmax)(x + i * r->x_stride, r->cols);
    return FL_OK;
}

/* One row of the sampler. */
static int64_t FN(sample_row)(const FL_T *x, int64_t n, int64_t row, double T, int64_t K, double P, double M,
                              uint64_t seed, int pinf, FL_T *p, FN(item) *items) {
    if (T == 0 || K == 1) return FN(argmax)(x, n);
    FN(probs)(x, n, 1.0 / T, pinf, p);
    /* candidates: top-k by logit (ties kept), else the whole row */
    FN(cut) ck = K > 0 && K < n ? FN(top_count)(x, NULL, n, K, items) : FN(cut_all)(n, NAN);
    ck.i = INT64_MAX;
    double mass_k = 0;
    FL_T pmax = 0;
    for (int64_t j = 0; j < n; j++)
        if (FN(kept)(x[j], j, &ck)) {
            mass_k += (double)p[j];
            pmax = p[j] > pmax ? p[j] : pmax;
        }
    /* top-p on the top-k distribution (renormalized), then min-p relative to the top probability */
    FN(cut) cp = P >= 1 ? FN(cut_all)(n, NAN) : P > 0 ? FN(select)(p, p, n, P * mass_k, 0, items)
                                                      : FN(top_count)(p, p, n, 1, items);
    const FL_T thr = (FL_T)(M * (double)pmax);
    double total = 0;
    for (int64_t j = 0; j < n; j++)
        if (p[j] >= thr && FN(kept)(x[j], j, &ck) && FN(kept)(p[j], j, &cp)) total += (double)p[j];
    const double u = fl_uniform(seed, row) * total;
    double cum = 0;
    int64_t last = -1;
    for (int64_t j = 0; j < n; j++)
        if (p[j] > 0 && p[j] >= thr && FN(kept)(x[j], j, &ck) && FN(kept)(p[j], j, &cp)) {
            cum += (double)p[j];
            last = j;
            if (cum > u) return j;
        }
    return last >= 0 ? last : FN(argmax)(x, n); /* rounding: the last token with mass */
}

int API(sample)(const FL_T *x, const fl_rows *r, const fl_sample_params *sp, int64_t *ids, fl_decode *d) {
    if (!rows_ok(r, 0) || !sp || !ids || !d || !sp->temperature || !sp->top_k || !sp->top_p || !sp->min_p ||
        !sp->seed)
        return FL_ERR_ARG;
    if (r->rows == 0) return FL_OK;
    double *lse = malloc(sizeof(double) * (size_t)r->rows);
    if (!lse) return FL_ERR_NOMEM;
    int st = FN(check_rows)(x, r, lse, d);
    int nt = fl_threads_for(r);
    FN(scratch) s;
    if (st == FL_OK) st = FN(scratch_alloc)(&s, nt, r->cols);
    if (st != FL_OK) {
        free(lse);
        return st;
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num();
#else
        int t = 0;
#endif
        FL_T *p = s.p + (size_t)t * (size_t)r->cols;
        FN(item) *items = s.items + (size_t)t * (size_t)r->cols;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < r->rows; i++)
            ids[i] = FN(sample_row)(x + i * r->x_stride, r->cols, i, sp->temperature[i], sp->top_k[i], sp->top_p[i],
                                    sp->min_p[i], sp->seed[i], lse[i] == INFINITY, p, items);
    }
    FN(scratch_free)(&s);
    free(lse);
    return FL_OK;
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
    if (!rows_ok(r, 0) || !score || !d || k < 0 || k > r->rows * r->cols) return FL_ERR_ARG;
    if (k == 0) return FL_OK;
    const int64_t per_row = k < r->cols ? k : r->cols;
    double *lse = malloc(sizeof(double) * (size_t)r->rows);
    FN(item) *items = malloc(sizeof(FN(item)) * (size_t)r->cols);
    FN(cand) *cand = malloc(sizeof(FN(cand)) * (size_t)r->rows * (size_t)per_row);
    int st = !lse || !items || !cand ? FL_ERR_NOMEM : FN(check_rows)(x, r, lse, d);
    int64_t m = 0;
    for (int64_t b = 0; st == FL_OK && b < r->rows; b++) {
        /* the row's per_row best tokens (exactly: ties to the lower index), scored in float64 */
        const FL_T *xb = x + b * r->x_stride;
        FN(cut) c = FN(top_count)(xb, NULL, r->cols, per_row, items);
        for (int64_t j = 0; j < r->cols; j++)
            if (FN(kept)(xb[j], j, &c)) {
                FN(cand) e = {score[b] + ((double)xb[j] - lse[b]), b, j};
                cand[m++] = e;
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
    free(lse);
    free(items);
    free(cand);
    return st;
}

#undef FL_UBITS
#endif
