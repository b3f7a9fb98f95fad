/* Fixed-size local arrays whose addresses are used across calls in a loop (the shape of
   CoreMark's state benchmark): clang interleaves their allocas with casts, and an automatic
   migration point at function entry must not leave any of them outside the entry block.
   argv[1] = rounds. */
#include <stdio.h>
#include <stdlib.h>

enum { NSTATES = 8 };

__attribute__((noinline)) static int transition(const char **p, unsigned *track)
{
    unsigned char c = (unsigned char)**p;
    (*p)++;
    int s = (c * 7 + 3) % NSTATES;
    track[s] += c & 3;
    return s;
}

__attribute__((noinline)) static unsigned bench_state(const char *block, unsigned seed)
{
    unsigned final_counts[NSTATES];
    unsigned track_counts[NSTATES];
    const char *p = block;
    for (int i = 0; i < NSTATES; i++)
        final_counts[i] = track_counts[i] = 0;
    while (*p != 0)
        final_counts[transition(&p, track_counts)]++;
    unsigned crc = seed;
    for (int i = 0; i < NSTATES; i++)
        crc = crc * 31 + final_counts[i] * 3 + track_counts[i];
    return crc;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    static const char text[] = "5012,1.23e4,-874,+122,xz9!,0.5e-3,$77,18,";
    unsigned crc = 0;
    for (int r = 0; r < rounds; r++)
        crc = crc * 17 + bench_state(text + r % 7, (unsigned)r);
    printf("crc %u\n", crc);
    return 0;
}
