/* decode_filters.c: the filters top-k, top-p, min-p and typical (csrc/README.md, "Decoding: filters,
 * sampler, beam step"). Each keeps a prefix of its ranking and writes fill elsewhere. Part of the
 * decode.c unit (one per dtype). */
#include "decode.h"

enum filter_kind { FL_TOPK, FL_TOPP, FL_MINP, FL_TYPICAL };

/* p = softmax(x * inv_t); a row holding +inf gives its +inf entries equal shares. */
static void probs(const FL_T *x, int64_t n, double inv_t, int pinf, FL_T *p) {
    if (pinf) {
        int64_t c = 0;
        for (int64_t j = 0; j < n; j++) c += x[j] == INFINITY;
        for (int64_t j = 0; j < n; j++) p[j] = x[j] == INFINITY ? (FL_T)(1.0 / (double)c) : 0;
        return;
    }
    fl_rows one = {1, n, n, n, 1};
    SOFTMAX_KERNELS->softmax(x, p, &one, inv_t, 0);
}

/* The top `count` tokens by probability, ties to the lower index: by logit, with every token of
 * probability 0 tied (in float64, logits more than FL_P0_GAP below the max; with +inf in the row, every
 * finite logit). *vals: the ranking values (s->v). */
static cut top_by_prob(const FL_T *x, int64_t n, int64_t count, double xmax, const scratch *s, const FL_T **vals) {
    FL_T *v = s->v;
    if (xmax == INFINITY)
        for (int64_t j = 0; j < n; j++) v[j] = (FL_T)(x[j] == INFINITY);
    else
        for (int64_t j = 0; j < n; j++) v[j] = (double)x[j] - xmax >= -FL_P0_GAP ? x[j] : (FL_T)-INFINITY;
    *vals = v;
    return top_count(v, n, count, s);
}

/* The cut with every token tied to its value kept too, unless that is fewer than min_keep tokens: then
 * the top min_keep (the union of the two prefixes, as Hugging Face's warpers keep). */
static cut ties_or_min_keep(cut c, const FL_T *v, int64_t n, int64_t min_keep, const scratch *s) {
    c.ties = 1;
    if (min_keep <= 1 || c.count >= min_keep) return c;
    c.count = SIMD->count_ge(v, n, c.v);
    c.cand = 0;
    return c.count >= min_keep ? c : top_count(v, n, min_keep, s);
}

/* The kept prefix of one row for one filter; *vals: the values the cut refers to (x, p or scores),
 * *bmax: upper bounds of them per block, or NULL. */
static cut filter_cut(int kind, const FL_T *x, int64_t n, double param, int64_t min_keep, double xmax,
                      const scratch *s, const FL_T **vals, const FL_T **bmax) {
    const int pinf = xmax == INFINITY;
    cut c;
    *vals = x;
    *bmax = NULL;
    if (kind == FL_TOPK) { /* on logits; ties with the k-th value kept (Hugging Face) */
        if (!(param >= 1) || param >= (double)n) return cut_all(n, NAN); /* k <= 0 or k >= n: all kept */
        const int64_t k = (int64_t)param; /* (in range: converting a double >= 2^63 is undefined) */
        c = top_count(x, n, k > min_keep ? k : min_keep, s);
        c.ties = 1;
        return c;
    }
    if (kind == FL_TOPP) { /* ranked by logit (the order of the probabilities), lower index first */
        if (param >= 1) return cut_all(n, NAN);
        c = param > 0 ? topp_cut(x, n, param, xmax, s, bmax) : cut_all(0, 0);
        if (c.count >= min_keep) return c;
        *bmax = NULL;
        return top_by_prob(x, n, min_keep, xmax, s, vals);
    }
    *vals = s->p;
    probs(x, n, 1.0, pinf, s->p);
    if (kind == FL_MINP) { /* p >= min_p * p_max, ties kept */
        cut t = {(FL_T)(param * (double)SIMD->row_max(s->p, n)), 0, 1, 0, NAN, 0};
        t.count = SIMD->count_ge(s->p, n, t.v);
        return t.count < min_keep ? top_by_prob(x, n, min_keep, xmax, s, vals) : t;
    }
    /* typical: value = -|(-log p_i) - H|, ranked descending, weights p; lse = max - log(p_max) */
    const FL_T *p = s->p;
    const double lse = pinf ? 0 : xmax - log((double)SIMD->row_max(p, n));
    double px = 0;
    for (int64_t j = 0; j < n; j++)
        if (p[j] > 0) px += (double)p[j] * (double)x[j];
    const double H = pinf ? 0 : lse - px;
    for (int64_t j = 0; j < n; j++) /* probability 0: -inf, tied */
        s->v[j] = pinf ? (x[j] == INFINITY ? (FL_T)0 : (FL_T)-INFINITY)
                       : lse - (double)x[j] > FL_P0_GAP ? (FL_T)-INFINITY : (FL_T)-fabs((lse - (double)x[j]) - H);
    *vals = s->v;
    return ties_or_min_keep(select_hist(s->v, p, n, param, 0, 0, s), s->v, n, min_keep, s);
}

/* y = x where the cut keeps v, else fill. When the kept tokens are few and all among the candidates,
 * y is filled and they are written back (their x gathered first: y may be x). Else blocks whose upper
 * bound bmax is below the cut are filled without reading x or v (bmax NULL: none are). */
static void write_filtered(const FL_T *x, const FL_T *v, FL_T *y, int64_t n, cut c, FL_T fill, const FL_T *bmax,
                           const scratch *s) {
    if (c.cand > 0 && c.cand <= n / FL_FEW_CAND && c.count <= n / FL_FEW_KEPT) {
        int64_t kept = 0;
        for (int64_t k = 0; k < c.cand; k++)
            if (cut_keeps(&c, s->vals[k], s->idx[k])) {
                s->idx[kept] = s->idx[k];
                s->wts[kept++] = x[s->idx[k]];
            }
        for (int64_t j = 0; j < n; j++) y[j] = fill;
        for (int64_t k = 0; k < kept; k++) y[s->idx[k]] = s->wts[k];
        return;
    }
    if (!bmax) {
        SIMD->apply_cut(x, v, y, n, c.v, cut_split(&c, 0), fill);
        return;
    }
    for (int64_t b = 0, lo, hi; b * FL_BMAX_BLOCK < n;) {
        if (block_run(bmax, n, b, c.v, &lo, &hi, &b))
            SIMD->apply_cut(x + lo, v + lo, y + lo, hi - lo, c.v, cut_split(&c, lo), fill);
        else /* every value below the cut */
            for (int64_t j = lo; j < hi; j++) y[j] = fill;
    }
}

typedef struct {
    int kind;
    FL_T *y;
    int64_t y_stride, n, min_keep;
    const double *param;
    FL_T fill;
} filter_job;

static void filter_row(int64_t i, const FL_T *x, double xmax, const scratch *s, void *ctx) {
    const filter_job *j = ctx;
    const FL_T *vals, *bmax;
    const cut c = filter_cut(j->kind, x, j->n, j->param[i], j->min_keep, xmax, s, &vals, &bmax);
    write_filtered(x, vals, j->y + i * j->y_stride, j->n, c, j->fill, bmax, s);
}

static int filter(int kind, const FL_T *x, FL_T *y, const fl_rows *r, const double *param, FL_T fill, fl_decode *d) {
    if (!fl_rows_ok(r, 1) || r->cols > INT32_MAX || !d || !param || d->min_keep < 1) return FL_ERR_ARG;
    filter_job job = {kind, y, r->y_stride, r->cols, d->min_keep, param, fill};
    return run_rows(x, r, d, filter_row, &job);
}

/* Temperature, top-k and top-p in one pass over the row (generate's warpers in their order): the top
 * max(k, min_keep) logits with their ties are the candidates; among them top-p keeps those whose weight
 * exp((x - max) / T) ranked above (by logit, lower index first) is < p times their mass (at least
 * min_keep); the kept tokens get x / T, the others fill. k in [1, n). */
typedef struct {
    FL_T *y;
    int64_t y_stride, n, min_keep;
    const int64_t *k;
    const double *p, *t;
    FL_T fill;
} warp_job;

static void warp_row(int64_t i, const FL_T *x, double xmax_row, const scratch *s, void *ctx) {
    const warp_job *j = ctx;
    const int64_t n = j->n, k = j->k[i] > j->min_keep ? j->k[i] : j->min_keep;
    const double P = j->p[i], it = 1.0 / j->t[i];
    const FL_T T = (FL_T)j->t[i];
    const cut ck = top_count(x, n, k, s);
    const int64_t m = SIMD->collect_ge(x, n, ck.v, s->idx, s->vals); /* the top k, ties kept */
    double mass = 0;
    for (int64_t c = 0; c < m; c++) {
        const FL_T xc = s->vals[c];
        s->wts[c] = xmax_row == INFINITY ? (FL_T)(xc == INFINITY) : (FL_T)exp(((double)xc - xmax_row) * it);
        mass += (double)s->wts[c];
    }
    cut cp = cut_all(m, mass);
    if (P < 1) {
        cp = cut_among(m, ck.v, xmax_row, P > 0 ? P * mass : 1, P <= 0, s);
        if (cp.count < j->min_keep) cp = cut_among(m, ck.v, xmax_row, (double)j->min_keep, 1, s);
    }
    FL_T *y = j->y + i * j->y_stride; /* (may be x: the kept values are in s->vals) */
    for (int64_t c = 0; c < n; c++) y[c] = j->fill;
    for (int64_t c = 0; c < m; c++)
        if (cut_keeps(&cp, s->vals[c], s->idx[c])) y[s->idx[c]] = s->vals[c] / T;
}

int FL_PICK(fl_top_k_top_p_filter_f32, fl_top_k_top_p_filter_f64)(const FL_T *x, FL_T *y, const fl_rows *r,
                                                                  const int64_t *k, const double *p,
                                                                  const double *t, FL_T fill, fl_decode *d) {
    if (!fl_rows_ok(r, 1) || r->cols > INT32_MAX || !d || !k || !p || !t || d->min_keep < 1) return FL_ERR_ARG;
    for (int64_t i = 0; i < r->rows; i++)
        if (k[i] < 1 || k[i] >= r->cols || !(t[i] > 0) || !(p[i] >= 0)) return FL_ERR_ARG;
    warp_job job = {y, r->y_stride, r->cols, d->min_keep, k, p, t, fill};
    return run_rows(x, r, d, warp_row, &job);
}

int FL_PICK(fl_top_k_filter_f32, fl_top_k_filter_f64)(const FL_T *x, FL_T *y, const fl_rows *r, const int64_t *k,
                                                      FL_T fill, fl_decode *d) {
    if (!k || !r || r->rows < 0) return FL_ERR_ARG;
    double *kd = malloc(sizeof(double) * (size_t)(r->rows > 0 ? r->rows : 1));
    if (!kd) return FL_ERR_NOMEM;
    for (int64_t i = 0; i < r->rows; i++) kd[i] = (double)k[i];
    const int st = filter(FL_TOPK, x, y, r, kd, fill, d);
    free(kd);
    return st;
}
int FL_PICK(fl_top_p_filter_f32, fl_top_p_filter_f64)(const FL_T *x, FL_T *y, const fl_rows *r, const double *p,
                                                      FL_T fill, fl_decode *d) {
    return filter(FL_TOPP, x, y, r, p, fill, d);
}
int FL_PICK(fl_min_p_filter_f32, fl_min_p_filter_f64)(const FL_T *x, FL_T *y, const fl_rows *r,
                                                      const double *min_p, FL_T fill, fl_decode *d) {
    return filter(FL_MINP, x, y, r, min_p, fill, d);
}
int FL_PICK(fl_typical_filter_f32, fl_typical_filter_f64)(const FL_T *x, FL_T *y, const fl_rows *r,
                                                          const double *mass, FL_T fill, fl_decode *d) {
    return filter(FL_TYPICAL, x, y, r, mass, fill, d);
}
