/* decode_sample.c: greedy and the fused sampler, temperature -> top-k -> top-p -> min-p -> one draw
 * (csrc/README.md, "Decoding: filters, sampler, beam step"). Part of the decode.c unit (one per dtype). */
#include "decode.h"

/* splitmix64 finalizer: a bijective mix of 64 bits */
static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
/* Uniform [0, 1) with 53 random bits, a pure function of (seed, row): a counter-based generator. */
static inline double uniform(uint64_t seed, int64_t row) {
    uint64_t h = mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)row * 0xd1b54a32d192ed03ULL));
    return (double)(h >> 11) * 0x1.0p-53;
}

int FL_PICK(fl_greedy_f32, fl_greedy_f64)(const FL_T *x, const fl_rows *r, int64_t *ids, fl_decode *d) {
    if (!fl_rows_ok(r, 0) || !ids || !d) return FL_ERR_ARG;
    if (r->rows == 0) return FL_OK;
    double *xmax = malloc(sizeof(double) * (size_t)r->rows);
    if (!xmax) return FL_ERR_NOMEM;
    const int st = check_rows(x, r, xmax, d), nt = fl_threads_for(r);
    (void)nt;
    if (st == FL_OK) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t i = 0; i < r->rows; i++) ids[i] = SIMD->argmax(x + i * r->x_stride, r->cols, (FL_T)xmax[i]);
    }
    free(xmax);
    return st;
}

/* Draw among m tokens (rows idx[k], increasing; idx == NULL: k itself) with ranking values kv[k] and
 * probabilities q[k] (maybe unnormalized): the kept ones are those of the cut cp (in k) with q >= thr and
 * q > 0. The token is the first, in index order, whose cumulative kept q exceeds u times the kept mass:
 * the sums of blocks of FL_DRAW_BLOCK (vector passes, once, into bsum; the kept mass is their sum) find
 * its block. m >= 1. */
static inline int drawable(const FL_T *kv, const FL_T *q, int64_t k, FL_T thr, const cut *cp) {
    return q[k] > 0 && q[k] >= thr && cut_keeps(cp, kv[k], k);
}
static int64_t draw_kept(const int32_t *idx, const FL_T *kv, const FL_T *q, int64_t m, cut cp, FL_T thr, double u,
                         double *bsum) {
    double mass = 0, cum = 0;
    for (int64_t b = 0; b < m; b += FL_DRAW_BLOCK) {
        const int64_t e = m - b < FL_DRAW_BLOCK ? m : b + FL_DRAW_BLOCK;
        mass += bsum[b / FL_DRAW_BLOCK] = SIMD->kept_sum(kv + b, q + b, e - b, cp.v, cut_split(&cp, b), thr);
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
            if (drawable(kv, q, k, thr, &cp)) {
                cum += (double)q[k];
                if (cum > target) return idx ? idx[k] : k;
            }
    }
    /* rounding left the target unreached: the last kept token (the top one always is, with q > 0) */
    int64_t k = m - 1;
    while (k > 0 && !drawable(kv, q, k, thr, &cp)) k--;
    return idx ? idx[k] : k;
}

/* Draw from the m candidates s->idx with logits s->vals (all in [lo, hi]) and probabilities s->wts (of
 * mass `mass`), which hold every token the filters keep: top-p with P < 1 on them ranked by logit, the
 * lower index first on ties, then min-p relative to the top weight. */
static int64_t draw_candidates(int64_t m, double lo, double hi, double mass, double P, double min_p, double u,
                               const scratch *s) {
    const double thr = min_p * (double)SIMD->row_max(s->wts, m);
    if (!(P < 1)) return draw_kept(s->idx, s->wts, s->wts, m, cut_all(m, NAN), (FL_T)thr, u, s->bup);
    const cut cp = P * mass > 0 ? select_weighted(s->vals, s->wts, m, P * mass, lo, hi, NULL, s)
                                : select_hist(s->vals, NULL, m, 1, lo, hi, s); /* P = 0: the top token */
    return draw_kept(s->idx, s->vals, s->wts, m, cp, (FL_T)thr, u, s->bup);
}

/* One row of the sampler. */
static int64_t sample_row(const FL_T *x, int64_t n, int64_t row, double T, int64_t K, double P, double M,
                          uint64_t seed, double xmax_row, const scratch *s) {
    if (T == 0 || K == 1) return SIMD->argmax(x, n, (FL_T)xmax_row);
    const int pinf = xmax_row == INFINITY;
    const double u = uniform(seed, row), it = 1.0 / T;
    if (K > 0 && K < n) { /* the top-k tokens by logit (ties kept) are the whole distribution */
        const cut ck = top_count(x, n, K, s);
        const int64_t m = SIMD->collect_ge(x, n, ck.v, s->idx, s->vals);
        const FL_T xmax = SIMD->row_max(s->vals, m);
        double mass = 0;
        for (int64_t k = 0; k < m; k++) {
            const FL_T xk = s->vals[k];
            s->wts[k] = pinf ? (FL_T)(xk == INFINITY) : (FL_T)exp(((double)xk - (double)xmax) * it);
            mass += (double)s->wts[k];
        }
        return draw_candidates(m, (double)ck.v, (double)xmax, mass, P, M, u, s);
    }
    const FL_T itt = inv_temperature(it);
    if (P >= 1 && M <= 0 && !pinf) { /* every token */
        SIMD->exp_weights(x, n, (FL_T)xmax_row, itt, s->p);
        return draw_kept(NULL, s->p, s->p, n, cut_all(n, NAN), 0, u, s->bup);
    }
    /* candidates: with min-p, none below weight M e^-FL_MINP_MARGIN (the top weight is 1; the margin
     * covers the rounding of the weights, and the draw applies min-p exactly) */
    const FL_T floor = M > 0 && !pinf ? below(xmax_row, (log(M) - FL_MINP_MARGIN) / (double)itt) : (FL_T)-INFINITY;
    flat_cut fc;
    if (flat_topp(x, n, xmax_row, itt, P, floor, &fc, s)) return draw_flat(x, n, xmax_row, itt, &fc, u, s);
    double total;
    FL_T tau;
    const int64_t m = topp_candidates(x, n, xmax_row, it, P, floor, &total, &tau, s);
    return m ? draw_candidates(m, (double)tau, xmax_row, total, P, M, u, s)
             : SIMD->argmax(x, n, (FL_T)xmax_row); /* none: only with min_p > 1, which the API rejects */
}

typedef struct {
    int64_t n;
    const fl_sample_params *sp;
    int64_t *ids;
} sample_job;

static void sample_one(int64_t i, const FL_T *x, double xmax, const scratch *s, void *ctx) {
    const sample_job *j = ctx;
    const fl_sample_params *sp = j->sp;
    j->ids[i] = sample_row(x, j->n, i, sp->temperature[i], sp->top_k[i], sp->top_p[i], sp->min_p[i], sp->seed[i],
                           xmax, s);
}

int FL_PICK(fl_sample_f32, fl_sample_f64)(const FL_T *x, const fl_rows *r, const fl_sample_params *sp, int64_t *ids,
                                          fl_decode *d) {
    if (!fl_rows_ok(r, 0) || r->cols > INT32_MAX || !sp || !ids || !d || !sp->temperature || !sp->top_k ||
        !sp->top_p || !sp->min_p || !sp->seed)
        return FL_ERR_ARG;
    sample_job job = {r->cols, sp, ids};
    return run_rows(x, r, d, sample_one, &job);
}
