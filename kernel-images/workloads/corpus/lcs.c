/*
 * lcs.c - dynamic programming: length of the longest common subsequence of
 * two random DNA-like strings, by the classic row-by-row table.
 *
 * Verification computed another way: the bit-parallel algorithm of
 * Allison-Dix/Hyyro (one bit per character of the first string, words
 * added with carries) must give the same length; and a few prefix lengths
 * are compared the same way.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "corpus.h"

#define LEN_A BY_CLASS(2000, 10000, 30000)
#define LEN_B BY_CLASS(2000, 10000, 30000)
#define WORDS ((LEN_A + 63) / 64)
#define ROWS_PER_POINT 64

static char sa[LEN_A + 1], sb[LEN_B + 1];
static int prev[LEN_B + 1], cur[LEN_B + 1];
static int table_at_prefix[LEN_A + 1];      /* LCS(sa[0..i), sb) from the table */
static uint64_t match[4][WORDS];
static uint64_t v[WORDS];

static int base_index(char c)
{
    return c == 'A' ? 0 : c == 'C' ? 1 : c == 'G' ? 2 : 3;
}

/* LCS of sa[0..LEN_A) with sb, by the table; records the last column per row */
static int lcs_table(void)
{
    int i, j;

    memset(prev, 0, sizeof prev);
    table_at_prefix[0] = 0;
    for (i = 1; i <= LEN_A; i++) {
        if (i % ROWS_PER_POINT == 0)
            hexo_check_migrate();
        cur[0] = 0;
        for (j = 1; j <= LEN_B; j++) {
            if (sa[i - 1] == sb[j - 1])
                cur[j] = prev[j - 1] + 1;
            else
                cur[j] = prev[j] > cur[j - 1] ? prev[j] : cur[j - 1];
        }
        memcpy(prev, cur, sizeof cur);
        table_at_prefix[i] = cur[LEN_B];
    }
    return prev[LEN_B];
}

/* LCS of sa[0..la) with sb, bit-parallel over the characters of sa */
static int lcs_bits(int la)
{
    int words = (la + 63) / 64, w, j, i, zeros = 0;

    for (w = 0; w < 4; w++)
        memset(match[w], 0, sizeof match[w]);
    for (i = 0; i < la; i++)
        match[base_index(sa[i])][i / 64] |= (uint64_t)1 << (i % 64);
    for (w = 0; w < words; w++)
        v[w] = ~(uint64_t)0;
    for (j = 0; j < LEN_B; j++) {
        const uint64_t *m = match[base_index(sb[j])];
        uint64_t carry = 0;
        for (w = 0; w < words; w++) {
            uint64_t u = v[w] & m[w];
            uint64_t sum = v[w] + u;
            uint64_t c1 = sum < v[w];
            uint64_t sum2 = sum + carry;
            uint64_t c2 = sum2 < sum;
            v[w] = sum2 | (v[w] & ~m[w]);
            carry = c1 | c2;
        }
    }
    for (i = 0; i < la; i++)
        zeros += !((v[i / 64] >> (i % 64)) & 1);
    return zeros;
}

int main(void)
{
    static const char bases[4] = { 'A', 'C', 'G', 'T' };
    unsigned long long seed = 141421356ULL;
    int i, length, bits, bad = 0;
    int prefixes[3] = { LEN_A / 3, LEN_A / 2 + 1, LEN_A };

    printf(" LCS: strings of %d and %d characters\n", LEN_A, LEN_B);
    for (i = 0; i < LEN_A; i++)
        sa[i] = bases[corpus_rand53(&seed) % 4];
    for (i = 0; i < LEN_B; i++)
        sb[i] = bases[corpus_rand53(&seed) % 4];

    length = lcs_table();
    bits = lcs_bits(LEN_A);
    for (i = 0; i < 3; i++) {
        int p = lcs_bits(prefixes[i]);
        printf(" prefix %6d: table %6d, bit-parallel %6d\n", prefixes[i],
               table_at_prefix[prefixes[i]], p);
        if (p != table_at_prefix[prefixes[i]])
            bad++;
    }
    printf(" LCS length %d (bit-parallel %d)\n", length, bits);
    return corpus_verdict("LCS", length == bits && bad == 0);
}
