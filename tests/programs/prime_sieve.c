/* An operator's own compute job, as the scheduler sees one: it names no benchmark and calls
   no hexo function (built with --auto-points, each call of sieve_segment() is a migration
   point). It counts the primes below N with a segmented sieve of Eratosthenes, `rounds`
   times over (each round sieves the whole range again: more work in the same memory), and
   prints each round's count and sum of primes, and a checksum over the rounds.
   argv[1] = N (default 10000000), argv[2] = rounds (default 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEGMENT 32768

static unsigned char segment[SEGMENT];

/* The primes up to `limit` (a plain sieve), for sieving the segments. */
static long small_primes(long limit, long **out)
{
    unsigned char *composite = calloc(limit + 1, 1);
    long *primes = malloc(sizeof(long) * (limit + 1));
    long n = 0;
    for (long i = 2; i <= limit; i++) {
        if (composite[i])
            continue;
        primes[n++] = i;
        for (long j = i * i; j <= limit; j += i)
            composite[j] = 1;
    }
    free(composite);
    *out = primes;
    return n;
}

/* Primes in [lo, hi): their count, their sum added to *sum. */
static long sieve_segment(long lo, long hi, const long *primes, long nprimes,
                          unsigned long long *sum)
{
    memset(segment, 1, (size_t)(hi - lo));
    for (long i = 0; i < nprimes && primes[i] * primes[i] < hi; i++) {
        long p = primes[i];
        long start = (lo + p - 1) / p * p;
        if (start < p * p)
            start = p * p;
        for (long j = start; j < hi; j += p)
            segment[j - lo] = 0;
    }
    long count = 0;
    for (long k = lo; k < hi; k++)
        if (segment[k - lo]) {
            count++;
            *sum += (unsigned long long)k;
        }
    return count;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    long rounds = argc > 2 ? atol(argv[2]) : 1;
    if (n < 3 || rounds < 1) {
        fprintf(stderr, "usage: prime_sieve N ROUNDS (N >= 3, ROUNDS >= 1)\n");
        return 2;
    }
    long root = 1;
    while ((root + 1) * (root + 1) < n)
        root++;
    long *primes;
    long nprimes = small_primes(root, &primes);
    unsigned long long checksum = 0;
    for (long r = 1; r <= rounds; r++) {
        unsigned long long sum = 0;
        long count = 0;
        for (long lo = 2; lo < n; lo += SEGMENT)
            count += sieve_segment(lo, lo + SEGMENT < n ? lo + SEGMENT : n, primes, nprimes,
                                   &sum);
        checksum = checksum * 1000003ULL + sum + (unsigned long long)count;
        printf("round %ld: %ld primes below %ld, sum %llu\n", r, count, n, sum);
    }
    printf("checksum %llu\n", checksum);
    free(primes);
    return 0;
}
