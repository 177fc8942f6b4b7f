/* ngram_score.c: scoring token sequences against n-gram tables in one pass (csrc/README.md, "N-gram
 * scoring").
 *
 * Tables use rank keys (ngram.c): the k-gram ending at position i has the key
 * E_{k-1}(i-1) << 32 | t_i, where E_{k-1}(i-1) is the index of the (k-1)-gram ending at i-1, so the
 * indices of every order ending at i follow from those ending at i-1 with one hash probe each:
 *     E_1(i) = find_1(t_i),   E_k(i) = find_k(E_{k-1}(i-1) << 32 | t_i),
 * stopping at the first order that is missing (KenLM's rule: a longer n-gram whose shorter suffix is
 * absent is not looked for; in count tables and lmplz's models it cannot exist).
 * Two models read them:
 *   backoff (ARPA, Kneser-Ney): log10 p(w | h) = prob_L[E_L(i)] + sum_{m=L}^{o-1} backoff_m[E_m(i-1)],
 *     with o = min(n, the tokens of the sequence up to i) and L the longest order found with a
 *     probability (NaN marks a context-only entry); a word without a unigram is read as <unk>
 *     (unk_index) when the model has one, else L = 0 gives the unseen-word value. A word is out of
 *     vocabulary when it has no unigram or is <unk> itself (KenLM's full_scores);
 *   add-alpha: ln p(w | h) = ln(c_o(h w) + alpha) - ln(c(h) + alpha V) with c(h) the total of the
 *     o-grams extending h (order 1: every unigram); a word is unseen when it has no counted unigram.
 * Per token it writes the log probability, the matched order L (add-alpha: the longest counted n-gram
 * ending at i) and the unseen flag; per sequence the sum and the unseen count.
 *
 * Latency: each probe is a cache miss on a large model, and the probes of one token depend on one
 * another. STREAMS groups of sequences are scored in lockstep: each round starts one probe per stream
 * (prefetching its slot) before finishing any, so the misses of different streams overlap.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "fastlm.h"

#define STREAMS 16
#define FL_NGRAM_PARALLEL_MIN (1 << 15) /* tokens: below, one thread */

typedef struct {
    int64_t seq, seq_end; /* current sequence; one past the stream's last */
    int64_t i;            /* current token */
    int avail, go, oov;   /* orders with a full window at i; whether the chain goes on; word unseen */
    uint32_t w;           /* the word as looked up (<unk> for an unseen one) */
    uint64_t key, slot;   /* the pending probe */
    double sum;
    int64_t unseen;
    int64_t *e, *prev; /* E_k(i) and E_k(i-1), k = 1..n at [k-1] */
} stream;

static inline void probe_start(const fl_ngram_order *t, stream *st, uint64_t key) {
    st->key = key;
    st->slot = (key * 0x9e3779b97f4a7c15ULL) >> (64 - t->log2cap);
    __builtin_prefetch(&t->table[st->slot]);
    __builtin_prefetch(&t->slot_key[st->slot]);
}

static inline int64_t probe_finish(const fl_ngram_order *t, const stream *st) {
    const uint64_t mask = ((uint64_t)1 << t->log2cap) - 1;
    for (uint64_t s = st->slot;; s = (s + 1) & mask) {
        const int32_t i = t->table[s];
        if (i < 0) return -1;
        if (t->slot_key[s] == st->key) return i;
    }
}

/* log10 p of the token given its entries e and the previous token's prev, orders 1..o. */
static double backoff_logp(const fl_ngram_model *m, const int64_t *e, const int64_t *prev, int o, int *matched) {
    int L = o;
    while (L > 0 && (e[L - 1] < 0 || isnan(m->t[L - 1].prob[e[L - 1]]))) L--;
    double lp = L ? m->t[L - 1].prob[e[L - 1]] : m->unseen;
    for (int k = (L > 1 ? L : 1); k < o; k++) /* contexts of orders L .. o-1 (order >= 1) */
        if (prev[k - 1] >= 0) lp += m->t[k - 1].backoff[prev[k - 1]];
    *matched = L;
    return lp;
}

static double add_alpha_logp(const fl_ngram_model *m, const int64_t *e, const int64_t *prev, int o, int *matched) {
    const fl_ngram_order *t = &m->t[o - 1];
    const double c = e[o - 1] >= 0 ? (double)t->count[e[o - 1]] : 0.0;
    const double ch = o == 1 ? m->unigram_total : (prev[o - 2] >= 0 ? (double)t->total[prev[o - 2]] : 0.0);
    int L = o;
    while (L > 0 && (e[L - 1] < 0 || m->t[L - 1].count[e[L - 1]] == 0)) L--;
    *matched = L;
    return log(c + m->alpha) - log(ch + m->alpha * m->vocab);
}

/* Moves st to the first token of sequence st->seq or a later one (sequences with no token score 0). */
static void enter(stream *st, const int64_t *starts, int n, double *seq_logp, int64_t *seq_unseen) {
    while (st->seq < st->seq_end && starts[st->seq] == starts[st->seq + 1]) {
        seq_logp[st->seq] = 0.0;
        seq_unseen[st->seq] = 0;
        st->seq++;
    }
    if (st->seq < st->seq_end) st->i = starts[st->seq];
    st->sum = 0.0;
    st->unseen = 0;
    for (int k = 0; k < n; k++) st->prev[k] = -1;
}

/* The first sequence of part g of `parts` with about equal tokens among sequences [lo, hi). */
static int64_t split(const int64_t *starts, int64_t lo, int64_t hi, int g, int parts) {
    const int64_t t0 = starts[lo], target = t0 + (starts[hi] - t0) * g / parts;
    int64_t s = lo;
    while (s < hi && starts[s] < target) s++;
    return g >= parts ? hi : s;
}

/* Sequences [s_lo, s_hi) in STREAMS lockstep groups (one thread). */
static int score_range(const fl_ngram_model *m, const uint32_t *tokens, const int64_t *starts, int64_t s_lo,
                       int64_t s_hi, int64_t skip, double *logp, int32_t *matched, uint8_t *unseen,
                       double *seq_logp, int64_t *seq_unseen) {
    const int n = m->order;
    int64_t *mem = malloc(2 * STREAMS * (size_t)n * sizeof *mem);
    if (!mem) return -1;
    stream st[STREAMS];
    int live = 0;
    for (int g = 0; g < STREAMS; g++) { /* contiguous groups of about equal tokens */
        const int64_t lo = split(starts, s_lo, s_hi, g, STREAMS), s = split(starts, s_lo, s_hi, g + 1, STREAMS);
        stream *q = &st[live];
        q->seq = lo;
        q->seq_end = s;
        q->e = mem + 2 * (size_t)live * n;
        q->prev = q->e + n;
        enter(q, starts, n, seq_logp, seq_unseen);
        if (q->seq < q->seq_end) live++;
    }
    while (live) {
        for (int g = 0; g < live; g++) {
            stream *q = &st[g];
            const int64_t pos = q->i - starts[q->seq];
            q->avail = (int)(pos + 1 < n ? pos + 1 : n);
            q->w = tokens[q->i];
            q->go = 1;
            probe_start(&m->t[0], q, q->w);
        }
        for (int k = 0; k < n; k++) { /* round k: finish every stream's probe of order k + 1, start the next */
            int any = 0;
            for (int g = 0; g < live; g++) {
                stream *q = &st[g];
                if (!q->go) continue;
                int64_t x = probe_finish(&m->t[k], q);
                if (k == 0) {
                    q->oov = x < 0 || (int64_t)q->w == m->unk_word;
                    if (x < 0 && m->unk_index >= 0) {
                        x = m->unk_index;
                        q->w = (uint32_t)m->unk_word;
                    }
                }
                q->e[k] = x;
                if (x >= 0) { /* the values this token (and, as a context, the next) reads */
                    const fl_ngram_order *t = &m->t[k];
                    __builtin_prefetch(t->prob ? (const void *)&t->prob[x] : (const void *)&t->count[x]);
                    if (t->backoff) __builtin_prefetch(&t->backoff[x]);
                    if (k + 1 < n && t[1].total) __builtin_prefetch(&t[1].total[x]);
                }
                q->go = x >= 0 && k + 1 < q->avail && q->prev[k] >= 0;
                if (q->go) {
                    probe_start(&m->t[k + 1], q, (uint64_t)q->prev[k] << 32 | q->w);
                    any = 1;
                } else {
                    for (int j = k + 1; j < n; j++) q->e[j] = -1;
                }
            }
            if (!any) break;
        }
        for (int g = 0; g < live;) {
            stream *q = &st[g];
            const int64_t i = q->i;
            if (i - starts[q->seq] >= skip) {
                int L;
                const double lp = m->add_alpha ? add_alpha_logp(m, q->e, q->prev, q->avail, &L)
                                               : backoff_logp(m, q->e, q->prev, q->avail, &L);
                const int miss = m->add_alpha ? L == 0 : q->oov;
                q->sum += lp;
                q->unseen += miss;
                if (logp) logp[i] = lp;
                if (matched) matched[i] = L;
                if (unseen) unseen[i] = (uint8_t)miss;
            } else {
                if (logp) logp[i] = 0.0;
                if (matched) matched[i] = 0;
                if (unseen) unseen[i] = 0;
            }
            int64_t *t = q->prev;
            q->prev = q->e;
            q->e = t;
            if (++q->i == starts[q->seq + 1]) { /* the sequence ends */
                seq_logp[q->seq] = q->sum;
                seq_unseen[q->seq] = q->unseen;
                q->seq++;
                enter(q, starts, n, seq_logp, seq_unseen);
                if (q->seq == q->seq_end) { /* the stream ends: the last live one takes its place */
                    stream done = *q;
                    st[g] = st[live - 1];
                    st[live - 1] = done;
                    live--;
                    continue;
                }
            }
            g++;
        }
    }
    free(mem);
    return 0;
}

/* Scores tokens[starts[s] + skip .. starts[s+1]) of every sequence s (the first `skip` are context only).
 * logp/matched/unseen (per token of tokens, NULL to skip; positions not scored get 0) and seq_logp /
 * seq_unseen (per sequence). num_threads threads take contiguous shares of the sequences (the results do
 * not depend on it). Returns 0, or -1 without memory. */
int fl_ngram_score(const fl_ngram_model *m, const uint32_t *tokens, const int64_t *starts, int64_t nseq,
                   int64_t skip, double *logp, int32_t *matched, uint8_t *unseen, double *seq_logp,
                   int64_t *seq_unseen, int num_threads) {
    const int nt = num_threads > 1 && starts[nseq] >= FL_NGRAM_PARALLEL_MIN ? num_threads : 1;
    int rc = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(| : rc) if (nt > 1)
    for (int t = 0; t < nt; t++)
        rc |= score_range(m, tokens, starts, split(starts, 0, nseq, t, nt), split(starts, 0, nseq, t + 1, nt), skip,
                          logp, matched, unseen, seq_logp, seq_unseen);
    return rc ? -1 : 0;
}
