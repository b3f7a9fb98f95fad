/* rand(), srand(), random() and srandom() giving the sequences a program gets from the C
   library of a Linux machine, where its native build runs: newlib's own rand() is a different
   generator, so a program that makes its input with srand(7) and rand() (mini-apps do) printed
   other numbers as an image than natively. The generator is the additive lagged Fibonacci one
   with lags 31 and 3 over 32-bit words, its 31 words seeded by the Park-Miller generator
   (16807 modulo 2^31-1) and its first 310 outputs dropped; an output is the new word shifted
   right by one. Without a seed it behaves as seeded with 1. Both runtimes build this file
   (hexo/toolchain/sysroot.py); its state is one global, at the same address on every ISA. */
#include <stdint.h>
#include <stdlib.h>

#define DEG 31
#define SEP 3

static struct {
    uint32_t r[DEG];
    int front, rear, seeded;
} st;

void srandom(unsigned int seed)
{
    int32_t word;
    int i;

    word = seed ? (int32_t)seed : 1;
    st.r[0] = (uint32_t)word;
    for (i = 1; i < DEG; i++) {
        /* 16807 * word mod (2^31 - 1) without overflow (Schrage's method) */
        int32_t hi = word / 127773, lo = word % 127773;
        word = 16807 * lo - 2836 * hi;
        if (word < 0)
            word += 2147483647;
        st.r[i] = (uint32_t)word;
    }
    st.front = SEP;
    st.rear = 0;
    st.seeded = 1;
    for (i = 0; i < 10 * DEG; i++)
        (void)random();
}

long random(void)
{
    uint32_t v;

    if (!st.seeded)
        srandom(1);
    v = st.r[st.front] += st.r[st.rear];
    if (++st.front == DEG)
        st.front = 0;
    if (++st.rear == DEG)
        st.rear = 0;
    return (long)(v >> 1);
}

void srand(unsigned int seed)
{
    srandom(seed);
}

int rand(void)
{
    return (int)random();
}
