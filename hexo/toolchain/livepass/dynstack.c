/* The per-job region that holds dynamic stack allocations (VLAs, alloca()) of functions on a
   path to a migration point, in migratable builds. The live-value pass turns such an
   allocation into hexo_dyn_alloc(), llvm.stacksave into hexo_dyn_mark() and
   llvm.stackrestore (and every return of the function) into hexo_dyn_release().

   The region is a stack of chunks taken from the heap, and its state is application data:
   both lie at the same address on every ISA and migrate with the job, so pointers into the
   region need no rewriting and a migrated job keeps releasing in the same order. */
#include <stdint.h>
#include <stdlib.h>

#define HEXO_DYN_CHUNK (1u << 20)

struct hexo_dyn_chunk {
    struct hexo_dyn_chunk *below;
    char *end;
    char data[];
};

static struct hexo_dyn_chunk *hexo_dyn_top;    /* chunk allocations come from */
static char *hexo_dyn_next;                    /* first free byte in it */

void *hexo_dyn_mark(void)
{
    return hexo_dyn_next;
}

void hexo_dyn_release(void *mark)
{
    char *m = mark;
    while (hexo_dyn_top && !(hexo_dyn_top->data <= m && m <= hexo_dyn_top->end)) {
        if (!hexo_dyn_top->below) {         /* keep the bottom chunk for the next caller */
            m = hexo_dyn_top->data;
            break;
        }
        struct hexo_dyn_chunk *below = hexo_dyn_top->below;
        free(hexo_dyn_top);
        hexo_dyn_top = below;
    }
    hexo_dyn_next = m;
}

void *hexo_dyn_alloc(uint64_t size, uint64_t align)
{
    uintptr_t p = ((uintptr_t)hexo_dyn_next + align - 1) & ~(uintptr_t)(align - 1);
    if (!hexo_dyn_top || size > (uint64_t)(hexo_dyn_top->end - (char *)p)) {
        uint64_t want = size + align + sizeof(struct hexo_dyn_chunk);
        uint64_t bytes = want > HEXO_DYN_CHUNK ? want : HEXO_DYN_CHUNK;
        struct hexo_dyn_chunk *c = malloc(bytes);
        if (!c)
            abort();
        c->below = hexo_dyn_top;
        c->end = (char *)c + bytes;
        hexo_dyn_top = c;
        p = ((uintptr_t)c->data + align - 1) & ~(uintptr_t)(align - 1);
    }
    hexo_dyn_next = (char *)p + size;
    return (void *)p;
}
