/* posix_memalign, which newlib leaves to the OS, on newlib's memalign. Both runtimes build
   this file, the library OS and Linux mode (hexo/toolchain/sysroot.py): benchmark harnesses
   such as PolyBench/C allocate every array with it. */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>

int posix_memalign(void **out, size_t alignment, size_t size)
{
    void *p;

    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0)
        return EINVAL;
    p = memalign(alignment, size ? size : 1);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
