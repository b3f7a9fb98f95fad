/* Migration points. hexo_check_migrate() (arch/<isa>/migrate.S) returns at once unless the
   host raised the flag in the shared page; then it saves the caller's registers and calls
   hexo_migrate_checkpoint() below, which names the application's memory areas and makes the
   MIGRATE hypercall. A host that accepts never returns from it on this machine; the job
   resumes from the checkpoint through hexo_resume(). */
#include "hypercall.h"
#include "kernel.h"

void hexo_migrate_checkpoint(struct hexo_cpu_context *ctx)
{
    hexo_readahead_drop(-1, 1);      /* the checkpoint records the host's file offsets */
    struct hexo_kernel_state k = { hexo_brk, hexo_monotonic_ns() };
    struct hexo_area areas[3] = {
        { hexo_boot.app_data_start, hexo_boot.app_data_end - hexo_boot.app_data_start,
          HEXO_AREA_DATA, 0 },
        { hexo_boot.heap_start, hexo_brk - hexo_boot.heap_start, HEXO_AREA_HEAP, 0 },
        { ctx->sp, hexo_boot.stack_top - ctx->sp, HEXO_AREA_STACK, 0 },
    };
    struct hexo_args_migrate a = { (uint64_t)(uintptr_t)ctx, (uint64_t)(uintptr_t)&k,
                                   (uint64_t)(uintptr_t)areas, 3, 0 };
    hexo_hypercall(HEXO_HC_MIGRATE, &a);
}
