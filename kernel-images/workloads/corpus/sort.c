/*
 * sort.c - bottom-up merge sort of random 64-bit keys, one pass per
 * doubling of the run length.
 *
 * Verification computed another way: the result must be ascending, hold
 * the same multiset (sum, xor and sum of squares of the keys, modulo 2^64,
 * unchanged) and equal, element by element, the C library's qsort of a copy.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corpus.h"

#define NKEYS BY_CLASS(32768, 1048576, 8388608)

static uint64_t keys[NKEYS], scratch[NKEYS], copy[NKEYS];

struct digest {
    uint64_t sum, xor, squares;
};

static struct digest digest_of(const uint64_t *k)
{
    struct digest d = { 0, 0, 0 };
    long i;
    for (i = 0; i < NKEYS; i++) {
        d.sum += k[i];
        d.xor ^= k[i];
        d.squares += k[i] * k[i];
    }
    return d;
}

static void merge_pass(const uint64_t *from, uint64_t *to, long width)
{
    long lo, mid, hi, i, j, k;

    for (lo = 0; lo < NKEYS; lo += 2 * width) {
        mid = lo + width < NKEYS ? lo + width : NKEYS;
        hi = lo + 2 * width < NKEYS ? lo + 2 * width : NKEYS;
        for (i = lo, j = mid, k = lo; k < hi; k++)
            to[k] = (j >= hi || (i < mid && from[i] <= from[j])) ? from[i++] : from[j++];
    }
}

static int compare_keys(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    unsigned long long seed = 173205080ULL;
    struct digest before, after;
    uint64_t *from = keys, *to = scratch, *t;
    long i, width, unordered = 0;
    int passes = 0, same;

    printf(" Merge sort: %d keys\n", NKEYS);
    for (i = 0; i < NKEYS; i++)
        keys[i] = ((uint64_t)corpus_rand53(&seed) << 11) ^ corpus_rand53(&seed);
    memcpy(copy, keys, sizeof keys);
    before = digest_of(keys);

    for (width = 1; width < NKEYS; width *= 2) {
        hexo_check_migrate();
        merge_pass(from, to, width);
        t = from;
        from = to;
        to = t;
        passes++;
    }
    qsort(copy, NKEYS, sizeof copy[0], compare_keys);
    after = digest_of(from);
    for (i = 1; i < NKEYS; i++)
        unordered += from[i - 1] > from[i];
    same = memcmp(from, copy, sizeof copy) == 0;
    printf(" %d passes; smallest %016llx largest %016llx median %016llx\n", passes,
           (unsigned long long)from[0], (unsigned long long)from[NKEYS - 1],
           (unsigned long long)from[NKEYS / 2]);
    printf(" out of order: %ld; multiset kept: %s; equal to qsort: %s\n", unordered,
           before.sum == after.sum && before.xor == after.xor && before.squares == after.squares
               ? "yes" : "no", same ? "yes" : "no");
    return corpus_verdict("SORT", unordered == 0 && same && before.sum == after.sum
                                  && before.xor == after.xor && before.squares == after.squares);
}
