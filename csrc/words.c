/* words.c: whitespace-separated words of UTF-8 text to ids (csrc/README.md, "Words").
 *
 * A word is a maximal run of bytes other than the ASCII spaces " \t\n\r\v\f" (KenLM's separators). The
 * table maps each distinct word (its bytes) to an id through an open-addressing hash (FNV-1a of the
 * bytes, linear probing, load <= 1/2) and keeps the words' bytes, offsets and occurrence counts. Text is
 * given as one buffer with the byte offsets of its items (sequences); each item's words become its ids.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "fastlm.h"

#define FL_WORDS_PARALLEL_MIN (1 << 16) /* bytes of text: below, one thread */

typedef struct {
    uint64_t hash;
    int64_t word; /* index, or -1: empty */
} slot;

struct fl_words {
    char *bytes;            /* the words, back to back */
    int64_t nbytes, capbytes;
    int64_t *off;           /* word w is bytes[off[w] .. off[w+1]) */
    int64_t *count;         /* occurrences seen by fl_words_encode with grow */
    int64_t *id;            /* the id a word encodes to (fl_words_set_id), initially its index */
    int64_t n, capn;
    slot *slots;            /* 2^log2cap */
    int log2cap;
};

/* FNV-1a over the bytes, one step per byte, then a final mix of the high bits into the low ones. */
#define FNV_OFFSET 0xcbf29ce484222325ULL
static inline uint64_t hash_step(uint64_t h, char c) { return (h ^ (uint8_t)c) * 0x100000001b3ULL; }
static inline uint64_t hash_final(uint64_t h) { return h ^ (h >> 29); }

static uint64_t hash_bytes(const char *p, int64_t len) {
    uint64_t h = FNV_OFFSET;
    for (int64_t i = 0; i < len; i++) h = hash_step(h, p[i]);
    return hash_final(h);
}

static int rehash(fl_words *v, int log2cap) {
    slot *slots = malloc(sizeof *slots << log2cap);
    if (!slots) return -1;
    const uint64_t mask = ((uint64_t)1 << log2cap) - 1;
    for (uint64_t s = 0; s <= mask; s++) slots[s] = (slot){0, -1};
    for (int64_t w = 0; w < v->n; w++) {
        const uint64_t h = hash_bytes(v->bytes + v->off[w], v->off[w + 1] - v->off[w]);
        uint64_t s = h & mask;
        while (slots[s].word >= 0) s = (s + 1) & mask;
        slots[s] = (slot){h, w};
    }
    free(v->slots);
    v->slots = slots;
    v->log2cap = log2cap;
    return 0;
}

fl_words *fl_words_new(void) {
    fl_words *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->capn = 1024;
    v->capbytes = 1 << 16;
    v->bytes = malloc((size_t)v->capbytes);
    v->off = malloc(sizeof *v->off * (size_t)(v->capn + 1));
    v->count = malloc(sizeof *v->count * (size_t)v->capn);
    v->id = malloc(sizeof *v->id * (size_t)v->capn);
    if (!v->bytes || !v->off || !v->count || !v->id || rehash(v, 11)) {
        fl_words_free(v);
        return NULL;
    }
    v->off[0] = 0;
    return v;
}

void fl_words_free(fl_words *v) {
    if (!v) return;
    free(v->bytes);
    free(v->off);
    free(v->count);
    free(v->id);
    free(v->slots);
    free(v);
}

/* The index of word p[0..len) of hash h (hash_bytes), added when absent and grow is set; -1 when absent (or
 * out of memory, -2). */
static int64_t lookup(fl_words *v, const char *p, int64_t len, uint64_t h, int grow) {
    const uint64_t mask = ((uint64_t)1 << v->log2cap) - 1;
    uint64_t s = h & mask;
    for (int64_t w; (w = v->slots[s].word) >= 0; s = (s + 1) & mask)
        if (v->slots[s].hash == h && v->off[w + 1] - v->off[w] == len && !memcmp(v->bytes + v->off[w], p, (size_t)len))
            return w;
    if (!grow) return -1;
    if (v->n + 1 > v->capn) {
        const int64_t cap = 2 * v->capn;
        int64_t *off = realloc(v->off, sizeof *off * (size_t)(cap + 1));
        if (off) v->off = off;
        int64_t *count = realloc(v->count, sizeof *count * (size_t)cap);
        if (count) v->count = count;
        int64_t *id = realloc(v->id, sizeof *id * (size_t)cap);
        if (id) v->id = id;
        if (!off || !count || !id) return -2;
        v->capn = cap;
    }
    if (v->nbytes + len > v->capbytes) {
        int64_t cap = 2 * v->capbytes;
        while (cap < v->nbytes + len) cap *= 2;
        char *b = realloc(v->bytes, (size_t)cap);
        if (!b) return -2;
        v->bytes = b;
        v->capbytes = cap;
    }
    const int64_t w = v->n++;
    memcpy(v->bytes + v->nbytes, p, (size_t)len);
    v->nbytes += len;
    v->off[w + 1] = v->nbytes;
    v->count[w] = 0;
    v->id[w] = w;
    v->slots[s] = (slot){h, w};
    if (2 * v->n > ((int64_t)1 << v->log2cap) && rehash(v, v->log2cap + 1)) return -2;
    return w;
}

static const uint8_t is_space[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, ['\v'] = 1, ['\f'] = 1};

/* The words of items text[item_off[j] .. item_off[j+1]), j < nitems: ids[] gets, per item, frame->pre, each
 * word's id (words whose id is negative are left out), then frame->post when it is >= 0 (frame NULL:
 * nothing around the words); lengths[j] the number written for item j. A word not in the table is added
 * (grow; its count incremented with every occurrence) or gets `unknown`. ids needs room for one id per
 * word and the frame: at most (item_off[nitems] + 1) / 2 + nitems (1 + npre + 1). Returns the number of
 * ids, or -2 out of memory. */
int64_t fl_words_encode(fl_words *v, const char *text, const int64_t *item_off, int64_t nitems, int grow,
                        int64_t unknown, const fl_words_frame *frame, int64_t *ids, int64_t *lengths) {
    int64_t n = 0;
    for (int64_t j = 0; j < nitems; j++) {
        const int64_t before = n;
        for (int k = 0; frame && k < frame->npre; k++) ids[n++] = frame->pre[k];
        int64_t i = item_off[j];
        const int64_t end = item_off[j + 1];
        while (i < end) {
            while (i < end && is_space[(uint8_t)text[i]]) i++;
            const int64_t start = i;
            uint64_t h = FNV_OFFSET; /* hash_bytes of the word, as it is scanned */
            for (; i < end && !is_space[(uint8_t)text[i]]; i++) h = hash_step(h, text[i]);
            if (i == start) break;
            const int64_t w = lookup(v, text + start, i - start, hash_final(h), grow);
            if (w == -2) return -2;
            if (w >= 0 && grow) v->count[w]++;
            const int64_t id = w >= 0 ? v->id[w] : unknown;
            if (id >= 0) ids[n++] = id;
        }
        if (frame && frame->post >= 0) ids[n++] = frame->post;
        lengths[j] = n - before;
    }
    return n;
}

/* fl_words_encode without growing the table (so threads can share it), over num_threads contiguous
 * shares of the items; the ids come out in item order as one call would write them. */
int64_t fl_words_encode_frozen(fl_words *v, const char *text, const int64_t *item_off, int64_t nitems,
                               int64_t unknown, const fl_words_frame *frame, int64_t *ids, int64_t *lengths,
                               int num_threads) {
    const int want = num_threads < 64 ? num_threads : 64;
    const int nt = want > 1 && item_off[nitems] >= FL_WORDS_PARALLEL_MIN && nitems >= want ? want : 1;
    const int64_t per_item = 1 + (frame ? frame->npre + 1 : 0); /* ids beyond the words' (room) */
    int64_t first[65], base[65], done[64];
    for (int t = 0; t <= nt; t++) { /* item shares of about equal bytes, and where each writes its ids */
        const int64_t target = item_off[nitems] / nt * t;
        int64_t j = t ? first[t - 1] : 0;
        while (t && t < nt && j < nitems && item_off[j] < target) j++;
        first[t] = t == nt ? nitems : j;
        base[t] = t ? base[t - 1] + (item_off[first[t]] - item_off[first[t - 1]] + 1) / 2 +
                          per_item * (first[t] - first[t - 1])
                    : 0;
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int t = 0; t < nt; t++)
        done[t] = fl_words_encode(v, text, item_off + first[t], first[t + 1] - first[t], 0, unknown, frame,
                                  ids + base[t], lengths + first[t]);
    int64_t n = 0;
    for (int t = 0; t < nt; t++) { /* the shares' ids back to back */
        if (done[t] < 0) return done[t];
        memmove(ids + n, ids + base[t], sizeof *ids * (size_t)done[t]);
        n += done[t];
    }
    return n;
}

/* Adds words (bytes[off[i] .. off[i+1]), i < n) in order; returns 0, -2 out of memory. */
int fl_words_add(fl_words *v, const char *bytes, const int64_t *off, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (lookup(v, bytes + off[i], off[i + 1] - off[i], hash_bytes(bytes + off[i], off[i + 1] - off[i]), 1) == -2)
            return -2;
    return 0;
}

int64_t fl_words_size(const fl_words *v) { return v->n; }

/* The table's words (bytes, or NULL to ask the offsets first; n + 1 offsets) and counts, into caller arrays. */
void fl_words_export(const fl_words *v, char *bytes, int64_t *off, int64_t *count) {
    if (bytes) memcpy(bytes, v->bytes, (size_t)v->nbytes);
    memcpy(off, v->off, sizeof *off * (size_t)(v->n + 1));
    memcpy(count, v->count, sizeof *count * (size_t)v->n);
}

/* id[w] = ids[w] for every word w of the table (negative: left out of encodings). */
void fl_words_set_ids(fl_words *v, const int64_t *ids) {
    memcpy(v->id, ids, sizeof *ids * (size_t)v->n);
}
