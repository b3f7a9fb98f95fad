/* Boot: validate the hand-off, then either set up the heap and the C library and run
   main(), or restore a checkpoint's kernel state and resume the application. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "hypercall.h"
#include "kernel.h"

struct hexo_boot_info hexo_boot;
uintptr_t hexo_brk;

_Noreturn void hexo_main_trampoline(int argc, char **argv, char **envp);
extern void __libc_init_array(void);
extern void __libc_fini_array(void);

/* newlib's, so that it lives in application data and migrates with the job (after a
   setenv it points into the heap); at boot, the table the host wrote after argv's null. */
extern char **environ;

_Noreturn void hexo_panic(const char *msg)
{
    struct hexo_args_panic a = { (uint64_t)(uintptr_t)msg, strlen(msg) };
    hexo_hypercall(HEXO_HC_PANIC, &a);
    for (;;)
        ;
}

int hexo_exiting;

/* After the program's atexit handlers and destructors, exit() closes every stdio stream and
   ignores the result: those closes need no exit to the host, whose EXIT drains the output
   ring and closes every file anyway (three exits of a ten-exit short job). */
static void exit_begins(void)
{
    hexo_exiting = 1;
}

/* newlib's __libc_init_array calls these around the init/fini arrays. */
void _init(void) {}
void _fini(void) {}

_Noreturn void hexo_kernel_main(const struct hexo_boot_info *bi)
{
    if (bi->magic != HEXO_BOOT_INFO_MAGIC)
        hexo_panic("boot info has a wrong magic number");
    if ((bi->abi_version >> 16) != HEXO_ABI_MAJOR)
        hexo_panic("hypervisor speaks another major version of the hypercall ABI");
    hexo_boot = *bi;
    hexo_brk = bi->heap_start;
    if (bi->restore_context) {
        const struct hexo_kernel_state *k =
            (const struct hexo_kernel_state *)(uintptr_t)bi->restore_kernel;
        if (k->brk < bi->heap_start || k->brk > bi->heap_end)
            hexo_panic("restored heap break is outside the heap");
        hexo_brk = k->brk;
        hexo_clock_resume(k->monotonic_ns);
        hexo_resume((const struct hexo_cpu_context *)(uintptr_t)bi->restore_context);
    }
    hexo_clock_resume(0);           /* the guest's clock starts at 0 */
    atexit(exit_begins);            /* registered first, so it runs last */
    atexit(__libc_fini_array);
    /* newlib without fcntl makes stdout line-buffered everywhere; C says: only on a
       terminal. Elsewhere buffer it fully in st_blksize chunks (setvbuf's size 0), as other
       C libraries do. A 1.6 host gives each stdio file's type (what it could not examine
       counts as a terminal), a 1.5 host says whether stdout is a character device, an older
       one is asked. */
    struct stat st;
    unsigned minor = bi->abi_version & 0xFFFF, out = hexo_stdio_type(1);
    if (minor >= 6 ? out != HEXO_STDIO_TERMINAL && out != HEXO_STDIO_UNKNOWN
        : minor == 5 ? !(bi->flags & HEXO_BOOT_STDOUT_TERMINAL)
                     : fstat(1, &st) == 0 && !S_ISCHR(st.st_mode)) {
        hexo_stdio_setup = 1;
        setvbuf(stdout, NULL, _IOFBF, 0);
        hexo_stdio_setup = 0;
    }
    char **argv = (char **)(uintptr_t)bi->argv;
    environ = argv + bi->argc + 1;
    __libc_init_array();
    hexo_main_trampoline((int)bi->argc, argv, environ);
}
