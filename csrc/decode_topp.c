/* decode_topp.c: top-p's candidates and cut (csrc/README.md, "Decoding: top-p"). Top-p ranks tokens by
 * logit, which is the order of the probabilities (ties in x are ties in p), and weighs them by
 * e = exp((x - max) / T), the largest exactly 1. Part of the decode.c unit (one per dtype). */
#include "decode.h"

/* Top-p candidates at temperature 1/it of a row with max xmax: s->idx, s->vals (x), s->wts (weights
 * exp((x - xmax) it), the largest exactly 1), a prefix of the logit order holding weight >= p * *total
 * (*total: the weight of the whole row), unless they reach down to floor (a bound the caller needs no
 * token below, or -inf) or to every finite logit; p >= 1: all tokens down to floor (> -inf). They are
 * the tokens >= *tau; s->bmax: each block's max of x. Returns their count.
 * Tiers: x >= max - FL_TOPP_TIER1 T, collected in the pass that sums the weights; then the weight still
 * needed below them guessed from the row's sketch (the heavy tokens, which make such guesses poor, are
 * above and counted exactly), or max - FL_TOPP_TIER2 T where the row has no sketch; then every finite
 * logit. */
static int64_t topp_candidates(const FL_T *x, int64_t n, double xmax, double it, double p, FL_T floor,
                               double *total, FL_T *tau_out, const scratch *s) {
    int64_t m;
    if (xmax == INFINITY) { /* the +inf logits share all the weight */
        for (int64_t b = 0; b * FL_BMAX_BLOCK < n; b++) s->bmax[b] = (FL_T)INFINITY;
        m = SIMD->collect_ge(x, n, (FL_T)INFINITY, s->idx, s->vals);
        for (int64_t k = 0; k < m; k++) s->wts[k] = 1;
        *total = (double)m;
        *tau_out = (FL_T)INFINITY;
        return m;
    }
    const FL_T itt = inv_temperature(it);
    const double T = 1.0 / (double)itt;
    FL_T tau = p < 1 ? below(xmax, -FL_TOPP_TIER1 * T) : floor;
    tau = tau > floor ? tau : floor;
    *total = SIMD->exp_candidates(x, n, (FL_T)xmax, itt, tau, s->idx, s->vals, s->wts, &m, s->bmax);
    for (int tier = 1;; tier++) {
        const double got = SIMD->kept_sum(s->wts, s->wts, m, (FL_T)-INFINITY, 0, 0); /* all of them */
        *tau_out = tau;
        /* the margin covers summing the weights another way (*total: in groups of four vectors in T) */
        if (got >= p * *total * (1 + FL_CAND_MARGIN) || tau <= floor || tau == -FL_MAX) return m;
        FL_T next = tier == 1 ? below(xmax, -FL_TOPP_TIER2 * T) : (FL_T)-FL_MAX;
        sketch sk;
        if (tier == 1 && sketch_row(x, n, xmax, itt, 0, &sk, s)) {
            const int top = (int)(((double)tau - sk.lo) * sk.scale); /* the bins below tau */
            FL_T t[FL_BANDS + 2];
            int edge[2];
            if (top > 0) {
                sketch_band(&sk, top, (p * *total - got) / (*total - got), t, edge);
                if (t[0] < tau) next = t[0];
            }
        }
        tau = next > floor ? next : floor;
        m = collect_in_blocks(x, n, tau, s->bmax, s);
        SIMD->exp_weights(s->vals, m, (FL_T)xmax, itt, s->wts);
    }
}

/* The top-p filter's cut of one row (temperature 1), p in (0, 1): the flat-row path, else the
 * candidates. *bmax: per-block bounds of x for the output pass, or NULL. */
static cut topp_cut(const FL_T *x, int64_t n, double p, double xmax, const scratch *s, const FL_T **bmax) {
    flat_cut fc;
    *bmax = NULL;
    if (flat_topp(x, n, xmax, 1, p, (FL_T)-INFINITY, &fc, s)) return fc.row;
    double total;
    FL_T tau;
    const int64_t m = topp_candidates(x, n, xmax, 1.0, p, (FL_T)-INFINITY, &total, &tau, s);
    *bmax = s->bmax;
    return cut_among(m, tau, xmax, p * total, 0, s); /* the max is a candidate */
}
