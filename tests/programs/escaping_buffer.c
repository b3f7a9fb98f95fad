/* A caller's local buffer whose address a callee keeps in heap memory across migration
   points, as a stream library keeps the caller's input buffer in its state (next/avail)
   while the caller loops over compression calls. The transform rewrites frames, not the
   heap: the buffer has to be where the kept pointer says on both ISAs. argv[1] = rounds. */
#include <stdio.h>
#include <stdlib.h>

void hexo_check_migrate(void);

struct stream {
    const unsigned char *next;      /* into the caller's buffer */
    unsigned avail;
    unsigned long sum;
};

__attribute__((noinline)) static void feed(struct stream *s, const unsigned char *buf,
                                           unsigned n)
{
    s->next = buf;
    s->avail = n;
}

__attribute__((noinline)) static void consume(struct stream *s, unsigned k)
{
    hexo_check_migrate();
    while (k-- && s->avail) {
        s->sum = s->sum * 31u + *s->next++;
        s->avail--;
    }
}

__attribute__((noinline)) static unsigned long round_of(struct stream *s, int round)
{
    unsigned char buf[600];
    for (int i = 0; i < (int)sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7 + round * 13 + 1);
    feed(s, buf, sizeof buf);
    while (s->avail)
        consume(s, 9);
    return s->sum;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 4;
    struct stream *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    for (int r = 0; r < rounds; r++)
        printf("round %d: %lu\n", r, round_of(s, r));
    free(s);
    return 0;
}
