/* decode_topp_flat.c: top-p of flat rows (csrc/README.md, "Decoding: top-p"): rows of 16384 logits or
 * more whose weight is spread over many tokens take one pass over a band of logits guessed from a sample
 * of the row, instead of collecting every candidate; the sketch also guesses top-p's second tier
 * (decode_topp.c). Part of the decode.c unit (one per dtype).
 *
 * Kept because it pays on the rows it takes (bench/lm_rows.py: 32 x 128256 float32 rows, one thread,
 * AVX-512, 2-core Intel Xeon; against a build whose flat_topp returns 0; ms, top_p_filter / sample):
 *   rows (nucleus of p = 0.9)        with the path        without
 *   N(0,1^2) (78350)                 4.3-4.7 / 4.2        11.7-13.1 / 9.7-9.8
 *   N(0,2^2) (30272)                 4.9-5.2 / 4.8-5.2    6.9 / 6.3
 *   LM-shaped T = 1.5 (78660)        6.7-6.8 / 6.3        12.9-13.4 / 11.0-11.9
 *   LM-shaped T = 1 (4141)           5.0-6.5 / 4.3-5.6    5.0-5.4 / 4.3-4.7
 *   N(0,3^2) (5823)                  4.3-4.8 / 3.7-4.0    4.1 / 3.2-3.3
 *   LM-shaped T = 0.7 (19)           3.2 / 2.4-2.9        2.8-2.9 / 2.0-2.1
 *   N(0,5^2) (87)                    3.3-3.8 / 2.6-2.9    3.1-3.4 / 2.3-2.5
 * Flat rows (high temperatures, flat models) run 1.4x-2.8x faster; peaked rows (most of a trained LM's
 * at T <= 1) pay the sketch's first quarter, about 10 us a row (5-20%).
 */
#include "decode.h"

/* A weighted sample of a row's logits, to guess where its top-p cut lies: one logit in FL_SAMPLE_STRIDE
 * (in runs of 16, a cache line of float, from each 512 logits at offsets varying against periodic rows),
 * with weights exp((x - max) / T), in a histogram of FL_QBINS bins over [max - FL_SKETCH_RANGE T, max]
 * (lower logits count in bin 0): the weight, squared weight and count per bin. The row's max, weight 1,
 * is known without sampling: it joins the weights at its own share (each sample stands for n / ns
 * logits), so that a cut at a peak the sample misses is seen. */
typedef struct {
    double w[FL_QBINS], w2[FL_QBINS], lo, scale, c; /* c: the weight of a sample in the row's, ns / n */
    int32_t count[FL_QBINS];                        /* samples per bin */
} sketch;

/* Returns 0 for rows shorter than 512 FL_SAMPLE_STRIDE, rows whose sample (the max aside) has fewer
 * than min_neff effective tokens, (sum w)^2 / sum w^2, or no weight, and rows whose max is too large
 * for max - FL_SKETCH_RANGE T to differ from it in T. xmax is finite. s->v, s->p, s->bk: scratch. */
static int sketch_row(const FL_T *x, int64_t n, double xmax, FL_T itt, double min_neff, sketch *k,
                      const scratch *s) {
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
        sum += SIMD->exp_weights(sx + 16 * r0, 16 * (r1 - r0), (FL_T)xmax, itt, sw + 16 * r0);
        for (int64_t j = 16 * r0; j < 16 * r1; j += 4) /* runs of 16 */
            for (int l = 0; l < 4; l++) sq[l] += (double)sw[j + l] * (double)sw[j + l];
        /* the quarter needs an eighth of the effective tokens, the whole sample all of them */
        if (!(sum > 0 && sum * sum >= (r1 < runs ? min_neff / 8 : min_neff) * (sq[0] + sq[1] + sq[2] + sq[3])))
            return 0;
    }
    const double c = (double)ns / (double)n;
    k->lo = (double)below(xmax, -FL_SKETCH_RANGE / (double)itt);
    k->scale = (FL_QBINS - 0.5) / (xmax - k->lo); /* the max: the top bin */
    if (!(k->scale < INFINITY)) return 0; /* 20 T below a huge max rounds to the max itself */
    memset(k->w, 0, sizeof k->w);
    memset(k->w2, 0, sizeof k->w2);
    memset(k->count, 0, sizeof k->count);
    k->w[FL_QBINS - 1] = k->c = c; /* exact: no share in the sampling variance */
    for (int64_t j = 0; j < ns; j++) sx[j] = (double)sx[j] > k->lo ? sx[j] : (FL_T)k->lo;
    SIMD->buckets(sx, ns, k->lo, k->scale, s->bk);
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
 * with FL_BANDS thresholds t[1..FL_BANDS] in equal steps between, ascending, for the band's first
 * narrowing. delta is FL_BAND_SIGMAS standard errors of the fraction above the f-quantile (its variance:
 * the sum of w^2 (1[above] - f)^2 over (sum w)^2) plus 0.5 / the effective size (sum w)^2 / sum w^2. A
 * guess only: the caller checks the band against the row's exact sums. */
static void sketch_band(const sketch *k, int top, double f, FL_T *t, int *edge) {
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
    const double delta = FL_BAND_SIGMAS * sqrt(var) + 0.5 * sq / (sum * sum);
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

/* The band, as sketch_band, around the logit above the bin edge `bot` under which the sketch holds the
 * weight d of the row (d c in the sketch's; the max's share aside, as it is above): from bot up, the
 * bin edges where that weight is d - delta (t[0], the bottom of its bin) up to d + delta (t[FL_BANDS + 1],
 * the top of its bin, +inf past the sketch), delta FL_BAND_SIGMAS standard deviations of the sampled sum
 * (its variance: the sum of w^2 there) plus half a mean weight. edge: the bins of t[0] and
 * t[FL_BANDS + 1]. */
static void sketch_up(const sketch *k, int bot, double d, FL_T *t, int *edge) {
#define FL_BODY(q) (k->w[q] - ((q) == FL_QBINS - 1 ? k->c : 0))
    double cum = 0, cum2 = 0;
    d *= k->c;
    for (int q = bot; q < FL_QBINS && cum < d; q++) {
        cum += FL_BODY(q);
        cum2 += k->w2[q];
    }
    const double delta = FL_BAND_SIGMAS * sqrt(cum2) + (cum > 0 ? 0.5 * cum2 / cum : 0);
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

/* The row index of the k-th token of the band a <= x < b (k below the band's count), from the band's
 * tokens before each block. */
static int64_t band_index(const FL_T *x, int64_t n, int64_t k, FL_T a, FL_T b, const int32_t *bfirst) {
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

/* A flat row's top-p cut: in row indices (row, cand = 0) and in places of the band (band), whose m
 * logits and weights flat_topp leaves in s->vals, s->wts; the weight above the band per block in s->bup,
 * the band's tokens before each block in s->bfirst. */
typedef struct {
    cut row, band;
    int64_t m;
} flat_cut;

/* Top-p of a flat row at temperature 1/itt, if its sketch (sketch_row) says it is flat and min-p
 * (floor: a bound FL_MINP_MARGIN T below its own, or -inf) keeps every token of the band guessed from it:
 * one pass (exp_band) takes the row's weight, the band's logits and the weight and number of the tokens
 * above it; the band's weights are computed again (cheaper than compressing them in the pass). When the
 * band holds the cut (with margins for the rounding of the sums), returns 1 with the cut in *fc. When the
 * cut lies outside the band, a second band is guessed from the exact sums: above it, where the sketch
 * holds the weight above - P that the cut leaves between the band and itself; below it, at the exact
 * share of the weight below the band that the cut needs (a sample that misses a few heavy tokens still
 * holds the rest well). Else 0: the caller takes the candidate tiers (decode_topp.c). */
static int flat_topp(const FL_T *x, int64_t n, double xmax, FL_T itt, double p, FL_T floor, flat_cut *fc,
                     const scratch *s) {
    sketch sk;
    /* p within the sums' margin of 1 cannot be told from 1 here: the tiers */
    if (!(p > 0 && p * (1 + FL_SUM_MARGIN) < 1 && xmax < INFINITY &&
          sketch_row(x, n, xmax, itt, FL_FLAT_NEFF, &sk, s)))
        return 0;
    FL_T t[FL_BANDS + 2];
    int edge[2];
    sketch_band(&sk, FL_QBINS, p, t, edge);
    int64_t sampled = 0; /* few tokens down to the band (a peak): the tiers collect them cheaply */
    for (int q = edge[0]; q < FL_QBINS; q++) sampled += sk.count[q];
    if (sampled * FL_SAMPLE_STRIDE < FL_FLAT_MIN) return 0;
    for (int round = 0;; round++) {
        if (!((double)t[0] - (double)floor > 2 * FL_MINP_MARGIN / (double)itt)) return 0;
        const FL_T a = t[0], b = t[FL_BANDS + 1];
        int64_t count[2];
        const double total = SIMD->exp_band(x, n, (FL_T)xmax, itt, a, b, s->vals, count, s->bup, s->bfirst);
        const int64_t m = count[0];
        const double band = SIMD->exp_weights(s->vals, m, (FL_T)xmax, itt, s->wts);
        double above = 0, P = p * total;
        for (int64_t k = 0; k * FL_BMAX_BLOCK < n; k++) above += s->bup[k];
        /* the total is summed in groups of four vectors in T, the weight above in lanes over a block */
        if (above < P * (1 - FL_SUM_MARGIN) && above + band >= P * (1 + FL_SUM_MARGIN)) {
            cut c = select_weighted(s->vals, s->wts, m, P - above, (double)a, b < INFINITY ? (double)b : xmax,
                                    t + 1, s);
            fc->band = c;
            if (c.ties)
                c.v = a;
            else
                c.i = band_index(x, n, c.i, a, b, s->bfirst);
            c.count += count[1];
            c.weight += above;
            c.cand = 0;
            fc->row = c;
            fc->m = m;
            return 1;
        }
        if (round == 1) return 0;
        /* a second guess from the exact sums: the cut leaves the weight above - P between b and it, or
         * takes the share (P - above - band) / (what is below a) of the weight below a */
        if (above >= P * (1 - FL_SUM_MARGIN))
            sketch_up(&sk, edge[1], above - P, t, edge);
        else
            sketch_band(&sk, edge[0], (P - above - band) / (total - above - band), t, edge);
    }
}

/* The draw of a flat row's top-p cut (flat_topp), min-p keeping every token: the kept tokens are those
 * above the band (their weight per block in s->bup) and the band's, up to the cut. As draw_kept
 * (decode_sample.c), the first token in index order whose cumulative kept weight exceeds u times the
 * kept mass: block sums find its block, whose weights are then computed again (the same exp, the same
 * values). */
static int64_t draw_flat(const FL_T *x, int64_t n, double xmax, FL_T itt, const flat_cut *fc, double u,
                         const scratch *s) {
    const int64_t nb = (n + FL_BMAX_BLOCK - 1) / FL_BMAX_BLOCK, m = fc->m;
    const cut *cb = &fc->band;
    /* the band's kept weight in one pass; per block (a short kept_sum each) only up to the draw's block */
    double mass = SIMD->kept_sum(s->vals, s->wts, m, cb->v, cut_split(cb, 0), 0), cum = 0;
    for (int64_t b = 0; b < nb; b++) mass += s->bup[b];
    const double target = u * mass;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t c0 = s->bfirst[b], c1 = b + 1 < nb ? s->bfirst[b + 1] : m;
        const double w = s->bup[b] + (c1 > c0 ? SIMD->kept_sum(s->vals + c0, s->wts + c0, c1 - c0, cb->v,
                                                                cut_split(cb, c0), 0)
                                              : 0);
        if (w <= 0 || cum + w <= target) {
            cum += w;
            continue;
        }
        FL_T e[FL_BMAX_BLOCK + 16];
        const int64_t j0 = b * FL_BMAX_BLOCK, len = n - j0 < FL_BMAX_BLOCK ? n - j0 : FL_BMAX_BLOCK;
        SIMD->exp_weights(x + j0, len, (FL_T)xmax, itt, e);
        for (int64_t j = 0; j < len; j++)
            if (e[j] > 0 && cut_keeps(&fc->row, x[j0 + j], j0 + j)) {
                cum += (double)e[j];
                if (cum > target) return j0 + j;
            }
    }
    /* rounding left the target unreached: the last kept token surely of weight > 0 (the exp is 0 only
     * below log of the smallest normal; the max is one) */
    int64_t j = n - 1;
    while (j > 0 && !(cut_keeps(&fc->row, x[j], j) && ((double)x[j] - xmax) * (double)itt > log(FL_TINY) + 1)) j--;
    return j;
}
