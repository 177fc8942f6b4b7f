/* ngram_score.c: scoring token sequences against n-gram tables in one pass (csrc/README.md, "N-gram
 * scoring").
 *
 * Tables use rank keys (ngram.c): the k-gram ending at position i has the key
 * E_{k-1}(i-1) << 32 | t_i, where E_{k-1}(i-1) is the index of the (k-1)-gram ending at i-1, so the
 * indices of every order ending at i follow from those ending at i-1 with one hash probe each:
 *     E_1(i) = find_1(t_i),   E_k(i) = find_k(E_{k-1}(i-1) << 32 | t_i),
 * stopping at the first order that is missing (KenLM's rule: a longer n-gram whose shorter suffix is
 * absent is not looked for; in count tables and lmplz's models it cannot exist).
 * Each order is one hash table of 32-byte entries (fl_ngram_entries): key, index and the two values the
 * model reads, so that a probe that finds its n-gram has read everything with one cache line.
 * Two models read them:
 *   backoff (ARPA, Kneser-Ney), values (log10 p, log10 backoff):
 *     log10 p(w | h) = p_L(E_L(i)) + sum_{m=L}^{o-1} backoff_m(E_m(i-1)),
 *     with o = min(n, the tokens of the sequence up to i) and L the longest order found with a
 *     probability (NaN marks a context-only entry); a word without a unigram is read as <unk> (unk_word)
 *     when the model has a unigram for it, else L = 0 gives the unseen-word value. A word is out of
 *     vocabulary when it has no unigram or is <unk> itself (KenLM's full_scores);
 *   add-alpha, values (c(entry), c(h) for h = the entry: the total of the n-grams extending it):
 *     ln p(w | h) = ln(c_o(h w) + alpha) - ln(c(h) + alpha V) (order 1: c(h) = every unigram); a word is
 *     unseen when it has no counted unigram.
 * Per token it writes the log probability, the matched order L (add-alpha: the longest counted n-gram
 * ending at i) and the unseen flag; per sequence the sum and the unseen count.
 *
 * Latency: each probe is a cache miss on a large model, and the probes of one token depend on one another.
 * STREAMS groups of sequences are scored in lockstep: each round starts one probe per stream (prefetching
 * its slot) before finishing any, so the misses of different streams overlap.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "ngram.h"

#define STREAMS 16
#define FL_NGRAM_PARALLEL_MIN (1 << 15) /* tokens: below, one thread */

typedef const fl_ngram_entry *entry;

typedef struct {
    int64_t seq, seq_end; /* current sequence; one past the stream's last */
    int64_t i;            /* current token */
    int avail, go, oov;   /* orders with a full window at i; whether the chain goes on; word unseen */
    uint32_t w;           /* the word as looked up (<unk> for an unseen one) */
    uint64_t key;         /* the pending probe */
    double sum;
    int64_t unseen;
    entry *e, *prev; /* the k-gram ending at i and at i-1 (NULL: absent), k = 1..n at [k-1] */
} stream;

/* The slots of keys[0..m) (m < 2^log2cap): entry i holds key i, index i and value[j] = v_j[i] (0 where v_j
 * is NULL); the others have index -1. */
void fl_ngram_entries(const uint64_t *keys, int64_t m, int log2cap, const double *v0, const double *v1,
                      fl_ngram_entry *slots) {
    const uint64_t mask = ((uint64_t)1 << log2cap) - 1;
    for (uint64_t s = 0; s <= mask; s++) slots[s] = (fl_ngram_entry){0, -1, {0.0, 0.0}};
    for (int64_t i = 0; i < m; i++) {
        uint64_t s = fl_ngram_slot_of(keys[i], log2cap);
        while (slots[s].index >= 0) s = (s + 1) & mask;
        slots[s] = (fl_ngram_entry){keys[i], i, {v0 ? v0[i] : 0.0, v1 ? v1[i] : 0.0}};
    }
}

static entry find(const fl_ngram_order *t, uint64_t key) {
    const uint64_t mask = ((uint64_t)1 << t->log2cap) - 1;
    for (uint64_t s = fl_ngram_slot_of(key, t->log2cap);; s = (s + 1) & mask) {
        if (t->slots[s].index < 0) return NULL;
        if (t->slots[s].key == key) return &t->slots[s];
    }
}

static inline void probe_start(const fl_ngram_order *t, stream *st, uint64_t key) {
    st->key = key;
    __builtin_prefetch(&t->slots[fl_ngram_slot_of(key, t->log2cap)]);
}

/* log10 p of the token given its entries e and the previous token's prev, orders 1..o. */
static double backoff_logp(const fl_ngram_model *m, const entry *e, const entry *prev, int o, int *matched) {
    int L = o;
    while (L > 0 && (!e[L - 1] || isnan(e[L - 1]->value[0]))) L--;
    double lp = L ? e[L - 1]->value[0] : m->unseen;
    for (int k = (L > 1 ? L : 1); k < o; k++) /* contexts of orders L .. o-1 (order >= 1) */
        if (prev[k - 1]) lp += prev[k - 1]->value[1];
    *matched = L;
    return lp;
}

static double add_alpha_logp(const fl_ngram_model *m, const entry *e, const entry *prev, int o, int *matched) {
    const double c = e[o - 1] ? e[o - 1]->value[0] : 0.0;
    const double ch = o == 1 ? m->unigram_total : (prev[o - 2] ? prev[o - 2]->value[1] : 0.0);
    int L = o;
    while (L > 0 && (!e[L - 1] || e[L - 1]->value[0] == 0)) L--;
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
    for (int k = 0; k < n; k++) st->prev[k] = NULL;
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
    entry *mem = malloc(2 * STREAMS * (size_t)n * sizeof *mem);
    if (!mem) return -1;
    const entry unk = m->unk_word >= 0 ? find(&m->t[0], (uint64_t)m->unk_word) : NULL;
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
                entry x = find(&m->t[k], q->key);
                if (k == 0) {
                    q->oov = !x || (int64_t)q->w == m->unk_word;
                    if (!x && unk) {
                        x = unk;
                        q->w = (uint32_t)m->unk_word;
                    }
                }
                q->e[k] = x;
                q->go = x && k + 1 < q->avail && q->prev[k];
                if (q->go) {
                    probe_start(&m->t[k + 1], q, (uint64_t)q->prev[k]->index << 32 | q->w);
                    any = 1;
                } else {
                    for (int j = k + 1; j < n; j++) q->e[j] = NULL;
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
            entry *t = q->prev;
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
