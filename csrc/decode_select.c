/* decode_select.c: exact selection without sorting the vocabulary (csrc/README.md, "Decoding:
 * selection"): the longest prefix of the order (value desc, index asc) whose count or weight ranked
 * before each token is below a budget. Part of the decode.c unit (one per dtype). */
#include "decode.h"

/* Order-preserving key: a < b (as numbers, no NaN) iff key(a) < key(b), and -0, +0 share a key. */
static inline FL_U sort_key(FL_T v) {
    FL_U u;
    v += (FL_T)0; /* -0 + 0 = +0: the two zeros are one value */
    memcpy(&u, &v, sizeof u);
    return u >> (8 * sizeof(FL_U) - 1) ? ~u : u | ((FL_U)1 << (8 * sizeof(FL_U) - 1));
}

static inline int item_before(const item *a, const item *b) { return a->v > b->v || (a->v == b->v && a->i < b->i); }

/* Scan buckets from the largest: the first whose count (by_count) or weight takes the running total to
 * >= budget. Totals of the buckets above it go to *cum_c / *cum_w. Returns -1 if the budget is never
 * reached (with lowest_ok, the lowest non-empty bucket instead, for rounding in the recursion). */
static int scan_buckets(const int32_t *hc, const double *hw, double budget, int by_count, int lowest_ok,
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

/* The longest prefix whose every token has (the count, w == NULL, or the weight w) ranked before it
 * < budget (> 0); n >= 1. When lo < hi (finite bounds of v) the first histogram is linear in the value
 * over [lo, hi] (logits spread about evenly); else, and for every refinement, it is on the keys' bits.
 * Equal values always share a bucket. Uses s->items, s->bk. When the budget is not reached every token
 * is kept (ties set). */
static cut select_hist(const FL_T *v, const FL_T *w, int64_t n, double budget, double lo, double hi,
                       const scratch *s) {
    int32_t hc[FL_HSIZE]; /* n < 2^31 */
    double hw[FL_HSIZE];
    item *items = s->items;
    uint16_t *bk = s->bk;
    const int by_count = w == NULL, ubits = 8 * sizeof(FL_U);
    int64_t cum_c = 0;
    double cum_w = 0;
    const double scale = lo < hi ? (FL_HSIZE - 0.5) / (hi - lo) : 0;
    const int linear = scale > 0 && scale < INFINITY; /* a finite range, not too narrow for double */
    int shift = linear ? ubits : ubits - FL_HBITS;
    memset(hc, 0, sizeof hc);
    memset(hw, 0, sizeof hw);
    if (linear) /* bucket ids first (a loop without stores to the histogram), then the histogram */
        SIMD->buckets(v, n, lo, scale, bk);
    else
        for (int64_t i = 0; i < n; i++) bk[i] = (uint16_t)(sort_key(v[i]) >> (ubits - FL_HBITS));
    for (int64_t i = 0; i < n; i++) {
        hc[bk[i]]++;
        hw[bk[i]] += w ? (double)w[i] : 1.0;
    }
    int bs = scan_buckets(hc, hw, budget, by_count, 0, &cum_c, &cum_w);
    if (bs < 0) return cut_all(n, cum_w);
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
            size_t b = (size_t)(sort_key(items[k].v) >> shift) & (FL_HSIZE - 1);
            hc[b]++;
            hw[b] += items[k].w;
        }
        bs = scan_buckets(hc, hw, budget, by_count, 1, &cum_c, &cum_w);
        int64_t m2 = 0;
        for (int64_t k = 0; k < m; k++)
            if ((int)((sort_key(items[k].v) >> shift) & (FL_HSIZE - 1)) == bs) items[m2++] = items[k];
        m = m2;
    }
    if (shift > 0) /* at shift 0 all values are equal and already in index order */
        for (int64_t k = 1; k < m; k++) {
            item t = items[k];
            int64_t j = k;
            for (; j > 0 && item_before(&t, &items[j - 1]); j--) items[j] = items[j - 1];
            items[j] = t;
        }
    cut c = {items[0].v, items[0].i, 0, cum_c, cum_w, 0};
    for (int64_t k = 0; k < m && (by_count ? (double)c.count : c.weight) < budget; k++) {
        c.v = items[k].v;
        c.i = items[k].i;
        c.count++;
        c.weight += items[k].w;
    }
    return c;
}

/* select_hist by weight (w >= 0) of n values in [lo, hi]. Many values are narrowed first: the masses
 * above FL_BANDS thresholds spread over [lo, hi] (one vector pass; in the first round the ascending
 * thresholds `first` instead, where the caller has a better guess, else NULL) locate a band [a, b) that
 * holds the cut, with margins for their rounding; its tokens are collected, with the exact weight and
 * number of those above it, and narrowed again while that shrinks them. select_hist then runs on the
 * band. When the exact sums contradict the margins, it runs on all n instead. The bands go to s->v,
 * s->p, s->pos. */
static cut select_weighted(const FL_T *v, const FL_T *w, int64_t n, double budget, double lo, double hi,
                           const FL_T *first, const scratch *s) {
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
        SIMD->band_masses(bv, bw, m, t, mass);
        for (int k = 0; k < FL_BANDS; k++)
            if (above + mass[k] >= budget * (1 + FL_SUM_MARGIN)) ka = k; /* surely reaches the budget */
        for (int k = FL_BANDS - 1; k > ka; k--)
            if (above + mass[k] < budget * (1 - FL_SUM_MARGIN)) kb = k; /* surely does not */
        const FL_T a = ka < 0 ? (FL_T)blo : t[ka], b = kb < FL_BANDS ? t[kb] : (FL_T)INFINITY;
        const int64_t m2 = SIMD->collect_band(bv, bw, m, a, b, bv == v ? pos : tmp, s->v, s->p, &up, &cu);
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
    cut c = m ? select_hist(bv, bw, m, budget - above, blo, bhi, s) : cut_all(0, 0);
    if (bv == v) return c;
    if (c.ties) return select_hist(v, w, n, budget, lo, hi, s);
    c.i = pos[c.i];
    c.count += count_above;
    c.weight += above;
    return c;
}

/* Blocks of FL_BMAX_BLOCK values with upper bounds bmax, taken in runs: the run from block b is the
 * blocks on the same side of t as b (bmax >= t, returned, or not); [*lo, *hi) its values, *e the
 * block after it. */
static int block_run(const FL_T *bmax, int64_t n, int64_t b, FL_T t, int64_t *lo, int64_t *hi, int64_t *e) {
    const int64_t nb = (n + FL_BMAX_BLOCK - 1) / FL_BMAX_BLOCK;
    const int reach = bmax[b] >= t;
    for (*e = b + 1; *e < nb && (bmax[*e] >= t) == reach;) ++*e;
    *lo = b * FL_BMAX_BLOCK;
    *hi = *e * FL_BMAX_BLOCK < n ? *e * FL_BMAX_BLOCK : n;
    return reach;
}

/* The indices j with v[j] >= tau into s->idx and their values into s->vals, in index order, scanning only
 * the blocks whose upper bound bmax reaches tau. Returns their number. */
static int64_t collect_in_blocks(const FL_T *v, int64_t n, FL_T tau, const FL_T *bmax, const scratch *s) {
    int64_t m = 0, lo, hi;
    for (int64_t b = 0; b * FL_BMAX_BLOCK < n;) {
        if (!block_run(bmax, n, b, tau, &lo, &hi, &b)) continue;
        const int64_t got = SIMD->collect_ge(v + lo, hi - lo, tau, s->idx + m, s->vals + m);
        for (int64_t k = m; k < m + got; k++) s->idx[k] += (int32_t)lo;
        m += got;
    }
    return m;
}

/* The selection over the m candidates s->vals (row indices s->idx): the tokens of the row >= tau, with
 * max hi. Each weighs 1 (by_count) or s->wts; the cut comes back in row indices, c.cand = m. When the
 * budget is not reached, every candidate is kept (c.v = tau, ties). */
static cut cut_among(int64_t m, FL_T tau, double hi, double budget, int by_count, const scratch *s) {
    if (m == 0) {
        cut none = {(FL_T)INFINITY, -1, 0, 0, 0, 0};
        return none;
    }
    cut c = by_count ? select_hist(s->vals, NULL, m, budget, (double)tau, hi, s)
                     : select_weighted(s->vals, s->wts, m, budget, (double)tau, hi, NULL, s);
    if (c.ties)
        c.v = tau;
    else
        c.i = s->idx[c.i];
    c.cand = m;
    return c;
}

/* The top `count` tokens of v (count < n), ties to the lower index: candidates from the chunk bound. */
static cut top_count(const FL_T *v, int64_t n, int64_t count, const scratch *s) {
    if (count >= n) return cut_all(n, NAN);
    const FL_T tau = count * 64 <= n ? SIMD->chunk_bound(v, n, count) : (FL_T)-INFINITY;
    if (tau == -INFINITY) return select_hist(v, NULL, n, (double)count, 0, 0, s);
    const int64_t m = SIMD->collect_ge(v, n, tau, s->idx, s->vals);
    return cut_among(m, tau, (double)SIMD->row_max(s->vals, m), (double)count, 1, s);
}
