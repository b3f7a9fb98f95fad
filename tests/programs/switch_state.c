/* A state machine over a token stream, list processing and a small matrix kernel (the
   shapes of CoreMark): a switch with several cases that lead to one block, so that block's
   phis list the same predecessor more than once, with values that are live across the
   migration points in between. argv[1] = rounds. */
#include <stdio.h>
#include <stdlib.h>

enum state { START, INT, FLOAT, EXP, BAD, NSTATES };

/* Several cases return the incoming state: one switch block, several edges to the return. */
__attribute__((noinline)) static int weight(int s, char c)
{
    switch (c) {
    case 'e': case '.': case 'x':
        return s;
    case '0': case '5':
        return s * 2 + 1;
    case '9':
        return s - 3;
    default:
        return -s;
    }
}

__attribute__((noinline)) static enum state next(enum state s, char c, unsigned *count)
{
    unsigned bump = (unsigned)c * 3u + 1u;
    enum state t;
    switch (s) {
    case START:
        t = c >= '0' && c <= '9' ? INT : c == '.' ? FLOAT : BAD;
        break;
    case INT:
        t = c == '.' ? FLOAT : c == 'e' ? EXP : c >= '0' && c <= '9' ? INT : BAD;
        break;
    case FLOAT:
    case EXP:
    case BAD:
        t = c >= '0' && c <= '9' ? s : BAD;
        bump += (unsigned)s;
        break;
    default:
        t = START;
    }
    count[t] += bump + (unsigned)weight((int)s, c);
    return t;
}

struct item { long key; struct item *next; };

__attribute__((noinline)) static long list_work(struct item *head, int round)
{
    long sum = 0;
    for (struct item *p = head; p; p = p->next) {
        switch ((p->key + round) & 7) {
        case 0: case 3: case 5: sum += p->key; break;
        case 1: case 6: sum -= p->key / 2; break;
        default: sum ^= p->key;
        }
    }
    return sum;
}

__attribute__((noinline)) static double matrix_work(const double *a, int n, int round)
{
    double acc = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            acc += a[i * n + j] * (double)((i + j + round) % 5);
    return acc;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    static const char text[] = "12.5e3 7 .25 x9 42e 3.14159 0.0 99x";
    unsigned count[NSTATES] = {0};
    struct item *head = NULL;
    double a[64];
    for (int i = 0; i < 64; i++)
        a[i] = (double)(i % 9) * 0.25;
    for (long k = 0; k < 50; k++) {
        struct item *it = malloc(sizeof *it);
        it->key = k * 7919 % 1000;
        it->next = head;
        head = it;
    }
    long lsum = 0;
    double msum = 0.0;
    for (int r = 0; r < rounds; r++) {
        enum state s = START;
        for (const char *c = text; *c; c++)
            s = *c == ' ' ? START : next(s, *c, count);
        lsum += list_work(head, r);
        msum += matrix_work(a, 8, r);
    }
    printf("states %u %u %u %u %u\n", count[0], count[1], count[2], count[3], count[4]);
    printf("list %ld matrix %.6f\n", lsum, msum);
    return 0;
}
