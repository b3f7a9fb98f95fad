/* Faults on purpose, the kind named by argv[1], so that tests can check each hypervisor's
   crash report: null (load from page 0), beyond-ram (load above guest RAM), wild-jump (call
   through a null function pointer), trap (__builtin_trap: brk on aarch64, ud2 on x86-64). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *kind = argc > 1 ? argv[1] : "";
    printf("about to fault: %s\n", kind);
    fflush(stdout);
    if (!strcmp(kind, "null"))
        return *(volatile int *)0;
    if (!strcmp(kind, "beyond-ram"))
        return *(volatile int *)(uintptr_t)(1ULL << 39);
    if (!strcmp(kind, "wild-jump")) {
        void (*volatile fn)(void) = 0;
        fn();
    }
    if (!strcmp(kind, "trap"))
        __builtin_trap();
    printf("unknown fault kind\n");
    return 2;
}
